"""Safety: a build touches nothing but its inputs, its output and its own scratch, never runs code it
finds there, and refuses (one line, exit 2, no traceback) what would corrupt or lose data:
escaping table names and input patterns, tampered resume plans, a second build into a taken
output (local disk and S3), a stale lock without ``--resume``, inputs changed before a resume,
the same bytes under two names, and a disk that fills up while ``_metadata`` is written."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    BUCKET,
    TABLE,
    build_cli,
    bulk_lines,
    cli_options,
    local_lake_data,
    make_args,
    private_mounts,
    wait_for,
    write_gz,
)
from hats.io.validation import is_valid_collection
from upath import UPath

from tmass_lake.cli import main
from tmass_lake.convert.lock import LOCK_FILE, BuildLock
from tmass_lake.convert.map import map_input
from tmass_lake.convert.resume import ResumePlan
from tmass_lake.convert.scratch import Scratch
from tmass_lake.convert.table import fingerprint
from tmass_lake.schema import schema_dir


def cli(*argv: str) -> tuple[int, str, str]:
    """``tmass-lake ARGV`` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def one_line_error(code: int, err: str) -> str:
    """The single ``tmass-lake: error: ...`` line a refused command prints (exit 2, no traceback)."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmass-lake: error: "), err
    return lines[0]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``root``: relative path -> (size, mtime)."""
    return {str(p.relative_to(root)): (p.lstat().st_size if not p.is_dir() else 0, p.lstat().st_mtime_ns)
            for p in root.rglob("*")}


@pytest.fixture
def scheduler(local_client) -> list[str]:
    """The CLI flags that run a build on the session's local cluster (no cluster start per test)."""
    return ["--scheduler", local_client.scheduler.address, "--quiet"]


@pytest.fixture
def input_root(tmp_path, tiny_inputs) -> Path:
    """An input root holding the first tiny input as ``irsa/pt_src_6x2/pt_src_6x2_aaa.gz``."""
    root = tmp_path / "mirror"
    (root / "irsa" / TABLE).mkdir(parents=True)
    shutil.copy(tiny_inputs[0], root / "irsa" / TABLE / tiny_inputs[0].name)
    return root


# --- names and paths stay inside the lake and the input root -----------------------------------------

ESCAPE = "../../../../victim"
PIPELINES = {
    "table name": f'[[table]]\nname = "{ESCAPE}"\nschema = "{TABLE}"\ninput = "irsa/{TABLE}/*.gz"\n',
    "derived name": f'[[table]]\nname = "{TABLE}"\n[[derived]]\nname = "{ESCAPE}"\nsource = "{TABLE}"\n'
                    'where = { column = "cat", equals = "1" }\n',
    "pipeline name": f'[pipeline]\nname = "{ESCAPE}"\n[[table]]\nname = "{TABLE}"\n',
}


@pytest.mark.parametrize("where", PIPELINES)
def test_a_name_climbing_out_of_the_lake_is_refused_and_nothing_is_touched(where, tmp_path, input_root,
                                                                            scheduler):
    """The lake sits four levels below ``a/``; ``lake/../../../../victim`` is ``a/victim``, a directory
    of someone's files: the build must neither write there nor remove it."""
    out = tmp_path / "a" / "b" / "c" / "d" / "lake"
    victim = tmp_path / "a" / "victim"
    victim.mkdir(parents=True)
    (victim / "thesis.tex").write_text("years of work\n")
    (victim / "data").mkdir()
    (victim / "data" / "run1.csv").write_text("1,2,3\n")
    pipeline = tmp_path / "evil.toml"
    pipeline.write_text(PIPELINES[where])
    before = tree(tmp_path)
    code, _, err = cli("build", str(pipeline), "--input", str(input_root), "--output", str(out), *scheduler)
    line = one_line_error(code, err)
    assert str(pipeline) in line and f"{ESCAPE!r} is not a table name" in line
    assert tree(tmp_path) == before  # the victim intact, no lake, nothing written anywhere
    assert (victim / "data" / "run1.csv").read_text() == "1,2,3\n"


def test_a_schema_file_naming_a_table_out_of_the_collection_is_refused(tmp_path, tiny_inputs, scheduler):
    doc = yaml.safe_load((schema_dir() / f"{TABLE}.yaml").read_text())
    doc["table"] = "../../victim"
    schema = tmp_path / "evil.yaml"
    schema.write_text(yaml.safe_dump(doc))
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("keep")
    before = tree(tmp_path)
    code, _, err = cli("build", "--table", str(schema), "--input", str(tiny_inputs[0]), "--output",
                       str(tmp_path / "x" / "lake"), *scheduler)
    line = one_line_error(code, err)
    assert f"{schema}: table: '../../victim' is not a table name" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("pattern", ["../outside/*.gz", "irsa/../../outside/*.gz", "/etc/*"])
def test_an_input_pattern_leaving_the_root_is_refused(pattern, tmp_path, input_root, scheduler):
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f'[[table]]\nname = "{TABLE}"\ninput = "{pattern}"\n')
    code, _, err = cli("build", str(pipeline), "--input", str(input_root), "--output", str(tmp_path / "lake"),
                       *scheduler)
    line = one_line_error(code, err)
    assert str(pipeline) in line and repr(pattern) in line
    assert not (tmp_path / "lake").exists()


SECRET = b"root:x:0:0:secret text that must never reach a lake\n"


@pytest.mark.parametrize("link", ["file", "directory"])
def test_a_symlink_leading_out_of_the_root_is_refused(link, tmp_path, input_root, scheduler):
    """A link inside the root to a file elsewhere: read, its lines would be quarantined *into the lake*."""
    outside = tmp_path / "outside"
    write_gz(outside / "pt_src_6x2_zzz.gz", SECRET)
    table_dir = input_root / "irsa" / TABLE
    if link == "file":
        (table_dir / "pt_src_6x2_zzz.gz").symlink_to(outside / "pt_src_6x2_zzz.gz")
    else:  # the table's whole directory
        shutil.rmtree(table_dir)
        table_dir.symlink_to(outside, target_is_directory=True)
    bad = table_dir / "pt_src_6x2_zzz.gz"
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f'[[table]]\nname = "{TABLE}"\n')
    out = tmp_path / "lake"
    code, _, err = cli("build", str(pipeline), "--input", str(input_root), "--output", str(out), *scheduler)
    line = one_line_error(code, err)
    assert str(bad) in line and f"lies outside the input root {input_root}" in line
    assert not out.exists()  # refused before anything was written


# --- the resume plan is data, never code ---------------------------------------------------------------


class Payload:
    """What the old pickle plan would have run on ``--resume``: create ``canary``."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return (Path.touch, (self.canary,))


def interrupted_build(pt_schema, inputs, out: Path):
    """An output as a build killed after mapping its first input leaves it: scratch, plan, a record."""
    args = make_args(pt_schema, inputs, str(out))
    Scratch(args.scratch, args.output).claim()
    plan = ResumePlan(args.path("plan"), fingerprint(args), resume=False)
    plan.put("map", args.input_key(0), map_input(args, 0).to_json())
    return args, Path(args.path("plan", "map", f"{args.input_key(0)}.json"))


def test_a_pickle_in_the_plan_is_never_loaded(pt_schema, tiny_inputs, reference_lake, tmp_path, scheduler):
    out, canary = tmp_path / "lake", tmp_path / "canary"
    args, record = interrupted_build(pt_schema, tiny_inputs, out)
    for name in ("00000.pkl", f"{args.input_key(1)}.pkl"):  # where the pickle plan kept its records
        (record.parent / name).write_bytes(pickle.dumps(Payload(canary)))
    with pytest.raises(FileNotFoundError):  # the payload works: loading it would create the canary
        pickle.loads(pickle.dumps(Payload(tmp_path / "no-such-dir" / "x")))
    code, _, err = cli(*build_cli(tiny_inputs, str(out), "--resume", *scheduler)[1:])
    assert code == 0, err
    assert not canary.exists()
    assert local_lake_data(out) == local_lake_data(reference_lake)


HOSTILE = {
    "pickle bytes": lambda canary: pickle.dumps(Payload(canary)),
    "a list": lambda canary: b'["__import__(\'os\').system(\'touch canary\')"]',
    "wrong types": lambda canary: json.dumps({"index": "0; touch canary", "path": 0,
                                              "lines": "many"}).encode(),
    "unknown keys": lambda canary: json.dumps({
        "index": 0, "path": "x", "lines": 1, "rows": 1, "quarantined": 0, "runs": [], "quarantine_path": None,
        "bytes": 1, "sha256": "", "identity": {}, "written_bytes": 0, "__class__": "os.system"}).encode(),
    "a bad spill run": lambda canary: json.dumps({
        "index": 0, "path": "x", "lines": 1, "rows": 1, "quarantined": 0, "quarantine_path": None,
        "runs": [{"url": "/etc/passwd", "rows": "all", "nbytes": 1, "pixels": "!!", "counts": ""}],
        "bytes": 1, "sha256": "", "identity": {}, "written_bytes": 0}).encode(),
}


@pytest.mark.parametrize("content", HOSTILE)
def test_a_tampered_plan_record_is_a_clear_error(content, pt_schema, tiny_inputs, tmp_path, scheduler):
    out, canary = tmp_path / "lake", tmp_path / "canary"
    _, record = interrupted_build(pt_schema, tiny_inputs, out)
    record.write_bytes(HOSTILE[content](canary))
    code, _, err = cli(*build_cli(tiny_inputs, str(out), "--resume", *scheduler)[1:])
    line = one_line_error(code, err)
    assert str(record) in line
    assert ("not valid JSON" if content == "pickle bytes" else "not a progress record") in line
    assert not canary.exists()
    assert not (out / "collection.properties").exists()


def test_a_plan_record_naming_files_outside_the_scratch_maps_again(pt_schema, tiny_inputs, reference_lake,
                                                                    tmp_path, scheduler):
    """A well-formed record whose spill runs lie outside the build's scratch is not trusted: the
    input is mapped again, and the lake is the same as ever."""
    out = tmp_path / "lake"
    args, record = interrupted_build(pt_schema, tiny_inputs, out)
    rec = json.loads(record.read_text())
    stolen = tmp_path / "elsewhere.arrow"
    shutil.copy(rec["runs"][0]["url"], stolen)
    rec["runs"][0]["url"] = str(stolen)
    record.write_text(json.dumps(rec))
    code, _, err = cli(*build_cli(tiny_inputs, str(out), "--resume", *scheduler)[1:])
    assert code == 0, err
    assert local_lake_data(out) == local_lake_data(reference_lake)


# --- one build per output -----------------------------------------------------------------------------


@pytest.mark.slow  # two builds run side by side (a process of its own and the CLI)
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_build_into_a_taken_output_is_refused_at_once(where, s3, so, tiny_inputs, worker_env,
                                                                 tmp_path, scheduler):
    """The first build (slowed down, its own process) holds the output; a second one into the same
    output and the same scratch is refused naming the holder, and the first completes untouched."""
    if where == "local":
        out, tmp_dir, options = str(tmp_path / "lake"), str(tmp_path / "scratch"), []
        lock_exists = (tmp_path / "lake" / LOCK_FILE).exists
    else:
        out, tmp_dir, options = f"s3://{BUCKET}/taken", f"s3://{BUCKET}/scratch/taken", cli_options(so)
        lock_exists = lambda: s3.exists(f"{BUCKET}/taken/{LOCK_FILE}")  # noqa: E731
    first = subprocess.Popen(build_cli(tiny_inputs[:1], out, "--workers", "1", "--tmp-dir", tmp_dir,
                                       *options), env=worker_env(map_delay=4.0), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: lock_exists() or first.poll() is not None, 120, "the first build's lock")
        s3.invalidate_cache()
        code, _, err = cli(*build_cli(tiny_inputs[:1], out, "--tmp-dir", tmp_dir, *options, *scheduler)[1:])
        assert first.poll() is None  # refused while the first one runs: it did not wait for it
        line = one_line_error(code, err)
        started = json.loads(s3.cat(f"{BUCKET}/taken/{LOCK_FILE}") if where == "s3"
                             else (tmp_path / "lake" / LOCK_FILE).read_text())["started"]
        assert f"is being built by process {first.pid} on {socket.gethostname()}, started {started}" in line
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr  # its scratch and plan were left alone
    assert "4,000 lines read, 4,000 rows written" in stdout
    s3.invalidate_cache()
    assert is_valid_collection(UPath(out, **(so if where == "s3" else {})), strict=True, verbose=False)
    assert not lock_exists()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("holder", ["dead process here", "silent host", "live host"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_stale_lock_is_taken_over_only_with_resume(where, holder, s3, so, tiny_inputs, tmp_path, scheduler):
    """A lock whose holder is gone (its process no longer runs on this host, or another host has not
    refreshed it for the lease) needs ``--resume``; a lock another host keeps fresh is never taken."""
    now = time.time()
    lock = {"dead process here": {"host": socket.gethostname(), "pid": dead_pid(), "refreshed": now},
            "silent host": {"host": "worker-7.example.org", "pid": 4242, "refreshed": now - 3600},
            "live host": {"host": "worker-7.example.org", "pid": 4242, "refreshed": now}}[holder]
    lock |= {"started": "2026-01-02T03:04:05+00:00", "token": "0123"}
    if where == "local":
        out, options = str(tmp_path / "lake"), []
        (tmp_path / "lake").mkdir()
        (tmp_path / "lake" / LOCK_FILE).write_text(json.dumps(lock))
    else:
        out, options = f"s3://{BUCKET}/stale-{holder.replace(' ', '-')}", cli_options(so)
        s3.pipe(f"{out[5:]}/{LOCK_FILE}", json.dumps(lock).encode())
    argv = build_cli(tiny_inputs[:1], out, *options, *scheduler)[1:]
    code, _, err = cli(*argv)
    line = one_line_error(code, err)
    where_ = f"process {lock['pid']} on {lock['host']}, started 2026-01-02T03:04:05+00:00"
    if holder == "live host":
        assert f"is being built by {where_}" in line
    else:
        assert f"is locked by an interrupted build ({where_}, no longer running): pass --resume" in line
    code, stdout, err = cli(*argv, "--resume")
    if holder == "live host":
        assert f"is being built by {where_}" in one_line_error(code, err)
        return
    assert code == 0, err
    assert "4,000 lines read, 4,000 rows written" in stdout
    assert is_valid_collection(UPath(out, **(so if where == "s3" else {})), strict=True, verbose=False)


def test_the_holder_refreshes_its_lock_and_removes_it(tmp_path):
    out = str(tmp_path / "lake")
    with BuildLock(out, heartbeat=0.05) as lock:
        path = tmp_path / "lake" / LOCK_FILE
        first = json.loads(path.read_text())
        wait_for(lambda: json.loads(path.read_text())["refreshed"] > first["refreshed"], 10, "a heartbeat")
        assert first["pid"] == os.getpid() and first["token"] == lock.token
    assert not (tmp_path / "lake" / LOCK_FILE).exists()


# --- inputs: changed before a resume, or the same bytes twice --------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_resume_refuses_an_input_changed_since_it_was_read(where, s3, so, pt_schema, tiny_inputs, tmp_path,
                                                          scheduler):
    """Local: the file shortened (size and mtime change). S3: overwritten with other bytes of the
    same size (only the ETag tells)."""
    if where == "local":
        inputs = [tmp_path / "in" / p.name for p in tiny_inputs[:2]]
        for src, dst in zip(tiny_inputs, inputs, strict=False):
            dst.parent.mkdir(exist_ok=True)
            shutil.copy(src, dst)
        out, options, storage = str(tmp_path / "lake"), [], None
    else:
        inputs = [f"s3://{BUCKET}/changing/{p.name}" for p in tiny_inputs[:2]]
        for src, dst in zip(tiny_inputs, inputs, strict=False):
            s3.put_file(str(src), dst[5:])
        out, options, storage = f"s3://{BUCKET}/changing-lake", cli_options(so), so
    args = make_args(pt_schema, inputs, out, storage_options=storage)
    Scratch(args.scratch, args.output, storage).claim()
    plan = ResumePlan(args.path("plan"), fingerprint(args), resume=False, storage_options=storage)
    plan.put("map", args.input_key(0), map_input(args, 0).to_json())
    data = tiny_inputs[0].read_bytes()
    if where == "local":
        inputs[0].write_bytes(data[: len(data) // 2])
    else:
        s3.pipe(inputs[0][5:], data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes
    code, _, err = cli(*build_cli(inputs, out, *options, "--resume", *scheduler)[1:])
    line = one_line_error(code, err)
    assert f"{inputs[0]} changed since the interrupted build read it" in line


@pytest.mark.parametrize("second", ["copy", "symlink"])
def test_the_same_bytes_under_two_names_is_an_error_naming_both(second, pt_schema, tmp_path, scheduler):
    folder = tmp_path / "in"
    a = write_gz(folder / f"{TABLE}_aaa.gz", b"".join(bulk_lines(pt_schema, 300, seed=7)))
    b = folder / f"{TABLE}_aab.gz"
    if second == "copy":
        shutil.copy(a, b)
    else:
        b.symlink_to(a)
    code, _, err = cli(*build_cli([folder], str(tmp_path / "lake"), *scheduler)[1:])
    line = one_line_error(code, err)
    assert f"{a} and {b} have the same content" in line and "--allow-duplicate-content" in line
    assert not (tmp_path / "lake" / "collection.properties").exists()
    code, out, err = cli(*build_cli([folder], str(tmp_path / "both"), "--allow-duplicate-content",
                                    *scheduler)[1:])
    assert code == 0, err
    assert "600 lines read, 600 rows written" in out


# --- a full disk while the metadata is written --------------------------------------------------------

FILL_DISK = '''
import os, sys
import tmass_lake.convert.writer as writer
from tmass_lake.cli import main

real, filler = writer.write_parquet_metadata, sys.argv[1]


def full_disk_then_write(*args, **kwargs):
    """Take all the free space of the output's tmpfs but one page, then write _metadata for real."""
    if not os.path.exists(filler):
        st = os.statvfs(os.path.dirname(filler))
        with open(filler, "wb") as f:
            f.write(bytes(st.f_bavail * st.f_frsize - 4096))
    return real(*args, **kwargs)


writer.write_parquet_metadata = full_disk_then_write
sys.exit(main(sys.argv[2:]))
'''

SCRIPT = '''set -u
mount -t tmpfs -o size=64m tmpfs "$DISK" || exit 99
"$PY" -c "$FILL" "$DISK/filler" "$@"
status=$?
cp -a "$DISK/lake" "$KEEP"
exit $status
'''


@pytest.mark.slow  # a build in a mount namespace of its own
def test_a_full_disk_while_writing_metadata_is_one_line_and_leaves_no_metadata(tiny_inputs, tmp_path):
    """The output on a 64 MiB tmpfs (its own mount namespace); right before ``_metadata`` is written
    the disk is filled up to one page, so the write fails half-way with a real ENOSPC."""
    private_mounts(tmp_path)
    disk, keep = tmp_path / "disk", tmp_path / "after"
    disk.mkdir()
    env = dict(os.environ, DISK=str(disk), KEEP=str(keep), PY=sys.executable, FILL=FILL_DISK)
    argv = build_cli(tiny_inputs, str(disk / "lake"), "--workers", "1")[1:]
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", SCRIPT, "sh",
                           *argv], env=env, capture_output=True, text=True, timeout=300)
    line = one_line_error(proc.returncode, proc.stderr)
    metadata = disk / "lake" / TABLE / "dataset" / "_metadata"
    assert f"writing {metadata}: " in line and "No space left on device" in line
    assert sorted((keep / TABLE / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))  # the data were written
    for name in ("_metadata", "_common_metadata"):  # but no metadata a reader could take for complete
        assert not (keep / TABLE / "dataset" / name).exists()
    assert not (keep / TABLE / "hats.properties").exists() and not (keep / "collection.properties").exists()
    assert not is_valid_collection(str(keep), verbose=False)
    assert not (keep / LOCK_FILE).exists()
