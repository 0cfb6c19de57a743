"""The tutorials run as scripts (tiny settings via ``NWB_LTR_TUTORIAL_FAST=1``) and produce their files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def _run(name: str, out: Path, **env: str) -> str:
    environ = {
        **os.environ,
        "NWB_LTR_TUTORIAL_FAST": "1",
        "NWB_LTR_TUTORIAL_OUT": str(out),
        "MPLBACKEND": "Agg",
        "DANDI_NO_ET": "1",
        **env,
    }
    for variable in ("NWB_LTR_RESULTS", "NWB_LTR_DANDI_API_URL"):  # only what this test sets
        if variable not in env:
            environ.pop(variable, None)
    done = subprocess.run(
        [sys.executable, str(TUTORIALS / name)],
        cwd=out,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_tutorial_is_a_jupytext_percent_script():
    names = sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py"))
    assert names == [
        "01_quickstart.py",
        "02_your_own_session.py",
        "03_choosing_the_rank.py",
        "04_reading_results_without_nwb_ltr.py",
    ]
    for name in names:
        text = (TUTORIALS / name).read_text()
        assert "format_name: percent" in text and text.count("# %% [markdown]") >= 3, name


@pytest.mark.slow
def test_quickstart(tmp_path):
    out = _run("01_quickstart.py", tmp_path)
    results = tmp_path / "sub-sim0_ses-learning_desc-ltr_ecephys.nwb"
    assert f"wrote and re-read {results}: rank 2, 20 RNN units" in out
    for name in (
        "quickstart_fit.png",
        "quickstart_eigenvalues.png",
        "quickstart_report.html",
        results.with_suffix(".png").name,
    ):
        assert (tmp_path / name).stat().st_size > 1000, name


@pytest.mark.slow
def test_your_own_session_from_a_local_file(tmp_path):
    out = _run("02_your_own_session.py", tmp_path)
    assert "Suggested choices" in out
    assert "(sha256 " in out  # the results record the local source's checksum


@pytest.mark.slow
def test_your_own_session_from_a_dandi_server(tmp_path):
    from nwb_ltr.simulate import simulate_session
    from nwb_ltr.testing.dandi_server import DandiServer

    session = tmp_path / "served" / "session.nwb"
    session.parent.mkdir()
    simulate_session(session, n_trials=(8, 12, 12), n_units=20, pretrain_steps=20, teacher_units=40, seed=1)
    asset = "sub-sim0/sub-sim0_ses-learning_ecephys.nwb"
    work = tmp_path / "work"
    work.mkdir()
    with DandiServer({"000001": {asset: session}}) as server:
        out = _run("02_your_own_session.py", work, NWB_LTR_DANDI_API_URL=server.api_url)
        assert server.blob_requests(), "the session was not read from the server"
    assert f"reading from the DANDI API at {server.api_url}" in out
    assert asset in out  # listed by `inspect DANDI:000001`
    assert f"DANDI:000001/{asset} (DANDI 000001@" in out  # provenance of the fit names the asset


@pytest.mark.slow
def test_choosing_the_rank(tmp_path):
    out = _run("03_choosing_the_rank.py", tmp_path)
    assert "model selection: 8 candidates (0 failed)" in out
    assert "<- selected" in out
    assert (tmp_path / "selection.png").stat().st_size > 1000
    assert "8 candidates stored in sub-planted_ses-learning_desc-ltr_ecephys.nwb" in out


def test_reading_results_without_nwb_ltr(tmp_path):
    out = _run("04_reading_results_without_nwb_ltr.py", tmp_path)
    assert "fits: ['ltr_fit']" in out
    assert "LowTensorRankRNN rank 3 rnn_dim 16" in out
    widget_page = tmp_path / "widget.html"
    if "NWB widgets not available" not in out:
        assert "Eigenvalues of W_k" in widget_page.read_text()
