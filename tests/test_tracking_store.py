"""A damaged MLflow store: every command that writes to it names the file and the command that rebuilds it, before
any work; `vw tracking rebuild` moves it aside (kept) and logs the study's runs again from the files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import prepared_coco_workspace
from visual_words.cli import main
from visual_words.config import load_config


def _argv(sets: dict) -> list[str]:
    return sum((["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"] for k, v in sets.items()), [])


@pytest.fixture(scope="module")
def study(repo_root, tmp_path_factory):
    """Two trained classification trials (tiny CLIP) and an MLflow store holding their runs."""
    ws = tmp_path_factory.mktemp("store")
    sets = prepared_coco_workspace(repo_root, ws, **{
        "maps.out_dir": str(ws / "maps"), "evaluate.out_dir": str(ws / "ev"),
        "sweep.tracking_uri": f"sqlite:///{ws / 'mlflow.db'}"})
    argv = ["train", "--params", str(ws / "params.yaml"), *_argv(sets), "--task", "classification", "--limit", "2",
            "--no-progress"]
    assert main(argv) == 0
    out = _rebuild(ws, sets).stdout  # no store yet: it is built from the files (one run per trained trial)
    assert f"rebuilt {ws / 'mlflow.db'} from the files of profile smoke: 2 trial runs" in out
    return ws, sets


def _rebuild(ws: Path, sets: dict) -> subprocess.CompletedProcess:
    """`vw tracking rebuild` in its own process, as a user runs it (MLflow keeps a store's connections open for the
    life of a process, so a test process that opened the store would go on writing the moved file)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "visual_words", "tracking", "rebuild", "--params",
                           str(ws / "params.yaml"), *_argv(sets)], env=env, capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def store(repo_root, tmp_path_factory):
    """A workspace whose MLflow store holds a few runs (no trained trials needed to refuse a damaged one)."""
    from visual_words.tracking import log_stage_run

    ws = tmp_path_factory.mktemp("store-only")
    shutil.copy(repo_root / "params.yaml", ws / "params.yaml")
    sets = {"maps.out_dir": str(ws / "maps"), "evaluate.out_dir": str(ws / "ev"), "train.out_dir": str(ws / "emb"),
            "sweep.tracking_uri": f"sqlite:///{ws / 'mlflow.db'}"}
    cfg = load_config("smoke", ws / "params.yaml", sets)
    for i in range(5):
        log_stage_run(cfg, "maps", {f"m{j}": float(i * j) for j in range(50)})
    return ws, sets


def _damage(db: Path) -> bytes:
    """The issue's damage: the store truncated to half its size."""
    os.truncate(db, db.stat().st_size // 2)
    return db.read_bytes()


def _runs(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT COUNT(*) FROM runs WHERE lifecycle_stage = 'active'").fetchone()[0]


@pytest.mark.parametrize("argv", [["sweep", "--yes"], ["maps"], ["evaluate", "run"], ["ui", "--port", "1"]],
                         ids=["sweep", "maps", "evaluate", "ui"])
def test_a_damaged_store_is_named_before_any_work(store, argv, capsys):
    ws, sets = store
    db = ws / "mlflow.db"
    shutil.copy(db, ws / "whole.db")
    try:
        damaged = _damage(db)
        capsys.readouterr()
        rc = main([*argv, "--params", str(ws / "params.yaml"), *_argv(sets)])
        out, err = capsys.readouterr()
        assert rc == 2, (out, err)
        [line] = err.strip().splitlines()
        assert line.startswith(f"vw {argv[0]}: error: {db}: the MLflow store is damaged (")
        assert "`vw tracking rebuild --profile smoke`" in line and "Traceback" not in err + out
        assert db.read_bytes() == damaged  # nothing written into it
        assert not any((ws / d).exists() for d in ("maps", "ev", "emb"))  # no work started
    finally:
        shutil.move(ws / "whole.db", db)


@pytest.mark.slow  # prepare, train two trials, two fresh interpreters
def test_rebuild_moves_the_damaged_store_aside_and_logs_the_runs_again(study, capsys):
    ws, sets = study
    db = ws / "mlflow.db"
    shutil.copy(db, ws / "whole.db")
    try:
        damaged = _damage(db)
        out = _rebuild(ws, sets).stdout
        assert f"moved {db} aside to {db}.damaged (database disk image is malformed)" in out
        assert "2 trial runs" in out
        assert (ws / "mlflow.db.damaged").read_bytes() == damaged  # kept, untouched
        assert _runs(db) == 2
        # a whole store is left alone; the sweep now reads it (everything is done: no work, rc 0)
        assert main(["tracking", "rebuild", "--params", str(ws / "params.yaml"), *_argv(sets)]) == 0
        assert "reads as whole; nothing to rebuild" in capsys.readouterr().out
        assert main(["sweep", "--params", str(ws / "params.yaml"), *_argv(sets), "--task", "classification",
                     "--limit", "2", "--no-progress"]) == 0
        assert "2 already done, 0 to run" in capsys.readouterr().out and _runs(db) == 2
    finally:
        (ws / "mlflow.db.damaged").unlink(missing_ok=True)
        shutil.move(ws / "whole.db", db)


def test_a_store_that_is_not_a_database_is_named(tmp_path, repo_root, capsys):
    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "mlflow.db").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(4096))
    rc = main(["maps", "--params", str(tmp_path / "params.yaml"), "--set", f"maps.out_dir={tmp_path / 'maps'}"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and f"{tmp_path / 'mlflow.db'}: the MLflow store is damaged (file is not a database)" in line
