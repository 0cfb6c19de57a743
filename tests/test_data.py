"""open_session / source_provenance: local files, streamed URLs, DANDI delegation, bad sources."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb_ltr import _dandi
from nwb_ltr.data import open_session, source_provenance
from nwb_ltr.errors import InvalidSourceError, NotNWBError, SourceNotFoundError
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


class RangeHandler(BaseHTTPRequestHandler):
    """Serves files of ``server.root`` with HTTP range support (``server.mode`` adds failures)."""

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.server.hits += 1  # type: ignore[attr-defined]
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "503":
            self.send_error(503)
            return
        path = self.server.root / self.path.lstrip("/")  # type: ignore[attr-defined]
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match is None or mode == "norange":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        first = int(match[1])
        last = min(int(match[2]) if match[2] else len(body) - 1, len(body) - 1)
        if first >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        self.wfile.write(body[first : last + 1])


@pytest.fixture
def http_root(tmp_path: Path, nwb_path: Path) -> Iterator[tuple[ThreadingHTTPServer, str]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "session.nwb").write_bytes(nwb_path.read_bytes())
    (root / "empty.nwb").write_bytes(b"")
    (root / "notes.nwb").write_text("not hdf5 " * 50)
    server = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    server.root, server.mode, server.hits = root, "ok", 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_streaming(http_root):
    server, base = http_root
    url = f"{base}/session.nwb"
    with open_session(url, timeout=30, retries=1) as nwbfile:  # generous: a loaded CI machine stalls
        check_session(nwbfile)
        dataset = nwbfile.units.spike_times.data
    assert not dataset.id.valid
    assert source_provenance(url) == {"source": url, "kind": "url", "url": url}


def test_url_streaming_with_disk_cache(http_root, tmp_path: Path):
    server, base = http_root
    cache = tmp_path / "cache"
    with open_session(f"{base}/session.nwb", cache_dir=cache) as nwbfile:
        check_session(nwbfile)
    assert any(p.is_file() for p in cache.rglob("*"))
    hits = server.hits
    with open_session(f"{base}/session.nwb", cache_dir=cache) as nwbfile:
        check_session(nwbfile)
    assert server.hits == hits + 1  # only the size probe; every chunk came from the cache


def test_url_errors(http_root):
    server, base = http_root
    cases = [
        (
            f"{base}/missing.nwb",
            SourceNotFoundError,
            f"URL not found (HTTP 404): {base}/missing.nwb; check the URL",
        ),
        (f"{base}/empty.nwb", NotNWBError, f"empty file: {base}/empty.nwb; it holds no data, check the URL"),
        (
            f"{base}/notes.nwb",
            NotNWBError,
            f"not an HDF5 file: {base}/notes.nwb; nwb_ltr reads NWB files stored as HDF5 (.nwb)",
        ),
    ]
    for url, error, message in cases:
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            with open_session(url, retries=0):
                pass
    server.mode = "norange"
    message = (
        f"the server of {base}/session.nwb does not support HTTP range requests; download the file "
        "and open the local copy"
    )
    with pytest.raises(InvalidSourceError, match=f"^{re.escape(message)}$"):
        with open_session(f"{base}/session.nwb"):
            pass


def test_url_retries_are_bounded(http_root):
    server, base = http_root
    server.mode = "503"
    message = (
        f"cannot reach {base}/session.nwb (GET {base}/session.nwb failed 3 times: HTTP 503); check the URL and "
        "the network, or download the file and open the local copy"
    )
    with pytest.raises(SourceNotFoundError, match=f"^{re.escape(message)}$"):
        with open_session(f"{base}/session.nwb", retries=2, timeout=2):
            pass
    assert server.hits == 3


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


def test_dandi_sources_are_delegated(monkeypatch, nwb_path: Path, http_root):
    _, base = http_root
    calls = []

    def fake_resolve(source, **options):
        calls.append((source, options))
        local = options["download"]
        return _dandi.ResolvedSource(
            local_path=nwb_path if local else None,
            url=None if local else f"{base}/session.nwb",
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
    from nwb_ltr.testing.dandi_server import DandiServer

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
