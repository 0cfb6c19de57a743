"""Open NWB sessions read-only: local files, http(s) URLs (streamed) and DANDI sources.

The user's source is never opened for writing: every file goes through ``h5py.File(..., "r")`` and
``NWBHDF5IO(mode="r", load_namespaces=True)``.  URLs are streamed with :mod:`remfile` (HTTP range
requests), optionally through an on-disk chunk cache, with a bounded timeout and number of retries.
DANDI sources (``DANDI:000123[@version]/path.nwb``, ``dandi://...``, a bare dandiset id with
``asset=``) are resolved by :mod:`nwb_ltr._dandi`, imported only for such sources.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from nwb_ltr.errors import InvalidSourceError, NotNWBError, SourceNotFoundError

try:  # remfile does not retry this error type, so our retry bound holds
    from remfile.RemFile import _PermanentHTTPError as _RemfilePermanentError
except ImportError:  # pragma: no cover - other remfile versions
    _RemfilePermanentError = Exception  # type: ignore[misc,assignment]

if TYPE_CHECKING:
    import h5py
    from pynwb import NWBFile

logger = logging.getLogger(__name__)

__all__ = ["open_session", "source_provenance"]

Source = str | os.PathLike[str]

_URL_RE = re.compile(r"^https?://", re.IGNORECASE)
_BARE_DANDISET_RE = re.compile(r"^\d{6}(@[\w.+-]+)?$")
_HASH_CHUNK = 1 << 20


@contextmanager
def open_session(
    source: Source,
    *,
    asset: str | None = None,
    api_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    timeout: float = 30.0,
    retries: int = 3,
) -> Iterator[NWBFile]:
    """Open an NWB session read-only.

    Parameters
    ----------
    source
        A local path, an ``http(s)://`` URL, or a DANDI source (``DANDI:000123[@version]/path.nwb``,
        ``dandi://...``, or a bare dandiset id together with ``asset``).
    asset
        Asset path inside the dandiset (DANDI sources only).
    api_url
        DANDI API URL (DANDI sources only; default: the public archive).
    cache_dir
        Folder for the on-disk chunk cache of streamed files (and for DANDI downloads).
    download
        DANDI sources: download the asset (checksum verified) instead of streaming it.
    timeout
        Seconds to wait for each network request.
    retries
        How many times a failed network request is retried.

    Yields
    ------
    pynwb.NWBFile
        The session, readable until the ``with`` block ends; the file, stream and IO are closed then.

    Raises
    ------
    SourceNotFoundError
        The file or URL does not exist (or cannot be reached).
    NotNWBError
        The source is empty, truncated, not HDF5, or HDF5 but not NWB.
    InvalidSourceError
        The source is of the wrong type, or ``asset`` was given for a non-DANDI source.

    Examples
    --------
    >>> with open_session("sub-1_ses-1.nwb") as nwbfile:  # doctest: +SKIP
    ...     print(len(nwbfile.trials))
    """
    kind = _classify(source, asset)
    options = {"cache_dir": cache_dir, "timeout": timeout, "retries": retries}
    if kind == "dandi":
        resolved = _resolve_dandi(str(source), asset=asset, api_url=api_url, download=download, **options)
        if resolved.local_path is not None:
            with _open_local(Path(resolved.local_path)) as nwbfile:
                yield nwbfile
        elif resolved.url is not None:
            with _open_remote(resolved.url, **options) as nwbfile:
                yield nwbfile
        else:
            raise InvalidSourceError(
                f"DANDI source {source} resolved to neither a file nor a URL; check the asset path"
            )
    elif kind == "url":
        with _open_remote(str(source), **options) as nwbfile:
            yield nwbfile
    else:
        with _open_local(Path(source)) as nwbfile:
            yield nwbfile


def source_provenance(
    source: Source,
    *,
    asset: str | None = None,
    api_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    timeout: float = 30.0,
    retries: int = 3,
) -> dict[str, Any]:
    """JSON-able provenance of a source, to store next to results.

    Returns
    -------
    dict
        Always ``source`` and ``kind`` (``"local"``, ``"url"`` or ``"dandi"``).  Local files add
        ``path`` (absolute), ``size`` (bytes) and ``sha256`` (of the whole file, hashed in 1 MiB
        chunks); URLs add ``url``; DANDI sources add the resolver's provenance (dandiset id,
        version, asset path and id, URL).
    """
    kind = _classify(source, asset)
    if kind == "dandi":
        resolved = _resolve_dandi(
            str(source),
            asset=asset,
            api_url=api_url,
            download=download,
            cache_dir=cache_dir,
            timeout=timeout,
            retries=retries,
        )
        return {"source": str(source), "kind": "dandi", **dict(resolved.provenance)}
    if kind == "url":
        return {"source": str(source), "kind": "url", "url": str(source)}
    path = _check_local(Path(source))
    return {
        "source": str(source),
        "kind": "local",
        "path": str(path.resolve()),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------- sources


def _classify(source: Any, asset: str | None) -> str:
    """``"local"``, ``"url"`` or ``"dandi"``; imports :mod:`nwb_ltr._dandi` only when needed."""
    if isinstance(source, os.PathLike):
        if asset is not None:
            raise InvalidSourceError(
                f"asset={asset!r} is only used with DANDI sources, not the local path {source}; drop asset="
            )
        return "local"
    if not isinstance(source, str):
        raise InvalidSourceError(
            f"source must be a path, URL or DANDI id string, got {type(source).__name__}; pass a str or Path"
        )
    if _may_be_dandi(source, asset):
        from nwb_ltr import _dandi

        if _dandi.is_dandi_source(source):
            return "dandi"
    if asset is not None:
        raise InvalidSourceError(
            f"asset={asset!r} is only used with DANDI sources, not {source}; drop asset= or pass a dandiset id"
        )
    return "url" if _URL_RE.match(source) else "local"


def _may_be_dandi(source: str, asset: str | None) -> bool:
    lowered = source.lower()
    if lowered.startswith("dandi:"):
        return True
    if _URL_RE.match(source):
        return "dandiarchive" in lowered
    if os.path.exists(source):
        return False
    return asset is not None or bool(_BARE_DANDISET_RE.match(source))


def _resolve_dandi(source: str, **options: Any) -> Any:
    from nwb_ltr import _dandi

    return _dandi.resolve(source, **options)


# --------------------------------------------------------------------------------------- local


def _check_local(path: Path) -> Path:
    if not path.exists():
        raise SourceNotFoundError(
            f"file not found: {path}; check the path (relative paths start in {Path.cwd()})"
        )
    if path.is_dir():
        raise NotNWBError(f"{path} is a folder, not an NWB file; pass the path of an .nwb (HDF5) file")
    return path


@contextmanager
def _open_local(path: Path) -> Iterator[NWBFile]:
    import h5py

    path = _check_local(path)
    if path.stat().st_size == 0:
        raise NotNWBError(f"empty file: {path}; it holds no data, re-download or re-export the NWB file")
    if not h5py.is_hdf5(path):
        raise NotNWBError(
            f"not an HDF5 file: {path}; nwb_ltr reads NWB files stored as HDF5 (.nwb), convert it first"
        )
    try:
        h5file = h5py.File(path, "r")
    except OSError as exc:
        raise NotNWBError(
            f"cannot read HDF5 file {path} (truncated or corrupt: {_first_line(exc)}); re-download or re-export it"
        ) from exc
    with ExitStack() as stack:
        stack.callback(h5file.close)
        with _read_nwb(h5file, str(path)) as nwbfile:
            yield nwbfile


@contextmanager
def _read_nwb(h5file: h5py.File, label: str) -> Iterator[NWBFile]:
    """Read an open, read-only ``h5py.File`` as NWB; close the IO on exit."""
    from pynwb import NWBHDF5IO

    if "nwb_version" not in h5file.attrs:
        raise NotNWBError(
            f"HDF5 file is not an NWB file (no nwb_version attribute): {label}; pass an NWB file"
        )
    try:
        io = NWBHDF5IO(mode="r", file=h5file, load_namespaces=True)
    except Exception as exc:
        raise NotNWBError(
            f"cannot read NWB file {label}: {_first_line(exc)}; check that it is a valid NWB file"
        ) from exc
    try:
        try:
            nwbfile = io.read()
        except Exception as exc:
            raise NotNWBError(
                f"cannot read NWB file {label}: {_first_line(exc)}; check it with nwbinspector or re-export it"
            ) from exc
        yield nwbfile
    finally:
        io.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------- remote


@contextmanager
def _open_remote(
    url: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
    retries: int = 3,
) -> Iterator[NWBFile]:
    """Stream the NWB file at ``url`` with remfile (HTTP range requests), read-only.

    The file size and range support are checked first with one small request (bounded by ``timeout``
    and ``retries``).  remfile's own requests then go through a session with the same bounds; when
    they are used up the stream fails instead of backing off for a minute.  ``cache_dir`` enables
    remfile's on-disk chunk cache.
    """
    import h5py
    import remfile

    session = _BoundedSession(timeout=timeout, retries=retries)
    with ExitStack() as stack:
        stack.callback(session.close)
        size = _probe_url(session, url)
        disk_cache = None
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            disk_cache = remfile.DiskCache(str(cache_dir))
        stream = remfile.File(url, disk_cache=disk_cache, _size=size)
        stream.session.close()
        stream.session = session  # bounded timeout and retries for every range request
        stack.callback(stream.close)
        try:
            h5file = h5py.File(stream, "r")
        except OSError as exc:
            if (failure := _stream_failure(exc)) is not None:
                raise _broken_stream(url, failure) from exc
            message = _first_line(exc)
            if "signature" in message:
                raise NotNWBError(
                    f"not an HDF5 file: {url}; nwb_ltr reads NWB files stored as HDF5 (.nwb)"
                ) from exc
            raise NotNWBError(
                f"cannot read HDF5 file at {url} (truncated, corrupt or unreachable: {message}); "
                "check the URL or download the file"
            ) from exc
        stack.callback(h5file.close)
        try:
            with _read_nwb(h5file, url) as nwbfile:
                yield nwbfile
        except Exception as exc:  # a read inside the block (or io.read) hit a broken stream
            failure = _stream_failure(exc)
            if failure is None:
                raise
            raise _broken_stream(url, failure) from exc


def _probe_url(session: _BoundedSession, url: str) -> int:
    """Size in bytes of the file at ``url``; checks that the server answers range requests."""
    try:
        response = session.get(url, headers={"Range": "bytes=0-0"}, stream=True)
    except (requests.RequestException, _StreamError) as exc:
        raise SourceNotFoundError(
            f"cannot reach {url} ({_first_line(exc)}); check the URL and the network, "
            "or download the file and open the local copy"
        ) from exc
    with response:
        status = response.status_code
        if status == 416:
            raise NotNWBError(f"empty file: {url}; it holds no data, check the URL")
        if status in (401, 403, 404, 410):
            raise SourceNotFoundError(f"URL not found (HTTP {status}): {url}; check the URL")
        if status == 200:
            raise InvalidSourceError(
                f"the server of {url} does not support HTTP range requests; download the file "
                "and open the local copy"
            )
        if status != 206:
            raise SourceNotFoundError(
                f"cannot read {url} (HTTP {status} {response.reason}); check the URL and try again"
            )
        match = re.search(r"/(\d+)\s*$", response.headers.get("Content-Range", ""))
        if match is None:
            raise InvalidSourceError(
                f"the server of {url} sent no file size (Content-Range); download the file and open it locally"
            )
        return int(match.group(1))


class _StreamError(_RemfilePermanentError):
    """A network request failed ``retries + 1`` times (remfile does not retry it again).

    ``reason`` says why the last attempt failed, ``attempts`` how many were made.
    """

    def __init__(self, message: str, reason: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts


def _stream_failure(exc: BaseException) -> _StreamError | None:
    """The :class:`_StreamError` behind ``exc`` (h5py and pynwb wrap it), if any."""
    seen: BaseException | None = exc
    for _ in range(20):  # bounded walk of the cause/context chain
        if seen is None:
            return None
        if isinstance(seen, _StreamError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _broken_stream(url: str, failure: _StreamError) -> SourceNotFoundError:
    attempts = "1 attempt" if failure.attempts == 1 else f"{failure.attempts} attempts"
    return SourceNotFoundError(
        f"the stream from {url} broke off ({failure.reason}, {attempts}); check the network and rerun "
        "(maybe with a larger --timeout or --retries), or use --download"
    )


class _BoundedSession(requests.Session):
    """A ``requests.Session`` with a default timeout and a bounded number of retries.

    remfile retries failed range requests eight times with exponential backoff (about a minute);
    this session retries ``retries`` times itself and then raises an error remfile does not retry.
    """

    def __init__(self, *, timeout: float, retries: int) -> None:
        super().__init__()
        self.timeout = float(timeout)
        self.retries = max(int(retries), 0)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.1 * 2 ** (attempt - 1), 2.0))
            try:
                response = super().request(method, url, *args, **kwargs)
            except requests.RequestException as exc:
                reason = _network_reason(exc, kwargs["timeout"])
                logger.debug("request to %s failed (%s), attempt %d", url, reason, attempt + 1)
                continue
            if response.status_code < 500 and response.status_code != 429:
                return response
            reason = f"HTTP {response.status_code}"
            response.close()
        raise _StreamError(
            f"{method!s} {url!s} failed {self.retries + 1} times: {reason}", reason, self.retries + 1
        )


def _network_reason(exc: requests.RequestException, timeout: Any) -> str:
    """A short reason for a failed request (no connection-pool reprs)."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s" if isinstance(timeout, (int, float)) else "timed out"
    text = str(exc)
    for needle, reason in (
        ("refused", "connection refused"),
        ("reset", "connection reset"),
        ("IncompleteRead", "response cut short"),
        ("Connection broken", "response cut short"),
        ("RemoteDisconnected", "connection closed by the server"),
        ("Name or service not known", "host name not found"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__
