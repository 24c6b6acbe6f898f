"""A programmable mock backend for the end-to-end tests of gwd.

Runs an http.server.ThreadingHTTPServer (HTTP/1.1, keep-alive, always a
Content-Length) in a thread of the test process. Routes are programmed with
`mock.route(path, ...)`; a path ending in "*" matches every path starting
with what precedes it (longest prefix wins, exact paths beat prefixes).
Every request is logged (method, raw target, headers, body, times) and
counted per path (without the query).

Standard library only.
"""
import hashlib
import http.server
import json
import socket
import struct
import threading
import time
import urllib.parse


def stream_chunk(i, size):
    """Deterministic bytes of block i (for huge streamed bodies)."""
    seed = hashlib.sha256(b"gw-block-%d" % (i % 97)).digest()
    return (seed * (size // len(seed) + 1))[:size]


def stream_bytes(total, block=65536):
    """Yield the whole body of a streamed route, block by block."""
    i = 0
    sent = 0
    while sent < total:
        n = min(block, total - sent)
        yield stream_chunk(i, n)
        sent += n
        i += 1


def stream_digest(total, block=65536):
    h = hashlib.sha256()
    for b in stream_bytes(total, block):
        h.update(b)
    return h.hexdigest()


class Route:
    """What the mock answers on one path.

    status   int
    body     bytes (sent exactly), str (utf-8), or any other value (json.dumps)
    headers  list of (name, value) sent as well
    delay    seconds to sleep before answering
    mode     None | "close_mid_body" | "reset" | "stream" | "echo" | "hang" | "early"
             (early: answer after the delay without reading the request body)
             echo: the body is a JSON description of the request
             stream: `size` bytes of stream_bytes(), `block` at a time
    ctype    Content-Type (default application/json; None: no header)
    fn       optional callable(request_dict) -> (status, headers, body)
    """

    def __init__(self, status=200, body=b"{}", headers=None, delay=0.0, mode=None,
                 ctype="application/json", size=0, block=65536, fn=None):
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        self.delay = delay
        self.mode = mode
        self.ctype = ctype
        self.size = size
        self.block = block
        self.fn = fn


def _to_bytes(body):
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


class _Handler(http.server.BaseHTTPRequestHandler):
    # the head and the body are two writes: without TCP_NODELAY the second
    # waits for the client's delayed ACK (~40 ms per call on a reused connection)
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "mock"
    sys_version = ""

    def log_message(self, *a):  # quiet
        pass

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    while True:
                        t = self.rfile.readline(65536)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                out += self.rfile.read(size)
                self.rfile.readline(16)
            return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _handle(self):
        mock = self.server.mock
        t0 = time.monotonic()
        path_only = urllib.parse.urlsplit(self.path).path if self.path.startswith("/") else self.path
        early = mock.lookup(path_only)
        # mode "early": answer (after the delay) without reading the request body
        body = b"" if early is not None and early.mode == "early" else self._read_body()
        entry = {
            "method": self.command,
            "path": self.path,            # raw request target, query included
            "path_only": path_only,
            "headers": list(self.headers.items()),
            "hdict": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "t_start": t0,
            "t_end": None,
            "version": self.request_version,
            "peer": self.client_address,
        }
        with mock.lock:
            mock.log.append(entry)
            mock.counts[path_only] = mock.counts.get(path_only, 0) + 1
        route = mock.lookup(path_only)
        try:
            self._answer(route, entry)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # the caller (gwd) closed the connection before reading the answer
            entry["write_failed"] = True
            self.close_connection = True
        finally:
            entry["t_end"] = time.monotonic()

    def _answer(self, route, entry):
        if route is None:
            b = b'{"error":"mock: no route"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)
            return
        if route.delay:
            time.sleep(route.delay)
        if route.mode == "early":
            b = _to_bytes(route.body)
            self.send_response(route.status)
            self.send_header("Content-Length", str(len(b)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b)
            self.wfile.flush()
            time.sleep(1.0)
            self.close_connection = True
            return
        if route.mode == "hang":
            time.sleep(30)
            self.close_connection = True
            return
        if route.mode == "reset":
            # RST: SO_LINGER with a zero timeout, then close
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        status, headers, body = route.status, list(route.headers), route.body
        if route.fn is not None:
            status, headers, body = route.fn(entry)
        if route.mode == "echo":
            body = {
                "method": entry["method"],
                "path": entry["path"],
                "headers": {k.lower(): v for k, v in entry["headers"]},
                "body": entry["body"].decode("utf-8", "replace"),
                "ok": True,
            }
        self.send_response(status)
        names = {h[0].lower() for h in headers}
        if route.ctype and "content-type" not in names:
            self.send_header("Content-Type", route.ctype)
        for k, v in headers:
            self.send_header(k, v)
        if route.mode == "stream":
            self.send_header("Content-Length", str(route.size))
            self.end_headers()
            for b in stream_bytes(route.size, route.block):
                self.wfile.write(b)
            return
        data = _to_bytes(body)
        if route.mode == "close_mid_body":
            self.send_header("Content-Length", str(len(data) + 100))
            self.end_headers()
            self.wfile.write(data[: max(1, len(data) // 2)])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def setup(self):
        super().setup()
        self.server.mock._conn_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.mock._conn_closed(self.connection)

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, BrokenPipeError, socket.timeout, OSError):
            self.close_connection = True

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass  # clients (gwd) cancelling calls is normal here


class Mock:
    """port: 0 for a free one, or a given port (to bring back a killed mock)."""

    def __init__(self, port=0):
        self.lock = threading.Lock()
        self.routes = {}
        self.prefixes = {}
        self.log = []
        self.counts = {}
        self.conns = set()          # open client connections (sockets)
        self.conns_peak = 0         # most open at once since start / reset_peak()
        self.conns_total = 0        # accepted since start
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.mock = self
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def kill(self):
        """Stop listening and cut every open connection (like a crashed
        process: connects are refused, pooled connections see a reset)."""
        self.stop()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _conn_opened(self, sock):
        with self.lock:
            self.conns.add(sock)
            self.conns_total += 1
            self.conns_peak = max(self.conns_peak, len(self.conns))

    def _conn_closed(self, sock):
        with self.lock:
            self.conns.discard(sock)

    def open_connections(self):
        with self.lock:
            return len(self.conns)

    def reset_peak(self):
        with self.lock:
            self.conns_peak = len(self.conns)

    def route(self, path, **kw):
        r = Route(**kw)
        with self.lock:
            if path.endswith("*"):
                self.prefixes[path[:-1]] = r
            else:
                self.routes[path] = r
        return r

    def json(self, path, obj, status=200, **kw):
        return self.route(path, status=status, body=obj, **kw)

    def lookup(self, path):
        with self.lock:
            r = self.routes.get(path)
            if r is not None:
                return r
            best = None
            for p, pr in self.prefixes.items():
                if path.startswith(p) and (best is None or len(p) > len(best[0])):
                    best = (p, pr)
            return best[1] if best else None

    def reset(self):
        """Forget the log and counters (routes stay)."""
        with self.lock:
            self.log = []
            self.counts = {}

    def count(self, path):
        with self.lock:
            return self.counts.get(path, 0)

    def requests(self, path_prefix=""):
        with self.lock:
            return [e for e in self.log if e["path_only"].startswith(path_prefix)]

    def wait_requests(self, path_prefix, n, timeout=3.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = self.requests(path_prefix)
            if len(r) >= n:
                return r
            time.sleep(0.01)
        return self.requests(path_prefix)
