#!/usr/bin/python3
"""End-to-end tests of gwd's hot reload and graceful drain: a real gwd per test,
its program rewritten on disk, SIGHUP or the admin's POST /reload, SIGTERM.

    /usr/bin/python3 tests/e2e/reload.py [BUILD_DIR] [-k SUBSTRING] [-v]

Prints one "FAIL e2e-reload/NAME: why" line per failure and ends with
"N passed, N failed" (exit 1 if anything failed). Standard library only.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mock import Mock  # noqa: E402
from gwd import Gwd, Conn, free_port  # noqa: E402
from suite import Suite, Fail, check, eq  # noqa: E402

S = Suite("e2e-reload", ROOT, watchdog=180, width=40, limit=600)
BUILD = S.build
GWD_EXE = S.gwd_exe
GWC_EXE = os.path.join(BUILD, "gwc")

MOCK = None

test = S.test


def program(v, delay_path="/slow"):
    """Version v of the test program: /v answers v; /slow waits for the mock."""
    return """
server {{ drain 30s }}
backend m {{ url "{M}" timeout 10s }}
endpoint GET /v {{ respond {{ v: {v} }} }}
endpoint GET /slow {{ s = m GET "{D}"; respond {{ v: {v}, s: s.ok }} }}
""".format(M=MOCK.url, v=v, D=delay_path)


class Server:
    """gwd on a program directory, with an admin port."""

    def __init__(self, text, extra=()):
        self.admin = free_port()
        self.g = Gwd(BUILD, {"main.gw": text}, workers=2,
                     extra_args=["--admin", "127.0.0.1:%d" % self.admin] + list(extra))
        if not self.g.start():
            raise Fail(self.g.start_error)

    def write(self, text):
        path = os.path.join(self.g.prog, "main.gw")
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)

    def admin_req(self, method, target):
        c = Conn(self.admin, timeout=30)
        try:
            return c.request(method, target)
        finally:
            c.close()

    def v(self):
        r = self.g.get("/v")
        eq(r.status, 200, "GET /v status")
        return json.loads(r.body)["v"]

    def stop(self):
        return self.g.stop(5.0)


def wait_for(fn, want, secs=5.0, what="value"):
    end = time.monotonic() + secs
    last = None
    while time.monotonic() < end:
        last = fn()
        if last == want:
            return
        time.sleep(0.05)
    raise Fail("%s: waited %.0f s for %r, last %r" % (what, secs, want, last))


@test
def test_sighup_reloads():
    s = Server(program(1))
    try:
        eq(s.v(), 1, "before")
        s.write(program(2))
        s.g.proc.send_signal(signal.SIGHUP)
        wait_for(s.v, 2, what="/v after SIGHUP")
        check('"reloaded' in s.g.stderr(), "no reload log line: %s" % s.g.stderr()[-500:])
        r = s.admin_req("GET", "/ready")
        eq(r.status, 200, "/ready after a reload")
    finally:
        eq(s.stop(), 0, "exit code")


@test
def test_admin_post_reload():
    s = Server(program(1))
    try:
        s.write(program(2))
        r = s.admin_req("POST", "/reload")
        eq(r.status, 200, "POST /reload status")
        body = json.loads(r.body)
        eq(body["status"], "reloaded", "status")
        eq(body["generation"], 2, "generation")
        # the workers take it up on their loops: at once for practical purposes
        wait_for(s.v, 2, secs=2, what="/v after POST /reload")
        r = s.admin_req("GET", "/reload")
        eq(r.status, 405, "GET /reload")
        eq(r.header("Allow"), "POST", "Allow")
        # the public listener does not serve the admin API
        r = s.g.request("POST", "/reload")
        eq(r.status, 404, "POST /reload on the public port")
    finally:
        s.stop()


@test
def test_broken_program_refused():
    s = Server(program(1))
    try:
        s.write(program(1).replace("respond { v: 1 }", "respond { v: 1 "))   # a syntax error
        r = s.admin_req("POST", "/reload")
        eq(r.status, 422, "POST /reload of a broken program")
        body = json.loads(r.body)
        eq(body["status"], "refused", "status")
        eq(body["generation"], 1, "generation unchanged")
        eq(s.v(), 1, "the old program keeps serving")
        # the answer names the error itself (its file:line), not only "see the log"
        check(body["message"].startswith("refused: ") and "main.gw:" in body["message"] and "error:" in body["message"],
              "the answer does not name the error: %r" % body["message"])
        err = s.g.stderr()
        check("main.gw:" in err and "refused" in err, "no diagnostic with file:line in the log: %s" % err[-800:])
        # SIGHUP with the broken program: refused again, still serving
        s.g.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        check(s.g.alive(), "gwd died on a broken reload")
        eq(s.v(), 1, "still the old program after SIGHUP")
        # fixed: the next reload goes through, generation 2 (refusals do not count)
        s.write(program(3))
        r = s.admin_req("POST", "/reload")
        eq(json.loads(r.body)["generation"], 2, "generation after a good reload")
        wait_for(s.v, 3, what="/v after the fix")
    finally:
        eq(s.stop(), 0, "exit code")


@test
def test_reload_under_load():
    s = Server(program(0))
    stop = threading.Event()
    errors = []
    seen = set()
    counts = [0]
    lock = threading.Lock()

    def loop(keepalive):
        c = None
        while not stop.is_set():
            try:
                if c is None:
                    c = Conn(s.g.port, timeout=10)
                r = c.request("GET", "/v")
                if r.status != 200:
                    raise Exception("status %d %r" % (r.status, r.body[:200]))
                with lock:
                    seen.add(json.loads(r.body)["v"])
                    counts[0] += 1
                if not keepalive or r.header("Connection") == "close":
                    c.close()
                    c = None
            except Exception as e:    # noqa: BLE001 - every failure counts
                errors.append(repr(e))
                if c:
                    c.close()
                c = None
        if c:
            c.close()

    threads = [threading.Thread(target=loop, args=(i % 2 == 0,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for v in range(1, 7):
            time.sleep(0.25)
            s.write(program(v))
            if v % 2:
                s.g.proc.send_signal(signal.SIGHUP)
            else:
                eq(s.admin_req("POST", "/reload").status, 200, "POST /reload %d" % v)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    try:
        eq(errors[:3], [], "failed requests during reloads (of %d)" % counts[0])
        check(counts[0] > 100, "only %d requests made" % counts[0])
        check(len(seen) >= 3, "the load saw versions %r only" % sorted(seen))
        wait_for(s.v, 6, secs=2, what="/v at the end")
    finally:
        eq(s.stop(), 0, "exit code")


@test
def test_inflight_finishes_on_old_program():
    MOCK.json("/slow", {"ok": True}, delay=1.0)
    s = Server(program(1))
    try:
        out = {}

        def slow():
            out["r"] = s.g.get("/slow", timeout=10)
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        s.write(program(2))
        eq(s.admin_req("POST", "/reload").status, 200, "reload")
        eq(s.v(), 2, "a new request sees the new program")
        t.join(10)
        r = out.get("r")
        check(r is not None, "the in-flight request did not finish")
        eq(r.status, 200, "in-flight status")
        eq(json.loads(r.body), {"v": 1, "s": True}, "the in-flight request finished on its program")
    finally:
        eq(s.stop(), 0, "exit code")


@test
def test_reload_gwb():
    s = Server(program(1))      # for its temp dir only
    s.stop()
    work = s.g.dir
    gw_src = os.path.join(work, "p.gw")
    gwb = os.path.join(work, "p.gwb")

    def build(v):
        with open(gw_src, "w") as f:
            f.write(program(v))
        r = subprocess.run([GWC_EXE, "build", "-o", gwb + ".tmp", gw_src], capture_output=True, text=True)
        eq(r.returncode, 0, "gwc build: %s" % r.stderr)
        os.replace(gwb + ".tmp", gwb)
    build(1)
    port, admin = free_port(), free_port()
    err = open(os.path.join(work, "gwb.stderr"), "wb")
    p = subprocess.Popen([GWD_EXE, "--listen", "127.0.0.1:%d" % port, "--admin", "127.0.0.1:%d" % admin,
                          "--workers", "1", gwb], stdout=subprocess.DEVNULL, stderr=err)
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)

        def v():
            c = Conn(port)
            try:
                return json.loads(c.request("GET", "/v").body)["v"]
            finally:
                c.close()
        eq(v(), 1, "the .gwb before")
        build(2)
        p.send_signal(signal.SIGHUP)
        wait_for(v, 2, what="the .gwb after SIGHUP")
        # a corrupt .gwb is refused by the verifier; the old program serves on
        with open(gwb, "r+b") as f:
            f.seek(40)
            f.write(b"\xff\xff\xff\xff")
        p.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        eq(v(), 2, "after a corrupt .gwb")
    finally:
        p.send_signal(signal.SIGTERM)
        code = p.wait(10)
        err.close()
    eq(code, 0, "exit code")


@test
def test_drain_finishes_inflight():
    MOCK.json("/slow2", {"ok": True}, delay=1.2)
    s = Server(program(1, "/slow2"))
    out = {}

    def slow():
        try:
            out["r"] = s.g.get("/slow", timeout=10)
        except Exception as e:  # noqa: BLE001
            out["e"] = repr(e)
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    s.g.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # draining: the public port takes no new connection; the admin says 503
    refused = False
    try:
        c = socket.create_connection(("127.0.0.1", s.g.port), timeout=1)
        c.sendall(b"GET /v HTTP/1.1\r\nHost: x\r\n\r\n")
        c.settimeout(2)
        data = c.recv(100)
        refused = data == b""
        c.close()
    except OSError:
        refused = True
    check(refused, "a new connection was served while draining")
    r = s.admin_req("GET", "/ready")
    eq(r.status, 503, "/ready while draining")
    t.join(10)
    check("r" in out, "the in-flight request failed: %r" % out.get("e"))
    eq(out["r"].status, 200, "in-flight status")
    eq(json.loads(out["r"].body), {"v": 1, "s": True}, "in-flight body")
    code = s.g.proc.wait(10)
    eq(code, 0, "exit code after the drain")
    check(time.monotonic() - t0 < 5, "the drain took %.1f s" % (time.monotonic() - t0))


@test
def test_second_signal_exits_now():
    MOCK.json("/slow3", {"ok": True}, delay=8)
    s = Server(program(1, "/slow3"))
    c = Conn(s.g.port, timeout=10)
    try:
        c.send(c.build("GET", "/slow"))
        time.sleep(0.3)
        s.g.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        check(s.g.alive(), "gwd exited at the first signal with a request in flight")
        t0 = time.monotonic()
        s.g.proc.send_signal(signal.SIGTERM)
        code = s.g.proc.wait(5)
        check(time.monotonic() - t0 < 1.5, "the second signal took %.1f s" % (time.monotonic() - t0))
        check(code != 0, "exit code %r after a second signal" % code)
    finally:
        c.close()


@test
def test_drain_deadline_and_no_reload_while_draining():
    """--drain-timeout takes a duration; past it gwd exits 0 even with a
    request in flight; POST /reload is refused while draining (as SIGHUP is
    ignored); a --drain-timeout that is not a duration is a usage error."""
    for bad in ("abc", "1.5s", "-5", "30x", ""):
        r = subprocess.run([GWD_EXE, "--drain-timeout", bad, "--check", "/nonexistent.gw"],
                           capture_output=True, text=True, timeout=10)
        eq(r.returncode, 2, "--drain-timeout %r: exit code" % bad)
        check("--drain-timeout" in r.stderr, "--drain-timeout %r: message %r" % (bad, r.stderr))
    MOCK.json("/slow4", {"ok": True}, delay=6)
    s = Server(program(1, "/slow4"), extra=["--drain-timeout", "600ms"])
    c = Conn(s.g.port, timeout=10)
    try:
        c.send(c.build("GET", "/slow"))
        time.sleep(0.3)
        t0 = time.monotonic()
        s.g.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        r = s.admin_req("POST", "/reload")
        eq(r.status, 503, "POST /reload while draining")
        eq(json.loads(r.body)["status"], "draining", "its status")
        code = s.g.proc.wait(5)
        dt = time.monotonic() - t0
        eq(code, 0, "exit code after the drain deadline")
        check(0.5 <= dt < 2.5, "the drain took %.2f s (--drain-timeout 600ms)" % dt)
        check("up to 600 ms" in s.g.stderr(), "the drain line: %s" % s.g.stderr()[-400:])
    finally:
        c.close()


@test
def test_drain_finishes_a_half_received_request():
    """A request whose head is still arriving when SIGTERM comes is in flight:
    it is answered (Connection: close); an idle keep-alive connection is
    closed at once."""
    s = Server(program(1))
    c = Conn(s.g.port, timeout=5)
    idle = Conn(s.g.port, timeout=5)
    try:
        eq(idle.request("GET", "/v").status, 200, "a request before the drain")
        c.send(b"GET /v HTTP/1.1\r\nHost: x")
        time.sleep(0.2)
        s.g.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        c.send(b"\r\n\r\n")
        r = c.read_response()
        eq(r.status, 200, "the half-received request")
        eq(r.header("Connection"), "close", "its Connection")
        c.close()                       # (else gwd lingers up to 2 s for it)
        idle.sock.settimeout(2)
        eq(idle.sock.recv(10), b"", "the idle keep-alive connection: closed")
        eq(s.g.proc.wait(5), 0, "exit code")
    finally:
        c.close()
        idle.close()


@test
def test_stderr_is_json_lines_with_warnings():
    """Compiler warnings of a program that loads (at start and at a reload)
    are JSON log lines like the rest of stderr."""
    warn = program(1) + 'endpoint GET /w { x = m GET "/w"; respond { ok: true } }\n'   # unused binding
    s = Server(warn)
    try:
        s.write(warn.replace("v: 1", "v: 2"))
        eq(s.admin_req("POST", "/reload").status, 200, "reload")
        # a refused program whose quoted source line is not UTF-8: its
        # diagnostics are logged all the same (never as "msg": null)
        path = os.path.join(s.g.prog, "main.gw")
        with open(path, "wb") as f:
            f.write(program(3).encode() + b'endpoint GET /u { respond { x: "caf\xe9" } }\n')
        eq(s.admin_req("POST", "/reload").status, 422, "reload of a program that is not UTF-8")
    finally:
        eq(s.stop(), 0, "exit code")
    lines = s.g.stderr().splitlines()
    nulls = [x for x in lines if '"msg":null' in x]
    eq(nulls, [], "log lines that lost their message")
    check(any('respond { x: \\"caf?\\" }' in x for x in lines), "the quoted source line: %s" % lines[-6:])
    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    eq(bad[:3], [], "stderr lines that are not JSON")
    warns = [json.loads(x)["msg"] for x in lines if json.loads(x)["level"] == "warn" and "unused binding" in x]
    eq(len(warns), 2, "a warn line for the warning at start and at the reload (%r)" % warns)


def setup():
    global MOCK
    MOCK = Mock().start()
    MOCK.json("/slow", {"ok": True}, delay=1.0)


def main():
    return S.main(setup=setup, teardown=lambda: MOCK.stop())


if __name__ == "__main__":
    sys.exit(main())
