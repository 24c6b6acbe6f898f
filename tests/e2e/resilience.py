#!/usr/bin/python3
"""End-to-end tests of backend resilience (runtime/gwr_backend.c and its use in
gwr_exchange.c): several urls per backend, round_robin and least_requests,
passive and active health, the circuit breaker, retries, max_connections with
its bounded queue. A real gwd per test (one worker unless said otherwise) and
mock backends on loopback that are slowed, failed, killed and counted.

    /usr/bin/python3 tests/e2e/resilience.py [BUILD_DIR] [-k SUBSTRING] [-v]

Prints one "FAIL e2e-resilience/NAME: why" line per failure and ends with
"N passed, N failed" (exit 1 if anything failed). Standard library only.
Timing bounds are generous: the machine may be small and busy.
"""
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mock import Mock  # noqa: E402
from gwd import Gwd, Conn, free_port, closed_port  # noqa: E402
from suite import Suite, Fail, check, eq  # noqa: E402

S = Suite("e2e-resilience", ROOT, watchdog=300, width=45, limit=800)
BUILD = S.build
GWD_EXE = S.gwd_exe


test = S.test


def fill(text, **kw):
    """The program text with {NAME} replaced (gw braces stay as they are)."""
    for k, v in kw.items():
        text = text.replace("{%s}" % k, str(v))
    return text


class Env:
    """A gwd serving one program, and the mocks it talks to (stopped at the end)."""

    def __init__(self, text, mocks=(), workers=1, admin=False):
        self.mocks = list(mocks)
        self.admin = free_port() if admin else None
        extra = ["--admin", "127.0.0.1:%d" % self.admin] if admin else ["--admin", ""]
        self.g = Gwd(BUILD, {"main.gw": text}, workers=workers, extra_args=extra)
        if not self.g.start():
            self.close()
            raise Fail(self.g.start_error)

    def get(self, path, timeout=10.0, headers=None):
        return self.g.request("GET", path, headers=headers, timeout=timeout)

    def req(self, method, path, body=None, timeout=10.0, headers=None):
        return self.g.request(method, path, body=body, headers=headers, timeout=timeout)

    def write(self, text):
        path = os.path.join(self.g.prog, "main.gw")
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)

    def reload(self):
        c = Conn(self.admin, timeout=30)
        try:
            r = c.request("POST", "/reload")
        finally:
            c.close()
        eq(r.status, 200, "POST /reload: %r" % r.body)

    def metric(self, sample):
        """The value of one sample line of /metrics (name{labels}), or None."""
        c = Conn(self.admin, timeout=30)
        try:
            r = c.request("GET", "/metrics")
        finally:
            c.close()
        for line in r.body.decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def close(self):
        code = self.g.stop(5.0) if self.g.proc else 0
        for m in self.mocks:
            try:
                m.kill()
            except Exception:
                pass
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        code = self.close()
        if exc[0] is None:
            eq(code, 0, "gwd exit code (stderr: %s)" % self.g.stderr()[-800:])


def mock(**routes):
    """A started mock; routes: path -> dict of Route arguments."""
    m = Mock().start()
    for path, kw in routes.items():
        m.route(path, **kw)
    return m


def body(r):
    try:
        return json.loads(r.body)
    except ValueError:
        raise Fail("not JSON: %r" % r.body[:300])


def parallel(fns):
    """Run the callables at once; their results in order (an exception is returned as such)."""
    out = [None] * len(fns)

    def run(i, fn):
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001
            out[i] = e
    ts = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def wait_until(fn, secs, what):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if fn():
            return
        time.sleep(0.05)
    raise Fail("waited %.1f s for %s" % (secs, what))


def ids_at(m, path):
    return [e["hdict"].get("x-request-id") for e in m.requests(path)]


# ---------------------------------------------------------------- balancing

@test
def test_round_robin_spread():
    ms = [mock(**{"/who": dict(body={"m": i})}) for i in range(3)]
    prog = fill("""
backend b { url "{A}" url "{B}" url "{C}" timeout 2s }
endpoint GET /x { w = b GET "/who"; respond { m: w.m } }
""", A=ms[0].url, B=ms[1].url, C=ms[2].url)
    with Env(prog, ms) as e:
        seen = [body(e.get("/x"))["m"] for _ in range(30)]
        eq([m.count("/who") for m in ms], [10, 10, 10], "calls per target")
        eq(seen[:6], [0, 1, 2, 0, 1, 2], "the order of the targets")


@test
def test_least_requests_avoids_a_slow_target():
    slow = mock(**{"/lr": dict(body={"m": "slow"}, delay=1.5)})
    fast = mock(**{"/lr": dict(body={"m": "fast"})})
    prog = fill("""
backend b { url "{S}" url "{F}" balance least_requests timeout 5s }
endpoint GET /x { w = b GET "/lr"; respond { m: w.m } }
""", S=slow.url, F=fast.url)
    with Env(prog, [slow, fast]) as e:
        # all tied at the start: the first call goes to the first url (then round robin)
        bg = []
        t = threading.Thread(target=lambda: bg.append(e.get("/x")))
        t.start()
        wait_until(lambda: slow.count("/lr") == 1, 2.0, "the first call at the slow target")
        t0 = time.monotonic()
        for i in range(10):
            eq(body(e.get("/x"))["m"], "fast", "call %d while the slow one is in flight" % i)
        dt = time.monotonic() - t0
        eq(slow.count("/lr"), 1, "calls at the slow target")
        eq(fast.count("/lr"), 10, "calls at the fast target")
        check(dt < 1.2, "10 calls took %.2f s: they waited for the slow target" % dt)
        t.join(10)
        eq(body(bg[0])["m"], "slow", "the slow call")
        # nothing in flight: ties go round robin again
        got = sorted(body(e.get("/x"))["m"] for _ in range(2))
        eq(got, ["fast", "slow"], "ties")


# ---------------------------------------------------------------- passive health

@test
def test_dead_target_ejected_and_restored():
    live = mock(**{"/d": dict(body={"m": "live"})})
    dead = mock(**{"/d": dict(body={"m": "back"})})
    dport = dead.port
    dead.kill()
    # a long `every`: the active checks stay out of the way; the health block
    # sets the passive threshold (3 calls in a row) and cooldown
    prog = fill("""
backend b {
    url "{L}"
    url "http://127.0.0.1:{D}"
    timeout 2s
    connect_timeout 500ms
    health { path "/health" every 1h failures 3 cooldown 1500ms }
}
endpoint GET /x { w = b GET "/d"; respond { m: w.m } }
endpoint GET /o { w = b GET "/d" optional; respond { m: w.m } }
""", L=live.url, D=dport)
    with Env(prog, [live], admin=True) as e:
        statuses = [e.get("/x").status for _ in range(10)]
        eq(statuses.count(502), 3, "502s before the ejection (%r)" % statuses)
        errs = [e.get("/x") for _ in range(10)]
        eq([r.status for r in errs], [200] * 10, "after 3 failures in a row (`failures 3`) the dead target is out")
        eq(e.metric('gw_backend_target_up{backend="b",target="1"}'), 0, "metrics: the dead target is down")
        eq(e.metric('gw_backend_target_up{backend="b",target="0"}'), 1, "metrics: the live one is up")
        eq(e.metric('gw_backend_target_ejections_total{backend="b",target="1"}'), 1, "metrics: one ejection")
        check("out of rotation" in e.g.stderr(), "no log line about the ejection")
        # brought back on the same port: after the cooldown it serves again
        back = Mock(port=dport).start()
        e.mocks.append(back)
        back.route("/d", body={"m": "back"})
        time.sleep(1.8)
        got = [body(e.get("/x"))["m"] for _ in range(6)]
        check(got.count("back") == 3, "after the cooldown the target serves again: %r" % got)
        check("back in rotation" in e.g.stderr(), "no log line about the return")
        # both dead: one is ejected, the last one in rotation never is (the
        # breaker governs it), so calls keep trying it
        n0 = e.g.stderr().count("out of rotation for")
        live.kill()
        back.kill()
        for _ in range(14):
            eq(e.get("/o").status, 200, "optional calls to dead targets")
        eq(e.g.stderr().count("out of rotation for") - n0, 1, "ejections with both targets dead")
        for port in (live.port, dport):
            m = Mock(port=port).start()
            e.mocks.append(m)
            m.route("/d", body={"m": "again"})
        t0 = time.monotonic()
        wait_until(lambda: e.get("/x").status == 200, 3.0, "the target still in rotation answering")
        check(time.monotonic() - t0 < 1.0, "the target still in rotation waited for a cooldown")


@test
def test_logs_never_show_url_credentials():
    # a url may carry user:password (or come from env()): the health log lines
    # name the target by scheme://host:port only
    live = mock(**{"/d": dict(body={"m": "live"})})
    dead = mock(**{"/d": dict(body={"m": "x"})})
    dport = dead.port
    dead.kill()
    prog = fill("""
backend b {
    url "{L}"
    url "http://gwuser:hunter2@127.0.0.1:{D}/base"
    timeout 2s
    connect_timeout 500ms
    health { path "/health" every 1h failures 2 cooldown 5s }
}
endpoint GET /o { w = b GET "/d" optional; respond { m: w.m } }
""", L=live.url, D=dport)
    with Env(prog, [live]) as e:
        for _ in range(6):
            e.get("/o")
        err = e.g.stderr()
        check("out of rotation" in err, "no ejection logged: %s" % err[-500:])
        check("http://127.0.0.1:%d out of rotation" % dport in err, "the target not named by host:port: %s" % err[-500:])
        check("hunter2" not in err and "gwuser" not in err, "url credentials in the log: %s" % err[-500:])


# ---------------------------------------------------------------- active health

@test
def test_active_health_ejects_and_restores():
    a = mock(**{"/h": dict(body={"m": "a"}), "/health": dict(body={"ok": True})})
    b = mock(**{"/h": dict(body={"m": "b"}), "/health": dict(body={"ok": True})})
    prog = fill("""
backend be {
    url "{A}"
    url "{B}"
    timeout 2s
    health { path "/health" every 200ms failures 2 }
}
endpoint GET /x { w = be GET "/h"; respond { m: w.m } }
""", A=a.url, B=b.url)
    with Env(prog, [a, b]) as e:
        wait_until(lambda: a.count("/health") >= 2 and b.count("/health") >= 2, 3.0, "health checks on both targets")
        got = [body(e.get("/x"))["m"] for _ in range(4)]
        eq(sorted(got), ["a", "a", "b", "b"], "both targets in rotation")
        # b's check fails (its /h still answers: only the checks can take it out)
        b.route("/health", status=503, body={"ok": False})
        wait_until(lambda: "out of rotation: 2 failed health checks" in e.g.stderr(), 3.0, "b taken down")
        b.reset()
        got = [body(e.get("/x"))["m"] for _ in range(6)]
        eq(got, ["a"] * 6, "b down: every call to a")
        eq(b.count("/h"), 0, "calls that reached b")
        # one passing check brings it back
        b.route("/health", body={"ok": True})
        wait_until(lambda: "passes its health check" in e.g.stderr(), 3.0, "b back")
        got = [body(e.get("/x"))["m"] for _ in range(4)]
        eq(sorted(got), ["a", "a", "b", "b"], "b back in rotation")
        # a check that hangs fails within min(every, 1s)
        b.route("/health", mode="hang")
        wait_until(lambda: e.g.stderr().count("out of rotation: 2 failed health checks") >= 2, 4.0,
                   "b taken down by hanging checks")


@test
def test_all_targets_down_fail_fast():
    ms = [mock(**{"/s": dict(body={"m": i}, delay=3.0), "/health": dict(status=503)}) for i in range(2)]
    prog = fill("""
backend b {
    url "{A}"
    url "{B}"
    timeout 2s
    health { path "/health" every 200ms failures 2 }
}
endpoint GET /req { w = b GET "/s"; respond { m: w.m } }
endpoint GET /opt { w = b GET "/s" optional; respond { m: w.m, ok: true } }
endpoint GET /proxy/{rest*} { proxy b "/{rest}" }
""", A=ms[0].url, B=ms[1].url)
    with Env(prog, ms) as e:
        wait_until(lambda: e.g.stderr().count("failed health checks") >= 2, 4.0, "both targets down")
        t0 = time.monotonic()
        r = e.get("/req")
        dt = time.monotonic() - t0
        eq(r.status, 502, "status")
        eq(body(r), {"error": "unavailable", "backend": "b"}, "body")
        check(dt < 0.5, "the answer took %.2f s (timeouts are 2 s)" % dt)
        t0 = time.monotonic()
        r = e.get("/opt")
        dt = time.monotonic() - t0
        eq((r.status, body(r), r.header("X-Gw-Partial")), (200, {"m": None, "ok": True}, "true"), "optional call")
        check(dt < 0.5, "the optional answer took %.2f s" % dt)
        r = e.get("/proxy/s")
        eq((r.status, body(r)), (502, {"error": "unavailable", "backend": "b"}), "proxy")
        eq(ms[0].count("/s") + ms[1].count("/s"), 0, "calls that reached a target")


# ---------------------------------------------------------------- breaker

@test
def test_breaker_opens_probes_and_closes():
    m = mock(**{"/b": dict(status=500, body={"m": "err"})})
    prog = fill("""
backend b {
    url "{M}"
    timeout 2s
    breaker { failures 3 window 10s cooldown 1s }
}
endpoint GET /x { w = b GET "/b"; respond { m: w.m } }
endpoint GET /o { w = b GET "/b" default "fallback"; respond { m: w } }
""", M=m.url)
    with Env(prog, [m], admin=True) as e:
        eq(e.metric('gw_backend_breaker_state{backend="b",state="closed"}'), 1, "metrics: closed at start")
        for i in range(3):
            eq(body(e.get("/x")), {"error": "status", "backend": "b"}, "failure %d" % i)
        eq(m.count("/b"), 3, "calls made")
        eq(e.metric('gw_backend_breaker_state{backend="b",state="open"}'), 1, "metrics: open")
        eq(e.metric('gw_backend_breaker_state{backend="b",state="closed"}'), 0, "metrics: not closed")
        eq(e.metric('gw_backend_breaker_opens_total{backend="b"}'), 1, "metrics: opened once")
        t0 = time.monotonic()
        r = e.get("/x")
        check(time.monotonic() - t0 < 0.5, "an open breaker answers at once")
        eq((r.status, body(r)), (502, {"error": "breaker_open", "backend": "b"}), "open")
        r = e.get("/o")
        eq((r.status, body(r), r.header("X-Gw-Partial")), (200, {"m": "fallback"}, "true"), "open: the default")
        eq(m.count("/b"), 3, "calls that reached the backend while open")
        check("breaker open" in e.g.stderr(), "no log line about the breaker")
        # after the cooldown: one probe (slow), the others still refused meanwhile
        time.sleep(1.2)
        m.route("/b", body={"m": "ok"}, delay=1.0)
        probe = []
        t = threading.Thread(target=lambda: probe.append(e.get("/x")))
        t.start()
        wait_until(lambda: m.count("/b") == 4, 2.0, "the probe at the backend")
        r = e.get("/x")
        eq(body(r), {"error": "breaker_open", "backend": "b"}, "a call while the probe is out")
        t.join(10)
        eq((probe[0].status, body(probe[0])), (200, {"m": "ok"}), "the probe")
        check("breaker closed" in e.g.stderr(), "no log line about closing")
        m.route("/b", body={"m": "ok"})
        for _ in range(5):
            eq(e.get("/x").status, 200, "closed")
        eq(m.count("/b"), 9, "calls made (3 failures, the probe, 5)")
        eq(e.metric('gw_backend_breaker_state{backend="b",state="closed"}'), 1, "metrics: closed again")


@test
def test_breaker_failed_probe_reopens():
    m = mock(**{"/b": dict(status=503, body={})})
    prog = fill("""
backend b { url "{M}" timeout 2s breaker { failures 2 window 5s cooldown 800ms } }
endpoint GET /x { w = b GET "/b"; respond { w } }
""", M=m.url)
    with Env(prog, [m]) as e:
        e.get("/x")
        e.get("/x")
        eq(body(e.get("/x"))["error"], "breaker_open", "open after 2 failures")
        time.sleep(1.0)
        eq(body(e.get("/x"))["error"], "status", "the probe reaches the backend and fails")
        eq(m.count("/b"), 3, "calls made")
        eq(body(e.get("/x"))["error"], "breaker_open", "open again after the failed probe")
        eq(m.count("/b"), 3, "calls made while open again")
        # a timeout counts like a failure
        time.sleep(1.0)
        m.route("/b", body={}, delay=3.0)
        r = e.get("/x")
        eq(body(r), {"error": "timeout", "backend": "b"}, "a probe that times out (backend timeout 2s)")
        eq(body(e.get("/x"))["error"], "breaker_open", "open again after the timed-out probe")


# ---------------------------------------------------------------- retries

@test
def test_retries_idempotent_only():
    m = mock(**{"/r": dict(status=503, body={})})
    prog = fill("""
backend b { url "{M}" timeout 2s retries 2 }
endpoint GET    /g { w = b GET "/r"; respond { w } }
endpoint POST   /p { w = b POST "/r" body { a: 1 }; respond { w } }
endpoint PUT    /u { w = b PUT "/r" body { a: 1 }; respond { w } }
endpoint DELETE /d { w = b DELETE "/r"; respond { w } }
endpoint POST   /pp { w = b PATCH "/r" body { a: 1 }; respond { w } }
""", M=m.url)
    with Env(prog, [m]) as e:
        r = e.get("/g")
        eq((r.status, body(r)), (502, {"error": "status", "backend": "b"}), "GET after its retries")
        eq(m.count("/r"), 3, "GET: 1 + 2 retries")
        m.reset()
        r = e.req("POST", "/p", body="{}")
        eq(r.status, 502, "POST")
        eq(m.count("/r"), 1, "POST is not retried after a 503")
        m.reset()
        e.req("POST", "/pp", body="{}")
        eq(m.count("/r"), 1, "PATCH is not retried")
        m.reset()
        e.req("PUT", "/u", body="{}")
        eq(m.count("/r"), 3, "PUT is retried")
        m.reset()
        e.req("DELETE", "/d")
        eq(m.count("/r"), 3, "DELETE is retried")
        m.reset()
        # a 4xx or a 500 is an answer, not retried
        m.route("/r", status=404, body={})
        e.get("/g")
        eq(m.count("/r"), 1, "a 404 is not retried")
        m.reset()
        m.route("/r", status=500, body={})
        e.get("/g")
        eq(m.count("/r"), 1, "a 500 is not retried")
        m.reset()
        # a retry that succeeds: the call succeeds
        n = [0]

        def flaky(entry):
            n[0] += 1
            return (503, [], {}) if n[0] == 1 else (200, [], {"n": n[0]})
        m.route("/r", fn=flaky)
        r = e.get("/g")
        eq((r.status, body(r)), (200, {"w": {"n": 2}}), "the second attempt answers")


@test
def test_sent_request_retried_only_when_idempotent():
    # the request reached the backend (a reset after it was read, a timeout):
    # sending a POST again could do its work twice
    m = mock(**{"/reset": dict(mode="reset"), "/slow": dict(body={}, delay=1.0)})
    prog = fill("""
backend b { url "{M}" timeout 400ms retries 2 }
endpoint POST /pr { w = b POST "/reset" body { a: 1 }; respond { w } }
endpoint POST /pt { w = b POST "/slow" body { a: 1 }; respond { w } }
endpoint GET  /gr { w = b GET "/reset"; respond { w } }
endpoint GET  /gt { w = b GET "/slow"; respond { w } }
""", M=m.url)
    with Env(prog, [m]) as e:
        for path, method, status, kind, want, route in [
                ("/pr", "POST", 502, "connection", 1, "/reset"), ("/pt", "POST", 504, "timeout", 1, "/slow"),
                ("/gr", "GET", 502, "connection", 3, "/reset"), ("/gt", "GET", 504, "timeout", 3, "/slow")]:
            m.reset()
            r = e.req(method, path, body="{}" if method == "POST" else None)
            eq((r.status, body(r)), (status, {"error": kind, "backend": "b"}), "%s %s" % (method, path))
            eq(m.count(route), want, "attempts of %s %s" % (method, path))


@test
def test_retries_on_another_target():
    bad = mock(**{"/t": dict(status=502, body={})})
    good = mock(**{"/t": dict(body={"m": "good"})})
    prog = fill("""
backend b { url "{B}" url "{G}" timeout 2s retries 1 }
backend bp { url "{B}" url "{G}" timeout 2s retries 1 }
backend bq { url "{B}" url "{G}" timeout 2s retries 1 }
endpoint GET /x { w = b GET "/t"; respond { m: w.m } }
endpoint GET /p/{rest*} { proxy bp "/{rest}" }
endpoint POST /q/{rest*} { proxy bq "/{rest}" }
""", B=bad.url, G=good.url)
    with Env(prog, [bad, good]) as e:
        for i in range(8):
            r = e.get("/x", headers={"X-Request-Id": "rt-%d" % i})
            eq((r.status, body(r)), (200, {"m": "good"}), "request %d" % i)
        ids = ids_at(bad, "/t")
        eq(len(ids), len(set(ids)), "a request retried on the target that failed it")
        eq(good.count("/t"), 8, "calls at the good target")
        # a proxied GET is retried too (nothing was sent to the client yet)
        bad.reset()
        for i in range(4):
            r = e.get("/p/t")
            eq((r.status, body(r)), (200, {"m": "good"}), "proxied GET %d" % i)
        eq(bad.count("/t"), 4, "proxied GETs that met the bad target first")
        # a proxied request with a body streams: it is never retried
        bad.reset()
        good.reset()
        sts = [e.req("POST", "/q/t", body='{"a":1}').status for _ in range(4)]
        eq(sorted(sts), [200, 200, 502, 502], "proxied POSTs (the bad target's 502 passes through)")
        eq(bad.count("/t") + good.count("/t"), 4, "proxied POSTs sent once each")


@test
def test_post_retried_when_connect_failed():
    good = mock(**{"/c": dict(body={"m": "good"})})
    dead = closed_port()
    prog = fill("""
backend b { url "http://127.0.0.1:{D}" url "{G}" timeout 2s connect_timeout 500ms retries 1 }
endpoint POST /x { w = b POST "/c" body { a: 1 }; respond { m: w.m } }
""", D=dead, G=good.url)
    with Env(prog, [good]) as e:
        for i in range(4):
            r = e.req("POST", "/x", body="{}")
            eq((r.status, body(r)), (200, {"m": "good"}), "POST %d (connect failed: nothing was sent)" % i)
        eq(good.count("/c"), 4, "each POST reached the good target once")


@test
def test_retries_within_the_deadline():
    m = mock(**{"/s": dict(body={}, delay=0.9)})
    prog = fill("""
backend b { url "{M}" timeout 500ms retries 5 }
endpoint GET /x { timeout 1200ms; w = b GET "/s"; respond { w } }
""", M=m.url)
    with Env(prog, [m]) as e:
        t0 = time.monotonic()
        r = e.get("/x")
        dt = time.monotonic() - t0
        eq((r.status, body(r)), (504, {"error": "timeout", "backend": "b"}), "answer")
        check(dt < 1.8, "answered after %.2f s (deadline 1.2 s)" % dt)
        n = m.count("/s")
        check(2 <= n <= 3, "%d attempts in 1.2 s of 500 ms each" % n)
        time.sleep(1.2)
        eq(m.count("/s"), n, "attempts after the deadline")


# ---------------------------------------------------------------- max_connections

@test
def test_connection_cap_and_queue():
    m = mock(**{"/q": dict(body={"ok": True}, delay=1.0)})
    prog = fill("""
backend b { url "{M}" timeout 5s max_connections 2 }
endpoint GET /x { w = b GET "/q"; respond { w } }
endpoint GET /o { w = b GET "/q" optional; respond { w } }
endpoint GET /p/{rest*} { proxy b "/{rest}" }
""", M=m.url)
    with Env(prog, [m]) as e:
        # 4 at once: 2 run, 2 wait in the queue, all succeed in two rounds
        t0 = time.monotonic()
        rs = parallel([lambda: e.get("/x")] * 4)
        dt = time.monotonic() - t0
        eq([r.status if not isinstance(r, Exception) else r for r in rs], [200] * 4, "statuses")
        check(dt >= 1.9, "4 calls of 1 s with 2 connections took %.2f s" % dt)
        eq(m.conns_peak, 2, "connections the backend saw at once")
        # 7 at once: 2 run, 2 wait, the others fail fast
        m.reset_peak()
        rs = parallel([lambda: e.get("/x")] * 7)
        sts = sorted(r.status for r in rs if not isinstance(r, Exception))
        eq(sts, [200, 200, 200, 200, 502, 502, 502], "statuses")
        over = [body(r) for r in rs if r.status == 502]
        eq(over[0], {"error": "overloaded", "backend": "b"}, "body")
        check(m.conns_peak <= 2, "the backend saw %d connections at once" % m.conns_peak)
        # proxied requests share the cap
        m.reset_peak()
        rs = parallel([lambda: e.get("/p/q")] * 3 + [lambda: e.get("/x")] * 2)
        eq(sorted(r.status for r in rs if not isinstance(r, Exception)), [200] * 4 + [502], "proxy and calls")
        check(m.conns_peak <= 2, "the backend saw %d connections at once" % m.conns_peak)


# ---------------------------------------------------------------- reload and shutdown

@test
def test_reload_starts_fresh_and_moves_health_checks():
    a = mock(**{"/b": dict(status=500, body={}), "/health": dict(body={})})
    prog = fill("""
backend b { url "{A}" timeout 2s breaker { failures 2 window 10s cooldown 1h } health { path "/health" every 200ms } }
endpoint GET /x { w = b GET "/b"; respond { w } }
""", A=a.url)
    with Env(prog, [a], admin=True) as e:
        e.get("/x")
        e.get("/x")
        eq(body(e.get("/x"))["error"], "breaker_open", "open")
        wait_until(lambda: a.count("/health") >= 2, 3.0, "health checks")
        # the same program again: state starts fresh (the breaker is closed)
        e.write(prog.replace('path "/health"', 'path "/health2"'))
        e.reload()
        a.route("/health2", body={})
        wait_until(lambda: body(e.get("/x"))["error"] == "status", 3.0, "a closed breaker after the reload")
        wait_until(lambda: a.count("/health2") >= 2, 3.0, "the new program's checks")
        n = a.count("/health")
        time.sleep(0.8)
        eq(a.count("/health"), n, "the old program's checks go on")


@test
def test_shutdown_with_checks_running():
    a = mock(**{"/health": dict(body={}, mode="hang")})
    prog = fill("""
backend b { url "{A}" health { path "/health" every 100ms } }
endpoint GET /x { respond { ok: true } }
""", A=a.url)
    e = Env(prog, [a])
    try:
        wait_until(lambda: a.count("/health") >= 1, 3.0, "a check in flight")
        t0 = time.monotonic()
        code = e.g.stop(5.0)
        dt = time.monotonic() - t0
        eq(code, 0, "exit code")
        check(dt < 3.0, "stopping took %.2f s" % dt)
    finally:
        e.close()


# ---------------------------------------------------------------- runner

def main():
    return S.main()


if __name__ == "__main__":
    sys.exit(main())
