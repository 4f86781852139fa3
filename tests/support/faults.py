"""Fault injection and the HTTP plumbing shared by the fake GitLab and Sentry servers.

A fake is a real HTTP/1.1 server (``http.server.ThreadingHTTPServer``) bound to
127.0.0.1 on a free port, run by a thread of the test process. Subclasses of
:class:`FakeServer` implement :meth:`FakeServer.handle`; this module reads the
requests, records them, applies faults and writes the answers.

Faults (``server.faults``, a :class:`Faults`) are consumed first in, first out:
each request takes one use of the first active fault that matches it. A fault
matches every request, or only those whose method equals ``method`` and whose
path (as sent, percent-encoded, or decoded; no query string) ``re.search``-es
``path``. ``times=None`` keeps it active until :meth:`Faults.clear`.

============== ===============================================================
kind           what the client sees
============== ===============================================================
error          the given status, body and headers; the request is not handled
slow           the request is handled at once, the answer sent ``seconds`` later
hang           no answer until ``clear()`` (then the request is handled and
               answered as usual) or until the server stops or goes down (then
               the connection is dropped and the request never handled)
reset          a TCP reset (SO_LINGER 0, close) instead of an answer; not handled
lose_response  the request IS handled (its state change committed), then a TCP
               reset instead of the answer
============== ===============================================================

``down()`` closes the listening socket and drops every open connection, so new
connections are refused at once; ``up()`` listens again on the same port.

Every request is recorded (:class:`RecordedRequest`), faulted or not, with the
fault that applied, the status the client got (``None`` when none was sent)
and the status the API logic produced (``None`` when it did not run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, unquote, urlsplit

ERROR = "error"
SLOW = "slow"
HANG = "hang"
RESET = "reset"
LOSE_RESPONSE = "lose_response"

HOST = "127.0.0.1"
# How often waiting threads (held requests, the accept loop) look at their flags.
_TICK = 0.02


def reason(status: int) -> str:
    """The standard reason phrase of ``status`` ("" when it has none)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive HTTP headers; names keep the case they were sent in."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs = list(pairs)
        self._index: dict[str, str] = {}
        for name, value in self._pairs:
            self._index.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name, _ in self._pairs:
            if name.lower() not in seen:
                seen.add(name.lower())
                yield name

    def __len__(self) -> int:
        return len(self._index)

    def get_all(self, name: str) -> list[str]:
        """Every value sent for ``name``, in order."""
        return [v for n, v in self._pairs if n.lower() == name.lower()]

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"


@dataclass(frozen=True)
class Request:
    """One HTTP request as the API logic of a fake sees it."""

    method: str
    path: str  # as sent: percent-encoded, without the query string
    query: dict[str, list[str]]
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    """An answer. ``body``: bytes or str are sent as they are, anything else as JSON."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        """The payload and its default Content-Type."""
        if self.body is None:
            return b"", "application/json"
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


@dataclass
class RecordedRequest:
    """A request a fake received, and what became of it."""

    method: str
    path: str  # as sent: percent-encoded, without the query string
    query: dict[str, list[str]]
    headers: Headers
    body: bytes
    timestamp: float  # time.monotonic() once the whole request was read
    fault: str | None = None  # e.g. "error 503", "slow 0.5s", "hang", "reset", "lose_response"
    status: int | None = None  # status the client received; None: no HTTP answer was sent
    handled_status: int | None = None  # status the API logic produced; None: it did not run
    answered_at: float | None = None  # time.monotonic() as the answer was sent

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def decoded_path(self) -> str:
        return unquote(self.path)


@dataclass(eq=False)
class Fault:
    """One injected fault; returned by the :class:`Faults` methods."""

    kind: str
    times: int | None  # uses left; None: until cleared
    method: str | None = None
    path: re.Pattern[str] | None = None
    status: int = 0
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    applied: int = 0  # requests it has been applied to
    released: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def label(self) -> str:
        if self.kind == ERROR:
            return f"{ERROR} {self.status}"
        if self.kind == SLOW:
            return f"{SLOW} {self.seconds:g}s"
        return self.kind

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path is None:
            return True
        return bool(self.path.search(path) or self.path.search(unquote(path)))

    def release(self) -> None:
        """End this fault; requests it holds (``hang``) are handled and answered."""
        self.times = 0
        self.released.set()


class Faults:
    """The faults of one server; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: list[Fault] = []
        self._issued: list[Fault] = []  # since the last clear(), to release held requests

    def _add(self, fault: Fault) -> Fault:
        if fault.times is not None and fault.times < 1:
            raise ValueError(f"times must be at least 1 (or None), not {fault.times}")
        with self._lock:
            self._active.append(fault)
            self._issued.append(fault)
        return fault

    @staticmethod
    def _pattern(path: str | None) -> re.Pattern[str] | None:
        return None if path is None else re.compile(path)

    def error(  # noqa: PLR0917 - the documented signature; tests name the arguments
        self,
        status: int,
        times: int | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """Answer ``status`` (with ``body``, default the server's error body, and ``headers``,
        e.g. ``{"Retry-After": "2"}``) instead of handling the request."""
        return self._add(
            Fault(
                ERROR,
                times,
                method,
                self._pattern(path),
                status=status,
                body=body,
                headers=dict(headers or {}),
            )
        )

    def slow(
        self,
        seconds: float,
        times: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """Handle the request at once, send the answer ``seconds`` later."""
        return self._add(Fault(SLOW, times, method, self._pattern(path), seconds=seconds))

    def hang(
        self, times: int | None = None, method: str | None = None, path: str | None = None
    ) -> Fault:
        """Hold the request unanswered (and unhandled) until ``clear()``, ``stop()`` or
        ``down()``."""
        return self._add(Fault(HANG, times, method, self._pattern(path)))

    def reset(
        self, times: int | None = None, method: str | None = None, path: str | None = None
    ) -> Fault:
        """Reset the connection instead of handling the request."""
        return self._add(Fault(RESET, times, method, self._pattern(path)))

    def lose_response(
        self, times: int | None = None, method: str | None = None, path: str | None = None
    ) -> Fault:
        """Handle the request (commit it), then reset the connection instead of answering."""
        return self._add(Fault(LOSE_RESPONSE, times, method, self._pattern(path)))

    def clear(self) -> None:
        """Remove every fault and let held (``hang``) requests go on."""
        with self._lock:
            issued, self._issued, self._active = self._issued, [], []
        for fault in issued:
            fault.release()

    @property
    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._active)

    def take(self, method: str, path: str) -> Fault | None:
        """Consume one use of the first active fault matching this request."""
        with self._lock:
            for fault in self._active:
                if fault.released.is_set() or not fault.matches(method, path):
                    continue
                fault.applied += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._active.remove(fault)
                return fault
        return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    fake: FakeServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (socket.getfqdn): skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError | ValueError):
            return  # the client went away, or the connection was dropped on purpose
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections
    server: _HTTPServer
    aborted: threading.Event

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.aborted = threading.Event()
        self.server.fake._register(self)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._unregister(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the fakes record requests instead of logging them."""

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=Headers(self.headers.items()),
            body=body,
        )
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            body=body,
            timestamp=time.monotonic(),
        )
        fault = fake.faults.take(request.method, request.path)
        if fault is not None:
            record.fault = fault.label
        fake._record(record)

        if fault is None:
            self._answer(record, fake._respond(request, record))
        elif fault.kind == ERROR:
            payload = fault.body if fault.body is not None else fake.error_body(fault.status)
            self._answer(record, Response(fault.status, payload, dict(fault.headers)))
        elif fault.kind == RESET:
            self._abort()
        elif fault.kind == HANG:
            if self._hold(fault):
                self._answer(record, fake._respond(request, record))
            else:
                self._abort()
        else:
            response = fake._respond(request, record)
            if fault.kind == LOSE_RESPONSE or self.aborted.wait(fault.seconds):
                self._abort()
            else:
                self._answer(record, response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def _hold(self, fault: Fault) -> bool:
        """Wait until the fault is released (True) or the connection is dropped (False)."""
        while not fault.released.wait(_TICK):
            if self.aborted.is_set():
                return False
        return not self.aborted.is_set()

    def _answer(self, record: RecordedRequest, response: Response) -> None:
        payload, content_type = response.encode()
        headers = dict(response.headers)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = content_type
        self.send_response(response.status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        # Noted before writing: once the client has the answer, the record must show it.
        self.server.fake._note(record, status=response.status, answered_at=time.monotonic())
        try:
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.server.fake._note(record, status=None, answered_at=None)
            raise

    def _abort(self) -> None:
        """Close the connection with a TCP reset and write nothing more."""
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):  # already closed by down()/stop()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The socket really closes (and sends the RST) once its file objects are closed too.
        self.rfile.close()
        self.wfile.close()
        sock.close()
        self.rfile, self.wfile = io.BytesIO(), io.BytesIO()

    def drop(self) -> None:
        """From another thread: end this connection (down/stop)."""
        self.aborted.set()
        with contextlib.suppress(OSError):  # already closed
            self.connection.shutdown(socket.SHUT_RDWR)


class FakeServer:
    """Base of the fakes: lifecycle, recording and fault handling.

    Subclasses implement :meth:`handle` (and may override :meth:`error_body`).
    """

    name: ClassVar[str] = "fake"

    def __init__(self) -> None:
        self.faults = Faults()
        self._records_lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._server_errors: list[str] = []
        self._lifecycle = threading.Lock()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._connections_lock = threading.Lock()
        self._connections: set[_Handler] = set()

    # -- to implement ---------------------------------------------------------

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def error_body(self, status: int) -> Any:
        """Body of an injected ``error`` answer (and of a 500 for a bug in
        :meth:`handle`) when the test gives none."""
        return {"message": f"{status} {reason(status)}"}

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1; ready to answer when this returns."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError(f"{self.name} is already running")
            self._listen(0)
        return self

    def stop(self) -> None:
        """Stop listening, drop every connection, and release held requests unanswered."""
        with self._lifecycle:
            self._unlisten()
        self.faults.clear()

    def down(self) -> None:
        """Stop listening (connections are refused) and drop every open connection."""
        with self._lifecycle:
            self._unlisten()

    def up(self) -> None:
        """Listen again, on the same port, after :meth:`down`."""
        with self._lifecycle:
            if self._port is None:
                raise RuntimeError(f"{self.name} was never started")
            if self._server is None:
                self._listen(self._port)

    @property
    def is_up(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _listen(self, port: int) -> None:
        server = _HTTPServer((HOST, port), _Handler)
        server.fake = self
        self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _TICK},
            name=f"{self.name}-{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _unlisten(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()
        with self._connections_lock:
            connections = list(self._connections)
        for handler in connections:
            handler.drop()

    def _register(self, handler: _Handler) -> None:
        with self._connections_lock:
            self._connections.add(handler)

    def _unregister(self, handler: _Handler) -> None:
        with self._connections_lock:
            self._connections.discard(handler)

    # -- recording ------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Copies of the recorded requests, oldest first."""
        with self._records_lock:
            return [dataclasses.replace(r) for r in self._records]

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path (as sent, or decoded) starts with ``path_prefix``."""
        return [
            r
            for r in self.requests
            if (r.path.startswith(path_prefix) or r.decoded_path.startswith(path_prefix))
            and (method is None or r.method.upper() == method.upper())
        ]

    def clear_requests(self) -> None:
        with self._records_lock:
            self._records.clear()

    @property
    def server_errors(self) -> list[str]:
        """Tracebacks of exceptions the API logic raised (each answered with a 500)."""
        with self._records_lock:
            return list(self._server_errors)

    def _record(self, record: RecordedRequest) -> None:
        with self._records_lock:
            self._records.append(record)

    def _note(self, record: RecordedRequest, **changes: Any) -> None:
        with self._records_lock:
            for name, value in changes.items():
                setattr(record, name, value)

    def _respond(self, request: Request, record: RecordedRequest) -> Response:
        try:
            response = self.handle(request)
        except Exception:  # noqa: BLE001 - a bug in a fake must be a 500, not a dead connection
            with self._records_lock:
                self._server_errors.append(traceback.format_exc())
            response = Response(500, self.error_body(500))
        self._note(record, handled_status=response.status)
        return response
