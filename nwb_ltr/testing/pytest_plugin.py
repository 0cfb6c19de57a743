"""pytest plugin: a loopback DANDI archive for testing pipelines that read from DANDI.

Installing nwb_ltr registers this plugin (entry point ``pytest11``), so any test can ask for
the ``dandi_server`` fixture: a :class:`~nwb_ltr.testing.dandi_server.DandiServer` on
127.0.0.1 that speaks the part of the DANDI REST API the ``dandi`` client and ``remfile`` use.
Without the entry point, load it from a test module or ``conftest.py`` with::

    pytest_plugins = ["nwb_ltr.testing.pytest_plugin"]

While the fixture is active, ``$NWB_LTR_DANDI_API_URL`` points at the server (so nwb_ltr calls
that are not given ``api_url=`` cannot reach the real archive) and ``$DANDI_NO_ET`` is set (no
version check over the internet).

Examples
--------
A pipeline test against the real ``dandi`` client::

    from dandi.dandiapi import DandiAPIClient

    def test_my_pipeline(dandi_server, tmp_path):
        asset = dandi_server.add_asset("000001", "sub-1/sub-1_ses-1.nwb", "tests/data/session.nwb")
        version = dandi_server.publish("000001")          # optional: a published version too
        client = DandiAPIClient(api_url=dandi_server.api_url)
        remote = client.get_dandiset("000001", version).get_asset_by_path(asset.path)
        url = remote.get_content_url(follow_redirects=1, strip_query=True)
        ...                                               # stream ``url`` with remfile, or download
        assert len(dandi_server.blob_requests()) == 1     # the request log

Faults for reliability tests (consumed by the next matching requests)::

    dandi_server.inject_fault("/api/dandisets/*", "status", status=503, retry_after=1, times=2)
    dandi_server.inject_fault("/blobs/*", "truncate", nbytes=1000)
    dandi_server.inject_fault("/blobs/*", "stall", seconds=5)
    dandi_server.inject_fault("/api/info/", "reset")
    dandi_server.inject_fault("/blobs/*", "corrupt")
    dandi_server.inject_fault("/blobs/*", "norange")                 # 200 + whole body, no ranges
    dandi_server.inject_fault("/blobs/*", "stall", seconds=5, after=2)  # mid-stream, after 2 reads

The server answers from its own process (see :class:`~nwb_ltr.testing.dandi_server.DandiServer`),
so a streamed ``h5py`` read in the test, which holds h5py's process-wide lock while it waits for
bytes, cannot deadlock with it.

With nwb_ltr itself: ``nwb_ltr.open_session("DANDI:000001/sub-1/sub-1_ses-1.nwb")`` or
``nwb_ltr inspect DANDI:000001`` inside the test reach the fixture's server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nwb_ltr.testing.dandi_server import DandiServer


@pytest.fixture
def dandi_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[DandiServer]:
    """A running, empty loopback DANDI server; add files with ``add_asset`` (see module docs)."""
    with DandiServer() as server:
        monkeypatch.setenv("NWB_LTR_DANDI_API_URL", server.api_url)
        monkeypatch.setenv("DANDI_NO_ET", "1")
        yield server


__all__ = ["dandi_server"]
