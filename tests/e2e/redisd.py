"""A throwaway redis-server for the end-to-end tests, and a tiny RESP client.

The server runs on 127.0.0.1 on a free port, without persistence, in its own
temporary directory; it gets SIGKILL if the test process dies (Linux).
Standard library only; every wait is bounded.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from gwd import _die_with_parent, free_port


class RedisError(Exception):
    pass


class Resp:
    """One RESP connection (commands are lists of str/bytes/int)."""

    def __init__(self, port, timeout=2.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise RedisError("connection closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _n(self, n):
        while len(self.buf) < n + 2:
            d = self.sock.recv(65536)
            if not d:
                raise RedisError("connection closed")
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n + 2:]
        return out

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RedisError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._n(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError("bad reply %r" % line)

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            if isinstance(a, int):
                a = str(a)
            if isinstance(a, str):
                a = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()


class Redis:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="gw-redis-")
        self.proc = None
        self.log_path = os.path.join(self.dir, "redis.log")
        self.stopped = False

    def start(self, wait=10.0):
        """Start and wait for PING; returns None or why it failed."""
        exe = shutil.which("redis-server")
        if not exe:
            return "redis-server not found (make deps installs it)"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--protected-mode", "no"],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.stopped = False
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return "redis-server exited with %d: %s" % (self.proc.returncode, self.log()[-500:])
            try:
                c = Resp(self.port, 0.5)
                try:
                    if c.cmd("PING") == "PONG":
                        return None
                finally:
                    c.close()
            except (OSError, RedisError):
                time.sleep(0.03)
        self.kill()
        return "redis-server did not answer PING within %.0fs" % wait

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def client(self, timeout=2.0):
        return Resp(self.port, timeout)

    def cmd(self, *args):
        c = self.client()
        try:
            return c.cmd(*args)
        finally:
            c.close()

    def pause(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            self.stopped = True

    def resume(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def kill(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.stopped = False
        try:
            self._log.close()
        except Exception:
            pass

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
