#!/usr/bin/python3
"""End-to-end tests of gwd's response cache (endpoint `cache DUR [by …]`) and
call cache (call option `cache D`): a real gwd, mock backends in this process
that count what reaches them, raw sockets on 127.0.0.1.

    /usr/bin/python3 tests/e2e/cache.py [BUILD_DIR] [-k SUBSTRING] [-v]

Prints one "FAIL e2e-cache/NAME: why" line per failure and ends with
"N passed, N failed" (exit 1 if anything failed). -k runs only the tests whose
name contains SUBSTRING; -v prints every test with its time. Standard library
only (plus gwc for the warning test).

Fixtures: one gwd (--workers 4) on the main program, started at the first
test that needs it; the memory-bound and reload tests start their own.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mock import Mock  # noqa: E402
from gwd import Gwd, Conn, free_port  # noqa: E402
from jwtkit import make_token  # noqa: E402
from suite import Suite, Fail, check, eq  # noqa: E402

S = Suite("e2e-cache", ROOT, watchdog=240, width=48, limit=600)
BUILD = S.build
GWD_EXE = S.gwd_exe
GWC_EXE = os.path.join(BUILD, "gwc")

MOCK = None
GW = None
ADMIN = None
SECRET = b"cache-e2e-secret-0123456789abcdef0123456789abcdef"
SECRET2 = b"cache-e2e-other-secret-0123456789abcdef0123456789"

test = S.test


# ---------------------------------------------------------------- fixtures

class Counter:
    """A mock route whose JSON body carries how many times it was asked
    (v: 1, 2, …), so a cached body is told apart from a fresh one."""

    def __init__(self, path, status=200, headers=(), delay=0.0, extra=None):
        self.n = 0
        self.lock = threading.Lock()
        self.status, self.headers, self.extra = status, list(headers), extra or {}

        def fn(entry):
            with self.lock:
                self.n += 1
                body = dict(self.extra, v=self.n)
            return self.status, list(self.headers), body
        MOCK.route(path, fn=fn, delay=delay)


def program():
    return """
server {{ admin "127.0.0.1:{A}" }}
backend b {{ url "{M}" timeout 2s }}
auth mobile jwt {{ algorithms HS256; key file "hs.secret" }}
auth other jwt {{ algorithms HS256; key file "hs2.secret" }}

endpoint GET /basic {{ cache 5s; x = b GET "/basic"; respond {{ v: x.v }} }}
endpoint GET /short {{ cache 1s; x = b GET "/short"; respond {{ v: x.v }} }}
endpoint GET /q {{
    cache 10s
    x = b GET "/q" query {{ a: query.a, b: query.b }}
    respond {{ v: x.v, a: query.a, b: query.b }}
}}
endpoint GET /h {{
    cache 10s
    x = b GET "/h" headers {{ "Accept-Language": headers["accept-language"] }}
    respond {{ v: x.v, lang: headers["accept-language"] }}
}}
endpoint GET /me {{ auth mobile; cache 10s by jwt.sub; x = b GET "/me"; respond {{ sub: jwt.sub, v: x.v }} }}
endpoint GET /both {{ auth mobile or other; cache 10s by jwt.sub; x = b GET "/both"; respond {{ sub: jwt.sub, v: x.v }} }}
endpoint GET /noid {{ auth mobile; cache 10s; x = b GET "/noid"; respond {{ v: x.v }} }}
endpoint GET /priv/{{kind}} {{ cache 10s; x = b GET "/priv/{{kind}}"; respond {{ v: x.v }} }}
endpoint GET /err {{ cache 10s; x = b GET "/err"; respond {{ v: x.v }} }}
endpoint GET /partial {{
    cache 10s
    x = b GET "/ok"
    y = b GET "/err2" optional
    respond {{ v: x.v, y }}
}}
endpoint GET /guard {{
    cache 10s
    y = b GET "/err3" optional
    fail 404 {{ error: "none" }} if y == null
    respond {{ y }}
}}
endpoint GET /created {{ cache 10s; x = b GET "/created"; respond 201 {{ v: x.v }} }}
endpoint GET /notfound {{
    cache 10s
    x = b GET "/nf"
    fail 404 {{ error: "no such thing", v: x.v }} if x.missing == null
    respond {{ v: x.v }}
}}
endpoint GET /slow {{ cache 10s; x = b GET "/slowc"; respond {{ v: x.v }} }}
endpoint GET /slowerr {{ cache 10s; x = b GET "/slowerr"; respond {{ v: x.v }} }}
endpoint GET /waitdeadline {{ timeout 1s; cache 10s; x = b GET "/slowerr2"; respond {{ v: x.v }} }}
endpoint GET /call/{{id}} {{
    x = b GET "/call/{{id}}" headers {{ "X-Tenant": query.t }} cache 10s
    respond {{ v: x.v, id }}
}}
endpoint GET /callpriv {{ x = b GET "/callpriv" cache 10s; respond {{ v: x.v }} }}
endpoint GET /owncc {{
    cache 10s
    x = b GET "/owncc"
    header "Cache-Control" = "no-store"
    respond {{ v: x.v }}
}}
endpoint GET /ownpub {{
    cache 10s
    x = b GET "/ownpub"
    header "Cache-Control" = "public, max-age=3"
    header "X-V" = "v{{x.v}}"
    respond {{ v: x.v }}
}}
endpoint GET /cookie {{
    cache 10s
    x = b GET "/cookie"
    header "Set-Cookie" = "sid=s{{x.v}}; HttpOnly"
    respond {{ v: x.v }}
}}
endpoint GET /nc {{ cache 10s; x = b GET "/nc"; respond {{ v: x.v }} }}
endpoint POST /post {{ cache 10s; x = b POST "/post" body {{ a: body.a }}; respond {{ v: x.v, a: body.a }} }}
endpoint GET /nocall {{ cache 10s; respond 204 }}
""".format(A=ADMIN, M=MOCK.url)


def main_gwd():
    global GW, ADMIN
    if GW is not None:
        return GW
    ADMIN = free_port()
    g = Gwd(BUILD, {"main.gw": program()}, workers=4)
    with open(os.path.join(g.prog, "hs.secret"), "wb") as f:
        f.write(SECRET)
    with open(os.path.join(g.prog, "hs2.secret"), "wb") as f:
        f.write(SECRET2)
    if not g.start():
        raise Fail(g.start_error)
    GW = g
    return g


def get(path, headers=None, method="GET", body=None):
    return main_gwd().request(method, path, headers=headers, body=body)


def body(r):
    return json.loads(r.body)


def token(sub):
    return make_token({"sub": sub, "exp": int(time.time()) + 3600}, "HS256", secret=SECRET)


def admin_get(path, port=None):
    c = Conn(port or ADMIN, timeout=10)
    try:
        return c.request("GET", path)
    finally:
        c.close()


def metric(text, name, **labels):
    """The value of one sample of the exposition text, or None."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.split("\n"):
        if line.startswith("#") or not line:
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(3) or "").split(","))) if m.group(3) else ""
        if got == want:
            return float(m.group(4))
    return None


# ---------------------------------------------------------------- hits and keys

@test
def test_hit_without_backend_call():
    c = Counter("/basic")
    r1 = get("/basic")
    eq((r1.status, body(r1)), (200, {"v": 1}), "first answer")
    check(r1.header("Age") is None, "a fresh answer has no Age: %r" % r1.header("Age"))
    eq(r1.header("Cache-Control"), "public, max-age=5", "Cache-Control of the stored answer")
    r2 = get("/basic")
    eq((r2.status, body(r2)), (200, {"v": 1}), "second answer (from the cache)")
    eq(c.n, 1, "backend requests")
    eq(r2.header("Age"), "0", "Age of a hit")
    check(r2.header("X-Request-Id") and r2.header("X-Request-Id") != r1.header("X-Request-Id"),
          "a hit has its own X-Request-Id")
    check(r2.header("Date"), "a hit has a Date")
    eq(r2.header("Content-Type"), "application/json", "Content-Type of a hit")
    time.sleep(1.1)
    r3 = get("/basic")
    eq(body(r3), {"v": 1}, "third answer")
    eq(r3.header("Age"), "1", "Age after a second")
    eq(r3.header("Cache-Control"), "public, max-age=5", "max-age stays the lifetime (Age counts)")
    # HEAD is answered from the GET's entry
    r4 = main_gwd().request("HEAD", "/basic")
    eq((r4.status, r4.body, r4.header("Content-Length")), (200, b"", str(len(r1.body))), "HEAD from the cache")
    eq(c.n, 1, "backend requests after HEAD")


@test
def test_expiry():
    c = Counter("/short")
    eq(body(get("/short")), {"v": 1}, "first")
    eq(body(get("/short")), {"v": 1}, "within the second")
    time.sleep(1.15)
    eq(body(get("/short")), {"v": 2}, "after expiry")
    eq(c.n, 2, "backend requests")


@test
def test_query_order_and_encoding_share_an_entry():
    c = Counter("/q")
    first = get("/q?a=1&b=2")
    eq(body(first), {"v": 1, "a": "1", "b": "2"}, "first")
    for target in ["/q?b=2&a=1", "/q?a=%31&b=2", "/q?a=1&b=2&utm_source=x", "/q?b=2&utm=1&a=1&a=9"]:
        r = get(target)
        eq(body(r), {"v": 1, "a": "1", "b": "2"}, target)
    eq(c.n, 1, "backend requests for one key")
    eq(body(get("/q?a=1&b=3")), {"v": 2, "a": "1", "b": "3"}, "another value of b")
    eq(body(get("/q?a=1")), {"v": 3, "a": "1", "b": None}, "b absent")
    eq(c.n, 3, "backend requests for three keys")


@test
def test_read_header_splits_unread_header_does_not():
    c = Counter("/h")
    en = get("/h", headers={"Accept-Language": "en", "User-Agent": "a"})
    eq(body(en), {"v": 1, "lang": "en"}, "en")
    eq(en.header("Cache-Control"), "public, max-age=10", "Cache-Control of a header-keyed answer")
    eq(en.header_all("Vary"), ["accept-language"], "Vary names the header read")
    eq(body(get("/h", headers={"Accept-Language": "en", "User-Agent": "b", "X-Other": "1"})),
       {"v": 1, "lang": "en"}, "en again, other unread headers")
    eq(body(get("/h", headers={"Accept-Language": "fr"})), {"v": 2, "lang": "fr"}, "fr")
    eq(body(get("/h")), {"v": 3, "lang": None}, "no Accept-Language")
    eq(body(get("/h", headers={"Accept-Language": "fr"})), {"v": 2, "lang": "fr"}, "fr again")
    eq(c.n, 3, "backend requests")


@test
def test_no_cross_user_leak():
    c = Counter("/me")
    alice, bob = token("alice"), token("bob")
    ra = get("/me", headers={"Authorization": "Bearer " + alice})
    eq(body(ra), {"sub": "alice", "v": 1}, "alice")
    eq(ra.header("Cache-Control"), "private, max-age=10", "an identity-keyed answer is private")
    # a browser's own cache must not give alice's answer to the next account logged in
    eq(ra.header_all("Vary"), ["authorization"], "Vary names the credentials' header")
    rb = get("/me", headers={"Authorization": "Bearer " + bob})
    eq(body(rb), {"sub": "bob", "v": 2}, "bob gets his own")
    ra2 = get("/me", headers={"Authorization": "Bearer " + alice})
    eq(body(ra2), {"sub": "alice", "v": 1}, "alice again (cached)")
    eq(ra2.header("Cache-Control"), "private, max-age=10", "Cache-Control of the hit")
    eq(ra2.header_all("Vary"), ["authorization"], "Vary of the hit")
    eq(c.n, 2, "backend requests")
    # a cached answer still needs the caller to be authorized
    eq(get("/me").status, 401, "no token")
    eq(get("/me", headers={"Authorization": "Bearer " + alice + "x"}).status, 401, "a bad token")
    eq(c.n, 2, "backend requests after refusals")


@test
def test_token_without_subject_not_cached():
    # the key holds jwt.sub, but these tokens have none: each caller is nobody
    # in particular, and sharing one entry would hand one's answer to another
    c = Counter("/me")
    for i, claims in enumerate([{"name": "u0"}, {"name": "u1"}, {"sub": None, "name": "u2"}, {"sub": ""}]):
        claims["exp"] = int(time.time()) + 3600
        t = make_token(claims, "HS256", secret=SECRET)
        r = get("/me", headers={"Authorization": "Bearer " + t})
        eq((r.status, r.header("Age"), r.header("Cache-Control")), (200, None, None), "token %r" % claims)
    eq(c.n, 4, "backend requests of tokens without a subject")


@test
def test_two_jwt_policies_do_not_share():
    # `auth mobile or other`: the same sub from two policies (no iss) is two callers
    c = Counter("/both")
    t1 = token("same")
    t2 = make_token({"sub": "same", "exp": int(time.time()) + 3600}, "HS256", secret=SECRET2)
    eq(body(get("/both", headers={"Authorization": "Bearer " + t1})), {"sub": "same", "v": 1}, "mobile's user")
    eq(body(get("/both", headers={"Authorization": "Bearer " + t2})), {"sub": "same", "v": 2}, "other's user")
    eq(body(get("/both", headers={"Authorization": "Bearer " + t1})), {"sub": "same", "v": 1}, "mobile's again")
    eq(c.n, 2, "backend requests")


@test
def test_auth_without_identity_not_cached():
    c = Counter("/noid")
    for i in range(3):
        r = get("/noid", headers={"Authorization": "Bearer " + token("u%d" % i)})
        eq(body(r), {"v": i + 1}, "request %d" % i)
        check(r.header("Cache-Control") is None, "no Cache-Control from the gateway")
    eq(c.n, 3, "backend requests")


@test
def test_gwc_warns_auth_without_identity():
    with tempfile.TemporaryDirectory() as t:
        src = os.path.join(t, "a.gw")
        with open(src, "w") as f:
            f.write('auth k apikey { keys file "keys.txt" }\n'
                    'endpoint GET /a {\n    auth k\n    cache 10s\n    respond { a: 1 }\n}\n')
        r = subprocess.run([GWC_EXE, "check", src], capture_output=True, text=True, timeout=30)
    eq(r.returncode, 0, "gwc check exit status")
    check("warning: the cache key of an endpoint with auth holds no identity, so it is not cached (add 'by client.name')"
          in r.stderr, "the warning: %r" % r.stderr)


# ---------------------------------------------------------------- what is never stored

@test
def test_backend_private_or_no_store_respected():
    for kind, cc in [("private", "Private"), ("nostore", "max-age=60, NO-STORE"), ("nocache", "No-Cache"),
                     ("qualified", 'private="x-a", max-age=9')]:
        c = Counter("/priv/" + kind, headers=[("Cache-Control", cc)])
        eq(body(get("/priv/" + kind)), {"v": 1}, kind + " first")
        r = get("/priv/" + kind)
        eq(body(r), {"v": 2}, kind + " second (not cached)")
        check(r.header("Age") is None and r.header("Cache-Control") is None, kind + ": no cache headers")
        eq(c.n, 2, kind + " backend requests")
    c = Counter("/priv/public", headers=[("Cache-Control", "public, max-age=60")])
    get("/priv/public")
    eq(body(get("/priv/public")), {"v": 1}, "public is cached")
    eq(c.n, 1, "public backend requests")


@test
def test_errors_and_partial_not_cached():
    MOCK.json("/err", {"e": 1}, status=500)
    MOCK.json("/err2", {"e": 1}, status=500)
    MOCK.json("/err3", {"e": 1}, status=503)
    ok = Counter("/ok")
    MOCK.reset()
    for i in range(2):
        eq(get("/err").status, 502, "a failed call: 502")
    eq(MOCK.count("/err"), 2, "backend requests of /err")
    for i in range(2):
        r = get("/partial")
        eq((r.status, r.header("X-Gw-Partial")), (200, "true"), "partial")
        eq(body(r)["v"], i + 1, "partial body %d" % i)
    eq(ok.n, 2, "backend requests of /partial")
    for i in range(2):
        eq(get("/guard").status, 404, "a guard over a failed optional call")
    eq(MOCK.count("/err3"), 2, "a guard's answer over a failed call is not cached")


@test
def test_uncacheable_status_not_cached_404_is():
    c = Counter("/created")
    eq(get("/created").status, 201, "201")
    eq(body(get("/created")), {"v": 2}, "201 again: not cached")
    eq(c.n, 2, "backend requests of /created")
    c = Counter("/nf")
    r = get("/notfound")
    eq((r.status, body(r)), (404, {"error": "no such thing", "v": 1}), "404 from a guard")
    r = get("/notfound")
    eq((r.status, body(r), r.header("Age")), (404, {"error": "no such thing", "v": 1}, "0"), "the 404 is cached")
    eq(c.n, 1, "backend requests of /notfound")
    r1 = get("/nocall")
    r2 = get("/nocall")
    eq((r1.status, r2.status, r2.header("Age"), r2.body), (204, 204, "0", b""), "204 without calls is cached")


@test
def test_endpoint_own_cache_control():
    c = Counter("/owncc")
    get("/owncc")
    r = get("/owncc")
    eq((body(r), r.header_all("Cache-Control")), ({"v": 2}, ["no-store"]), "own no-store: not cached")
    c = Counter("/ownpub")
    get("/ownpub")
    r = get("/ownpub")
    eq(body(r), {"v": 1}, "own public: cached")
    eq(r.header_all("Cache-Control"), ["public, max-age=3"], "the endpoint's Cache-Control, once")
    eq(r.header("X-V"), "v1", "the endpoint's headers are kept")
    eq(r.header("Age"), "0", "Age")
    eq(c.n, 1, "backend requests")


@test
def test_answer_setting_a_cookie_not_stored():
    # a session minted by the backend must not be handed to every client
    c = Counter("/cookie")
    r1 = get("/cookie")
    r2 = get("/cookie")
    eq((r1.header("Set-Cookie"), r2.header("Set-Cookie")), ("sid=s1; HttpOnly", "sid=s2; HttpOnly"), "cookies")
    check(r2.header("Age") is None and r2.header("Cache-Control") is None, "not from the cache")
    eq(c.n, 2, "backend requests")


@test
def test_request_no_cache_and_no_store():
    c = Counter("/nc")
    eq(body(get("/nc")), {"v": 1}, "first")
    eq(body(get("/nc")), {"v": 1}, "cached")
    eq(body(get("/nc", headers={"Cache-Control": "no-cache"})), {"v": 2}, "no-cache goes to the backend")
    eq(body(get("/nc")), {"v": 2}, "its answer replaced the entry")
    eq(body(get("/nc", headers={"Pragma": "no-cache"})), {"v": 3}, "Pragma: no-cache")
    eq(body(get("/nc", headers={"Cache-Control": "no-store"})), {"v": 4}, "no-store goes to the backend")
    eq(body(get("/nc")), {"v": 3}, "...and its answer was not stored")
    time.sleep(1.05)
    eq(body(get("/nc", headers={"Cache-Control": "max-age=0"})), {"v": 5}, "max-age=0 with an older entry")
    eq(body(get("/nc", headers={"Cache-Control": "max-age=60"})), {"v": 5}, "max-age=60 takes the entry")
    eq(c.n, 5, "backend requests")


@test
def test_post_keyed_by_body_is_private():
    c = Counter("/post")
    r = get("/post", method="POST", body='{"a": 1, "z": 9}')
    eq((body(r), r.header("Cache-Control")), ({"v": 1, "a": 1}, "private, max-age=10"), "first")
    eq(body(get("/post", method="POST", body='{"z": 0, "a": 1}')), {"v": 1, "a": 1}, "same a: cached")
    eq(body(get("/post", method="POST", body='{"a": 2}')), {"v": 2, "a": 2}, "another a")
    eq(c.n, 2, "backend requests")


# ---------------------------------------------------------------- coalescing

def concurrent(path, n, timeout=10):
    out = [None] * n
    start = threading.Barrier(n)

    def one(i):
        c = Conn(main_gwd().port, timeout=timeout)
        try:
            start.wait()
            out[i] = c.request("GET", path)
        except Exception as e:  # noqa: BLE001
            out[i] = e
        finally:
            c.close()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout + 5)
    return out


@test
def test_concurrent_misses_coalesce():
    main_gwd()
    c = Counter("/slowc", delay=0.5)
    before = admin_get("/metrics").body.decode()
    rs = concurrent("/slow", 20)
    bad = [r for r in rs if not hasattr(r, "status") or r.status != 200]
    check(not bad, "failed requests: %r" % bad[:3])
    eq(sorted(set(r.body for r in rs)), [b'{"v":1}'], "every request got the one answer")
    eq(c.n, 1, "backend requests for 20 concurrent misses")
    after = admin_get("/metrics").body.decode()
    co = (metric(after, "gw_cache_coalesced_total") or 0) - (metric(before, "gw_cache_coalesced_total") or 0)
    check(co >= 1, "gw_cache_coalesced_total moved by %r" % co)


@test
def test_leader_failure_waiters_fetch_their_own():
    main_gwd()
    MOCK.route("/slowerr", status=500, body={"e": 1}, delay=0.4)
    MOCK.reset()
    rs = concurrent("/slowerr", 6)
    eq(sorted(r.status for r in rs if hasattr(r, "status")), [502] * 6, "statuses")
    n = MOCK.count("/slowerr")
    check(2 <= n <= 6, "after the leader failed the waiters went on their own: %d backend requests" % n)


@test
def test_waiters_keep_their_deadline():
    main_gwd()
    MOCK.route("/slowerr2", status=500, body={"e": 1}, delay=0.7)
    t0 = time.monotonic()
    rs = concurrent("/waitdeadline", 4)
    took = time.monotonic() - t0
    st = sorted(r.status for r in rs if hasattr(r, "status"))
    check(len(st) == 4 and st[0] == 502 and all(s in (502, 504) for s in st), "statuses %r" % st)
    check(504 in st, "a waiter whose deadline passed while it went on its own: 504 (%r)" % st)
    check(took < 1.5, "the endpoint's 1 s deadline counts the time waited: the requests took %.2f s" % took)


# ---------------------------------------------------------------- call cache

@test
def test_call_cache():
    c = Counter("/call/1")
    Counter("/call/2")
    eq(body(get("/call/1")), {"v": 1, "id": "1"}, "first")
    eq(body(get("/call/1", headers={"X-Request-Id": "other-id-1"})), {"v": 1, "id": "1"},
       "the call's value came from the cache (X-Request-Id is not in its key)")
    eq(c.n, 1, "backend requests of /call/1")
    eq(body(get("/call/1?t=acme")), {"v": 2, "id": "1"}, "a header the call sends is in its key")
    eq(body(get("/call/1?t=acme")), {"v": 2, "id": "1"}, "and cached under it")
    eq(body(get("/call/2")), {"v": 1, "id": "2"}, "another URL")
    r = get("/call/1")
    check(r.header("Age") is None and r.header("Cache-Control") is None, "the endpoint itself is not cached")
    cp = Counter("/callpriv", headers=[("cache-control", "PRIVATE")])
    get("/callpriv")
    eq(body(get("/callpriv")), {"v": 2}, "a private call answer is not cached")
    eq(cp.n, 2, "backend requests of /callpriv")


# ---------------------------------------------------------------- memory bound

@test
def test_memory_bound_and_evictions():
    admin = free_port()
    MOCK.json("/huge", {"pad": "y" * 40000})
    # /big answers 8 KB without a backend call (the mock's answers to a
    # reused connection take 40 ms each: Nagle meets delayed ACKs)
    text = """
server {{ admin "127.0.0.1:{A}" cache_size 1mb }}
backend b {{ url "{M}" }}
endpoint GET /big {{ cache 60s; respond {{ pad: "{P}", k: query.k }} }}
endpoint GET /huge {{ cache 60s; x = b GET "/huge"; respond {{ pad: x.pad }} }}
""".format(A=admin, M=MOCK.url, P="x" * 8000)
    g = Gwd(BUILD, {"main.gw": text}, workers=2)
    if not g.start():
        raise Fail(g.start_error)
    try:
        c = g.conn(timeout=10)
        for i in range(200):
            c.request("GET", "/big?k=%d" % i)
        rss0 = g.proc_status("VmRSS")
        g.reset_peak_rss()
        for i in range(200, 5200):
            r = c.request("GET", "/big?k=%d" % i)
            if r.status != 200 or r.header("Age") is not None:
                raise Fail("status %d, Age %r at key %d" % (r.status, r.header("Age"), i))
        c.close()
        peak = g.proc_status("VmHWM")
        m = admin_get("/metrics", admin).body.decode()
        eq(metric(m, "gw_cache_misses_total", kind="response"), 5200.0, "every key missed once")
        nbytes, cap = metric(m, "gw_cache_bytes"), metric(m, "gw_cache_capacity_bytes")
        ev, ent = metric(m, "gw_cache_evictions_total"), metric(m, "gw_cache_entries")
        check(cap == 1048576 and nbytes is not None and 0 < nbytes <= cap, "bytes %r of %r" % (nbytes, cap))
        check(ev and ev > 4900, "evictions %r" % ev)
        check(ent and 50 < ent < 200, "entries %r" % ent)
        # 5000 answers of 8 KB (40 MB) went through: the process grew by far less
        if not g.under_asan() and rss0 and peak:
            check(peak - rss0 < 16 * 1024, "RSS grew from %d kB to a peak of %d kB" % (rss0, peak))
        # the most recent key is still there, the first is gone
        eq((g.get("/big?k=5199").header("Age"), g.get("/big?k=0").header("Age")), ("0", None),
           "a recent key hits, an old one misses")
        # larger than cache_size / 32: never stored
        MOCK.reset()
        g.get("/huge")
        g.get("/huge")
        eq(MOCK.count("/huge"), 2, "an answer past the entry bound is not stored")
        m = admin_get("/metrics", admin).body.decode()
        check((metric(m, "gw_cache_too_large_total") or 0) >= 2, "gw_cache_too_large_total")
    finally:
        code = g.stop()
    eq(code, 0, "gwd's exit status")


# ---------------------------------------------------------------- reload

@test
def test_reload_does_not_serve_old_bodies():
    admin = free_port()

    def text(v):
        return """
server {{ admin "127.0.0.1:{A}" }}
backend b {{ url "{M}" }}
endpoint GET /r {{ cache 60s; respond {{ v: {V} }} }}
endpoint GET /same {{ cache 60s; x = b GET "/same"; respond {{ v: x.v }} }}
""".format(A=admin, M=MOCK.url, V=v)
    g = Gwd(BUILD, {"main.gw": text(1)}, workers=2)
    if not g.start():
        raise Fail(g.start_error)
    try:
        Counter("/same")
        eq(json.loads(g.get("/r").body), {"v": 1}, "v1")
        eq(g.get("/r").header("Age"), "0", "v1 cached")
        eq(json.loads(g.get("/same").body), {"v": 1}, "/same")
        path = os.path.join(g.prog, "main.gw")
        with open(path + ".tmp", "w") as f:
            f.write(text(2))
        os.replace(path + ".tmp", path)
        c = Conn(admin, timeout=30)
        r = c.request("POST", "/reload")
        c.close()
        eq(r.status, 200, "reload")
        # the workers take the new program up on their loops: a moment
        end = time.monotonic() + 5
        while time.monotonic() < end and json.loads(g.get("/r").body) != {"v": 2}:
            time.sleep(0.05)
        r = g.get("/r")
        eq(json.loads(r.body), {"v": 2}, "after the reload")
        eq(json.loads(g.get("/same").body), {"v": 2}, "a changed program starts with fresh keys")
    finally:
        code = g.stop()
    eq(code, 0, "gwd's exit status")


# ---------------------------------------------------------------- runner

def setup():
    global MOCK
    MOCK = Mock().start()


def teardown():
    if GW is not None:
        code = GW.stop()
        if code not in (0, None):
            S.failed += 1
            print("FAIL e2e-cache/exit: gwd exited with %r: %s" % (code, GW.stderr()[-1500:]))
    MOCK.stop()


def main():
    return S.main(setup=setup, teardown=teardown)


if __name__ == "__main__":
    sys.exit(main())
