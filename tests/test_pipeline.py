"""End-to-end: simulate → inspect → fit → write → read, through the CLI and the Python API,
from local files and from a loopback DANDI server (streamed and downloaded)."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import nwb_ltr
from nwb_ltr.cli import main
from nwb_ltr.pipeline import prepare

SMALL_FIT = ["--rank", "2", "--rnn-dim", "24", "--max-iters", "15", "--no-progress"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def session_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("session") / "planted.nwb"
    assert (
        main(["simulate", str(path), "--planted-rank", "2", "--trials", "8,12,12", "--units", "16", "-q"])
        == 0
    )
    return path


def test_simulate_cli_prints_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.nwb"
    code = main(["simulate", str(out), "--planted-rank", "1", "--trials", "3,3,3", "--units", "4", "-q"])
    assert code == 0 and out.exists()
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}  (planted rank-1 RNN; 9 trials, 4 units, seed 0")
    assert main(["simulate", str(out), "--planted-rank", "1", "--trials", "3,3,3", "--units", "4", "-q"]) == 1
    assert (
        capsys.readouterr().err == f"error: output file already exists: {out}; pass --force to replace it\n"
    )


def test_inspect_suggests_alignment(session_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(session_path), "-q"]) == 0
    text = capsys.readouterr().out
    for word in ("go_cue_time", "target_id", "block", "target_dir", "result"):
        assert word in text


def test_fit_dry_run_prints_guesses_and_writes_nothing(
    session_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fit.nwb"
    assert main(["fit", str(session_path), "-o", str(out), "--dry-run", "-q"]) == 0
    text = capsys.readouterr().out
    assert "align_to: go_cue_time  (guessed from the file)" in text
    assert "condition: target_id  (guessed from the file)" in text
    assert "epoch: block  (guessed from the file)" in text
    assert "tensor: 32 trials × 50 times × 16 units" in text
    assert "dry run: nothing fitted or written" in text
    assert not out.exists()


def test_fit_writes_results_and_leaves_source_untouched(
    session_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sha256(session_path)
    out = tmp_path / "fit.nwb"
    assert main(["fit", str(session_path), "-o", str(out), *SMALL_FIT, "-q"]) == 0
    table = capsys.readouterr().out
    for row in (
        "output",
        "tensor",
        "rank / rnn size",
        "iterations",
        "loss train/val/test",
        "test bits/spike",
        "wall time",
    ):
        assert row in table
    assert f"output               {out}" in table
    assert sha256(session_path) == before
    assert not (tmp_path / ".fit.nwb.checkpoints").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["fit.nwb"]  # no temp files left behind

    result = nwb_ltr.read_results(out)
    assert result.rank == 2 and result.rnn_dim == 24
    assert result.trial_factors.sizes["trial"] == 32
    assert result.provenance["source"]["sha256"] == before
    assert np.isfinite(result.metrics["test_loss"])

    # the model loaded from the file re-simulates the stored reconstruction
    import torch

    model = nwb_ltr.load_model(out)
    with torch.no_grad():
        again = model().mean.double().numpy()  # (trial, time, unit)
    recon = result.reconstruction.transpose("trial", "time", "unit").values
    assert again.shape == recon.shape
    assert np.max(np.abs(again - recon)) <= 1e-5 * max(1.0, float(np.max(np.abs(recon))))

    # an existing output is kept unless --force
    assert main(["fit", str(session_path), "-o", str(out), *SMALL_FIT, "-q"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: output file already exists: {out}; pass --force (force=True) to replace it\n"
    assert main(["fit", str(session_path), "-o", str(out), *SMALL_FIT, "--seed", "1", "--force", "-q"]) == 0
    assert nwb_ltr.read_results(out).provenance["seed"] == 1


def test_fit_config_file_and_flags_override(session_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "fit.toml"
    config.write_text("rank = 3\nrnn_dim = 20\nmax_iters = 10\nbin_size = 0.05\ngp_length = 5.0\n")
    out = tmp_path / "fit.nwb"
    assert (
        main(
            [
                "fit",
                str(session_path),
                "-o",
                str(out),
                "--config",
                str(config),
                "--rank",
                "1",
                "--no-progress",
                "-q",
            ]
        )
        == 0
    )
    result = nwb_ltr.read_results(out)
    assert result.rank == 1  # the flag wins over the file
    assert result.rnn_dim == 20
    assert result.config["model"]["gp_length"] == 5.0
    assert result.trial_factors.sizes["rank"] == 1
    assert result.reconstruction.sizes["time"] == 20  # 1 s window / 50 ms bins


def test_fit_static_rank_flag_reaches_the_results(session_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "static.nwb"
    assert main(["fit", str(session_path), "-o", str(out), *SMALL_FIT, "--static-rank", "4", "-q"]) == 0
    result = nwb_ltr.read_results(out)
    assert (result.rank, result.static_rank) == (2, 4)
    assert result.trial_factors.sizes["rank"] == 6
    from nwb_ltr import report

    assert "rank 2 + 4 static components, rnn size 24" in report.summarize_fit("f", result)


def test_python_api_chain(session_path: Path, tmp_path: Path) -> None:
    with nwb_ltr.open_session(session_path) as nwbfile:
        data = nwb_ltr.align_trials(
            nwbfile, "go_cue_time", (-0.5, 0.5), 0.02, condition="target_id", epoch="block"
        )
    assert data.dims == ("trial", "time", "unit")
    result = nwb_ltr.fit(data, rank=2, rnn_dim=24, max_iters=10, seed=3)
    out = nwb_ltr.write_results(result, session_path, tmp_path / "api.nwb", data=data)
    back = nwb_ltr.read_results(out)
    xr.testing.assert_allclose(back.trial_factors, result.trial_factors)
    assert back.metrics == result.metrics


@pytest.fixture
def served(dandi_server, session_path: Path):  # noqa: ANN001 - fixture from nwb_ltr's pytest plugin
    dandi_server.add_asset("000123", "sub-P2/sub-P2_ses-1_ecephys.nwb", session_path)
    return dandi_server


def test_dandi_streamed_and_downloaded_tensors_identical(served, tmp_path: Path) -> None:  # noqa: ANN001
    source = "DANDI:000123/sub-P2/sub-P2_ses-1_ecephys.nwb"
    streamed, _ = prepare(source, api_url=served.api_url, cache_dir=tmp_path / "cache")
    downloaded, _ = prepare(source, api_url=served.api_url, cache_dir=tmp_path / "cache", download=True)
    xr.testing.assert_identical(streamed.drop_attrs(), downloaded.drop_attrs())
    prov = downloaded.attrs["source_provenance"]
    assert prov["dandiset_id"] == "000123" and prov["asset_path"] == "sub-P2/sub-P2_ses-1_ecephys.nwb"
    n_blob = len(served.blob_requests())
    prepare(source, api_url=served.api_url, cache_dir=tmp_path / "cache", download=True)
    assert len(served.blob_requests()) == n_blob  # the verified download is reused


def test_cli_fit_from_dandi_by_id_and_asset_glob(served, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "dandi_fit.nwb"
    code = main(
        [
            "fit",
            "000123",
            "--asset",
            "sub-P2/*.nwb",
            "--api-url",
            served.api_url,
            "--cache-dir",
            str(tmp_path / "cache"),
            "-o",
            str(out),
            *SMALL_FIT,
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = nwb_ltr.read_results(out)
    assert result.provenance["source"]["dandiset_id"] == "000123"
    # a bare id without --asset lists assets in `inspect` and asks for --asset in `fit`
    assert main(["inspect", "000123", "--api-url", served.api_url, "-q"]) == 0
    assert "sub-P2/sub-P2_ses-1_ecephys.nwb" in capsys.readouterr().out
    assert main(["fit", "000123", "--api-url", served.api_url, "--dry-run", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--asset" in err and err.count("\n") == 1


@pytest.mark.slow
def test_ctrl_c_keeps_checkpoint_and_resume_finishes(session_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted.nwb"
    ckpt = tmp_path / ".interrupted.nwb.checkpoints"
    # max_iters is not part of a checkpoint's identity: the interrupted run is open-ended, so that the
    # signal always lands mid-fit however slow the machine; the resumed run goes 20 iterations further
    base = [
        sys.executable,
        "-m",
        "nwb_ltr.cli",
        "fit",
        str(session_path),
        "-o",
        str(out),
        "--rank",
        "2",
        "--rnn-dim",
        "24",
        "--config",
        str(tmp_path / "c.toml"),
        "--no-progress",
        "-q",
    ]
    (tmp_path / "c.toml").write_text("checkpoint_every = 5\npatience = 100000\n")
    # a shell that starts the test run in the background makes children ignore SIGINT; a user's
    # terminal does not, so give the child the default disposition (Python then raises KeyboardInterrupt)
    proc = subprocess.Popen(
        [*base, "--max-iters", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (ckpt / "checkpoint.pt").exists():
            time.sleep(0.2)
        assert (ckpt / "checkpoint.pt").exists(), "no checkpoint appeared"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave the open-ended fit running
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == (
        "interrupted; the last checkpoint is kept: rerun the same command with --resume to continue"
    )
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".interrupted.nwb.partial")] == []
    assert any(ckpt.glob("*"))
    import torch

    done = torch.load(ckpt / "checkpoint.pt", weights_only=False)["iteration"]
    assert done >= 5
    resumed = subprocess.run(
        [*base, "--max-iters", str(done + 20), "--resume"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert out.exists()
    assert not ckpt.exists()
    assert nwb_ltr.read_results(out).metrics["n_iters"] == done + 20


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nwb_ltr.cli", "demo", "--out", str(tmp_path / "demo"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert files == ["ltr_fit.png", "session.nwb", "sub-demo_ses-learning_desc-ltr_ecephys.nwb"]
    assert "results (NWB)" in proc.stdout
    result = nwb_ltr.read_results(tmp_path / "demo" / "sub-demo_ses-learning_desc-ltr_ecephys.nwb")
    # the trial factors change at the AD and WO block boundaries: the jump between the block means
    # around each boundary is several times the typical trial-to-trial step inside the blocks
    c = result.trial_factors.values
    epochs = np.asarray(result.trial_factors.coords["epoch"].values).astype(str)
    bl, ad, wo = (c[epochs == e] for e in ("BL", "AD", "WO"))
    steps = np.concatenate([np.linalg.norm(np.diff(block, axis=0), axis=1) for block in (bl, ad, wo)])
    jump_ad = np.linalg.norm(ad[:5].mean(0) - bl[-5:].mean(0))
    jump_wo = np.linalg.norm(wo[:5].mean(0) - ad[-5:].mean(0))
    assert jump_ad > 3 * steps.mean()
    assert jump_wo > 2 * steps.mean()
