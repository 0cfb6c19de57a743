"""Promises 6-7: network faults end to end through the CLI, and concurrent runs.

The loopback DANDI server (fixture ``dandi_server``) injects 500/503 with ``Retry-After``,
connection resets, truncated range responses, corrupt bytes and stalls.  Streamed reads either
give the same tensor as the local file or fail with one line within the timeout; downloads verify
checksums and never leave a partial file in the cache.  (Module-level retry/timeout behaviour is
in ``test_dandi.py`` / ``test_data.py``; this file covers the ``inspect``/``fit`` paths.)
"""

from __future__ import annotations

import re
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
from tests.nwbfactory import make_nwbfile, random_spikes, write_nwbfile

ASSET = "sub-1/sub-1_ses-1_ecephys.nwb"
SOURCE = f"DANDI:000123/{ASSET}"
CLI = [sys.executable, "-m", "nwb_ltr.cli"]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    starts = np.arange(12) * 2.0 + 1.0
    trials = {
        "start_time": starts,
        "stop_time": starts + 1.5,
        "go_cue_time": starts + 0.7,
        "target_id": np.arange(12) % 3,
        "block": ["BL"] * 4 + ["AD"] * 4 + ["WO"] * 4,
    }
    nwbfile = make_nwbfile(random_spikes(4, 28.0, 15.0, seed=5), trials=trials)
    return write_nwbfile(nwbfile, tmp_path_factory.mktemp("faults") / "session.nwb")


@pytest.fixture
def served(dandi_server, session: Path):  # noqa: ANN001, ANN201 - fixture from nwb_ltr's pytest plugin
    dandi_server.add_asset("000123", ASSET, session)
    return dandi_server


def _local_tensor(session: Path) -> xr.DataArray:
    data, _ = prepare(session)
    return data.drop_attrs()


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_streamed_fit_survives_transient_faults(served, session: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    served.inject_fault("/api/dandisets/*", "status", status=503, retry_after=0.2, times=2)
    served.inject_fault("/blobs/*", "reset", times=2)
    served.inject_fault("/blobs/*", "truncate", nbytes=100, times=2)
    served.inject_fault("/blobs/*", "status", status=500, times=1)
    t0 = time.monotonic()
    code = main(
        ["fit", SOURCE, "--dry-run", "--api-url", served.api_url, "--timeout", "5", "--retries", "3", "-q"]
    )
    assert code == 0, capsys.readouterr().err
    assert time.monotonic() - t0 < 60
    assert "tensor: 12 trials × 50 times × 4 units" in capsys.readouterr().out
    faults = [r.fault for r in served.requests if r.fault]
    assert sorted(faults) == ["reset", "reset", "status", "status", "status", "truncate", "truncate"]
    # the data read through the faults is identical to the local file's
    served.inject_fault("/blobs/*", "truncate", nbytes=10, times=3)
    streamed, _ = prepare(SOURCE, api_url=served.api_url, timeout=5, retries=3)
    xr.testing.assert_identical(streamed.drop_attrs(), _local_tensor(session))


def test_stalled_server_fails_within_the_timeout_with_one_line(served, capsys) -> None:  # noqa: ANN001
    served.inject_fault("/blobs/*", "stall", seconds=3, times=20)
    t0 = time.monotonic()
    code = main(["inspect", SOURCE, "--api-url", served.api_url, "--timeout", "0.5", "--retries", "1", "-q"])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: cannot reach ") and err.count("\n") == 1
    assert "check the URL and the network, or download the file and open the local copy" in err
    assert elapsed < 2 * 0.5 * 2 + 5  # two attempts of 0.5 s, a short back-off, the API calls


def test_stall_in_the_middle_of_a_streamed_read_fails_cleanly(served, capsys) -> None:  # noqa: ANN001
    """The stream breaks after the file was opened: still one line, no traceback, bounded time."""
    # the probe and the first chunk pass, then every blob GET stalls
    served.inject_fault("/blobs/*", "stall", method="GET", seconds=3, times=100, after=2)
    t0 = time.monotonic()
    code = main(
        ["fit", SOURCE, "--dry-run", "--api-url", served.api_url, "--timeout", "0.5", "--retries", "1", "-q"]
    )
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 1
    assert re.fullmatch(
        r"error: the stream from http://127\.0\.0\.1:\d+/blobs/[\w-]+ broke off \(no answer within 0\.5 s, 2 attempts\); "
        r"check the network and rerun \(maybe with a larger --timeout or --retries\), or use --download\n",
        err,
    ), err
    gets = served.blob_requests("GET")
    assert [r.fault for r in gets[:2]] == [None, None] and gets[2].fault == "stall"
    assert len(gets) <= 2 + 4 * 2  # bounded: a few reads, each tried retries + 1 times
    assert elapsed < 15


def test_test_server_is_quiet_about_clients_that_hang_up_but_not_about_its_own_errors(capsys) -> None:  # noqa: ANN001
    """A client timing out of a stall resets the connection; socketserver would print that traceback
    to stderr, in the middle of the CLI's one-line error (it made the test above flaky)."""
    from nwb_ltr.testing.dandi_server import _Handler, _HTTPServer

    httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            httpd.handle_error(None, ("127.0.0.1", 1))
        assert capsys.readouterr().err == ""
        try:
            raise KeyError("a bug in the server")
        except KeyError:
            httpd.handle_error(None, ("127.0.0.1", 1))
        assert "KeyError: 'a bug in the server'" in capsys.readouterr().err
    finally:
        httpd.server_close()


def test_download_through_faults_verifies_and_leaves_no_partial(
    served, session: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    cache = tmp_path / "cache"
    served.inject_fault("/blobs/*", "truncate", nbytes=5000, times=1)
    served.inject_fault("/blobs/*", "reset", times=1)
    served.inject_fault("/blobs/*", "corrupt", times=1)
    out = tmp_path / "fit.nwb"
    code = main(
        [
            "fit",
            SOURCE,
            "--download",
            "--cache-dir",
            str(cache),
            "--api-url",
            served.api_url,
            "-o",
            str(out),
            "--rank",
            "1",
            "--rnn-dim",
            "4",
            "--max-iters",
            "2",
            "--no-progress",
            "-q",
        ]
    )
    assert code == 0
    assert _cache_files(cache) == [
        ".sub-1_ses-1_ecephys.nwb.lock",
        ".sub-1_ses-1_ecephys.nwb.verified.json",
        "sub-1_ses-1_ecephys.nwb",
    ]
    cached = next(cache.rglob("sub-1_ses-1_ecephys.nwb"))
    assert cached.read_bytes() == session.read_bytes()
    assert nwb_ltr.read_results(out).provenance["source"]["dandiset_id"] == "000123"


def test_download_that_keeps_failing_leaves_nothing_in_the_cache(served, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    cache = tmp_path / "cache"
    served.inject_fault("/blobs/*", "corrupt", times=10)
    code = main(
        [
            "fit",
            SOURCE,
            "--download",
            "--cache-dir",
            str(cache),
            "--api-url",
            served.api_url,
            "--retries",
            "1",
            "--dry-run",
            "-q",
        ]
    )
    err = capsys.readouterr().err.splitlines()[-1] + "\n"  # after one WARNING line per retry
    assert code == 1
    assert err.startswith(f"error: downloading {ASSET} from {served.api_url}/assets/")
    assert "failed after 2 attempts (sha256 " in err
    assert err.endswith("from the archive); try again later or stream it (drop --download)\n")
    assert _cache_files(cache) == [".sub-1_ses-1_ecephys.nwb.lock"]  # no data file, no .part


# ------------------------------------------------------------------------------ concurrency


def test_concurrent_downloads_share_one_verified_copy(served, session: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """Two processes download the same asset into one cache: one download, both read the same file."""
    cache = tmp_path / "cache"
    served.inject_fault("/blobs/*", "stall", seconds=1.0, times=1)  # widen the race window
    cmd = [
        *CLI,
        "fit",
        SOURCE,
        "--download",
        "--cache-dir",
        str(cache),
        "--api-url",
        served.api_url,
        "--dry-run",
        "-q",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert "tensor: 12 trials × 50 times × 4 units" in out
    assert len(served.blob_requests()) == 1  # the second waited for the lock and reused the copy
    assert _cache_files(cache) == [
        ".sub-1_ses-1_ecephys.nwb.lock",
        ".sub-1_ses-1_ecephys.nwb.verified.json",
        "sub-1_ses-1_ecephys.nwb",
    ]
    assert next(cache.rglob("sub-1_ses-1_ecephys.nwb")).read_bytes() == session.read_bytes()


@pytest.mark.slow
def test_two_fits_into_one_folder_do_not_interfere(session: Path, tmp_path: Path) -> None:
    args = ["--rank", "1", "--rnn-dim", "4", "--max-iters", "20", "--no-progress", "-q"]
    procs = [
        subprocess.Popen(
            [*CLI, "fit", str(session), "-o", str(tmp_path / f"fit{i}.nwb"), "--seed", str(i), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fit0.nwb",
        "fit1.nwb",
    ]  # no temp or checkpoint left
    a, b = (nwb_ltr.read_results(tmp_path / f"fit{i}.nwb") for i in range(2))
    assert (a.provenance["seed"], b.provenance["seed"]) == (0, 1)
    # each equals the same fit run alone
    alone = tmp_path / "alone" / "fit1.nwb"
    assert main(["fit", str(session), "-o", str(alone), "--seed", "1", *args]) == 0
    np.testing.assert_array_equal(nwb_ltr.read_results(alone).trial_factors.values, b.trial_factors.values)
