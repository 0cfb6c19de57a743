"""A small DANDI-API-compatible HTTP server on 127.0.0.1, for tests.

The real DANDI archive cannot be reached from test machines, so this module serves local files
through the subset of the DANDI REST API that the ``dandi`` client (``DandiAPIClient``) and
``remfile`` use: server info, dandisets, versions (``draft`` and published ones), asset listings
with pagination and ``?path=`` / ``?glob=`` filters, asset metadata with ``dandi:dandi-etag`` and
``dandi:sha2-256`` digests, ``download/`` answering ``302`` to a blob URL, and blobs answering
HTTP range requests with ``206``.  Every request is logged, and faults (errors, stalls, truncated
or corrupted bodies, connection resets) can be queued per path.

Examples
--------
>>> from nwb_ltr.testing.dandi_server import DandiServer
>>> with DandiServer() as server:  # doctest: +SKIP
...     server.add_asset("000001", "sub-1/sub-1_ses-1.nwb", "session.nwb")
...     client = DandiAPIClient(api_url=server.api_url)
...     asset = client.get_dandiset("000001", "draft").get_asset_by_path("sub-1/sub-1_ses-1.nwb")
...     server.inject_fault("/blobs/*", "status", status=503, retry_after=1)
...     assert not server.blob_requests()

See :mod:`nwb_ltr.testing.pytest_plugin` for the ``dandi_server`` pytest fixture.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import pickle
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from nwb_ltr.testing._dandi_api import ApiRouter, ServedAsset, Store

logger = logging.getLogger(__name__)

FAULT_KINDS = ("status", "stall", "truncate", "reset", "corrupt", "norange")
_CHUNK = 1 << 16
_STOP_WAIT_S = 5.0


@dataclass
class Fault:
    """One injected fault, consumed by the next ``times`` requests whose path matches ``path``.

    Attributes
    ----------
    path : str
        ``fnmatch`` pattern on the URL path (no query), e.g. ``"/blobs/*"`` or ``"/api/info/"``.
    kind : str
        ``"status"`` (answer ``status`` with an optional ``Retry-After``), ``"stall"`` (sleep
        ``seconds`` before answering normally), ``"truncate"`` (announce the full length, send
        ``nbytes`` bytes, close), ``"reset"`` (close the connection without answering),
        ``"corrupt"`` (answer normally with the first body byte flipped) or ``"norange"`` (answer
        a blob request with ``200`` and the whole body, as a server without range support does).
    after : int
        Let this many matching requests through untouched before the fault starts (e.g. a stall
        in the middle of a streamed read, after the file was opened).
    """

    path: str
    kind: str = "status"
    times: int = 1
    method: str | None = None
    status: int = 500
    retry_after: float | None = None
    seconds: float = 5.0
    nbytes: int | None = None
    after: int = 0


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received (``status`` 0 when the connection was reset)."""

    method: str
    path: str
    query: dict[str, str]
    range: str | None
    status: int
    kind: str  # "api", "download" (302 to a blob) or "blob"
    fault: str | None = None


@dataclass
class _Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None  # blob replies stream ``length`` bytes from ``offset`` of this file
    offset: int = 0
    length: int = 0


class DandiServer:
    """A DANDI-API-compatible server on 127.0.0.1 with an ephemeral port, run in a child process.

    The HTTP server runs in its own Python process, not in a thread of the caller: ``h5py`` holds
    a process-wide lock while it reads a streamed file, and a server thread in the same process
    that needs that lock (a garbage collection freeing an ``h5py`` object is enough) would wait
    for the read while the read waits for the server.  This object is the handle: it keeps a copy
    of the content (``store``), and forwards faults and request-log queries to the server process.

    Parameters
    ----------
    assets : mapping, optional
        ``{dandiset_id: {asset_path: local_file}}`` added to each dandiset's ``draft`` version.
    root : path, optional
        A folder laid out as ``<dandiset_id>/<asset path>``; every file under a six-digit folder
        is added to that dandiset's ``draft`` version.
    start : bool
        Start serving at once (otherwise call :meth:`start` or use ``with``).

    Attributes
    ----------
    api_url : str
        Base API URL to pass to ``DandiAPIClient(api_url=...)``, ``http://127.0.0.1:PORT/api``.
    base_url : str
        ``http://127.0.0.1:PORT``; blobs are at ``{base_url}/blobs/{blob_id}`` (see :meth:`blob_url`).
    """

    def __init__(
        self,
        assets: Mapping[str, Mapping[str, str | PathLike[str]]] | None = None,
        *,
        root: str | PathLike[str] | None = None,
        start: bool = True,
    ) -> None:
        self._lock = threading.Lock()  # one exchange with the server process at a time
        self._pending: list[Fault] = []  # faults queued before start
        self._log: list[RequestRecord] = []  # the request log, kept after stop
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False
        # The listening socket is made here (the port is known at once) and handed to the process.
        self._sock: socket.socket | None = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.api_url = f"{self.base_url}/api"
        self.store = Store()
        for dandiset_id, files in (assets or {}).items():
            for path, file in files.items():
                self.add_asset(dandiset_id, path, file)
        if root is not None:
            self.add_folder(root)
        if start:
            self.start()

    # ---------------------------------------------------------------- content
    def add_asset(self, dandiset_id: str, path: str, file: str | PathLike[str]) -> ServedAsset:
        """Serve ``file`` as asset ``path`` of the draft version of ``dandiset_id`` (created if new).

        The digests (``dandi:sha2-256``, ``dandi:dandi-etag``) are computed now; the bytes are read
        from ``file`` at request time, so leave it in place while the server runs.
        """
        asset = self.store.add_asset(dandiset_id, path, Path(file))
        self._sync_store()
        return asset

    def add_folder(self, root: str | PathLike[str]) -> list[ServedAsset]:
        """Add every file under ``root/<dandiset_id>/`` (six-digit folder names) to that draft."""
        added = []
        for folder in sorted(Path(root).iterdir()):
            if folder.is_dir() and re.fullmatch(r"\d{6}", folder.name):
                for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                    rel = file.relative_to(folder).as_posix()
                    if not any(part.startswith(".") for part in rel.split("/")):
                        added.append(self.store.add_asset(folder.name, rel, file))
        self._sync_store()
        return added

    def publish(self, dandiset_id: str, version: str | None = None) -> str:
        """Freeze the current draft of ``dandiset_id`` as a published version; return its id.

        ``version`` defaults to a DANDI-style ``0.YYMMDD.HHMM`` id derived from the current time.
        """
        version = self.store.publish(dandiset_id, version)
        self._sync_store()
        return version

    def blob_url(self, asset: ServedAsset) -> str:
        """The plain HTTP URL of ``asset``'s bytes (range requests, no DANDI API around it)."""
        return f"{self.base_url}/blobs/{asset.blob_id}"

    # ---------------------------------------------------------------- faults and log
    def inject_fault(
        self,
        path: str,
        kind: str = "status",
        *,
        times: int = 1,
        method: str | None = None,
        status: int = 500,
        retry_after: float | None = None,
        seconds: float = 5.0,
        nbytes: int | None = None,
        after: int = 0,
    ) -> Fault:
        """Queue a fault for the next ``times`` requests whose URL path matches ``path``.

        See :class:`Fault` for the kinds.  Faults are consumed in the order they were queued.
        The returned :class:`Fault` is a copy: the server process counts down its own.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        fault = Fault(path, kind, times, method, status, retry_after, seconds, nbytes, after)
        if self._proc is None:
            self._pending.append(fault)
        else:
            self._call("fault", fault)
        return fault

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        if self._proc is None:
            self._pending.clear()
        else:
            self._call("clear_faults")

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first (still readable after :meth:`stop`)."""
        if self._proc is None:
            return list(self._log)
        return list(self._call("log"))

    def blob_requests(self, method: str | None = "GET") -> list[RequestRecord]:
        """Requests for blob bytes (``method=None``: any method, including ``HEAD``)."""
        return [r for r in self.requests if r.kind == "blob" and method in (None, r.method)]

    def clear_requests(self) -> None:
        """Empty the request log."""
        self._log.clear()
        if self._proc is not None:
            self._call("clear_log")

    # ---------------------------------------------------------------- lifecycle
    @property
    def pid(self) -> int | None:
        """Process id of the server process (None when not serving)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> DandiServer:
        """Start the server process (no-op when already serving)."""
        if self._proc is not None:
            return self
        if self._stopped or self._sock is None:
            raise RuntimeError("this DandiServer was stopped; make a new one")
        fd = self._sock.fileno()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from nwb_ltr.testing.dandi_server import _serve; _serve()",
                str(fd),
                self.base_url,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(fd,),
            env=env,
        )
        self._call("store", self.store)
        for fault in self._pending:
            self._call("fault", fault)
        self._pending.clear()
        self._call("serve")
        self._sock.close()  # the server process holds its own copy
        self._sock = None
        logger.debug("DANDI test server (pid %d) listening on %s", self._proc.pid, self.api_url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (the request log stays readable)."""
        proc, self._proc = self._proc, None
        self._stopped = True
        if proc is not None:
            try:
                self._log = list(self._exchange(proc, "log"))
            except RuntimeError:
                pass
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            try:
                proc.wait(timeout=_STOP_WAIT_S)  # the process exits when its stdin closes
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> DandiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def __repr__(self) -> str:
        return f"DandiServer(api_url={self.api_url!r}, dandisets={sorted(self.store.dandisets)})"

    # ---------------------------------------------------------------- the server process
    def _sync_store(self) -> None:
        if self._proc is not None:
            self._call("store", self.store)

    def _call(self, command: str, *args: Any) -> Any:
        if self._proc is None:
            raise RuntimeError("the DANDI test server is not running; call start()")
        return self._exchange(self._proc, command, *args)

    def _exchange(self, proc: subprocess.Popen[bytes], command: str, *args: Any) -> Any:
        with self._lock:
            try:
                assert proc.stdin is not None and proc.stdout is not None
                _write_message(proc.stdin, (command, args))
                status, value = _read_message(proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                code = proc.poll()
                raise RuntimeError(
                    f"the DANDI test server process (pid {proc.pid}) stopped answering"
                    f"{'' if code is None else f' and exited with code {code}'}; its stderr says why"
                ) from exc
        if status == "error":
            raise value
        return value


def _write_message(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("!Q", len(data)) + data)
    stream.flush()


def _read_message(stream: IO[bytes]) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the other side closed the pipe")
    (size,) = struct.unpack("!Q", head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the pipe")
    return pickle.loads(data)


class _App:
    """The server process's state: content, queued faults and the request log."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.log: list[RequestRecord] = []
        self.set_store(Store())

    def set_store(self, store: Store) -> None:
        self.store, self.router = store, ApiRouter(store, self.base_url)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fnmatch.fnmatchcase(path, fault.path) and fault.method in (None, method):
                    if fault.after > 0:
                        fault.after -= 1
                        continue
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def record(self, record: RequestRecord) -> None:
        with self.lock:
            self.log.append(record)

    def command(self, command: str, *args: Any) -> Any:
        with self.lock:
            if command == "fault":
                self.faults.append(args[0])
            elif command == "clear_faults":
                self.faults.clear()
            elif command == "log":
                return list(self.log)
            elif command == "clear_log":
                self.log.clear()
            else:
                raise ValueError(f"unknown command {command!r}")
        return None


def _serve() -> None:
    """Entry point of the server process: ``python -c ... FD BASE_URL``; commands come on stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the test run; we exit on EOF
    fd, base_url = int(sys.argv[1]), sys.argv[2]
    commands, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the reply stream
    app = _App(base_url)
    httpd = _HTTPServer(("127.0.0.1", 0), _Handler, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = socket.socket(fileno=fd)
    httpd.server_address = httpd.socket.getsockname()
    httpd.server_name, httpd.server_port = "127.0.0.1", httpd.server_address[1]
    httpd.app = app
    serving: threading.Thread | None = None
    while True:
        try:
            command, args = _read_message(commands)
        except EOFError:
            break
        try:
            if command == "store":
                app.set_store(args[0])
                value = None
            elif command == "serve":
                if serving is None:
                    serving = threading.Thread(
                        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
                    )
                    serving.start()
                value = None
            else:
                value = app.command(command, *args)
            reply: tuple[str, Any] = ("ok", value)
        except Exception as exc:  # noqa: BLE001 - sent back and raised in the test process
            reply = ("error", exc)
        _write_message(replies, reply)
    if serving is not None:
        httpd.shutdown()
    httpd.server_close()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    app: _App

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-request (as clients do when a stall fault times them out) is
        logged at debug level instead of printed to stderr, where it would mix with the CLI's own
        one-line errors; any other server error is printed as usual."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("client %s hung up", client_address)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(head=True)

    def do_POST(self) -> None:  # noqa: N802
        self._send(_json_reply(405, {"detail": "Method not allowed: this test server is read-only."}))

    do_PUT = do_PATCH = do_DELETE = do_POST  # noqa: N815

    def _handle(self, head: bool) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        fault = app.take_fault(self.command, split.path)
        kind = "blob" if split.path.startswith("/blobs/") else "api"
        if fault is not None and fault.kind == "reset":
            app.record(
                RequestRecord(self.command, split.path, query, self.headers.get("Range"), 0, kind, "reset")
            )
            self._reset()
            return
        if fault is not None and fault.kind == "status":
            reply = _json_reply(fault.status, {"detail": f"injected fault: HTTP {fault.status}"})
            if fault.retry_after is not None:
                reply.headers["Retry-After"] = f"{fault.retry_after:g}"
        elif kind == "blob":
            no_range = fault is not None and fault.kind == "norange"
            reply = self._blob(split.path, None if no_range else self.headers.get("Range"))
        else:
            status, payload, location = app.router.route(split.path, query, self.path)
            if location is not None:
                kind = "download"
                reply = _Reply(302, {"Location": location, "Content-Type": "text/plain"})
            else:
                reply = _json_reply(status, payload)
        app.record(
            RequestRecord(
                self.command,
                split.path,
                query,
                self.headers.get("Range"),
                reply.status,
                kind,
                fault.kind if fault is not None else None,
            )
        )  # logged on arrival: a client that gave up on a stall still finds its request in the log
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.seconds)
        self._send(reply, head=head, fault=fault)

    def _blob(self, path: str, range_header: str | None) -> _Reply:
        asset = self.server.app.store.blobs.get(path.rsplit("/", 1)[-1])
        if asset is None:
            return _json_reply(404, {"detail": "Not found."})
        size = asset.size
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "ETag": f'"{asset.dandi_etag}"',
        }
        if range_header is None:
            return _Reply(200, headers, file=asset.file, offset=0, length=size)
        span = _parse_range(range_header, size)
        if span is None:
            headers["Content-Range"] = f"bytes */{size}"
            return _Reply(416, headers)
        start, stop = span
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return _Reply(206, headers, file=asset.file, offset=start, length=stop - start)

    def _send(self, reply: _Reply, *, head: bool = False, fault: Fault | None = None) -> None:
        length = reply.length if reply.file is not None else len(reply.body)
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if head:
                return
            limit = length
            if fault is not None and fault.kind == "truncate":
                limit = fault.nbytes if fault.nbytes is not None else length // 2
                self.close_connection = True
            flip = fault is not None and fault.kind == "corrupt"
            for chunk in _iter_body(reply, limit):
                if flip and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    flip = False
                self.wfile.write(chunk)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # client closed early (remfile does)
            self.close_connection = True

    def _reset(self) -> None:
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # pragma: no cover - platform without SO_LINGER
            pass
        self.close_connection = True


def _iter_body(reply: _Reply, limit: int):  # type: ignore[no-untyped-def]
    if reply.file is None:
        yield reply.body[:limit]
        return
    with open(reply.file, "rb") as f:
        f.seek(reply.offset)
        remaining = min(limit, reply.length)
        while remaining > 0:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def _json_reply(status: int, payload: Any) -> _Reply:
    body = json.dumps(payload).encode()
    return _Reply(status, {"Content-Type": "application/json"}, body)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` → half-open ``(start, stop)``, None if unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        start, stop = max(size - int(last), 0), size
    else:
        start = int(first)
        stop = size if last == "" else min(int(last) + 1, size)
    if start >= size or start >= stop:
        return None
    return start, stop


__all__ = ["FAULT_KINDS", "DandiServer", "Fault", "RequestRecord", "ServedAsset"]
