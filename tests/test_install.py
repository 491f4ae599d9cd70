"""An installed tmass-lake works without the checkout: the sdist and the wheel built from it carry
the table schemas and pipeline files, and from an empty directory the installed ``tmass-lake``
runs ``mock``, ``build 6x`` and ``info``.

How the package is installed. The wheel goes into a fresh virtualenv with ``pip install --no-deps``.
Its dependencies: a full install from the package index takes 65-90 s on this project's 2-core
machine (measured 2026-11-27), so by default the fresh virtualenv borrows them from the test's
own environment, through a ``.pth`` line naming that environment's ``site-packages``. A path
named in a ``.pth`` file is only appended to ``sys.path``: the ``.pth`` files inside it are not
run, so the checkout's editable install (an import hook installed by such a file) stays off, and
``tmass_lake`` can only come from the wheel. To make sure, the commands run in their own mount
namespace with empty tmpfs mounts over the checkout's ``src/``, ``schemas/`` and ``pipelines/``.
``TMASS_LAKE_TEST_FULL_INSTALL=1`` installs the dependencies from the index instead (what a user
gets; also run in CI where time allows).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SIXX = ["pt_src_6x2", "ext_src_6x2", "sixxf_info", "sixxf_link", "esixxf_info", "esixxf_link"]
HIDE = """set -e
for d in src schemas pipelines; do mount -t tmpfs -o size=1m,ro tmpfs "$REPO/$d"; done
exec "$@"
"""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def checkout_files() -> list[str]:
    """The files a clean clone has (plus new ones not ignored), as ``git`` lists them."""
    out = run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"]).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """``python -m build`` in a copy of the checkout: the sdist, then the wheel built from the sdist."""
    if shutil.which("git") is None:
        pytest.skip("needs git to list the checkout's files")
    tree = tmp_path_factory.mktemp("tree") / "tmass-lake"
    for f in checkout_files():
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, tree / f)
    out = tree / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(out), str(tree)])
    return {"sdist": next(out.glob("*.tar.gz")), "wheel": next(out.glob("*.whl"))}


def test_sdist_and_wheel_carry_schemas_and_pipelines(dist):
    schemas = sorted(p.name for p in (REPO / "schemas").glob("*.yaml"))
    pipelines = sorted(p.name for p in (REPO / "pipelines").glob("*.toml"))
    assert len(schemas) > 30 and len(pipelines) >= 6
    with tarfile.open(dist["sdist"]) as t:
        names = t.getnames()
    for folder, files in (("schemas", schemas), ("pipelines", pipelines)):
        found = sorted(n.rsplit("/", 1)[1] for n in names if f"/{folder}/" in n and n.endswith(files[0][-5:]))
        assert found == files
    with zipfile.ZipFile(dist["wheel"]) as z:
        names = z.namelist()
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("tmass_lake/schemas/")
                  and n.endswith(".yaml")) == schemas
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("tmass_lake/pipelines/")
                  and n.endswith(".toml")) == pipelines


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed (see the module's docstring for its dependencies)."""
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    clock = time.monotonic()
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    if os.environ.get("TMASS_LAKE_TEST_FULL_INSTALL") == "1":
        run([*pip, str(dist["wheel"])], timeout=1200)
    else:
        site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout
        Path(site.strip(), "_borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
        run([*pip, "--no-deps", str(dist["wheel"])])
    print(f"\nfresh virtualenv with tmass-lake installed in {time.monotonic() - clock:.1f} s",
          file=sys.stderr)
    return venv


def without_checkout(cmd: list[str]) -> list[str]:
    """``cmd`` with the checkout's sources, schemas and pipelines hidden (where mounts are allowed)."""
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", HIDE, "sh",
                            "true"], env=dict(os.environ, REPO=str(REPO)), capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"\nnot hiding the checkout (unshare refused: {probe.stderr.strip()})", file=sys.stderr)
        return cmd
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", HIDE, "sh", *cmd]


def test_installed_package_mocks_builds_and_describes_a_lake_from_an_empty_directory(installed, tmp_path):
    bin_ = installed / "bin"
    work = tmp_path / "empty"
    work.mkdir()
    drop = ("PYTHONPATH", "TMASS_LAKE_SCHEMAS", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {"REPO": str(REPO), "PATH": f"{bin_}{os.pathsep}{env['PATH']}"}

    def tmass_lake(*args: str) -> str:
        return run(without_checkout([str(bin_ / "tmass-lake"), *args]), cwd=work, env=env).stdout

    show = ("import tmass_lake, importlib.resources as r; print(tmass_lake.__file__); "
            "print(r.files('tmass_lake.schemas')); print(r.files('tmass_lake.pipelines'))")
    where = run(without_checkout([str(bin_ / "python"), "-c", show]), cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in where), where
    assert "mock Extended Mission written to mock: 6 tables" in tmass_lake("mock", "mock", "--scale", "0.01",
                                                                            "--tables", *SIXX)
    built = tmass_lake("build", "6x", "--input", "mock", "--output", "lake", "--workers", "1", "--quiet")
    assert "lake: a lake of 10 tables" in built  # 6 from inputs, 2 6x Catalogs, 2 light-curve collections
    info = tmass_lake("info", "lake")
    assert "pipeline 6x: 6x working databases" in info and f"[{installed}" in info  # the packaged file
    for table in [*SIXX, "pt_src_6x2_cat", "ext_src_6x2_cat", "sixxf_lightcurves", "esixxf_lightcurves"]:
        assert f"\n{table} " in info
    assert sorted(p.name for p in work.iterdir()) == ["lake", "mock"]  # nothing else written here
