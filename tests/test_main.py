"""``python -m tmass_lake`` is the ``tmass-lake`` command line (run in process with runpy)."""

from __future__ import annotations

import runpy
import sys

import pytest


def run_module(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", ["python -m tmass_lake", *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("tmass_lake", run_name="__main__", alter_sys=True)
    return done.value.code


def test_python_m_tmass_lake_runs_the_cli(monkeypatch, capsys):
    assert run_module(monkeypatch, "--help") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tmass-lake") and "build" in out and "lightcurves" in out


def test_python_m_tmass_lake_exits_with_the_cli_status(monkeypatch, capsys, tmp_path):
    assert run_module(monkeypatch, "info", str(tmp_path / "nowhere")) == 2
    err = capsys.readouterr().err
    assert err.startswith("tmass-lake: error:") and "nowhere" in err
