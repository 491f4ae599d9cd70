"""What several subcommands check before any work starts: storage options, the packages URLs and
flags need, and the size of the data (which decides the cluster, :mod:`tmass_lake.cli.compute`)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from collections.abc import Iterable

from tmass_lake.cluster import LOCAL_KINDS
from tmass_lake.errors import MissingDependencyError, UserError
from tmass_lake.storage import filesystem

PROTOCOL_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs",
                     "abfs": "adlfs", "http": "aiohttp", "https": "aiohttp"}
"""fsspec protocols and the optional package each needs."""


_OPTION_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def storage_options(pairs: list[str] | None) -> dict:
    """``--storage-option key=value`` pairs (JSON values allowed) into fsspec storage options.

    A key is a Python identifier, given once; a value that looks like JSON (``{``, ``[``, ``"``)
    must be valid JSON (no NaN or Infinity), anything else is kept as a string.
    """
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--storage-option {pair[:60]!r}: expected KEY=VALUE")
        if not _OPTION_KEY.fullmatch(key):
            raise argparse.ArgumentTypeError(f"--storage-option {key[:60]!r}: a key is a name "
                                             "(letters, digits, _), e.g. endpoint_url")
        if key in out:
            raise argparse.ArgumentTypeError(f"--storage-option {key}: given twice")
        try:
            out[key] = json.loads(value, parse_constant=_no_constant)
        except ValueError as e:
            if value.lstrip().startswith(("{", "[", '"')) or "is not a JSON number" in str(e):
                raise argparse.ArgumentTypeError(f"--storage-option {key}: not valid JSON ({e}); "
                                                 "allowed: a JSON value or a plain string") from None
            out[key] = value
    return out


def check_urls(urls: Iterable[str]) -> None:
    """Every URL's filesystem package is installed (``s3://`` needs s3fs...), before any work."""
    for url in urls:
        if url.startswith("tap+"):  # TAP services are read with pyvo, not fsspec
            continue
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        package = PROTOCOL_PACKAGES.get(protocol)
        if package and importlib.util.find_spec(package) is None:
            raise MissingDependencyError(f"{url}: reading {protocol}:// needs the {package} package "
                                         f"(pip install {package})")


def check_dashboard(ns: argparse.Namespace) -> None:
    if getattr(ns, "dashboard", None) and importlib.util.find_spec("bokeh") is None:
        raise MissingDependencyError("--dashboard needs the bokeh package (pip install 'bokeh>=3.1')")
    scheduler = getattr(ns, "scheduler", None)
    if getattr(ns, "dashboard", None) and scheduler and scheduler not in LOCAL_KINDS:
        raise UserError("--dashboard applies to a local cluster; an existing scheduler serves its own")


def data_bytes(urls: Iterable[str], storage_options: dict) -> int | None:
    """Bytes under these URLs (files or directories), ``None`` when a listing fails (size unknown)."""
    total = 0
    for url in urls:
        try:
            fs, path = filesystem(url, storage_options)
            total += int(fs.du(path, total=True) if fs.isdir(path) else fs.size(path) or 0)
        except (OSError, ValueError, TypeError):
            return None
    return total
