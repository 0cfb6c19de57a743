"""HTTP for :mod:`nwb_ltr._dandi`: a bounded ``DandiAPIClient`` and verified downloads.

The stock ``DandiAPIClient`` retries each request twelve times with growing waits (about a
minute) when the archive is unreachable, and its constructor looks the instance up without a
timeout.  :func:`connect` builds a subclass whose requests have a per-request ``timeout`` and at
most ``retries`` retries (429/5xx answers, connection errors, timeouts; ``Retry-After`` honoured up
to 10 s), preceded by a preflight ``GET /info/``.  :func:`download_asset` streams an asset to a
temporary file, checks its SHA-256 and DANDI e-tag against the archive's digests, renames it into
place and records the check in a small marker file, so later calls reuse it without any request
for the blob.  ``$DANDI_NO_ET`` is set (if unset) so the client never checks its own version online.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dandi.consts import RETRY_STATUSES

from nwb_ltr.errors import ConfigError, DandiError, NwbLtrError, OutputError

logger = logging.getLogger(__name__)

_BACKOFF_S = 0.25  # first retry delay; doubles per retry up to _MAX_BACKOFF_S
_MAX_BACKOFF_S = 4.0
_MAX_RETRY_AFTER_S = 10.0  # a server's Retry-After is honoured up to this many seconds
_CHUNK = 1 << 16  # bytes per read; a broken transfer resumes after the last whole chunk


def _check_limits(timeout: float, retries: int) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a whole number >= 0, got {retries!r}")


def connect(api: str, timeout: float, retries: int) -> Any:
    """A bounded ``DandiAPIClient`` for ``api``, after a preflight ``GET /info/``."""
    _check_limits(timeout, retries)
    os.environ.setdefault("DANDI_NO_ET", "1")  # no version check against the internet
    from dandi.consts import DandiInstance, known_instances_rev

    name = known_instances_rev.get(api) or urlsplit(api).netloc
    # Passing the instance (not api_url=) skips the client's unbounded /server-info lookup.
    client = _client_class()(dandi_instance=DandiInstance(name=name, gui=None, api=api))
    client.timeout, client.retries = float(timeout), int(retries)
    with network_errors(api, timeout, retries):
        from dandi.exceptions import HTTP404Error

        try:
            info = client.get("/info/")
        except (HTTP404Error, ValueError):  # ValueError: not JSON (a web page, not an API)
            info = None
    if not isinstance(info, dict) or "schema_version" not in info:
        client.session.close()
        raise DandiError(
            f"{api} does not look like a DANDI API (no schema_version at {api}/info/); check --api-url"
        )
    return client


@functools.cache
def _client_class() -> type:
    import requests
    from dandi.dandiapi import DandiAPIClient
    from dandi.exceptions import HTTP404Error

    class BoundedDandiAPIClient(DandiAPIClient):
        """``DandiAPIClient`` with a per-request ``timeout`` and at most ``retries`` retries."""

        timeout: float = 30.0
        retries: int = 3

        def request(  # type: ignore[override]
            self,
            method: str,
            path: str,
            params: dict | None = None,
            data: Any = None,
            files: dict | None = None,
            json: Any = None,
            headers: dict | None = None,
            json_resp: bool = True,
            retry_statuses: Any = (),
            retry_if: Any = None,
            **kwargs: Any,
        ) -> Any:
            url = self.get_url(path)
            headers = dict(headers or {})
            if json_resp:
                headers.setdefault("accept", "application/json")
            kwargs.setdefault("timeout", self.timeout)
            retry_on = {*RETRY_STATUSES, *retry_statuses}
            for attempt in range(self.retries + 1):
                last = attempt == self.retries
                try:
                    response = self.session.request(
                        method,
                        url,
                        params=params,
                        data=data,
                        files=files,
                        json=json,
                        headers=headers,
                        **kwargs,
                    )
                except (requests.ConnectionError, requests.Timeout) as exc:
                    if last:
                        raise
                    logger.debug(
                        "%s %s failed (%s); retry %d/%d", method, url, exc, attempt + 1, self.retries
                    )
                    _sleep_before_retry(attempt, None)
                    continue
                if not last and (
                    response.status_code in retry_on or (retry_if is not None and retry_if(response))
                ):
                    logger.debug(
                        "%s %s answered %d; retry %d/%d",
                        method,
                        url,
                        response.status_code,
                        attempt + 1,
                        self.retries,
                    )
                    _sleep_before_retry(attempt, response.headers.get("Retry-After"))
                    continue
                break
            if not response.ok:
                msg = f"Error {response.status_code} while sending {method} request to {url}: {response.text[:300]}"
                if response.status_code == 404:
                    raise HTTP404Error(msg, response=response)
                raise requests.HTTPError(msg, response=response)
            if not json_resp:
                return response
            return response.json() if response.text.strip() else None

    return BoundedDandiAPIClient


def _sleep_before_retry(attempt: int, retry_after: str | None) -> None:
    delay = min(_BACKOFF_S * 2**attempt, _MAX_BACKOFF_S)
    if retry_after:
        try:
            delay = float(retry_after)
        except ValueError:
            try:
                delay = parsedate_to_datetime(retry_after).timestamp() - time.time()
            except (TypeError, ValueError):
                pass
        delay = min(max(delay, 0.0), _MAX_RETRY_AFTER_S)
    time.sleep(delay)


@contextmanager
def network_errors(api: str, timeout: float, retries: int) -> Iterator[None]:
    """Turn ``requests`` failures into one-line :class:`DandiError` messages."""
    import requests

    try:
        yield
    except NwbLtrError:
        raise
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        where = urlsplit(exc.response.url).path if exc.response is not None else api
        retried = f" (after {retries} retries)" if status in RETRY_STATUSES else ""
        raise DandiError(
            f"the DANDI API at {api} answered HTTP {status} for {where}{retried}; "
            "try again later or check --api-url"
        ) from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise DandiError(
            f"cannot reach the DANDI API at {api} ({_reason(exc, timeout)}, {_attempts(retries)}); "
            "check your connection or --api-url"
        ) from exc
    except requests.RequestException as exc:  # invalid URL, too many redirects, broken transfer
        raise DandiError(
            f"talking to the DANDI API at {api} failed ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}); "
            "try again later or check --api-url"
        ) from exc


def _attempts(retries: int) -> str:
    return "1 attempt" if retries == 0 else f"{retries + 1} attempts"


def _reason(exc: BaseException, timeout: float) -> str:
    import requests

    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s"
    text = str(exc)
    for needle, reason in (
        ("refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("name resolution", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("unreachable", "network unreachable"),
        ("reset", "connection reset"),
        ("RemoteDisconnected", "connection closed by the server"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


# ----------------------------------------------------------------------------------- download


class _Digests:
    """SHA-256 and DANDI e-tag (multipart MD5, as ``dandischema.digests.dandietag``) in one pass."""

    def __init__(self, size: int) -> None:
        from dandischema.digests.dandietag import PartGenerator

        self.sha256 = hashlib.sha256()
        self._parts = [p.size for p in PartGenerator.for_file_size(size)]
        self._md5s: list[bytes] = []
        self._part = hashlib.md5()
        self._filled = 0

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        view = memoryview(data)
        while view.nbytes:
            if len(self._md5s) >= len(self._parts):
                raise ValueError("more bytes than the announced size")
            take = view[: self._parts[len(self._md5s)] - self._filled]
            self._part.update(take)
            self._filled += take.nbytes
            view = view[take.nbytes :]
            if self._filled == self._parts[len(self._md5s)]:
                self._md5s.append(self._part.digest())
                self._part, self._filled = hashlib.md5(), 0

    def etag(self) -> str:
        return f"{hashlib.md5(b''.join(self._md5s)).hexdigest()}-{len(self._md5s)}"


class _RetryableDownloadError(Exception):
    pass


def download_asset(
    client: Any, remote: Any, dest: Path, digests: dict[str, str], *, timeout: float, retries: int
) -> Path:
    """Download ``remote`` to ``dest`` (temp name, verify, rename), or reuse a verified copy.

    Concurrent downloads of the same asset into the same cache are serialised with a lock file
    (``.<name>.lock``); temporary ``.part`` files left by killed downloaders are removed under it.
    """
    expected = {"sha256": digests.get("dandi:sha2-256"), "dandi_etag": digests.get("dandi:dandi-etag")}
    expected = {k: v for k, v in expected.items() if v}
    if not expected:
        raise DandiError(
            f"asset {remote.path!r} has no checksum in its metadata; stream it instead (drop --download)"
        )
    marker = dest.with_name(f".{dest.name}.verified.json")
    if _cached_copy_ok(dest, marker, remote.size, expected):
        logger.info("using cached download %s", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # one download per asset at a time: a second process waits here, then reuses the verified copy
    with _locked(dest.with_name(f".{dest.name}.lock")):
        if _cached_copy_ok(dest, marker, remote.size, expected):
            logger.info("using the copy %s another process just downloaded", dest)
            return dest
        return _download(client, remote, dest, marker, expected, timeout=timeout, retries=retries)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``path`` (created if missing; kept, it is empty).

    Where ``fcntl`` does not exist (Windows) nothing is locked: downloads stay atomic (temporary
    name, then rename), two processes may just both download.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _download(
    client: Any,
    remote: Any,
    dest: Path,
    marker: Path,
    expected: dict[str, str],
    *,
    timeout: float,
    retries: int,
) -> Path:
    """Download ``remote`` to a temporary name beside ``dest``, verify both digests, rename."""
    import requests

    free = shutil.disk_usage(dest.parent).free
    if free < remote.size:
        raise OutputError(
            f"not enough space in {dest.parent} for {remote.path} ({remote.size} bytes, {free} free); "
            "free some space or pass --cache-dir"
        )
    for stale in dest.parent.glob(
        f".{glob.escape(dest.name)}.*.part"
    ):  # we hold the lock: nobody writes them
        logger.info("removing %s left by an interrupted download", stale)
        stale.unlink(missing_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    url = remote.base_download_url
    logger.info("downloading %s (%d bytes) to %s", remote.path, remote.size, dest)
    try:
        with open(tmp, "wb") as out:
            hashes = _Digests(remote.size)
            for attempt in range(retries + 1):
                try:
                    hashes = _fetch(client.session, url, out, hashes, remote.size, timeout)
                    got = {"sha256": hashes.sha256.hexdigest(), "dandi_etag": hashes.etag()}
                    bad = [k for k in expected if got[k] != expected[k]]
                    if not bad:
                        break
                    out.seek(0)
                    out.truncate()
                    hashes = _Digests(remote.size)
                    raise _RetryableDownloadError(
                        f"{bad[0]} {got[bad[0]]} != {expected[bad[0]]} from the archive"
                    )
                except (
                    requests.ConnectionError,
                    requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                    _RetryableDownloadError,
                ) as exc:
                    if attempt == retries:
                        raise DandiError(
                            f"downloading {remote.path} from {url} failed after {_attempts(retries)} "
                            f"({_reason(exc, timeout) if isinstance(exc, requests.RequestException) else exc}); "
                            "try again later or stream it (drop --download)"
                        ) from exc
                    logger.warning("download of %s failed (%s); retrying", remote.path, exc)
                    _sleep_before_retry(attempt, None)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    stat = dest.stat()
    _write_marker(marker, {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **expected})
    logger.info("downloaded and verified %s", dest)
    return dest


def _fetch(session: Any, url: str, out: Any, hashes: _Digests, size: int, timeout: float) -> _Digests:
    """Append the rest of the asset to ``out`` (resuming with a Range request); return the hashes."""

    offset = out.tell()
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code in RETRY_STATUSES:
            raise _RetryableDownloadError(f"HTTP {response.status_code}")
        if not response.ok:
            raise DandiError(
                f"downloading {url} failed with HTTP {response.status_code}; check the asset or stream it (drop --download)"
            )
        resumed = response.status_code == 206 and response.headers.get("Content-Range", "").startswith(
            f"bytes {offset}-"
        )
        if offset and not resumed:  # the server sent the whole file again
            out.seek(0)
            out.truncate()
            hashes = _Digests(size)
        for chunk in response.iter_content(_CHUNK):
            out.write(chunk)
            try:
                hashes.update(chunk)
            except ValueError:
                raise _RetryableDownloadError(f"the server sent more than {size} bytes") from None
    if out.tell() != size:
        raise _RetryableDownloadError(f"got {out.tell()} of {size} bytes")
    return hashes


def _cached_copy_ok(dest: Path, marker: Path, size: int, expected: dict[str, str]) -> bool:
    if not dest.is_file():
        return False
    stat = dest.stat()
    if stat.st_size != size:
        return False
    try:
        saved = json.loads(marker.read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("mtime_ns") == stat.st_mtime_ns and saved.get("size") == size:
        return all(saved.get(k) == v for k, v in expected.items())
    # A file placed there by other means (``dandi download``): verify it once.
    hashes = _Digests(size)
    with open(dest, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            hashes.update(chunk)
    got = {"sha256": hashes.sha256.hexdigest(), "dandi_etag": hashes.etag()}
    if any(got[k] != v for k, v in expected.items()):
        logger.warning("cached %s does not match the archive's checksum; downloading it again", dest)
        return False
    _write_marker(marker, {"size": size, "mtime_ns": stat.st_mtime_ns, **expected})
    return True


def _write_marker(marker: Path, values: dict[str, Any]) -> None:
    """Write the verification marker atomically (readers never see half a JSON document)."""
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(values))
        os.replace(tmp, marker)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["connect", "download_asset", "network_errors"]
