"""Promises 1-4: sources stay read-only, outputs are atomic, fits resume after SIGKILL, NaN is caught.

Everything runs through the CLI (in-process ``main`` or a ``python -m nwb_ltr.cli`` subprocess
that is killed with SIGKILL, never SIGINT) on tiny sessions built with ``tests/nwbfactory.py``.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import nwb_ltr
from nwb_ltr.cli import main
from nwb_ltr.nwb_io import remove_stale_partials
from tests.nwbfactory import make_nwbfile, random_spikes, write_nwbfile

FIT = ["--rank", "1", "--rnn-dim", "4", "--max-iters", "3", "--no-progress", "-q"]
CLI = [sys.executable, "-m", "nwb_ltr.cli"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _session_file(path: Path, n_trials: int = 12, n_units: int = 4) -> Path:
    starts = np.arange(n_trials) * 2.0 + 1.0
    trials = {
        "start_time": starts,
        "stop_time": starts + 1.5,
        "go_cue_time": starts + 0.7,
        "target_id": np.arange(n_trials) % 3,
        "block": ["BL"] * (n_trials // 3)
        + ["AD"] * (n_trials // 3)
        + ["WO"] * (n_trials - 2 * (n_trials // 3)),
    }
    spikes = random_spikes(n_units, n_trials * 2.0 + 4.0, 15.0, seed=3)
    return write_nwbfile(make_nwbfile(spikes, trials=trials, acquisition=True), path)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _session_file(tmp_path_factory.mktemp("atomic") / "session.nwb")


@pytest.fixture(scope="module")
def older_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session whose root says NWB 2.2.5 (what an older pynwb wrote); ``mode="a"`` would rewrite it."""
    path = _session_file(tmp_path_factory.mktemp("older") / "older.nwb")
    with h5py.File(path, "r+") as f:  # the test's own copy: patch the schema version it claims
        f.attrs["nwb_version"] = "2.2.5"
    return path


# ------------------------------------------------------------------------------ 1. read-only


def test_every_command_leaves_an_older_schema_source_byte_identical(
    older_schema: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sha256(older_schema)
    mtime = older_schema.stat().st_mtime_ns
    with nwb_ltr.open_session(older_schema) as nwbfile:  # mode="r" reads the older version as is
        assert len(nwbfile.trials) == 12
        with h5py.File(older_schema, "r") as raw:
            assert raw.attrs["nwb_version"] == "2.2.5"
    out = tmp_path / "fit.nwb"
    assert main(["inspect", str(older_schema), "-q"]) == 0
    assert main(["fit", str(older_schema), "--dry-run", "-q"]) == 0
    assert main(["fit", str(older_schema), "-o", str(out), *FIT]) == 0
    assert sha256(older_schema) == before
    results_before = sha256(out)
    assert main(["show", str(out), "--png", str(tmp_path / "fit.png"), "-q"]) == 0
    assert sha256(out) == results_before  # show reads the results file, never writes it
    sel = tmp_path / "sel.nwb"
    code = main(
        [
            "select",
            str(older_schema),
            "-o",
            str(sel),
            "--ranks",
            "1",
            "--rnn-dims",
            "4",
            "--seeds",
            "1",
            "--folds",
            "2",
            "--max-iters",
            "2",
            "--workers",
            "1",
            "--no-progress",
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert sha256(older_schema) == before
    assert older_schema.stat().st_mtime_ns == mtime
    assert nwb_ltr.read_results(out).provenance["source"]["sha256"] == before


# ------------------------------------------------------------------------------ 2. atomic outputs


def test_force_replaces_by_atomic_rename_and_open_readers_keep_the_old_file(
    session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fit.nwb"
    assert main(["fit", str(session), "-o", str(out), *FIT, "--seed", "1"]) == 0
    old_inode = out.stat().st_ino
    old_seed = nwb_ltr.read_results(out).provenance["seed"]
    # refused without --force: the file is untouched
    before = sha256(out)
    assert main(["fit", str(session), "-o", str(out), *FIT, "--seed", "2"]) == 1
    assert "pass --force" in capsys.readouterr().err
    assert sha256(out) == before and out.stat().st_ino == old_inode
    factors = "processing/ltr/ltr_rank1_rnn4_seed1/trial_factors"
    with h5py.File(out, "r") as reader:  # a reader holding the old file open
        old_factors = reader[factors][()]
        assert main(["fit", str(session), "-o", str(out), *FIT, "--seed", "2", "--force"]) == 0
        again = reader[factors][()]
        np.testing.assert_array_equal(again, old_factors)  # unaffected: it still reads the old inode
    assert out.stat().st_ino != old_inode  # replaced by rename, not rewritten in place
    assert old_seed == 1 and nwb_ltr.read_results(out).provenance["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.nwb"]


def test_stale_partial_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".fit.partial-{dead_pid}.nwb"
    live = tmp_path / f".fit.partial-{os.getppid()}.nwb"  # our parent runs: its file is kept
    other = tmp_path / f".other.partial-{dead_pid}.nwb"  # another output's file is not ours to touch
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert remove_stale_partials(tmp_path / "fit.nwb") == [stale]
    assert not stale.exists() and live.exists() and other.exists()


@pytest.mark.slow
def test_sigkill_at_random_points_never_leaves_a_corrupt_output(session: Path, tmp_path: Path) -> None:
    """Kill `nwb_ltr fit` at random moments around the write; the output is absent or complete."""
    before = sha256(session)
    cmd = [*CLI, "fit", str(session), *FIT]
    t0 = time.monotonic()
    done = subprocess.run(
        [*cmd, "-o", str(tmp_path / "reference.nwb")], capture_output=True, text=True, timeout=300
    )
    total = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    rng = np.random.default_rng(0)
    for _ in range(4):
        out = tmp_path / "killed.nwb"
        out.unlink(missing_ok=True)
        proc = subprocess.Popen([*cmd, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.5, 1.0)) * total)  # late: into alignment, fitting and writing
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # then it is complete: it reads back with every array
            result = nwb_ltr.read_results(out)
            assert result.trial_factors.sizes["trial"] == 12
        assert sha256(session) == before
    # the next write removes the temporary files of the killed writers
    out = tmp_path / "killed.nwb"
    assert main(["fit", str(session), "-o", str(out), *FIT, "--force"]) == 0
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []
    assert sha256(session) == before


# ------------------------------------------------------------------------------ 3. resume


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_fit(session: Path, tmp_path: Path) -> None:
    """SIGKILL mid-fit, then `fit --resume`: bitwise the same factors as an uninterrupted fit (CPU)."""
    config = tmp_path / "c.toml"
    config.write_text("checkpoint_every = 3\npatience = 100000\n")
    args = [
        "--rank",
        "2",
        "--rnn-dim",
        "6",
        "--max-iters",
        "60",
        "--seed",
        "4",
        "--config",
        str(config),
        "--device",
        "cpu",
        "--no-progress",
        "-q",
    ]
    reference = tmp_path / "reference.nwb"
    done = subprocess.run(
        [*CLI, "fit", str(session), "-o", str(reference), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "resumed.nwb"
    ckpt = tmp_path / ".resumed.nwb.checkpoints"
    proc = subprocess.Popen([*CLI, "fit", str(session), "-o", str(out), *args], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (ckpt / "checkpoint.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    assert (ckpt / "checkpoint.pt").exists(), "no checkpoint appeared"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    resumed = subprocess.run(
        [*CLI, "fit", str(session), "-o", str(out), *args, "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    a, b = nwb_ltr.read_results(reference), nwb_ltr.read_results(out)
    assert a.metrics["n_iters"] == b.metrics["n_iters"] == 60
    for field in ("trial_factors", "decoder_weight", "reconstruction"):
        np.testing.assert_array_equal(getattr(a, field).values, getattr(b, field).values)
    assert not ckpt.exists()


# ------------------------------------------------------------------------------ 4. numerics


def test_diverging_fit_stops_with_one_line_and_writes_nothing(
    session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "absurd.toml"
    config.write_text("lr = 1e9\nmax_nan_retries = 2\n")
    out = tmp_path / "fit.nwb"
    code = main(
        [
            "fit",
            str(session),
            "-o",
            str(out),
            "--rank",
            "2",
            "--rnn-dim",
            "8",
            "--max-iters",
            "30",
            "--config",
            str(config),
            "--no-progress",
            "-q",
        ]
    )
    assert code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    for line, lr in zip(lines[:2], ("5e+08", "2.5e+08")):
        assert re.fullmatch(
            rf"WARNING: non-finite (loss|gradient) at iteration \d+: rolled back to the last good state, lr halved to {re.escape(lr)}",
            line,
        ), line
    assert re.fullmatch(
        r"error: fit diverged: non-finite (loss|gradient) at iteration \d+ after 2 roll-backs with halved learning "
        r"rate; lower lr or check the data",
        lines[2],
    ), lines[2]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".nwb"] == []


@pytest.mark.slow
def test_recovered_fit_writes_only_finite_factors(
    session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A step that goes non-finite is rolled back with a smaller lr; what is written is finite."""
    config = tmp_path / "big.toml"
    config.write_text("lr = 1e9\nmax_nan_retries = 40\n")
    out = tmp_path / "fit.nwb"
    code = main(
        [
            "fit",
            str(session),
            "-o",
            str(out),
            "--rank",
            "2",
            "--rnn-dim",
            "8",
            "--max-iters",
            "6",
            "--config",
            str(config),
            "--no-progress",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "rolled back to the last good state" in err  # the NaN was seen and handled at its step
    result = nwb_ltr.read_results(out)
    for field in ("trial_factors", "decoder_weight", "reconstruction"):
        assert np.isfinite(getattr(result, field).values).all()
    assert result.config["fit"]["lr"] == 1e9  # the configured value is recorded; the halvings are logged
