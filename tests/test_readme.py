"""README.md runs as written: every fenced ``sh`` and ``python`` block, top to bottom, in one
temporary directory, as a user follows it.

- ``sh`` blocks run in ``bash`` (``set -euo pipefail``) with the installed ``tmass-lake`` first on
  ``PATH``; ``python`` blocks run in one Python process, in one namespace, so a block uses the
  variables of the blocks before it. Blocks in other languages (``text``, ``toml``, ...) are shown,
  not run.
- ``<!-- readme: skip (reason) -->`` on the line before a block: not run here, for the reason given
  (installing from an index, the set-up commands this test runs inside, IRSA over the network).
- ``<!-- readme: cloud -->``: the block needs a bucket and a cluster. It runs against moto's S3
  server on loopback (the bucket ``my-bucket`` holds IRSA's files of a few tables, the README's own
  mock uploaded as ``irsa/<table>/*.gz``) and a ``dask scheduler`` with two ``dask worker``
  processes, with credentials and ``AWS_ENDPOINT_URL`` in the environment of every process; the
  README's placeholders (``tcp://scheduler:8786``, ``https://s3.example.org``, ...) are replaced by
  the real addresses.

The whole run is ``slow`` (about six minutes on 2 cores shared with other jobs: every command
starts its own local Dask cluster, every lake build draws its report's plots); the
quick tests check that the blocks parse, every ``tmass-lake`` command line is accepted by the real
argument parser, and the markers are well formed, so ``make test-fast`` catches drift cheaply.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import s3fs
from conftest import BIN, ExternalCluster, s3_environ

from tmass_lake.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
RUN = {"sh", "python"}
NOT_RUN = {"text", "console", "toml", "yaml", "json", ""}  # "": a block without a language is shown only
MARK = re.compile(r"<!--\s*readme:\s*(?P<kind>\w+)\s*(?:\((?P<reason>.*)\))?\s*-->")
BUCKET = "my-bucket"  # the README's bucket name, made on the loopback endpoint
MIRROR_TABLES = ("pt_src_6x2", "pt_src_c")  # the tables the README's cloud blocks read
SCHEDULER_PLACEHOLDERS = ("tcp://scheduler.example.org:8786", "tcp://scheduler:8786")
ENDPOINT_PLACEHOLDER = "https://s3.example.org"
TIMEOUT = 900  # one block, seconds
WARNING = re.compile(r"\b[A-Z]\w*Warning: .*")  # what warnings.warn prints


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    mark: str = "run"  # run, skip or cloud
    reason: str = ""

    @property
    def where(self) -> str:
        return f"README.md line {self.line} ({self.lang or 'no language'} block)"


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README with the marker on the line before it (if any)."""
    lines = (README.read_text() if text is None else text).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\S*)\s*", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        if end is None:
            raise ValueError(f"README.md line {i + 1}: code block never closed")
        mark = MARK.fullmatch(lines[i - 1].strip()) if i else None
        blocks.append(Block(line=i + 1, lang=fence.group(1), code="\n".join(lines[i + 1:end]) + "\n",
                            mark=mark.group("kind") if mark else "run",
                            reason=(mark.group("reason") or "").strip() if mark else ""))
        i = end + 1
    return blocks


def tail(text: str, n: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


# --- quick checks: the blocks parse and name real commands and flags ----------------------------------


def tmass_lake_commands(code: str) -> list[list[str]]:
    """The argument lists of every ``tmass-lake`` command of a shell block (continuations joined,
    comments dropped, split at ``;``, ``&&``, ``||`` and ``|``)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        current = []
        for token in [*lexer, ";"]:
            if set(token) <= set(";&|"):
                if current and current[0] == "tmass-lake":
                    out.append(current[1:])
                current = []
            else:
                current.append(token)
    return out


def test_the_readme_has_runnable_blocks_and_well_formed_markers():
    text = README.read_text()
    blocks = readme_blocks(text)
    runnable = [b for b in blocks if b.lang in RUN and b.mark != "skip"]
    assert len(runnable) >= 10, "the README's examples are no longer in sh/python blocks"
    for b in blocks:
        assert b.lang in RUN | NOT_RUN, f"{b.where}: tag it sh or python to run it, text to show it"
        assert b.mark in ("run", "skip", "cloud"), f"{b.where}: unknown marker {b.mark!r}"
        assert b.mark != "skip" or b.reason, f"{b.where}: a skipped block says why: readme: skip (reason)"
        assert b.mark == "run" or b.lang in RUN, f"{b.where}: marker on a block that is not run anyway"
    marked = [i + 1 for i, line in enumerate(text.splitlines()) if MARK.search(line)]
    attached = {b.line - 1 for b in blocks if b.mark != "run"}
    stray = sorted(set(marked) - attached)
    assert not stray, f"README.md lines {stray}: a marker goes on the line just before a block"
    skipped = [b for b in blocks if b.mark == "skip"]
    assert len(skipped) <= 5, f"keep skips few: {[b.where for b in skipped]}"


def line_of(block: Block) -> str:
    return str(block.line)


@pytest.mark.parametrize("block", [b for b in readme_blocks() if b.lang == "python"], ids=line_of)
def test_python_blocks_compile(block):
    compile(block.code, block.where, "exec")


@pytest.mark.parametrize("block", [b for b in readme_blocks() if b.lang == "sh"], ids=line_of)
def test_sh_blocks_parse_and_their_commands_exist(block, capsys):
    proc = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert proc.returncode == 0, f"{block.where}: {proc.stderr}"
    parser = build_parser()
    for argv in tmass_lake_commands(block.code):
        try:
            parser.parse_args(argv)
        except SystemExit as e:  # --version and --help exit 0: well-formed
            if e.code == 0:
                continue
            pytest.fail(f"{block.where}: tmass-lake {shlex.join(argv)}\n{capsys.readouterr().err}")


def test_command_lines_are_split_as_a_shell_would():
    code = textwrap.dedent("""\
        X=1  # a variable
        tmass-lake build 6x --input mock/ \\
            --output lake/      # one family
        tmass-lake info lake/ && tmass-lake verify "$LAKE/lake" | tail -1
        echo tmass-lake not-a-command
        """)
    assert tmass_lake_commands(code) == [["build", "6x", "--input", "mock/", "--output", "lake/"],
                                         ["info", "lake/"], ["verify", "$LAKE/lake"]]


def test_markers_are_read_from_the_line_before_a_block():
    text = textwrap.dedent("""\
        <!-- readme: skip (needs PyPI) -->
        ```sh
        pip install tmass-lake
        ```
        <!-- readme: cloud -->
        ```python
        x = 1
        ```
        ```text
        shown
        ```
        """)
    skip, cloud, shown = readme_blocks(text)
    assert (skip.mark, skip.reason, skip.line) == ("skip", "needs PyPI", 2)
    assert skip.code == "pip install tmass-lake\n"
    assert (cloud.mark, cloud.lang, cloud.line) == ("cloud", "python", 6)
    assert (shown.mark, shown.lang) == ("run", "text")


# --- the whole README, run -----------------------------------------------------------------------------

KERNEL = r'''
import contextlib, io, json, os, sys, traceback
protocol = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # output written below Python's sys.stdout goes to the log, not the protocol
namespace = {"__name__": "__main__"}
for request in sys.stdin:
    request = json.loads(request)
    os.environ.update(request["env"])
    out, err, ok = io.StringIO(), io.StringIO(), True
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            exec(compile(request["code"], request["name"], "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            ok = False
    protocol.write(json.dumps({"ok": ok, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
    protocol.flush()
'''


class PythonSession:
    """One Python process running the README's python blocks in one namespace, in order."""

    def __init__(self, cwd: Path, env: dict):
        self.log = cwd.parent / "python-blocks.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", KERNEL], cwd=cwd, env=env, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)

    def run(self, block: Block, code: str, env: dict) -> tuple[bool, str]:
        self.proc.stdin.write(json.dumps({"code": code, "name": block.where, "env": env}) + "\n")
        self.proc.stdin.flush()
        if not select.select([self.proc.stdout], [], [], TIMEOUT)[0]:
            self.proc.kill()
            return False, f"no answer in {TIMEOUT} s:\n{tail(self.log.read_text())}"
        answer = self.proc.stdout.readline()
        if not answer:
            return False, f"the Python process died (exit {self.proc.wait()}):\n{tail(self.log.read_text())}"
        result = json.loads(answer)
        return result["ok"], result["stderr"]

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Cloud:
    """The bucket and the cluster of the ``cloud`` blocks, started at the first one."""

    def __init__(self, endpoint: str, tmp: Path):
        self.endpoint, self.tmp, self.cluster = endpoint, tmp, None

    @property
    def env(self) -> dict[str, str]:
        return s3_environ(self.endpoint)

    def start(self, workdir: Path) -> None:
        if self.cluster is not None:
            return
        fs = s3fs.S3FileSystem(endpoint_url=self.endpoint, key="testing", secret="testing")
        if not fs.exists(BUCKET):
            fs.mkdir(BUCKET)
        for table in MIRROR_TABLES:
            files = sorted((workdir / "mock" / "irsa" / table).glob("*.gz"))
            assert files, f"the README's mock has no {table} files to put in the bucket"
            for f in files:
                fs.put_file(str(f), f"{BUCKET}/irsa/{table}/{f.name}")
        self.cluster = ExternalCluster(self.tmp, dict(os.environ) | self.env).start(n_workers=2)

    def substitute(self, code: str) -> str:
        for placeholder in SCHEDULER_PLACEHOLDERS:
            code = code.replace(placeholder, self.cluster.address)
        return code.replace(ENDPOINT_PLACEHOLDER, self.endpoint)

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()


@pytest.fixture
def cloud(s3_endpoint, tmp_path_factory):
    cloud = Cloud(s3_endpoint, tmp_path_factory.mktemp("readme-cluster"))
    try:
        yield cloud
    finally:
        cloud.stop()


class BlockFailed(AssertionError):
    """A README block failed: its line, its code and the end of its stderr."""


@dataclass(frozen=True)
class Ran:
    """A block that ran: where, how long, what it printed on stderr."""

    block: Block
    seconds: float
    stderr: str


def run_blocks(blocks: list[Block], workdir: Path, cloud: Cloud | None = None) -> list[Ran]:
    """Run the blocks in order in ``workdir`` as a user would; a failing one raises :class:`BlockFailed`."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    python = PythonSession(workdir, env)
    ran = []
    try:
        for block in blocks:
            if block.lang not in RUN or block.mark == "skip":
                continue
            code, extra, started = block.code, {}, time.monotonic()
            if block.mark == "cloud":
                assert cloud is not None, f"{block.where}: a cloud block needs the cloud"
                cloud.start(workdir)
                code, extra = cloud.substitute(code), cloud.env
            if block.lang == "sh":
                proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + code], cwd=workdir,
                                      env=env | extra, capture_output=True, text=True, timeout=TIMEOUT)
                ok, stderr = proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stderr}"
            else:
                ok, stderr = python.run(block, code, extra)
            if not ok:
                raise BlockFailed(f"{block.where} failed:\n{block.code}--- stderr, last lines ---\n"
                                  f"{tail(stderr)}")
            ran.append(Ran(block, round(time.monotonic() - started, 1), stderr))
    finally:
        with contextlib.suppress(Exception):
            python.close()
    return ran


def test_a_failing_block_is_named_with_its_stderr(tmp_path):
    text = textwrap.dedent("""\
        ```sh
        echo made > made.txt
        ```
        ```python
        from pathlib import Path
        made = Path("made.txt").read_text().strip()
        ```
        ```python
        assert made == "made"                        # the namespace carries over
        print("to stdout"); open("seen.txt", "w").write(made)
        ```
        <!-- readme: skip (never run) -->
        ```sh
        exit 1
        ```
        ```sh
        command -v tmass-lake >/dev/null           # the installed command is on PATH
        echo "something went wrong" >&2
        false
        echo never
        ```
        """)
    with pytest.raises(BlockFailed) as failed:
        run_blocks(readme_blocks(text), tmp_path)
    message = str(failed.value)
    assert message.startswith("README.md line 16 (sh block) failed:") and "something went wrong" in message
    assert "exit status 1" in message
    assert (tmp_path / "seen.txt").read_text() == "made"
    with pytest.raises(BlockFailed, match=r"README.md line 1 \(python block\)[\s\S]*NameError: name 'nope'"):
        run_blocks(readme_blocks("```python\nnope\n```\n"), tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # six minutes on 2 cores shared with other jobs; a block may take TIMEOUT
def test_the_readme_runs_top_to_bottom(tmp_path, cloud):
    workdir = tmp_path / "user"
    workdir.mkdir()
    try:
        ran = run_blocks(readme_blocks(), workdir, cloud)
    except BlockFailed as e:
        pytest.fail(str(e), pytrace=False)
    print("README blocks run (line, seconds):", [(r.block.line, r.seconds) for r in ran])
    assert len(ran) >= 10
    # nothing the reader cannot act on: no Python warning from any example
    warned = {r.block.where: WARNING.findall(r.stderr) for r in ran if WARNING.search(r.stderr)}
    assert not warned, f"README examples print warnings: {warned}"
