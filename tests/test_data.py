"""open_session / source_provenance: local files, streamed URLs, DANDI delegation, bad sources."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb_ltr import _dandi
from nwb_ltr.data import open_session, source_provenance
from nwb_ltr.errors import InvalidSourceError, NotNWBError, SourceNotFoundError
from nwb_ltr.testing.dandi_server import DandiServer
from tests.nwbfactory import make_nwbfile, random_spikes, write_nwbfile

SPIKES = random_spikes(3, 20.0, 10.0, seed=7)


@pytest.fixture(scope="module")
def nwb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trials = {"start_time": [0.0, 5.0], "stop_time": [5.0, 10.0], "go_cue_time": [1.0, 6.0]}
    nwbfile = make_nwbfile(SPIKES, trials=trials)
    return write_nwbfile(nwbfile, tmp_path_factory.mktemp("data") / "session.nwb")


def check_session(nwbfile) -> None:
    np.testing.assert_array_equal(nwbfile.units.spike_times.data[:], np.concatenate(SPIKES))
    assert nwbfile.session_id == "ses-001"
    assert len(nwbfile.trials) == 2


# ------------------------------------------------------------------------------------ local


def test_local_path_is_read_only_and_closed(nwb_path: Path):
    before = hashlib.sha256(nwb_path.read_bytes()).hexdigest()
    for source in (nwb_path, str(nwb_path)):
        with open_session(source) as nwbfile:
            check_session(nwbfile)
            dataset = nwbfile.units.spike_times.data
            assert dataset.file.mode == "r"
            with pytest.raises((OSError, ValueError, KeyError)):
                dataset.file.create_dataset("oops", data=[1])  # no write access
        assert not dataset.id.valid  # file closed on exit
    assert hashlib.sha256(nwb_path.read_bytes()).hexdigest() == before


def test_closed_on_error_inside_block(nwb_path: Path):
    with pytest.raises(RuntimeError, match="boom"):
        with open_session(nwb_path) as nwbfile:
            dataset = nwbfile.units.spike_times.data
            raise RuntimeError("boom")
    assert not dataset.id.valid


def test_source_provenance_local(nwb_path: Path):
    prov = source_provenance(nwb_path)
    assert prov == {
        "source": str(nwb_path),
        "kind": "local",
        "path": str(nwb_path.resolve()),
        "size": nwb_path.stat().st_size,
        "sha256": hashlib.sha256(nwb_path.read_bytes()).hexdigest(),
    }


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.nwb"
    empty.write_bytes(b"")
    text = tmp_path / "notes.nwb"
    text.write_text("this is not HDF5\n" * 10)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as handle:
        handle["x"] = np.arange(3)
    return {"empty": empty, "text": text, "plain": plain}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "empty file: {path}; it holds no data, re-download or re-export the NWB file"),
        ("text", "not an HDF5 file: {path}; nwb_ltr reads NWB files stored as HDF5 (.nwb), convert it first"),
        ("plain", "HDF5 file is not an NWB file (no nwb_version attribute): {path}; pass an NWB file"),
    ],
)
def test_not_nwb_files(tmp_path: Path, kind: str, message: str):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(NotNWBError, match=f"^{re.escape(message.format(path=path))}$"):
        with open_session(path):
            pass


def test_truncated_file(tmp_path: Path, nwb_path: Path):
    path = tmp_path / "truncated.nwb"
    path.write_bytes(nwb_path.read_bytes()[:5000])
    with pytest.raises(NotNWBError) as info:
        with open_session(path):
            pass
    text = str(info.value)
    assert text.startswith(f"cannot read HDF5 file {path} (truncated or corrupt: ")
    assert text.endswith("); re-download or re-export it")
    assert "\n" not in text


def test_missing_file_and_folder(tmp_path: Path):
    missing = tmp_path / "nope.nwb"
    message = f"file not found: {missing}; check the path (relative paths start in {Path.cwd()})"
    with pytest.raises(SourceNotFoundError, match=f"^{re.escape(message)}$"):
        with open_session(missing):
            pass
    with pytest.raises(SourceNotFoundError, match=f"^{re.escape(message)}$"):
        source_provenance(missing)
    message = f"{tmp_path} is a folder, not an NWB file; pass the path of an .nwb (HDF5) file"
    with pytest.raises(NotNWBError, match=f"^{re.escape(message)}$"):
        with open_session(tmp_path):
            pass


def test_bad_source_types(nwb_path: Path):
    message = "source must be a path, URL or DANDI id string, got int; pass a str or Path"
    with pytest.raises(InvalidSourceError, match=f"^{re.escape(message)}$"):
        with open_session(123):  # type: ignore[arg-type]
            pass
    message = (
        f"asset='x.nwb' is only used with DANDI sources, not {nwb_path}; drop asset= or pass a dandiset id"
    )
    with pytest.raises(InvalidSourceError, match=f"^{re.escape(message)}$"):
        with open_session(str(nwb_path), asset="x.nwb"):
            pass


# ------------------------------------------------------------------------------------ URLs


@pytest.fixture
def web(tmp_path: Path, nwb_path: Path) -> Iterator[tuple[DandiServer, dict[str, str]]]:
    """Plain range-serving URLs (the test DANDI server's blob URLs), served by another process."""
    (tmp_path / "empty.nwb").write_bytes(b"")
    (tmp_path / "notes.nwb").write_text("not hdf5 " * 50)
    files = {"session": nwb_path, "empty": tmp_path / "empty.nwb", "notes": tmp_path / "notes.nwb"}
    with DandiServer() as server:
        urls = {
            name: server.blob_url(server.add_asset("000001", f"{name}.nwb", f)) for name, f in files.items()
        }
        urls["missing"] = f"{server.base_url}/blobs/missing"
        yield server, urls


def test_url_streaming(web):
    server, urls = web
    url = urls["session"]
    with open_session(url, timeout=30, retries=1) as nwbfile:
        check_session(nwbfile)
        dataset = nwbfile.units.spike_times.data
    assert not dataset.id.valid
    assert source_provenance(url) == {"source": url, "kind": "url", "url": url}


def test_url_streaming_with_disk_cache(web, tmp_path: Path):
    server, urls = web
    cache = tmp_path / "cache"
    with open_session(urls["session"], cache_dir=cache) as nwbfile:
        check_session(nwbfile)
    assert any(p.is_file() for p in cache.rglob("*"))
    hits = len(server.blob_requests())
    with open_session(urls["session"], cache_dir=cache) as nwbfile:
        check_session(nwbfile)
    assert len(server.blob_requests()) == hits + 1  # only the size probe; every chunk came from the cache


def test_streamed_read_survives_threads_that_wait_for_h5py(web):
    """While h5py reads a streamed file it holds a process-wide lock; any thread that frees an h5py
    object waits for it.  An HTTP server in a thread of this process that did so (a garbage
    collection is enough) deadlocked the read until the timeout: the flaky CI failures of
    ``test_url_streaming*``.  The test server answers from its own process, so this read finishes."""
    import gc

    server, urls = web
    assert server.pid is not None and server.pid != os.getpid()

    def like_freeing_an_h5py_object(phase: str, info: dict) -> None:
        if threading.current_thread() is not threading.main_thread():
            with h5py._objects.phil:  # what h5py's ObjectID.__dealloc__ takes
                pass

    threshold = gc.get_threshold()
    gc.callbacks.append(like_freeing_an_h5py_object)
    gc.set_threshold(1)  # collect on (nearly) every allocation, in whichever thread allocates
    t0 = time.monotonic()
    try:
        with open_session(urls["session"], timeout=10, retries=0) as nwbfile:
            check_session(nwbfile)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(like_freeing_an_h5py_object)
    # with the server in a thread here, a request hangs until the 10 s timeout (then fails, or
    # h5py rereads and the open succeeds late); a healthy read takes well under a second
    assert time.monotonic() - t0 < 10


def test_url_errors(web):
    server, urls = web
    cases = [
        (urls["missing"], SourceNotFoundError, f"URL not found (HTTP 404): {urls['missing']}; check the URL"),
        (urls["empty"], NotNWBError, f"empty file: {urls['empty']}; it holds no data, check the URL"),
        (
            urls["notes"],
            NotNWBError,
            f"not an HDF5 file: {urls['notes']}; nwb_ltr reads NWB files stored as HDF5 (.nwb)",
        ),
    ]
    for url, error, message in cases:
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            with open_session(url, retries=0):
                pass
    server.inject_fault("/blobs/*", "norange", times=10)
    message = (
        f"the server of {urls['session']} does not support HTTP range requests; download the file "
        "and open the local copy"
    )
    with pytest.raises(InvalidSourceError, match=f"^{re.escape(message)}$"):
        with open_session(urls["session"]):
            pass


def test_url_retries_are_bounded(web):
    server, urls = web
    server.inject_fault("/blobs/*", "status", status=503, times=100)
    url = urls["session"]
    message = (
        f"cannot reach {url} (GET {url} failed 3 times: HTTP 503); check the URL and "
        "the network, or download the file and open the local copy"
    )
    with pytest.raises(SourceNotFoundError, match=f"^{re.escape(message)}$"):
        with open_session(url, retries=2, timeout=2):
            pass
    assert len(server.blob_requests()) == 3


def test_unreachable_url():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.nwb"
    with pytest.raises(SourceNotFoundError) as info:
        with open_session(url, retries=1, timeout=2):
            pass
    assert str(info.value).startswith(f"cannot reach {url} (GET {url} failed 2 times: ")
    assert str(info.value).endswith(
        "); check the URL and the network, or download the file and open the local copy"
    )


# ------------------------------------------------------------------------------------ DANDI


def test_dandi_sources_are_delegated(monkeypatch, nwb_path: Path, web):
    _, urls = web
    calls = []

    def fake_resolve(source, **options):
        calls.append((source, options))
        local = options["download"]
        return _dandi.ResolvedSource(
            local_path=nwb_path if local else None,
            url=None if local else urls["session"],
            provenance={"dandiset_id": "000123", "asset_path": "sub-1/ses.nwb"},
        )

    monkeypatch.setattr(_dandi, "resolve", fake_resolve)
    for download in (False, True):
        with open_session("DANDI:000123/sub-1/ses.nwb", download=download, timeout=5.0, retries=1) as nwbfile:
            check_session(nwbfile)
    with open_session("000123", asset="sub-1/ses.nwb", api_url="http://127.0.0.1:1/api") as nwbfile:
        check_session(nwbfile)
    assert calls[0] == (
        "DANDI:000123/sub-1/ses.nwb",
        {"asset": None, "api_url": None, "download": False, "cache_dir": None, "timeout": 5.0, "retries": 1},
    )
    assert calls[2][1]["asset"] == "sub-1/ses.nwb" and calls[2][1]["api_url"] == "http://127.0.0.1:1/api"
    assert source_provenance("DANDI:000123/sub-1/ses.nwb") == {
        "source": "DANDI:000123/sub-1/ses.nwb",
        "kind": "dandi",
        "dandiset_id": "000123",
        "asset_path": "sub-1/ses.nwb",
    }


def test_dandi_loopback_server(nwb_path: Path, tmp_path: Path):
    with DandiServer() as server:
        server.add_asset("000123", "sub-1/sub-1_ses-1.nwb", nwb_path)
        source = "DANDI:000123/sub-1/sub-1_ses-1.nwb"
        with open_session(source, api_url=server.api_url, timeout=5, retries=1) as nwbfile:
            check_session(nwbfile)
        with open_session(source, api_url=server.api_url, download=True, cache_dir=tmp_path) as nwbfile:
            check_session(nwbfile)
        prov = source_provenance(source, api_url=server.api_url)
    assert prov["kind"] == "dandi"
    assert prov["dandiset_id"] == "000123"
    assert prov["asset_path"] == "sub-1/sub-1_ses-1.nwb"
    assert prov["sha256"] == hashlib.sha256(nwb_path.read_bytes()).hexdigest()


def test_data_layer_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, nwb_ltr.data, nwb_ltr.align, nwb_ltr.inspection; "
        "print(sorted(m for m in ('torch', 'pynwb', 'h5py') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # torch never; pynwb/h5py only when a file is opened
