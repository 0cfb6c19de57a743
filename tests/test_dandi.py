"""DANDI sources through the real ``dandi`` client, against the loopback test server only."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from dandi.consts import known_instances

from nwb_ltr import _dandi
from nwb_ltr._dandi import AssetInfo, DandiSource, is_dandi_source, list_assets, parse_source, resolve
from nwb_ltr._dandi_http import _CHUNK
from nwb_ltr.errors import ConfigError, DandiError, InvalidSourceError, SourceNotFoundError
from nwb_ltr.testing.dandi_server import DandiServer

pytest_plugins = ["nwb_ltr.testing.pytest_plugin"]

ASSET = "sub-1/sub-1_ses-1.nwb"
SOURCE = f"DANDI:000001/{ASSET}"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything tries to resolve a host other than the loopback address."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in ("127.0.0.1", "localhost", None):
            raise AssertionError(f"test tried to reach {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture(scope="module")
def nwb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small NWB file with 5 units and 6 trials."""
    from pynwb import NWBHDF5IO
    from pynwb.testing.mock.file import mock_NWBFile

    nwbfile = mock_NWBFile(session_id="ses-1")
    rng = np.random.default_rng(0)
    for _ in range(5):
        nwbfile.add_unit(spike_times=np.sort(rng.uniform(0, 6, 40)))
    for i in range(6):
        nwbfile.add_trial(start_time=float(i), stop_time=i + 0.9)
    path = tmp_path_factory.mktemp("nwb") / "session.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)
    return path


@pytest.fixture
def server(dandi_server: DandiServer, nwb_path: Path, tmp_path: Path) -> DandiServer:
    """Dandiset 000001 (draft) with two NWB sessions and a sidecar JSON file."""
    other = tmp_path / "other.nwb"
    other.write_bytes(nwb_path.read_bytes() + b"\0")
    dandi_server.add_asset("000001", ASSET, nwb_path)
    dandi_server.add_asset("000001", "sub-2/sub-2_ses-1.nwb", other)
    sidecar = tmp_path / "dandiset.json"
    sidecar.write_text("{}")
    dandi_server.add_asset("000001", "dandiset.json", sidecar)
    return dandi_server


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


# ------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DANDI:000688/sub-C/x.nwb", DandiSource("000688", None, "sub-C/x.nwb")),
        ("dandi:000688/sub-C/x.nwb", DandiSource("000688", None, "sub-C/x.nwb")),
        ("DANDI:000688@0.240101.1200/sub-C/x.nwb", DandiSource("000688", "0.240101.1200", "sub-C/x.nwb")),
        ("DANDI:000688@draft/sub-C/x.nwb", DandiSource("000688", "draft", "sub-C/x.nwb")),
        ("dandi://DANDI/000688@draft/sub-C/x.nwb", DandiSource("000688", "draft", "sub-C/x.nwb", "dandi")),
        ("dandi://dandi-sandbox/000688/x.nwb", DandiSource("000688", None, "x.nwb", "dandi-sandbox")),
        ("dandi://DANDI/000688", DandiSource("000688", None, None, "dandi")),
        ("DANDI:000688", DandiSource("000688")),
        ("DANDI:000688@draft", DandiSource("000688", "draft")),
        ("000688", DandiSource("000688")),
        ("DANDI:000688/sub-C/*.nwb", DandiSource("000688", None, "sub-C/*.nwb")),
        (
            "https://dandiarchive.org/dandiset/000688/draft/files?location=sub-C/x.nwb",
            DandiSource("000688", "draft", "sub-C/x.nwb", "dandi"),
        ),
        ("https://dandiarchive.org/dandiset/000688", DandiSource("000688", None, None, "dandi")),
    ],
)
def test_parse_source_forms(text: str, expected: DandiSource) -> None:
    assert is_dandi_source(text)
    assert parse_source(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "DANDI:00688/x.nwb",
            "malformed dandiset id '00688' in 'DANDI:00688/x.nwb': DANDI ids have 6 digits, like DANDI:000688",
        ),
        (
            "DANDI:0006881",
            "malformed dandiset id '0006881' in 'DANDI:0006881': DANDI ids have 6 digits, like DANDI:000688",
        ),
        (
            "DANDI:abc/x.nwb",
            "malformed dandiset id 'abc' in 'DANDI:abc/x.nwb': DANDI ids have 6 digits, like DANDI:000688",
        ),
        ("12345", "malformed dandiset id '12345' in '12345': DANDI ids have 6 digits, like DANDI:000688"),
        (
            "DANDI:000688@v1/x.nwb",
            "malformed version 'v1' in 'DANDI:000688@v1/x.nwb': use 'draft' or a published version like 0.240101.1200",
        ),
        (
            "DANDI:000688@/x.nwb",
            "malformed version '' in 'DANDI:000688@/x.nwb': use 'draft' or a published version like 0.240101.1200",
        ),
        (
            "DANDI:000688/",
            "empty asset path in 'DANDI:000688/': give one after the id, like DANDI:000688/sub-1/sub-1_ses-1.nwb",
        ),
        ("DANDI:000688/../x.nwb", "asset path '../x.nwb' in 'DANDI:000688/../x.nwb' must not contain '..'"),
        (
            "dandi://nowhere/000688/x.nwb",
            "unknown DANDI instance 'nowhere' in 'dandi://nowhere/000688/x.nwb'; use one of "
            + ", ".join(name.upper() for name in known_instances)
            + ", or DANDI:<id>/<path> with --api-url",
        ),
        ("", "empty DANDI source ''; use DANDI:<6-digit id>[@<version>]/<asset path>"),
        (
            "sub-1.nwb",
            "not a DANDI source: 'sub-1.nwb'; use DANDI:<6-digit id>[@<version>]/<asset path> or dandi://DANDI/<id>/<path>",
        ),
    ],
)
def test_parse_source_malformed(text: str, message: str) -> None:
    with pytest.raises(InvalidSourceError, match=re.escape(message)):
        parse_source(text)


def test_is_dandi_source_rejects_paths_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not is_dandi_source("session.nwb")
    assert not is_dandi_source("https://example.org/x.nwb")
    assert not is_dandi_source(Path("000688"))
    assert is_dandi_source("000688")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "000688").write_bytes(b"")  # a local file named like an id is a local file
    assert not is_dandi_source("000688")


# ------------------------------------------------------------------------------------- listing


def test_list_assets_lists_nwb_assets_sorted(server: DandiServer) -> None:
    assets = list_assets("000001", api_url=server.api_url)
    assert [a.path for a in assets] == [ASSET, "sub-2/sub-2_ses-1.nwb"]
    served = server.store.dandisets["000001"].draft.assets[ASSET]
    assert assets[0] == AssetInfo(ASSET, served.size, served.asset_id, "draft")
    everything = list_assets("DANDI:000001@draft", api_url=server.api_url, nwb_only=False)
    assert [a.path for a in everything] == ["dandiset.json", ASSET, "sub-2/sub-2_ses-1.nwb"]


def test_list_assets_follows_pages_and_versions(server: DandiServer, tmp_path: Path) -> None:
    version = server.publish("000001", "0.240101.1200")
    extra = tmp_path / "late.nwb"
    extra.write_bytes(b"late")
    server.add_asset("000001", "sub-3/sub-3_ses-1.nwb", extra)  # draft only
    published = list_assets("000001", api_url=server.api_url)  # default: latest published
    assert [a.path for a in published] == [ASSET, "sub-2/sub-2_ses-1.nwb"]
    assert {a.version for a in published} == {version}
    assert len(list_assets("000001", "draft", api_url=server.api_url)) == 3
    assert len(list_assets(f"DANDI:000001@{version}", api_url=server.api_url)) == 2


# ------------------------------------------------------------------------------------- streaming


def test_resolve_streaming_returns_blob_url_with_identical_bytes(server: DandiServer, nwb_path: Path) -> None:
    resolved = resolve(SOURCE, api_url=server.api_url)
    assert resolved.local_path is None
    assert resolved.url is not None and resolved.url.startswith(f"{server.base_url}/blobs/")
    assert "?" not in resolved.url  # strip_query=True
    data = nwb_path.read_bytes()
    part = requests.get(resolved.url, headers={"Range": "bytes=100-299"}, timeout=5)
    assert part.status_code == 206 and part.content == data[100:300]
    assert requests.get(resolved.url, timeout=5).content == data
    prov = resolved.provenance
    assert prov["sha256"] == _sha256(nwb_path)
    assert (prov["dandiset_id"], prov["version"], prov["asset_path"], prov["size"]) == (
        "000001",
        "draft",
        ASSET,
        len(data),
    )
    assert prov["api_url"] == server.api_url and prov["source"] == SOURCE
    assert prov["asset_id"] == server.store.dandisets["000001"].draft.assets[ASSET].asset_id


def test_streamed_file_opens_with_pynwb_through_remfile(server: DandiServer) -> None:
    import h5py
    import remfile
    from pynwb import NWBHDF5IO

    url = resolve(f"dandi://DANDI/000001@draft/{ASSET}", api_url=server.api_url).url
    rfile = remfile.File(url)
    with h5py.File(rfile, "r") as h5, NWBHDF5IO(file=h5, load_namespaces=True) as io:
        nwbfile = io.read()
        assert len(nwbfile.units) == 5 and len(nwbfile.trials) == 6
    assert server.blob_requests()[-1].range is not None  # read by range requests


def test_resolve_bare_id_with_asset_and_env_api_url(server: DandiServer) -> None:
    # the plugin sets NWB_LTR_DANDI_API_URL to the loopback server
    resolved = resolve("000001", asset=ASSET)
    assert resolved.provenance["api_url"] == server.api_url
    assert resolved.provenance["asset_path"] == ASSET


def test_resolve_published_version(server: DandiServer) -> None:
    version = server.publish("000001")
    assert resolve(SOURCE, api_url=server.api_url).provenance["version"] == version
    assert resolve(f"DANDI:000001@draft/{ASSET}", api_url=server.api_url).provenance["version"] == "draft"


# ------------------------------------------------------------------------------------- download


def test_download_verifies_caches_and_reuses(server: DandiServer, nwb_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = resolve(SOURCE, api_url=server.api_url, cache_dir=cache, download=True)
    assert first.url is None
    assert first.local_path == cache / "dandi" / "000001" / "draft" / "sub-1" / "sub-1_ses-1.nwb"
    assert first.local_path.read_bytes() == nwb_path.read_bytes()
    assert len(server.blob_requests()) == 1
    assert not list(first.local_path.parent.glob("*.part"))
    server.clear_requests()
    second = resolve(SOURCE, api_url=server.api_url, cache_dir=cache, download=True)
    assert second.local_path == first.local_path
    assert server.blob_requests(method=None) == []
    assert not [r for r in server.requests if r.kind == "download"]
    assert second.provenance == first.provenance


def test_download_default_cache_dir_from_env(
    server: DandiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NWB_LTR_CACHE_DIR", str(tmp_path / "envcache"))
    resolved = resolve(SOURCE, download=True)
    assert resolved.local_path is not None and resolved.local_path.is_relative_to(tmp_path / "envcache")


def test_download_rejects_corrupt_bytes(server: DandiServer, tmp_path: Path) -> None:
    server.inject_fault("/blobs/*", "corrupt", times=5)
    msg = f"downloading {ASSET} from {server.api_url}/assets/"
    with pytest.raises(DandiError, match=re.escape(msg)) as info:
        resolve(SOURCE, api_url=server.api_url, cache_dir=tmp_path / "cache", download=True, retries=1)
    assert "failed after 2 attempts (sha256 " in str(info.value)
    assert str(info.value).endswith("from the archive); try again later or stream it (drop --download)")
    # nothing half-written is left (the empty lock file that serialises downloads stays)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_download_retries_after_corruption_and_resumes_after_truncation(
    server: DandiServer, nwb_path: Path, tmp_path: Path
) -> None:
    server.inject_fault("/blobs/*", "corrupt")
    server.inject_fault("/blobs/*", "truncate", nbytes=100_000)
    path = resolve(SOURCE, api_url=server.api_url, cache_dir=tmp_path, download=True, retries=2).local_path
    assert path is not None and path.read_bytes() == nwb_path.read_bytes()
    assert nwb_path.stat().st_size > 100_000 > _CHUNK
    assert [r.range for r in server.blob_requests()] == [None, None, f"bytes={_CHUNK}-"]  # resumed


def test_download_retries_a_stalled_blob(server: DandiServer, nwb_path: Path, tmp_path: Path) -> None:
    server.inject_fault("/blobs/*", "stall", seconds=1.0)
    start = time.monotonic()
    path = resolve(SOURCE, api_url=server.api_url, cache_dir=tmp_path, download=True, timeout=0.3).local_path
    assert path is not None and path.read_bytes() == nwb_path.read_bytes()
    assert time.monotonic() - start < 1.0  # gave up on the stalled answer after the timeout
    assert sorted(str(r.fault) for r in server.blob_requests()) == ["None", "stall"]


def test_download_replaces_a_tampered_cached_copy(
    server: DandiServer, nwb_path: Path, tmp_path: Path
) -> None:
    path = resolve(SOURCE, api_url=server.api_url, cache_dir=tmp_path, download=True).local_path
    assert path is not None
    path.write_bytes(b"x" * path.stat().st_size)
    server.clear_requests()
    again = resolve(SOURCE, api_url=server.api_url, cache_dir=tmp_path, download=True).local_path
    assert again == path and path.read_bytes() == nwb_path.read_bytes()
    assert len(server.blob_requests()) == 1


def test_digests_match_dandischema_etag_over_several_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dandischema.digests.dandietag import DandiETag, PartGenerator

    from nwb_ltr._dandi_http import _Digests

    monkeypatch.setattr(PartGenerator, "MIN_PART_SIZE", 100)
    monkeypatch.setattr(PartGenerator, "DEFAULT_PART_SIZE", 1000)
    data = np.random.default_rng(1).bytes(4321)
    (tmp_path / "f").write_bytes(data)
    digests = _Digests(len(data))
    for start in range(0, len(data), 777):
        digests.update(data[start : start + 777])
    assert digests.etag() == DandiETag.from_file(tmp_path / "f").as_str()
    assert digests.etag().endswith("-5")
    assert digests.sha256.hexdigest() == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------- assets


def test_asset_glob_matching_one(server: DandiServer) -> None:
    assert resolve("DANDI:000001", asset="sub-2/*.nwb", api_url=server.api_url).provenance["asset_path"] == (
        "sub-2/sub-2_ses-1.nwb"
    )


def test_asset_glob_matching_several(server: DandiServer) -> None:
    msg = (
        "asset glob '*.nwb' matches 2 NWB assets in DANDI:000001@draft: sub-1/sub-1_ses-1.nwb, "
        "sub-2/sub-2_ses-1.nwb; pass a more specific --asset"
    )
    with pytest.raises(InvalidSourceError, match=re.escape(msg)):
        resolve("DANDI:000001", asset="*.nwb", api_url=server.api_url)


def test_missing_asset_suggests_close_matches(server: DandiServer) -> None:
    msg = (
        f"no asset 'sub-1/sub-1_ses-2.nwb' in DANDI:000001@draft on {server.api_url}; "
        "did you mean 'sub-1/sub-1_ses-1.nwb' or 'sub-2/sub-2_ses-1.nwb'?"
    )
    with pytest.raises(SourceNotFoundError, match=re.escape(msg)):
        resolve("DANDI:000001/sub-1/sub-1_ses-2.nwb", api_url=server.api_url)
    with pytest.raises(
        SourceNotFoundError, match=re.escape("it has 3 assets; list them with: nwb_ltr inspect DANDI:000001")
    ):
        resolve("DANDI:000001", asset="zzz/*.txt", api_url=server.api_url)


def test_missing_dandiset_and_version(server: DandiServer) -> None:
    msg = (
        f"dandiset 000002 does not exist on {server.api_url}; check the id, or --api-url for another instance"
    )
    with pytest.raises(SourceNotFoundError, match=re.escape(msg)):
        resolve(f"DANDI:000002/{ASSET}", api_url=server.api_url)
    msg = f"dandiset 000001 has no version '0.999999.9999' on {server.api_url}; available: draft"
    with pytest.raises(SourceNotFoundError, match=re.escape(msg)):
        resolve(f"DANDI:000001@0.999999.9999/{ASSET}", api_url=server.api_url)


def test_bare_dandiset_without_asset(server: DandiServer) -> None:
    msg = (
        "'DANDI:000001' names a dandiset, not an asset; pass --asset PATH (or a glob); "
        "list its NWB assets with: nwb_ltr inspect DANDI:000001"
    )
    with pytest.raises(InvalidSourceError, match=re.escape(msg)):
        resolve("DANDI:000001", api_url=server.api_url)
    with pytest.raises(
        InvalidSourceError, match=re.escape(f"{SOURCE!r} already names asset {ASSET!r}; drop --asset")
    ):
        resolve(SOURCE, asset=ASSET, api_url=server.api_url)


# ------------------------------------------------------------------------------------- failures


def test_server_errors_are_retried_a_bounded_number_of_times(server: DandiServer) -> None:
    server.inject_fault("/api/dandisets/000001/", "status", status=500, times=100)
    start = time.monotonic()
    msg = (
        f"the DANDI API at {server.api_url} answered HTTP 500 for /api/dandisets/000001/ (after 2 retries); "
        "try again later or check --api-url"
    )
    with pytest.raises(DandiError, match=re.escape(msg)):
        resolve(SOURCE, api_url=server.api_url, retries=2)
    assert time.monotonic() - start < 5
    assert len([r for r in server.requests if r.path == "/api/dandisets/000001/"]) == 3


def test_transient_errors_are_retried_honouring_retry_after(server: DandiServer) -> None:
    server.inject_fault("/api/dandisets/000001/", "status", status=503, retry_after=0.3, times=2)
    start = time.monotonic()
    assert resolve(SOURCE, api_url=server.api_url, retries=2).url is not None
    assert time.monotonic() - start >= 0.6
    statuses = [r.status for r in server.requests if r.path == "/api/dandisets/000001/"]
    assert statuses[:3] == [503, 503, 200]


def test_unreachable_server_fails_fast_with_one_line(tmp_path: Path) -> None:
    url = _closed_port_url()
    start = time.monotonic()
    msg = f"cannot reach the DANDI API at {url} (connection refused, 4 attempts); check your connection or --api-url"
    with pytest.raises(DandiError, match=re.escape(msg)):
        resolve(SOURCE, api_url=url, retries=3)
    assert time.monotonic() - start < 5
    with pytest.raises(DandiError, match=re.escape(f"cannot reach the DANDI API at {url}")):
        list_assets("000001", api_url=url, retries=0)


def test_stalled_server_times_out(server: DandiServer) -> None:
    server.inject_fault("/api/info/", "stall", seconds=2)
    msg = f"cannot reach the DANDI API at {server.api_url} (no answer within 0.3 s, 1 attempt)"
    start = time.monotonic()
    with pytest.raises(DandiError, match=re.escape(msg)):
        resolve(SOURCE, api_url=server.api_url, timeout=0.3, retries=0)
    assert time.monotonic() - start < 1.5


def test_connection_reset_is_retried(server: DandiServer) -> None:
    server.inject_fault("/api/info/", "reset")
    assert resolve(SOURCE, api_url=server.api_url, retries=1).url is not None
    assert [r.fault for r in server.requests if r.path == "/api/info/"] == ["reset", None]


def test_not_a_dandi_api(server: DandiServer) -> None:
    url = f"{server.base_url}/elsewhere"
    msg = f"{url} does not look like a DANDI API (no schema_version at {url}/info/); check --api-url"
    with pytest.raises(DandiError, match=re.escape(msg)):
        resolve(SOURCE, api_url=url)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        ({"retries": -1}, "retries must be a whole number >= 0, got -1"),
        (
            {"api_url": "ftp://x"},
            "api_url must be an http(s) URL like https://api.dandiarchive.org/api, got 'ftp://x'",
        ),
    ],
)
def test_bad_network_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(SOURCE, **kwargs)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NWB_LTR_CACHE_DIR", raising=False)
    assert _dandi.default_cache_dir().name == "nwb_ltr"
    monkeypatch.setenv("NWB_LTR_CACHE_DIR", str(tmp_path))
    assert _dandi.default_cache_dir() == tmp_path


# ------------------------------------------------------------------------------------- data layer


def test_open_session_streamed_and_downloaded_give_identical_data(
    server: DandiServer, tmp_path: Path
) -> None:
    from nwb_ltr.data import open_session

    def read(**kwargs: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with open_session(SOURCE, api_url=server.api_url, cache_dir=tmp_path / "cache", **kwargs) as nwbfile:
            units = nwbfile.units
            return (
                units.spike_times.data[:],
                units.spike_times_index.data[:],
                nwbfile.trials.start_time.data[:],
            )

    streamed = read()
    assert server.blob_requests()  # streaming read the blob by ranges
    downloaded = read(download=True)
    for a, b in zip(streamed, downloaded):
        np.testing.assert_array_equal(a, b)
    assert len(downloaded[1]) == 5 and len(downloaded[2]) == 6
    server.clear_requests()
    np.testing.assert_array_equal(read(download=True)[0], streamed[0])
    assert server.blob_requests(method=None) == []  # the cached download is reused


# ------------------------------------------------------------------------------------- the server


def test_server_blob_ranges_head_and_errors(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4
    (tmp_path / "000007" / "sub-x").mkdir(parents=True)
    (tmp_path / "000007" / "sub-x" / "a.nwb").write_bytes(data)
    (tmp_path / "000007" / ".hidden").write_bytes(b"skip me")
    with DandiServer(root=tmp_path) as srv:
        (served,) = srv.store.dandisets["000007"].draft.assets.values()
        url = f"{srv.base_url}/blobs/{served.blob_id}"
        assert requests.get(url, headers={"Range": "bytes=-10"}, timeout=5).content == data[-10:]
        tail = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=5)
        assert (tail.status_code, tail.headers["Content-Range"], tail.content) == (
            206,
            "bytes 1000-1023/1024",
            data[1000:],
        )
        beyond = requests.get(url, headers={"Range": "bytes=5000-"}, timeout=5)
        assert (beyond.status_code, beyond.headers["Content-Range"]) == (416, "bytes */1024")
        head = requests.head(url, timeout=5)
        assert (head.status_code, head.headers["Content-Length"], head.content) == (200, "1024", b"")
        assert requests.get(f"{srv.api_url}/nowhere/", timeout=5).status_code == 404
        assert requests.post(f"{srv.api_url}/dandisets/", timeout=5).status_code == 405
        page = requests.get(
            f"{srv.api_url}/dandisets/000007/versions/draft/assets/?page_size=1&page=9", timeout=5
        )
        assert page.status_code == 404
        redirect = requests.get(
            f"{srv.api_url}/assets/{served.asset_id}/download/", allow_redirects=False, timeout=5
        )
        assert redirect.status_code == 302 and redirect.headers["Location"].startswith(url + "?")
        with pytest.raises(ValueError, match=re.escape("unknown fault kind 'boom'")):
            srv.inject_fault("/blobs/*", "boom")
        assert [r.path for r in srv.requests][:1] == [f"/blobs/{served.blob_id}"]


def test_server_pagination_with_the_dandi_client(nwb_path: Path) -> None:
    from dandi.dandiapi import DandiAPIClient

    paths = [f"sub-{i:02d}/sub-{i:02d}_ses-1.nwb" for i in range(7)]
    with DandiServer({"000003": dict.fromkeys(paths, nwb_path)}) as srv:
        client = DandiAPIClient(api_url=srv.api_url)  # the stock client: /server-info, no nwb_ltr code
        client.page_size = 2
        dandiset = client.get_dandiset("000003", "draft")
        assert sorted(a.path for a in dandiset.get_assets()) == paths
        pages = {r.query.get("page") for r in srv.requests if r.path.endswith("/assets/")}
        assert pages == {None, "2", "3", "4"}
        remote = dandiset.get_asset_by_path(paths[3])
        assert remote.get_raw_digest("dandi:sha2-256") == _sha256(nwb_path)
        from dandischema.digests.dandietag import DandiETag

        assert remote.get_digest().value == DandiETag.from_file(nwb_path).as_str()


def test_server_runs_in_its_own_process_and_keeps_its_log(nwb_path: Path) -> None:
    server = DandiServer({"000001": {"a.nwb": nwb_path}}, start=False)
    server.inject_fault("/api/info/", "status", status=503)  # queued before the process starts
    with server:
        pid = server.pid
        assert pid is not None and pid != os.getpid()
        assert requests.get(f"{server.api_url}/info/", timeout=5).status_code == 503
        assert requests.get(f"{server.api_url}/info/", timeout=5).status_code == 200
        server.add_asset("000002", "b.nwb", nwb_path)  # added while serving: served at once
        assert requests.get(f"{server.api_url}/dandisets/000002/", timeout=5).status_code == 200
    assert [(r.path, r.status, r.fault) for r in server.requests] == [
        ("/api/info/", 503, "status"),
        ("/api/info/", 200, None),
        ("/api/dandisets/000002/", 200, None),
    ]
    assert server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the server process has exited
    with pytest.raises(RuntimeError, match="^this DandiServer was stopped; make a new one$"):
        server.start()
