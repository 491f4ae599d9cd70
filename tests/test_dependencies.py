"""pyproject.toml's floors are true: never below what the installed hats, lsdb, nested-pandas and
hats-import themselves require (their ``Requires-Dist``), so an install never resolves to a set that
cannot import."""

from __future__ import annotations

import tomllib
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
UPSTREAM = ("hats", "lsdb", "nested-pandas", "hats-import")


def floor(req: Requirement) -> Version | None:
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


def ours() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return {canonicalize_name(r.name): r for r in map(Requirement, reqs)}


def test_floors_are_at_least_what_our_dependencies_require():
    mine = ours()
    low = []
    for upstream in UPSTREAM:
        for text in requires(upstream) or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an optional extra, or another platform's requirement
            name = canonicalize_name(req.name)
            need = floor(req)
            if name not in mine or need is None:
                continue
            have = floor(mine[name])
            if have is None or have < need:
                low.append(f"{name}: ours {mine[name].specifier or 'unbounded'}, {upstream} needs {need}")
    assert not low, low


def test_no_upper_caps_without_a_reason():
    """A ``<`` cap in pyproject.toml sits on a line saying which break it avoids (a comment)."""
    for line in PYPROJECT.read_text().splitlines():
        text = line.split("#", 1)[0]
        if text.strip().startswith('"') and "<" in text:
            assert "#" in line, line
