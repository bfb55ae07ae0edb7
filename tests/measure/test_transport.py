"""The lean HTTP/1.1 transport: framing, keep-alive reuse, stale connections, typed errors.

The parser is fed real response bytes split at every possible boundary; the connections talk
to a scripted TCP server that answers each request with given bytes and counts connections.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from mabench.measure import transport
from mabench.measure.errors import (
    ProtocolError,
    ServerCallError,
    ServerConnectError,
    ServerHTTPError,
    ServerTimeoutError,
)
from mabench.measure.transport import (
    SSE,
    AsyncConnection,
    MalformedResponse,
    ResponseParser,
    SSEFraming,
    SyncConnection,
    error_message,
    json_body,
)

LINES = [json.dumps({"response": f"tok{i} ", "done": False}) for i in range(3)] + [
    json.dumps({"response": "", "done": True, "eval_count": 3})
]
NDJSON = "".join(line + "\n" for line in LINES).encode()


def chunked(body: bytes, sizes: tuple[int, ...] = (7, 30, 1), ext: bool = True) -> bytes:
    """``body`` in chunks of ``sizes`` (sizes in upper-case hex, as some servers write them),
    with a chunk extension on every size line or on none, and a trailer."""
    out, pos, i = [], 0, 0
    while pos < len(body):
        size = sizes[i % len(sizes)]
        piece = body[pos : pos + size]
        out.append(f"{len(piece):X}{';ext=1' if ext else ''}\r\n".encode() + piece + b"\r\n")
        pos, i = pos + size, i + 1
    return b"".join(out) + b"0\r\nx-trailer: yes\r\n\r\n"


def response(body: bytes, *, status: str = "200 OK", framing: str = "chunked", extra: str = ""):
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/x-ndjson\r\n{extra}"
    if framing in ("chunked", "chunked-plain"):
        body = chunked(body, ext=framing == "chunked")
        return (head + "transfer-encoding: chunked\r\n\r\n").encode() + body
    if framing == "length":
        return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body
    return (head + "\r\n").encode() + body  # close-delimited


def feed_in_pieces(raw: bytes, size: int, eof: bool = False) -> tuple[ResponseParser, bytes]:
    parser, body = ResponseParser(), b""
    for pos in range(0, len(raw), size):
        body += parser.feed(raw[pos : pos + size])
    if eof:
        parser.eof()
    return parser, body


# ---------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "chunked-plain", "length", "close"])
@pytest.mark.parametrize("size", [1, 2, 5, 64, 10_000])
def test_every_framing_gives_the_body_whatever_the_split(framing, size):
    parser, body = feed_in_pieces(response(NDJSON, framing=framing), size, eof=framing == "close")
    assert body == NDJSON
    assert parser.status == 200
    assert parser.complete
    assert parser.keep_alive is (framing != "close")


@pytest.mark.parametrize("size", [1, 3, 17, 10_000])
def test_chunks_read_whole_and_chunks_read_in_pieces_give_the_same_body(size):
    """Whole chunks take a shortcut past the chunk state machine: whatever mix of whole and
    split chunks, extensions or none, and line breaks inside a chunk's data, the body is the
    same, and a chunk longer than its size line is still refused."""
    data = b"\r\n".join(NDJSON.splitlines()) + b"\r\n0\r\n\r\n"  # CRLF and "0" inside data
    plain = chunked(data, sizes=(5, 40, 2, 300), ext=False)
    mixed = chunked(data[:50], ext=True).removesuffix(b"0\r\nx-trailer: yes\r\n\r\n")
    mixed += chunked(data[50:], sizes=(9,), ext=False)
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    for raw in (head + plain, head + mixed):
        parser, body = feed_in_pieces(raw, size)
        assert body == data
        assert parser.complete and parser.keep_alive
    with pytest.raises(MalformedResponse, match="longer than"):
        feed_in_pieces(head + b"3\r\nabc\r\n2\r\nabcd\r\n0\r\n\r\n", size)


def test_interim_100_continue_is_skipped_and_http10_closes():
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"{}", framing="length").replace(
        b"HTTP/1.1", b"HTTP/1.0"
    )
    parser, body = feed_in_pieces(raw, 3)
    assert (parser.status, body, parser.complete, parser.keep_alive) == (200, b"{}", True, False)


def test_connection_close_header_and_trailing_garbage_forbid_reuse():
    parser, _ = feed_in_pieces(response(b"{}", framing="length", extra="connection: close\r\n"), 4)
    assert not parser.keep_alive
    parser, _ = feed_in_pieces(response(b"{}", framing="length") + b"junk", 100)
    assert parser.complete and not parser.keep_alive


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n", "bad content-length"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n", "longer than"),
    ],
)
def test_malformed_responses_are_named(raw, message):
    with pytest.raises(MalformedResponse, match=message):
        feed_in_pieces(raw, 1000)


def test_a_body_cut_short_is_a_broken_connection():
    raw = response(NDJSON, framing="chunked")
    parser, _ = feed_in_pieces(raw[:-20], 9)
    with pytest.raises(ConnectionError, match="mid-answer"):
        parser.eof()
    with pytest.raises(ConnectionError, match="before the answer's head"):
        ResponseParser().eof()


# ---------------------------------------------------------------------------------------------
# The connections, against a scripted server
# ---------------------------------------------------------------------------------------------


@dataclass
class Scripted:
    """A TCP server answering request *i* with ``answers[i]``; ``close_after`` closes then."""

    answers: list[bytes]
    close_after: set[int] = field(default_factory=set)
    #: serve HTTPS with this context (the handshake runs in the connection's thread)
    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except ssl.SSLError:  # the client refused the certificate
                conn.close()
                return
        with conn:
            buf = b""
            while True:  # until the client closes
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                index = len(self.requests) - 1
                if index < len(self.answers):
                    conn.sendall(self.answers[index])
                if index in self.close_after:
                    return


@pytest.fixture
def scripted() -> Iterator:
    sockets = []

    def start(
        answers: list[bytes], close_after: set[int] = frozenset(), tls: ssl.SSLContext | None = None
    ) -> tuple[Scripted, str]:
        server = Scripted(list(answers), set(close_after), tls)
        sock = socket.create_server(("127.0.0.1", 0))
        sockets.append(sock)
        threading.Thread(target=server.serve, args=(sock,), daemon=True).start()
        scheme = "https" if tls else "http"
        return server, f"{scheme}://localhost:{sock.getsockname()[1]}"

    yield start
    for sock in sockets:
        sock.close()


class Lines:
    def __init__(self) -> None:
        self.t_sent_ns = 0
        self.lines: list[bytes] = []

    def started(self, t_sent_ns: int) -> None:
        self.t_sent_ns = t_sent_ns

    def line(self, raw: bytes) -> None:
        self.lines.append(raw)


BODY = json_body({"model": "m", "prompt": "héllo", "stream": True})


def run_sync(url: str, n: int, read_s: float = 5.0) -> list[Lines | ServerCallError]:
    """``n`` calls on one connection: each call's lines, or the error it raised."""
    conn = SyncConnection(url, 2.0, read_s)
    results: list[Lines | ServerCallError] = []
    try:
        for _ in range(n):
            sink = Lines()
            try:
                conn.stream("/api/generate", BODY, sink, "solo")
                results.append(sink)
            except ServerCallError as exc:
                results.append(exc)
        return results
    finally:
        conn.close()


def run_async(url: str, n: int, read_s: float = 5.0) -> list[Lines | ServerCallError]:
    async def go() -> list[Lines | ServerCallError]:
        conn = AsyncConnection(url, 2.0, read_s)
        results: list[Lines | ServerCallError] = []
        try:
            for _ in range(n):
                sink = Lines()
                try:
                    await conn.stream("/api/generate", BODY, sink, "solo")
                    results.append(sink)
                except ServerCallError as exc:
                    results.append(exc)
            return results
        finally:
            await conn.aclose()

    return asyncio.run(go())


def only(results: list[Lines | ServerCallError]) -> Lines | ServerCallError:
    (result,) = results
    return result


RUNNERS = pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])


@RUNNERS
def test_calls_share_one_keep_alive_connection(scripted, run):
    server, url = scripted([response(NDJSON), response(NDJSON, framing="length")])
    sinks = run(url, 2)
    assert server.connections == 1
    for sink in sinks:
        assert sink.lines == NDJSON.split(b"\n")[:-1]
        assert sink.t_sent_ns > 0
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/generate HTTP/1.1\r\nhost: localhost:")
    assert json.loads(body) == {"model": "m", "prompt": "héllo", "stream": True}


@RUNNERS
def test_a_connection_the_server_closed_while_idle_is_reopened_once(scripted, run):
    server, url = scripted([response(NDJSON), response(NDJSON)], close_after={0})
    sinks = run(url, 2)
    assert server.connections == 2
    assert len(server.requests) == 2  # the retried request was never answered twice
    assert sinks[1].lines == NDJSON.split(b"\n")[:-1]


@RUNNERS
def test_bytes_after_an_answer_are_never_read_as_the_next_answer(scripted, run):
    # The server sends a whole second answer nobody asked for right after the first: the
    # connection is not trusted again, so the next call opens a new one and gets its own.
    stray = response(b'{"response":"stray","done":true}\n')
    server, url = scripted([response(NDJSON) + stray, response(NDJSON)])
    first, second = run(url, 2)
    assert first.lines == NDJSON.split(b"\n")[:-1]
    assert second.lines == NDJSON.split(b"\n")[:-1]
    assert server.connections == 2


@RUNNERS
def test_an_error_status_is_an_http_error_and_the_connection_stays_usable(scripted, run):
    error = response(b'{"error":"model \'x\' not found"}', status="404 Not Found", framing="length")
    server, url = scripted([error, response(NDJSON)])
    failed, ok = run(url, 2)
    assert isinstance(failed, ServerHTTPError)
    assert failed.status == 404
    assert failed.message == "model 'x' not found"
    assert failed.url == url + "/api/generate"
    assert failed.phase == "solo"
    assert ok.lines == NDJSON.split(b"\n")[:-1]
    assert server.connections == 1


@RUNNERS
def test_a_fresh_connection_closed_without_answer_is_a_protocol_error(scripted, run):
    _, url = scripted([b""], close_after={0})
    error = only(run(url, 1))
    assert isinstance(error, ProtocolError)
    assert "before the answer's head" in error.message


@RUNNERS
def test_a_stream_cut_mid_answer_is_a_protocol_error(scripted, run):
    _, url = scripted([response(NDJSON)[:-30]], close_after={0})
    error = only(run(url, 1))
    assert isinstance(error, ProtocolError)
    assert "mid-answer" in error.message


@RUNNERS
def test_silence_is_a_timeout_naming_the_limit(scripted, run):
    _, url = scripted([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"])
    error = only(run(url, 1, read_s=0.3))
    assert isinstance(error, ServerTimeoutError)
    assert error.message.startswith("no answer for 0.3 s")


def test_only_http_urls_are_accepted():
    with pytest.raises(ValueError, match="http://host:port"):
        SyncConnection("ftp://example.org", 1, 1)


# ---------------------------------------------------------------------------------------------
# Server-Sent Events, request headers, error bodies
# ---------------------------------------------------------------------------------------------

#: an SSE body as servers send it: a role-only chunk, CRLF line ends (sse-starlette), a ping
#: comment, an event split over two data lines, a named event, the [DONE] sentinel
SSE_BODY = (
    b'data: {"n": 0}\r\n\r\n'
    b": ping - 2025-01-01 00:00:00\r\n\r\n"
    b'data: {"n":\ndata: 1}\n\n'
    b"event: error\nid: 7\nretry: 100\ndata: boom\n\n"
    b"data: [DONE]\n\n"
)
SSE_EVENTS = [
    ("message", '{"n": 0}'),
    ("message", '{"n":\n1}'),
    ("error", "boom"),
    ("message", "[DONE]"),
]


class Events:
    def __init__(self) -> None:
        self.t_sent_ns = 0
        self.events: list[tuple[str, str]] = []
        self.times: list[int] = []

    def started(self, t_sent_ns: int) -> None:
        self.t_sent_ns = t_sent_ns

    def event(self, name: str, data: str, t_arrived_ns: int) -> None:
        self.events.append((name, data))
        self.times.append(t_arrived_ns)


@pytest.mark.parametrize("size", [1, 3, 17, 10_000])
def test_sse_framing_gives_the_events_whatever_the_split(size):
    events = Events()
    framing = SSEFraming(events)
    _, body = feed_in_pieces(response(SSE_BODY), size)
    *lines, rest = body.split(b"\n")
    for line in lines:
        framing.line(line)
    assert rest == b""
    assert events.events == SSE_EVENTS
    assert events.times == sorted(events.times)


def test_an_event_the_stream_ends_inside_of_is_dropped():
    events = Events()
    framing = SSEFraming(events)
    for line in (b"data: complete", b"", b"data: cut"):
        framing.line(line)
    assert events.events == [("message", "complete")]


def stream_events(url: str, kind: str, headers: dict[str, str]) -> Events:
    """One SSE call on a new sync or async connection with ``headers``."""
    events = Events()
    path, framing = "/v1/chat/completions", SSEFraming(events)
    if kind == "sync":
        conn = SyncConnection(url, 2.0, 5.0, headers)
        try:
            conn.stream(path, BODY, framing, "solo", accept=SSE)
        finally:
            conn.close()
        return events

    async def go() -> None:
        conn = AsyncConnection(url, 2.0, 5.0, headers)
        try:
            await conn.stream(path, BODY, framing, "solo", accept=SSE)
        finally:
            await conn.aclose()

    asyncio.run(go())
    return events


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sse_streams_over_the_connections_with_accept_and_extra_headers(scripted, kind):
    server, url = scripted([response(SSE_BODY)])
    events = stream_events(url, kind, {"authorization": "Bearer k-1"})
    assert events.events == SSE_EVENTS and events.t_sent_ns > 0
    head = server.requests[0].partition(b"\r\n\r\n")[0].decode()
    assert "\r\naccept: text/event-stream\r\n" in head
    assert "\r\nauthorization: Bearer k-1\r\n" in head


@pytest.mark.parametrize(
    ("name", "value"), [("authorization", "Bearer a\r\nx-evil: 1"), ("bad:name", "v"), ("x", "\0")]
)
def test_header_values_that_could_break_a_request_are_refused(name, value):
    with pytest.raises(ValueError, match="character HTTP does not allow"):
        SyncConnection("http://127.0.0.1:1", 1, 1, {name: value})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": "plain"}', "plain"),
        (b'{"error": {"message": "openai style", "type": "x"}}', "openai style"),
        (b'{"detail": "Invalid API Key"}', "Invalid API Key"),
        (b'{"other": 1}', '{"other": 1}'),
        (b"not json", "not json"),
        (b"", "(empty body)"),
    ],
)
def test_error_messages_of_every_server_style(body, message):
    assert error_message(body) == message


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for ``localhost`` (made with the ``openssl`` command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@RUNNERS
def test_https_streams_and_keeps_its_connection(scripted, run, certificate, monkeypatch):
    # The client verifies the server against the CA store it is given: here, the test's own
    # certificate; the answer streams over one TLS connection, reused by the second call.
    cert, key = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=cert)
    monkeypatch.setattr(transport, "_tls_context", lambda: trusting)
    server, url = scripted([response(NDJSON), response(NDJSON)], tls=server_side)
    first, second = run(url, 2)
    assert first.lines == second.lines == NDJSON.split(b"\n")[:-1]
    assert server.connections == 1


@RUNNERS
def test_https_to_a_server_the_ca_store_does_not_trust_is_a_connect_error(
    scripted, run, certificate
):
    cert, key = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    _, url = scripted([response(NDJSON)], tls=server_side)
    error = only(run(url, 1))
    assert isinstance(error, ServerConnectError)
    assert "certificate verify failed" in error.message
