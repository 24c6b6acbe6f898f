"""Start and stop gwd for the end-to-end tests, and a raw-socket HTTP client.

Standard library only. Everything on 127.0.0.1; every wait is bounded.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time


def _die_with_parent():
    """In the child: get SIGKILL when the test process dies (Linux), so a
    crashed test run never leaves gwd behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)   # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def closed_port():
    """A port nothing listens on (bound then released; connect is refused)."""
    return free_port()


class Gwd:
    """One gwd process serving a program directory of .gw files."""

    def __init__(self, build, files, workers=1, extra_args=(), workdir=None):
        self.build = build
        self.exe = os.path.join(os.path.abspath(build), "gwd")
        self.dir = workdir or tempfile.mkdtemp(prefix="gw-e2e-")
        self.prog = os.path.join(self.dir, "prog")
        os.makedirs(self.prog, exist_ok=True)
        for name, text in files.items():
            with open(os.path.join(self.prog, name), "w") as f:
                f.write(text)
        self.port = free_port()
        self.workers = workers
        self.extra_args = list(extra_args)
        self.proc = None
        self.stderr_path = os.path.join(self.dir, "gwd.stderr")
        self.stdout_path = os.path.join(self.dir, "gwd.stdout")
        self.start_error = None

    def argv(self):
        return [self.exe, "--listen", "127.0.0.1:%d" % self.port, "--workers", str(self.workers)] \
            + self.extra_args + [self.prog]

    def start(self, wait=10.0):
        """Start and wait until the port accepts connections. Returns True on
        success; on failure self.start_error says why (the process is stopped)."""
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(self.argv(), stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, cwd=self.dir,
                                     preexec_fn=_die_with_parent)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.start_error = "gwd exited with %d at start: %s" % (self.proc.returncode,
                                                                         self.stderr()[-2000:])
                return False
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
                s.close()
                return True
            except OSError:
                time.sleep(0.03)
        self.start_error = "gwd did not accept connections within %.0fs: %s" % (wait, self.stderr()[-2000:])
        self.stop()
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=5.0):
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code
        (None if it had to be killed)."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                code = self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                code = None
        for f in (self._err, self._out):
            try:
                f.close()
            except Exception:
                pass
        return code

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def proc_status(self, field):
        """A field of /proc/PID/status in kB (VmRSS, VmHWM), or None."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return None

    def reset_peak_rss(self):
        """Start VmHWM over from the current RSS (Linux: clear_refs 5), so a peak
        measured next belongs to what follows, not to an earlier test."""
        try:
            with open("/proc/%d/clear_refs" % self.proc.pid, "w") as f:
                f.write("5")
        except OSError:
            pass

    def under_asan(self):
        try:
            with open("/proc/%d/maps" % self.proc.pid) as f:
                return "asan" in f.read()
        except OSError:
            return False

    # convenience
    def conn(self, timeout=5.0):
        return Conn(self.port, timeout=timeout)

    def request(self, method, target, headers=None, body=None, timeout=5.0, host=True):
        c = self.conn(timeout)
        try:
            return c.request(method, target, headers=headers, body=body, host=host)
        finally:
            c.close()

    def get(self, target, headers=None, timeout=5.0):
        return self.request("GET", target, headers=headers, timeout=timeout)


class Response:
    def __init__(self, version, status, reason, headers, body, elapsed=0.0):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers          # list of (name, value) as received
        self.body = body
        self.elapsed = elapsed

    def header(self, name, default=None):
        """The last value of a header (case-insensitive)."""
        name = name.lower()
        v = default
        for k, val in self.headers:
            if k.lower() == name:
                v = val
        return v

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%d %s %r>" % (self.status, self.headers, self.body[:300])


class HTTPError(Exception):
    pass


class Conn:
    """A raw HTTP/1.1 connection: send exact bytes, read responses."""

    def __init__(self, port, timeout=5.0):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def build(self, method, target, headers=None, body=None, host=True, version="HTTP/1.1"):
        lines = ["%s %s %s" % (method, target, version)]
        names = set()
        for k, v in (headers or []) if isinstance(headers, list) else (headers or {}).items():
            lines.append("%s: %s" % (k, v))
            names.add(k.lower())
        if host and "host" not in names:
            lines.insert(1, "Host: 127.0.0.1:%d" % self.port)
        if body is not None:
            if isinstance(body, str):
                body = body.encode("utf-8")
            if "content-length" not in names and "transfer-encoding" not in names:
                lines.append("Content-Length: %d" % len(body))
        else:
            body = b""
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body

    def request(self, method, target, headers=None, body=None, host=True):
        t0 = time.monotonic()
        self.send(self.build(method, target, headers, body, host))
        r = self.read_response(head=(method == "HEAD"))
        r.elapsed = time.monotonic() - t0
        return r

    def _fill(self, deadline):
        if self.eof:
            raise HTTPError("connection closed by gwd")
        left = deadline - time.monotonic()
        if left <= 0:
            raise HTTPError("timeout reading the response")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(262144)
        except socket.timeout:
            raise HTTPError("timeout reading the response")
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            raise HTTPError("connection closed by gwd")
        self.buf += d

    def _read_until(self, sep, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = self.buf[:i]
                self.buf = self.buf[i + len(sep):]
                return out
            if len(self.buf) > limit:
                raise HTTPError("head too long")
            self._fill(deadline)

    def _read_n(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out = self.buf[:n]
        self.buf = self.buf[n:]
        return out

    def read_response(self, head=False, timeout=None, allow_interim=False, sink=None):
        """Read one full response. 1xx responses are skipped unless
        allow_interim. `sink(bytes)` receives the body instead of storing it
        (for huge bodies). A response without length is read until close."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            raw = self._read_until(b"\r\n\r\n", deadline)
            lines = raw.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise HTTPError("bad status line %r" % lines[0])
            version, status = parts[0], int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            headers = []
            for ln in lines[1:]:
                if ":" not in ln:
                    raise HTTPError("bad header line %r" % ln)
                k, v = ln.split(":", 1)
                headers.append((k, v.strip(" \t")))
            r = Response(version, status, reason, headers, b"")
            if 100 <= status < 200:
                if allow_interim:
                    return r
                continue
            break
        if head or status in (204, 304):
            return r
        te = (r.header("Transfer-Encoding") or "").lower()
        cl = r.header("Content-Length")
        chunks = []

        def put(b):
            if sink:
                sink(b)
            else:
                chunks.append(b)
        if "chunked" in te:
            while True:
                line = self._read_until(b"\r\n", deadline).split(b";")[0].strip()
                size = int(line, 16)
                if size == 0:
                    while self._read_until(b"\r\n", deadline) != b"":
                        pass
                    break
                while size > 0:
                    if not self.buf:
                        self._fill(deadline)
                    take = self.buf[:size]
                    self.buf = self.buf[len(take):]
                    size -= len(take)
                    put(take)
                self._read_n(2, deadline)
        elif cl is not None:
            n = int(cl)
            while n > 0:
                if not self.buf:
                    self._fill(deadline)
                take = self.buf[:n]
                self.buf = self.buf[len(take):]
                n -= len(take)
                put(take)
        else:
            while True:
                try:
                    self._fill(deadline)
                except HTTPError as e:
                    if self.eof:
                        break
                    raise e
                put(self.buf)
                self.buf = b""
        r.body = b"".join(chunks)
        return r

    def read_responses(self, n, timeout=None):
        return [self.read_response(timeout=timeout) for _ in range(n)]

    def closed(self, timeout=2.0):
        """True when gwd closes the connection within `timeout` (recv returns
        0 or the connection is reset) and sends nothing more."""
        if self.buf:
            return False
        if self.eof:
            return True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not d:
                self.eof = True
                return True
            self.buf += d
            return False


def suite_args(argv, root):
    """The command line of an e2e suite: BUILD_DIR [-k substr] [-v]. Returns
    (absolute build dir, filter or None, verbose)."""
    args = list(argv)
    verbose = "-v" in args
    flt = None
    if "-k" in args:
        flt = args[args.index("-k") + 1]
        del args[args.index("-k"):args.index("-k") + 2]
    args = [a for a in args if a != "-v"]
    return (os.path.join(root, args[0]) if args else os.path.join(root, "build")), flt, verbose
