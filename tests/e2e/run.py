#!/usr/bin/python3
"""End-to-end tests of gwd: a real gwd process, mock backends in this
process, raw sockets on 127.0.0.1.

    /usr/bin/python3 tests/e2e/run.py [BUILD_DIR] [-k SUBSTRING] [-v]

Prints one line per failure and ends with "N passed, N failed" (exit 1 if
anything failed). -k runs only the tests whose name contains SUBSTRING; -v
prints every test with its time. Standard library only.
"""
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mock import Mock, stream_digest  # noqa: E402
from gwd import Gwd, Conn, HTTPError, free_port, closed_port, suite_args  # noqa: E402

BUILD, FILTER, VERBOSE = suite_args(sys.argv[1:], ROOT)
GWD_EXE = os.path.join(BUILD, "gwd")

passed = 0
failed = 0
TESTS = []          # (name, fn)


class Fail(Exception):
    pass


def test(fn=None, name=None):
    def reg(f):
        TESTS.append((name or f.__name__.replace("test_", "", 1), f))
        return f
    return reg(fn) if fn else reg


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise Fail("%s: expected %r, got %r" % (what, expected, actual))


# ---------------------------------------------------------------- fixtures

MOCK = None
GW = None           # the main gwd
TMP = tempfile.mkdtemp(prefix="gw-e2e-")
DEAD_PORT = closed_port()

BIG_SIZE = 20 * 1024 * 1024

NUMBERS = b'{"big": 12345678901234567890, "dec": 0.10, "exp": 1E+2}'


def program(mock_url, admin_port):
    """The main test program (one file); {M} is the mock, {D} a closed port."""
    return """
server {{ max_body 1kb header_timeout 1s body_timeout 1s admin "127.0.0.1:{A}" trusted_proxies ["127.0.0.0/8", "10.0.0.0/8"] }}

endpoint GET /whoami {{ respond {{ ip: client.ip }} }}

endpoint GET /gone {{ x = users GET "/gone/slow"; respond {{ x }} }}

endpoint GET /bigjson {{ b = users GET "/bigjson"; respond {{ n: len(b.items), items: b.items }} }}

endpoint GET /spread {{
    b = users GET "/bigobj"
    respond {{ ...b, k7: "seven", n: len(b) }}
}}

backend users  {{ url "{M}" timeout 2s }}
backend dead   {{ url "http://127.0.0.1:{D}" timeout 1s connect_timeout 500ms }}
backend slow   {{ url "{M}" timeout 200ms }}
backend tiny   {{ url "{M}" max_response 1kb }}
backend legacy {{ url "{M}" }}
backend narrow {{ url "{M}" max_connections 1 }}

endpoint GET /narrow {{
    a = narrow GET "/slow/a"
    b = narrow GET "/slow/b"
    c = narrow GET "/slow/a" optional
    respond {{ a: a.v, b: b.v, c }}
}}

endpoint GET  /hello {{ respond {{ hello: "world" }} }}
endpoint POST /hello {{ respond 201 {{ posted: true }} }}
endpoint GET  /a {{ respond {{ at: "a" }} }}
endpoint GET  /a/c {{ respond {{ at: "a/c" }} }}
endpoint GET  /r/me {{ respond {{ which: "static" }} }}
endpoint GET  /r/{{id:int}} {{ respond {{ which: "int", id }} }}
endpoint GET  /r/{{name}} {{ respond {{ which: "string", name }} }}
endpoint GET  /s/{{s:uuid}} {{ respond {{ s }} }}
endpoint GET  /t/{{rest*}} {{ respond {{ rest }} }}
endpoint GET  /pipe/{{n}} {{ respond {{ n }} }}

endpoint GET /home/{{id:int}} {{
    user   = users GET "/users/{{id}}"
    orders = users GET "/orders" query {{ user: id, limit: query.limit ?? 5 }} optional
    recs   = users POST "/recommend" body {{ user: user.id }} default []
    fail 403 {{ error: "not yours" }} if user.blocked == true
    respond {{ id: user.id, name: "{{user.first}} {{user.last}}", orders: orders.items {{ id, total }}, recs }}
}}

endpoint GET /par {{
    a = users GET "/slow/a"
    b = users GET "/slow/b"
    respond {{ a: a.v, b: b.v }}
}}

endpoint GET /flow {{
    first  = users GET "/flow/first"
    second = users GET "/flow/second/{{first.token}}"
    third  = users GET "/flow/third"
    respond {{ got: second.ok, third: third.ok }}
}}

endpoint GET /req/{{kind}}  {{ x = users GET "/fk/{{kind}}"; respond {{ x }} }}
endpoint GET /opt/{{kind}}  {{ x = users GET "/fk/{{kind}}" optional; respond {{ x, ok: true }} }}
endpoint GET /def/{{kind}}  {{ x = users GET "/fk/{{kind}}" default {{ d: 1 }}; respond {{ x, ok: true }} }}
endpoint GET /refused/req {{ x = dead GET "/x"; respond {{ x }} }}
endpoint GET /refused/opt {{ x = dead GET "/x" optional; respond {{ x, ok: true }} }}
endpoint GET /timeout/req {{ x = slow GET "/fk/delay"; respond {{ x }} }}
endpoint GET /timeout/opt {{ x = slow GET "/fk/delay" optional; respond {{ x, ok: true }} }}
endpoint GET /timeout/call {{ x = users GET "/fk/delay" timeout 200ms; respond {{ x }} }}
endpoint GET /toobig {{ x = tiny GET "/fk/big"; respond {{ x }} }}
endpoint GET /nullpath {{ x = users GET "/fk/{{query.missing}}"; respond {{ x }} }}

endpoint GET /cond {{
    x = users GET "/cond/x" if query.go == "yes"
    respond {{ x, ok: true }}
}}

endpoint GET /guard/{{id}} {{
    user = users GET "/guard/users/{{id}}"
    fail 403 {{ error: "not yours" }} if user.blocked == true
    respond {{ id: user.id }}
}}

endpoint GET /early {{
    fail 400 {{ error: "need q" }} if query.q == null
    x = users GET "/early/x"
    respond {{ x }}
}}

endpoint GET /deadline/req {{
    timeout 300ms
    a = users GET "/fk/delay"
    respond {{ a }}
}}

endpoint GET /deadline/opt {{
    timeout 300ms
    a = users GET "/fk/delay" optional
    b = users GET "/fk/delay2" default "d"
    c = users GET "/fast/c"
    respond {{ a, b, c: c.v }}
}}

endpoint GET /numbers {{
    n = users GET "/numbers"
    respond {{ big: n.big, dec: n.dec, exp: n.exp, s: "{{n.dec}}", whole: n }}
}}

endpoint GET /u/{{id}} {{ r = users GET "/users/{{id}}"; respond {{ ok: r.ok }} }}
endpoint GET /uq {{ r = users GET "/users/{{query.id}}"; respond {{ ok: r.ok }} }}
endpoint GET /qenc {{
    r = users GET "/echo/q" query {{ a: query.a, n: null, missing: query.nope, arr: [query.a, "y"], num: 5, t: true }}
    respond {{ ok: r.ok }}
}}
endpoint GET /qtpl {{ r = users GET "/echo/t?q={{query.a}}&page=2"; respond {{ ok: r.ok }} }}

endpoint POST /body {{
    r = users POST "/sink" body {{ inner: body }}
    respond {{ got: body, r: r.ok }}
}}

endpoint GET /hdr {{
    r = users GET "/hdr/echo" headers {{ "X-User": query.u, "X-Null": query.nothing }}
    respond {{ ok: r.ok }}
}}

endpoint GET /resphdr {{
    header "X-A" = "v-{{query.x}}"
    respond {{ ok: true }}
}}

endpoint * /legacy/{{rest*}} {{ proxy legacy "/{{rest}}" }}
endpoint * /deadproxy/{{rest*}} {{ proxy dead "/{{rest}}" }}
endpoint GET /lq {{ proxy legacy "/echo/lq?fixed=1" }}
endpoint * /echo/raw/{{rest*}} {{ proxy legacy }}
""".format(M=mock_url, D=DEAD_PORT, A=admin_port)


def setup_mock(m):
    m.json("/users/7", {"id": 7, "first": "Ada", "last": "Lovelace", "blocked": False})
    m.json("/users/8", {"id": 8, "first": "Eve", "last": "X", "blocked": True})
    m.route("/users/*", mode="echo")
    m.route("/orders", body=b'{"items": [{"id": 1, "total": 12.50, "secret": "s"}, {"id": 2, "total": 1E3}]}')
    m.route("/recommend", body=b'["r1", "r2"]')
    m.json("/slow/a", {"v": "A"}, delay=0.3)
    m.json("/slow/b", {"v": "B"}, delay=0.3)
    m.json("/flow/first", {"token": "tok123"}, delay=0.1)
    m.json("/flow/second/*", {"ok": True})
    m.json("/flow/third", {"ok": True}, delay=0.1)
    m.json("/fk/ok", {"ok": 1})
    m.json("/fk/500", {"error": "backend exploded"}, status=500)
    m.json("/fk/404", {"error": "nope"}, status=404)
    m.route("/fk/badjson", body=b'{"a": 1,')
    m.route("/fk/trailing", body=b'{"a": 1} x')
    m.route("/fk/html", body=b"<html>hi</html>", ctype="text/html")
    m.json("/fk/reset", {"a": 1}, mode="reset")
    m.route("/fk/midbody", body=json.dumps({"items": list(range(2000))}).encode(), mode="close_mid_body")
    m.json("/fk/delay", {"late": True}, delay=1.0)
    m.json("/fk/delay2", {"late": True}, delay=1.0)
    m.json("/fk/redirect", {}, status=302, headers=[("Location", "/fk/ok")])
    m.route("/fk/deep", body=b"[" * 10000 + b"]" * 10000)
    m.route("/fk/big", body=json.dumps({"pad": "x" * 4096}).encode())
    m.json("/fast/c", {"v": "C"})
    m.json("/cond/x", {"c": 1})
    m.json("/guard/users/1", {"id": 1, "blocked": False})
    m.json("/guard/users/2", {"id": 2, "blocked": True})
    m.json("/early/x", {"e": 1})
    m.route("/numbers", body=NUMBERS)
    m.route("/echo/*", mode="echo")
    m.route("/sink", mode="echo")
    m.route("/hdr/echo", mode="echo")
    # proxy targets
    m.route("/plain", body=b"hello proxy\n", ctype="text/plain; charset=utf-8",
            headers=[("X-Backend", "yes"), ("Connection", "X-Hop"), ("X-Hop", "1"),
                     ("Keep-Alive", "timeout=5")])
    m.route("/created", status=201, body=b'{"made": 1.50}', headers=[("Location", "/things/1")])
    m.route("/notfound", status=404, body=b"nope from backend", ctype="text/plain")
    m.route("/big", mode="stream", size=BIG_SIZE, ctype="application/octet-stream")

    def upload(entry):
        b = entry["body"]
        return 200, [], json.dumps({"len": len(b), "sha256": hashlib.sha256(b).hexdigest()}).encode()
    m.route("/upload", fn=upload)
    m.route("/early", body=b'{"late": true}', delay=0.3, mode="early")
    m.json("/gone/slow", {"late": True}, delay=1.0)
    m.json("/bigjson", {"items": ["%06d" % i + "x" * 94 for i in range(70000)]})   # ~7.2 MB
    m.route("/bigobj", body=json.dumps({"k%d" % i: i for i in range(250000)}).encode())


def start_main():
    global GW
    GW = Gwd(BUILD, {"main.gw": program(MOCK.url, free_port())}, workdir=tempfile.mkdtemp(dir=TMP))
    if not GW.start():
        return GW.start_error
    return None


# ---------------------------------------------------------------- helpers

def jresp(r, status, what="response"):
    """The response has this status, JSON content type, an exact
    Content-Length, and a JSON body; returns the parsed body."""
    eq(r.status, status, what + " status (body %r)" % r.body[:200])
    ct = r.header("Content-Type") or ""
    check(ct.split(";")[0].strip().lower() == "application/json",
          "%s: Content-Type %r, want application/json" % (what, ct))
    cl = r.header("Content-Length")
    check(cl is not None or (r.header("Transfer-Encoding") or "").lower() == "chunked",
          "%s: no Content-Length" % what)
    if cl is not None:
        eq(int(cl), len(r.body), what + " Content-Length")
    try:
        return json.loads(r.body.decode("utf-8"))
    except ValueError as e:
        raise Fail("%s: body is not JSON (%s): %r" % (what, e, r.body[:200]))


def gw_error(r, status, what="response"):
    """A gateway error: the status, JSON {"error": "...", "status": N}."""
    b = jresp(r, status, what)
    check(isinstance(b, dict), "%s: error body not an object: %r" % (what, b))
    check(isinstance(b.get("error"), str) and b["error"], "%s: no \"error\" string: %r" % (what, b))
    eq(b.get("status"), status, what + " body \"status\"")
    return b


def backend_error(r, status, backend, what="response"):
    """A call failure: exactly {"error": "<kind>", "backend": "<name>"}."""
    b = jresp(r, status, what)
    check(isinstance(b, dict) and set(b) == {"error", "backend"},
          "%s: body must be exactly {error, backend}: %r" % (what, b))
    check(isinstance(b["error"], str) and b["error"], "%s: error kind not a string: %r" % (what, b))
    eq(b["backend"], backend, what + " backend name")
    return b


def partial(r):
    return (r.header("X-Gw-Partial") or "").strip().lower() == "true"


def get(target, headers=None, timeout=5.0):
    return GW.request("GET", target, headers=headers, timeout=timeout)


def settle(path_prefix, secs=0.15):
    """Give a call that should NOT be sent a moment to show up anyway."""
    time.sleep(secs)
    return MOCK.count(path_prefix) if not path_prefix.endswith("*") else \
        len(MOCK.requests(path_prefix[:-1]))


def seg_after(path, prefix):
    check(path.startswith(prefix), "backend path %r does not start with %r" % (path, prefix))
    return path[len(prefix):]


def one_request(prefix):
    rs = MOCK.wait_requests(prefix, 1, 2.0)
    eq(len(rs), 1, "requests the backend received under %s (%r)" % (prefix, [e["path"] for e in rs]))
    return rs[0]


# ---------------------------------------------------------------- responses, router

@test
def test_basic_json():
    r = get("/hello")
    eq(jresp(r, 200), {"hello": "world"}, "body")


@test
def test_not_found():
    gw_error(get("/nope/nothing"), 404)


@test
def test_method_not_allowed():
    r = GW.request("DELETE", "/hello")
    gw_error(r, 405)
    allow = {m.strip().upper() for m in (r.header("Allow") or "").split(",") if m.strip()}
    check({"GET", "HEAD", "POST"} <= allow, "Allow %r lacks GET, HEAD, POST" % r.header("Allow"))
    check("DELETE" not in allow, "Allow %r lists DELETE" % r.header("Allow"))
    r = GW.request("PUT", "/a")
    gw_error(r, 405)
    allow = {m.strip().upper() for m in (r.header("Allow") or "").split(",") if m.strip()}
    check({"GET", "HEAD"} <= allow and "POST" not in allow, "Allow for /a: %r" % r.header("Allow"))


@test
def test_head_no_body():
    g = get("/hello")
    c = GW.conn()
    try:
        h = c.request("HEAD", "/hello")
        eq(h.status, 200, "HEAD status")
        eq((h.header("Content-Type") or "").split(";")[0], "application/json", "HEAD Content-Type")
        if h.header("Content-Length") is not None:
            eq(h.header("Content-Length"), g.header("Content-Length"), "HEAD Content-Length (same as GET)")
        # no body was sent: the next response on the connection parses cleanly
        r2 = c.request("GET", "/a")
        eq(jresp(r2, 200, "GET after HEAD"), {"at": "a"}, "GET after HEAD body")
    finally:
        c.close()


@test
def test_options():
    c = GW.conn()
    try:
        r = c.request("OPTIONS", "/hello")
        eq(r.status, 204, "OPTIONS status")
        allow = {m.strip().upper() for m in (r.header("Allow") or "").split(",") if m.strip()}
        check({"GET", "HEAD", "POST"} <= allow, "OPTIONS Allow %r" % r.header("Allow"))
        r2 = c.request("GET", "/a")
        eq(jresp(r2, 200, "GET after OPTIONS"), {"at": "a"}, "GET after OPTIONS")
    finally:
        c.close()


@test
def test_router_precedence():
    eq(jresp(get("/r/me"), 200), {"which": "static"}, "/r/me")
    b = jresp(get("/r/42"), 200)
    eq(b, {"which": "int", "id": 42}, "/r/42 (int parameter is a number)")
    eq(jresp(get("/r/bob"), 200), {"which": "string", "name": "bob"}, "/r/bob")
    eq(jresp(get("/r/a%2Fb"), 200), {"which": "string", "name": "a/b"}, "/r/a%2Fb (%2F is not a separator)")
    gw_error(get("/r/a/b"), 404, "/r/a/b")


@test
def test_router_types():
    u = "123e4567-e89b-12d3-a456-426614174000"
    eq(jresp(get("/s/" + u), 200), {"s": u}, "uuid")
    gw_error(get("/s/not-a-uuid"), 404, "bad uuid")
    gw_error(get("/home/abc"), 404, "int param with letters")
    eq(jresp(get("/t/x/y/z"), 200), {"rest": "x/y/z"}, "tail")


@test
def test_path_normalization():
    eq(jresp(get("/a/./b/../c"), 200, "/a/./b/../c"), {"at": "a/c"}, "/a/./b/../c")
    eq(jresp(get("/%61"), 200, "/%61"), {"at": "a"}, "/%61")
    eq(jresp(get("/a/c/.."), 200, "/a/c/.."), {"at": "a"}, "/a/c/..")
    eq(jresp(get("//a///c"), 200, "//a///c"), {"at": "a/c"}, "//a///c")
    eq(jresp(get("/%61/%63"), 200, "/%61/%63"), {"at": "a/c"}, "/%61/%63")


@test
def test_response_header():
    r = get("/resphdr?x=1")
    jresp(r, 200)
    eq(r.header("X-A"), "v-1", "X-A header")


@test
def test_home_example():
    MOCK.reset()
    r = get("/home/7?limit=3")
    b = jresp(r, 200)
    check(not partial(r), "X-Gw-Partial on a full success")
    eq(b, {"id": 7, "name": "Ada Lovelace", "orders": [{"id": 1, "total": 12.50}, {"id": 2, "total": 1000}],
           "recs": ["r1", "r2"]}, "body")
    check(re.search(rb'"total"\s*:\s*12\.50\b', r.body), "12.50 not byte-identical: %r" % r.body)
    check(re.search(rb'"total"\s*:\s*1E3\b', r.body), "1E3 not byte-identical: %r" % r.body)
    check(b"secret" not in r.body, "unselected field leaked")
    o = one_request("/orders")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(o["path"]).query)
    eq(q, {"user": ["7"], "limit": ["3"]}, "orders query")
    rc = one_request("/recommend")
    eq(rc["method"], "POST", "recommend method")
    eq(json.loads(rc["body"]), {"user": 7}, "recommend body")
    eq(jresp(get("/home/8"), 403, "blocked user"), {"error": "not yours"}, "guard body")


# ---------------------------------------------------------------- parallelism, data flow

@test
def test_parallel_calls():
    get("/par")   # warm the backend connection pool
    MOCK.reset()
    r = get("/par")
    eq(jresp(r, 200), {"a": "A", "b": "B"}, "body")
    check(r.elapsed < 0.55, "two 300 ms calls took %.0f ms (not parallel)" % (r.elapsed * 1000))
    a, b = one_request("/slow/a"), one_request("/slow/b")
    check(abs(a["t_start"] - b["t_start"]) < 0.15, "calls started %.0f ms apart" %
          (abs(a["t_start"] - b["t_start"]) * 1000))


@test
def test_concurrent_requests():
    """One worker serves 12 clients at once while their calls are in flight."""
    out = [None] * 12

    def one(i):
        try:
            r = get("/par", timeout=5)
            out[i] = (r.status, r.body)
        except Exception as e:
            out[i] = ("error", str(e))
    t0 = time.monotonic()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(out))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    el = time.monotonic() - t0
    bad = [o for o in out if o is None or o[0] != 200]
    check(not bad, "failed requests: %r" % bad[:3])
    check(el < 1.2, "12 concurrent requests (two 300 ms calls each) took %.0f ms" % (el * 1000))


@test
def test_dataflow_order():
    MOCK.reset()
    r = get("/flow")
    eq(jresp(r, 200), {"got": True, "third": True}, "body")
    f, t = one_request("/flow/first"), one_request("/flow/third")
    s = one_request("/flow/second/")
    eq(s["path"], "/flow/second/tok123", "second call's url (reads first.token)")
    check(s["t_start"] >= f["t_start"] + 0.09, "second started %.0f ms after first (first takes 100 ms)"
          % ((s["t_start"] - f["t_start"]) * 1000))
    check(abs(t["t_start"] - f["t_start"]) < 0.08, "independent third call did not start with first")


# ---------------------------------------------------------------- failure policy

FAIL_KINDS = ["500", "404", "badjson", "trailing", "html", "reset", "midbody", "redirect", "deep"]


def _mk_fail_tests(kind):
    def required():
        MOCK.reset()
        backend_error(get("/req/" + kind), 502, "users")
        if kind == "redirect":
            eq(settle("/fk/ok"), 0, "redirect followed")

    def optional():
        r = get("/opt/" + kind)
        eq(jresp(r, 200), {"x": None, "ok": True}, "body")
        check(partial(r), "no X-Gw-Partial: true (headers %r)" % r.headers)

    def default():
        r = get("/def/" + kind)
        eq(jresp(r, 200), {"x": {"d": 1}, "ok": True}, "body")
        check(partial(r), "no X-Gw-Partial: true")
    test(required, "fail_required_" + kind)
    test(optional, "fail_optional_" + kind)
    test(default, "fail_default_" + kind)


for _k in FAIL_KINDS:
    _mk_fail_tests(_k)


@test
def test_optional_success_not_partial():
    r = get("/opt/ok")
    eq(jresp(r, 200), {"x": {"ok": 1}, "ok": True}, "body")
    check(r.header("X-Gw-Partial") is None, "X-Gw-Partial on success")
    r = get("/def/ok")
    eq(jresp(r, 200), {"x": {"ok": 1}, "ok": True}, "body")
    check(r.header("X-Gw-Partial") is None, "X-Gw-Partial on success (default)")


@test
def test_fail_connect_refused():
    backend_error(get("/refused/req"), 502, "dead")
    r = get("/refused/opt")
    eq(jresp(r, 200), {"x": None, "ok": True}, "optional body")
    check(partial(r), "no X-Gw-Partial")


@test
def test_fail_backend_timeout():
    r = get("/timeout/req")
    backend_error(r, 504, "slow")
    check(r.elapsed < 0.9, "backend timeout 200ms answered after %.0f ms" % (r.elapsed * 1000))
    r = get("/timeout/opt")
    eq(jresp(r, 200), {"x": None, "ok": True}, "optional body")
    check(partial(r), "no X-Gw-Partial")
    check(r.elapsed < 0.9, "optional timeout answered after %.0f ms" % (r.elapsed * 1000))


@test
def test_fail_call_timeout():
    r = get("/timeout/call")
    backend_error(r, 504, "users")
    check(r.elapsed < 0.9, "call timeout 200ms answered after %.0f ms" % (r.elapsed * 1000))


@test
def test_fail_max_response():
    backend_error(get("/toobig"), 502, "tiny")


@test
def test_fail_null_in_path():
    MOCK.reset()
    backend_error(get("/nullpath"), 502, "users")
    eq(settle("/fk/*"), 0, "calls sent with a null path segment")


@test
def test_if_false_not_sent():
    MOCK.reset()
    r = get("/cond")
    eq(jresp(r, 200), {"x": None, "ok": True}, "body")
    check(r.header("X-Gw-Partial") is None, "skipped call made the response partial")
    eq(settle("/cond/x"), 0, "skipped call was sent")
    r = get("/cond?go=yes")
    eq(jresp(r, 200), {"x": {"c": 1}, "ok": True}, "body with go=yes")
    eq(MOCK.count("/cond/x"), 1, "call count with go=yes")


@test
def test_fail_guard():
    eq(jresp(get("/guard/2"), 403), {"error": "not yours"}, "guard body")
    eq(jresp(get("/guard/1"), 200), {"id": 1}, "guard not taken")


@test
def test_guard_on_request_input_runs_first():
    MOCK.reset()
    eq(jresp(get("/early"), 400), {"error": "need q"}, "guard body")
    eq(settle("/early/x"), 0, "call sent although the guard on request input held")
    eq(jresp(get("/early?q=1"), 200), {"x": {"e": 1}}, "guard not taken")


@test
def test_endpoint_deadline_required():
    r = get("/deadline/req")
    eq(r.status, 504, "status (body %r)" % r.body)
    b = jresp(r, 504)
    check(isinstance(b, dict) and isinstance(b.get("error"), str), "504 body %r" % b)
    check(r.elapsed < 0.8, "deadline 300ms answered after %.0f ms" % (r.elapsed * 1000))


@test
def test_endpoint_deadline_optional():
    r = get("/deadline/opt")
    eq(jresp(r, 200), {"a": None, "b": "d", "c": "C"}, "body")
    check(partial(r), "no X-Gw-Partial")
    check(r.elapsed < 0.8, "deadline 300ms answered after %.0f ms" % (r.elapsed * 1000))


# ---------------------------------------------------------------- numbers

@test
def test_numbers_byte_identical():
    r = get("/numbers")
    b = jresp(r, 200)
    eq(b["s"], "0.10", "interpolated 0.10")
    for k, txt in (("big", b"12345678901234567890"), ("dec", b"0.10"), ("exp", b"1E+2")):
        n = len(re.findall(rb'"%s"\s*:\s*%s(?![0-9.eE])' % (k.encode(), re.escape(txt)), r.body))
        eq(n, 2, "occurrences of \"%s\": %s (field and whole value) in %r" % (k, txt.decode(), r.body))


# ---------------------------------------------------------------- URL encoding

def _path_case(name, target, expected_value, backend_prefix="/users/"):
    def t():
        MOCK.reset()
        r = get(target)
        eq(jresp(r, 200, target), {"ok": True}, "body for %s" % target)
        e = one_request("/")
        seg = seg_after(e["path"], backend_prefix)
        for ch in "/?#":
            check(ch not in seg, "%r reached the backend as %r (a %r changed the path)" % (target, e["path"], ch))
        check(seg not in (".", ".."), "dot segment sent raw: %r" % e["path"])
        check(all(33 <= ord(c) < 127 for c in seg), "unencoded bytes in %r" % e["path"])
        eq(urllib.parse.unquote(seg, errors="strict"), expected_value, "decoded segment of %r" % e["path"])
    test(t, "url_" + name)


_path_case("path_dotdot_slash", "/u/..%2Fadmin", "../admin")
_path_case("path_slash", "/u/a%2Fb", "a/b")
_path_case("path_question", "/u/%3Fx%3D1", "?x=1")
_path_case("path_hash", "/u/%23frag", "#frag")
_path_case("path_percent", "/u/%25zz", "%zz")
_path_case("query_dotdot", "/uq?id=..", "..")
_path_case("query_dot", "/uq?id=.", ".")
_path_case("query_dotdot_admin", "/uq?id=..%2Fadmin", "../admin")
_path_case("query_all", "/uq?id=" + urllib.parse.quote("a/b?c#d", safe=""), "a/b?c#d")
_path_case("query_unicode_space", "/uq?id=" + urllib.parse.quote("a b\u00e9", safe=""), "a b\u00e9")


@test
def test_url_path_encoded_dotdot_segment():
    """/u/%2E%2E: either the gateway resolves it as a dot segment (no route,
    nothing sent) or the value '..' reaches the backend encoded in one segment."""
    MOCK.reset()
    r = get("/u/%2E%2E")
    time.sleep(0.1)
    reqs = MOCK.requests("/")
    if r.status == 200:
        eq(len(reqs), 1, "backend requests")
        seg = seg_after(reqs[0]["path"], "/users/")
        check(seg not in (".", "..", "") and "/" not in seg, "dot segment reached the backend: %r" % reqs[0]["path"])
        eq(urllib.parse.unquote(seg), "..", "decoded segment")
    else:
        check(r.status in (400, 404), "status %d" % r.status)
        eq(len(reqs), 0, "backend requests (%r)" % [e["path"] for e in reqs])


def _raw_query_pairs(path):
    q = urllib.parse.urlsplit(path).query
    out = []
    for part in q.split("&") if q else []:
        k, _, v = part.partition("=")
        out.append((urllib.parse.unquote_plus(k), urllib.parse.unquote_plus(v)))
    return q, out


@test
def test_url_query_object_encoding():
    MOCK.reset()
    val = "x&y=z \u00e9+%#"
    r = get("/qenc?a=" + urllib.parse.quote(val, safe=""))
    eq(jresp(r, 200), {"ok": True}, "body")
    e = one_request("/echo/q")
    q, pairs = _raw_query_pairs(e["path"])
    check(all(33 <= ord(c) < 127 for c in e["path"]), "unencoded bytes in %r" % e["path"])
    check("#" not in e["path"], "raw # in %r" % e["path"])
    eq(pairs, [("a", val), ("arr", val), ("arr", "y"), ("num", "5"), ("t", "true")],
       "query pairs (raw query %r)" % q)


@test
def test_url_query_template_encoding():
    MOCK.reset()
    r = get("/qtpl?a=" + urllib.parse.quote("x&y=1 2", safe=""))
    eq(jresp(r, 200), {"ok": True}, "body")
    e = one_request("/echo/t")
    q, pairs = _raw_query_pairs(e["path"])
    eq(pairs, [("q", "x&y=1 2"), ("page", "2")], "query pairs (raw query %r)" % q)


@test
def test_url_null_query_template():
    """A null query value renders empty (not 'null')."""
    MOCK.reset()
    r = get("/qtpl")
    eq(jresp(r, 200), {"ok": True}, "body")
    e = one_request("/echo/t")
    q, pairs = _raw_query_pairs(e["path"])
    eq(pairs, [("q", ""), ("page", "2")], "query pairs (raw query %r)" % q)


# ---------------------------------------------------------------- request body

@test
def test_body_json():
    MOCK.reset()
    raw = b'{"k": [1, 2.50, 12345678901234567890], "s": "\\u00e9"}'
    r = GW.request("POST", "/body", headers={"Content-Type": "application/json"}, body=raw)
    b = jresp(r, 200)
    eq(b["r"], True, "backend answer")
    eq(b["got"], json.loads(raw), "got")
    check(b"2.50" in r.body and b"12345678901234567890" in r.body, "request numbers not byte-identical: %r" % r.body)
    e = one_request("/sink")
    eq(json.loads(e["body"]), {"inner": json.loads(raw)}, "body the backend received")
    check(b"2.50" in e["body"], "backend body numbers not byte-identical: %r" % e["body"])
    ct = e["hdict"].get("content-type", "")
    check(ct.startswith("application/json"), "backend Content-Type %r" % ct)


@test
def test_body_empty_is_null():
    r = GW.request("POST", "/body", body=b"")
    eq(jresp(r, 200, "empty body")["got"], None, "got (Content-Length: 0)")
    r = GW.request("POST", "/body")
    eq(jresp(r, 200, "no body")["got"], None, "got (no body)")


@test
def test_body_invalid_json():
    MOCK.reset()
    for raw in (b'{"k":', b"{} x", b"nope", b"[" * 100 + b"]" * 100):
        gw_error(GW.request("POST", "/body", body=raw), 400, "body %r" % raw[:20])
    eq(settle("/sink"), 0, "calls sent for invalid bodies")


@test
def test_body_chunked_request():
    c = GW.conn()
    try:
        c.send(b"POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n3\r\n: 1\r\n1;ext=1\r\n}\r\n0\r\n\r\n")
        eq(jresp(c.read_response(), 200)["got"], {"a": 1}, "chunked body")
        r = c.request("GET", "/hello")
        eq(r.status, 200, "keep-alive after a chunked body")
    finally:
        c.close()


# ---------------------------------------------------------------- headers

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@test
def test_headers_to_backend():
    MOCK.reset()
    r = get("/hdr?u=alice", headers={"X-Forwarded-For": "6.6.6.6", "Cookie": "sid=secret",
                                     "Authorization": "Bearer tok", "X-Request-Id": "req-abc-123",
                                     "traceparent": TRACEPARENT, "X-Other": "o"})
    eq(jresp(r, 200), {"ok": True}, "body")
    e = one_request("/hdr/echo")
    h = e["hdict"]
    eq(h.get("x-user"), "alice", "X-User")
    check("x-null" not in h, "null header sent")
    eq(h.get("x-forwarded-for"), "127.0.0.1", "X-Forwarded-For")
    check(all("6.6.6.6" not in v for _, v in e["headers"]), "client X-Forwarded-For leaked: %r" % e["headers"])
    eq(h.get("x-forwarded-proto"), "http", "X-Forwarded-Proto")
    eq(h.get("x-request-id"), "req-abc-123", "X-Request-Id to backend")
    eq(r.header("X-Request-Id"), "req-abc-123", "X-Request-Id on the response")
    tp = h.get("traceparent", "")
    check(tp.split("-")[1:2] == ["4bf92f3577b34da6a3ce929d0e0e4736"], "traceparent %r (trace id lost)" % tp)
    for n in ("cookie", "authorization", "x-other"):
        check(n not in h, "client header %s forwarded implicitly" % n)


@test
def test_request_id_generated():
    ids = []
    for _ in range(2):
        MOCK.reset()
        r = get("/hdr?u=bob")
        eq(jresp(r, 200), {"ok": True}, "body")
        e = one_request("/hdr/echo")
        sent = e["hdict"].get("x-request-id")
        check(sent, "no X-Request-Id to the backend")
        eq(r.header("X-Request-Id"), sent, "response X-Request-Id vs backend's")
        check("traceparent" not in e["hdict"] or e["hdict"]["traceparent"].startswith("00-"),
              "bad traceparent %r" % e["hdict"].get("traceparent"))
        ids.append(sent)
    check(ids[0] != ids[1], "generated request ids repeat: %r" % ids)


@test
def test_date_header():
    # RFC 9110 6.6.1: an origin server with a clock sends Date (IMF-fixdate);
    # a proxied response keeps the backend's own, never two
    import email.utils
    for what, r in (("JSON answer", get("/hello")), ("404", get("/no/such/route")),
                    ("proxied", get("/legacy/plain")), ("backend error", get("/deadproxy/x"))):
        dates = r.header_all("Date")
        eq(len(dates), 1, "Date fields on the %s" % what)
        check(re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                           r" \d{4} \d\d:\d\d:\d\d GMT", dates[0]), "Date on the %s: %r" % (what, dates[0]))
        skew = abs(email.utils.parsedate_to_datetime(dates[0]).timestamp() - time.time())
        check(skew < 5, "Date on the %s is %.0f s off" % (what, skew))


@test
def test_large_answer_to_slow_reader():
    # an answer far larger than the socket buffers, to a client that waits before
    # reading: what the socket does not take is written as it drains, all of it,
    # and the connection then serves the next request
    c = GW.conn(timeout=30)
    # a small receive window: gwd's send buffer (at most 4 MB here) cannot take it all
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        c.send(c.build("GET", "/bigjson"))
        time.sleep(0.5)
        r = c.read_response(timeout=30)
        eq(r.status, 200, "status")
        v = json.loads(r.body)
        eq(v["n"], 70000, "items counted")
        eq(len(v["items"]), 70000, "items received")
        eq(v["items"][69999], "069999" + "x" * 94, "last item")
        c.send(c.build("GET", "/hello"))
        r2 = c.read_response(timeout=5)
        eq(r2.status, 200, "next request on the same connection")
    finally:
        c.close()


# ---------------------------------------------------------------- HTTP strictness

def H(method="GET", target="/hello", extra="", body=b"", version="HTTP/1.1", host=True):
    head = "%s %s %s\r\n" % (method, target, version)
    if host:
        head += "Host: 127.0.0.1\r\n"
    return head.encode("latin-1") + extra.encode("latin-1") + b"\r\n" + body


MALFORMED = [
    # name, bytes, expected status(es)
    ("cl_and_te", H("POST", extra="Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 400),
    ("cl_duplicate_different", H("POST", extra="Content-Length: 5\r\nContent-Length: 6\r\n", body=b"hello!"), 400),
    ("cl_plus", H("POST", extra="Content-Length: +5\r\n", body=b"hello"), 400),
    ("cl_hex", H("POST", extra="Content-Length: 0x5\r\n", body=b"hello"), 400),
    ("cl_negative", H("POST", extra="Content-Length: -1\r\n"), 400),
    ("cl_list", H("POST", extra="Content-Length: 5, 5x\r\n", body=b"hello"), 400),
    ("chunk_size_nonhex", H("POST", extra="Transfer-Encoding: chunked\r\n", body=b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_sign", H("POST", extra="Transfer-Encoding: chunked\r\n", body=b"+5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_space", H("POST", extra="Transfer-Encoding: chunked\r\n", body=b" 5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_overflow", H("POST", extra="Transfer-Encoding: chunked\r\n",
                              body=b"10000000000000000000005\r\nhello\r\n0\r\n\r\n"), (400, 413)),
    ("te_chunked_not_last", H("POST", extra="Transfer-Encoding: chunked, gzip\r\n", body=b"0\r\n\r\n"), (400, 501)),
    ("te_chunked_twice", H("POST", extra="Transfer-Encoding: chunked, chunked\r\n", body=b"0\r\n\r\n"), 400),
    ("te_unknown", H("POST", extra="Transfer-Encoding: foo, chunked\r\n", body=b"0\r\n\r\n"), 501),
    ("space_before_colon", H(extra="X-A : b\r\n"), 400),
    ("obs_fold", H(extra="X-A: b\r\n c\r\n"), 400),
    ("bare_lf", b"GET /hello HTTP/1.1\nHost: 127.0.0.1\n\n", 400),
    ("bare_lf_in_headers", b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\nX-A: b\r\n\r\n", 400),
    ("bare_cr_in_value", H(extra="X-A: b\rc\r\n"), 400),
    ("nul_in_value", H(extra="X-A: b\x00c\r\n"), 400),
    ("missing_host", H(host=False), 400),
    ("duplicate_host", H(extra="Host: other\r\n"), 400),
    ("fragment_in_target", H(target="/hello#frag"), 400),
    ("nul_in_path", H(target="/hel%00lo"), 400),
    ("overlong_utf8", H(target="/%c0%af"), 400),
    ("invalid_utf8", H(target="/a/%ff"), 400),
    ("unknown_method", H("BREW"), 501),
    ("http2_version", H(version="HTTP/2.0"), 505),
    ("garbage_version", H(version="HTTX/1.1"), 400),
    ("request_line_too_long", H(target="/" + "a" * 9000), 414),
    ("too_many_headers", H(extra="".join("X-H%d: v\r\n" % i for i in range(150))), 431),
    ("header_too_big", H(extra="X-Big: " + "b" * 20000 + "\r\n"), 431),
    ("body_over_max_cl", H("POST", extra="Content-Length: 2000\r\n"), 413),
    ("body_over_max_chunked", H("POST", extra="Transfer-Encoding: chunked\r\n",
                                body=b"7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n"), 413),
]


def _mk_malformed(name, data, want):
    def t():
        wants = want if isinstance(want, tuple) else (want,)
        c = GW.conn(timeout=3)
        try:
            try:
                c.send(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                r = c.read_response(timeout=3)
            except HTTPError as e:
                raise Fail("no response (%s); want %s" % (e, "/".join(map(str, wants))))
            check(r.status in wants, "status %d, want %s (body %r)" % (r.status, "/".join(map(str, wants)), r.body[:200]))
            gw_error(r, r.status)
            check(c.closed(2.0), "connection not closed after %d" % r.status)
        finally:
            c.close()
    test(t, "malformed_" + name)


for _row in MALFORMED:
    _mk_malformed(*_row)


@test
def test_http_1_x_served_as_1_1():
    c = GW.conn()
    try:
        c.send(H(version="HTTP/1.2"))
        eq(jresp(c.read_response(), 200), {"hello": "world"}, "HTTP/1.2 body")
    finally:
        c.close()


@test
def test_expect_100_body_over_max():
    c = GW.conn(timeout=3)
    try:
        c.send(H("POST", "/body", extra="Content-Length: 5000\r\nExpect: 100-continue\r\n"))
        r = c.read_response(allow_interim=True, timeout=3)
        eq(r.status, 413, "status (no 100 Continue for a body over max_body)")
    finally:
        c.close()


# ---------------------------------------------------------------- connections

@test
def test_keep_alive():
    c = GW.conn()
    try:
        for i in range(5):
            r = c.request("GET", "/pipe/%d" % i)
            eq(jresp(r, 200, "request %d" % i), {"n": str(i)}, "body %d" % i)
            check((r.header("Connection") or "").lower() != "close", "Connection: close on keep-alive")
    finally:
        c.close()


@test
def test_pipelining():
    c = GW.conn()
    try:
        c.send(c.build("GET", "/par") + c.build("GET", "/pipe/1") + c.build("GET", "/pipe/2"))
        rs = c.read_responses(3, timeout=5)
        eq([jresp(r, 200) for r in rs], [{"a": "A", "b": "B"}, {"n": "1"}, {"n": "2"}], "responses in order")
    finally:
        c.close()


@test
def test_pipelining_head_and_errors():
    c = GW.conn()
    try:
        c.send(c.build("HEAD", "/hello") + c.build("GET", "/nope") + c.build("GET", "/pipe/3"))
        h = c.read_response(head=True)
        eq(h.status, 200, "HEAD")
        gw_error(c.read_response(), 404, "404 in a pipeline")
        eq(jresp(c.read_response(), 200), {"n": "3"}, "third")
    finally:
        c.close()


@test
def test_http10_closes():
    c = GW.conn()
    try:
        c.send(b"GET /hello HTTP/1.0\r\n\r\n")
        eq(jresp(c.read_response(), 200), {"hello": "world"}, "HTTP/1.0 body")
        check(c.closed(2.0), "HTTP/1.0 connection without keep-alive not closed")
    finally:
        c.close()


@test
def test_connection_close():
    c = GW.conn()
    try:
        c.send(H(extra="Connection: close\r\n"))
        eq(jresp(c.read_response(), 200), {"hello": "world"}, "body")
        check(c.closed(2.0), "Connection: close not honoured")
    finally:
        c.close()


@test
def test_expect_100_continue():
    c = GW.conn(timeout=3)
    try:
        body = b'{"x": 1.10}'
        c.send(H("POST", "/body", extra="Content-Type: application/json\r\nContent-Length: %d\r\n"
                 "Expect: 100-continue\r\n" % len(body)))
        r = c.read_response(allow_interim=True, timeout=2)
        eq(r.status, 100, "interim status")
        c.send(body)
        r = c.read_response(timeout=3)
        b = jresp(r, 200)
        eq(b["got"], {"x": 1.10}, "got")
        check(b"1.10" in r.body, "1.10 not byte-identical")
    finally:
        c.close()


def _slow_send(c, first, trickle, limit):
    """Send `first`, then one byte of `trickle` every 200 ms until gwd answers
    or closes. Returns (seconds, response or None)."""
    t0 = time.monotonic()
    c.send(first)
    i = 0
    while time.monotonic() - t0 < limit:
        c.sock.settimeout(0.2)
        try:
            d = c.sock.recv(65536)
            if not d:
                return time.monotonic() - t0, None
            c.buf += d
            el = time.monotonic() - t0
            try:
                return el, c.read_response(timeout=2)
            except HTTPError:
                return el, None
        except socket.timeout:
            pass
        except ConnectionResetError:
            return time.monotonic() - t0, None
        try:
            c.send(trickle[i % len(trickle):i % len(trickle) + 1])
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0, None
        i += 1
    return None, None


@test
def test_slowloris_head():
    c = GW.conn()
    try:
        el, r = _slow_send(c, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"abcdefgh", 6.0)
        check(el is not None, "gwd still waiting for the head after 6 s (header_timeout 1s)")
        check(el < 3.0, "answered after %.1f s (header_timeout 1s)" % el)
        if r is not None:
            gw_error(r, 408, "slowloris")
    finally:
        c.close()


@test
def test_slow_body():
    c = GW.conn()
    try:
        el, r = _slow_send(c, H("POST", "/body", extra="Content-Length: 100\r\n"), b"1", 6.0)
        check(el is not None, "gwd still waiting for the body after 6 s (body_timeout 1s)")
        check(el < 3.0, "answered after %.1f s (body_timeout 1s)" % el)
        if r is not None:
            gw_error(r, 408, "slow body")
    finally:
        c.close()


# ---------------------------------------------------------------- proxy

@test
def test_proxy_forwards_request():
    for method in ("POST", "PUT", "DELETE", "PATCH", "GET"):
        MOCK.reset()
        body = b"raw \x00 bytes, not json" if method != "GET" else None
        r = GW.request(method, "/legacy/echo/x/y?a=1&b=%20z", body=body,
                       headers={"X-Custom": "c1", "Cookie": "sid=1", "Connection": "X-Secret",
                                "X-Secret": "s", "Content-Type": "application/octet-stream"})
        eq(r.status, 200, "%s status (body %r)" % (method, r.body[:200]))
        e = one_request("/echo/")
        eq(e["method"], method, "method")
        eq(e["path"], "/echo/x/y?a=1&b=%20z", "%s path and query" % method)
        eq(e["body"], body or b"", "%s body" % method)
        h = e["hdict"]
        eq(h.get("x-custom"), "c1", "%s end-to-end header" % method)
        eq(h.get("cookie"), "sid=1", "%s Cookie" % method)
        check("x-secret" not in h, "%s: header named in Connection forwarded" % method)
        if body:
            eq(h.get("content-type"), "application/octet-stream", "Content-Type")
        echo = json.loads(r.body)
        eq(echo["path"], "/echo/x/y?a=1&b=%20z", "echoed path")


@test
def test_proxy_response_unchanged():
    r = get("/legacy/plain")
    eq(r.status, 200, "status")
    eq(r.body, b"hello proxy\n", "body")
    eq(r.header("Content-Type"), "text/plain; charset=utf-8", "Content-Type")
    eq(r.header("X-Backend"), "yes", "end-to-end response header")
    check(r.header("X-Hop") is None, "header named in Connection passed through")
    check(r.header("Keep-Alive") != "timeout=5", "backend's Keep-Alive passed through")
    r = GW.request("POST", "/legacy/created", body=b"{}")
    eq(r.status, 201, "status 201")
    eq(r.body, b'{"made": 1.50}', "201 body")
    eq(r.header("Location"), "/things/1", "Location")


@test
def test_proxy_backend_404():
    r = get("/legacy/notfound")
    eq(r.status, 404, "status")
    eq(r.body, b"nope from backend", "backend's 404 body, unchanged")
    eq((r.header("Content-Type") or ""), "text/plain", "Content-Type")


@test
def test_proxy_large_body_streamed():
    GW.reset_peak_rss()
    rss0 = GW.proc_status("VmRSS")
    c = GW.conn(timeout=30)
    h = hashlib.sha256()
    n = [0]
    try:
        c.send(c.build("GET", "/legacy/big"))
        time.sleep(0.5)   # a slow client: gwd must pause the transfer, not buffer it all

        def sink(b):
            h.update(b)
            n[0] += len(b)
        r = c.read_response(sink=sink, timeout=30)
    finally:
        c.close()
    eq(r.status, 200, "status")
    eq(n[0], BIG_SIZE, "bytes received")
    eq(h.hexdigest(), stream_digest(BIG_SIZE), "sha256 of the body")
    hwm = GW.proc_status("VmHWM")
    if rss0 is not None and hwm is not None and not GW.under_asan():
        # buffering the body would cost 20 MB; backpressure keeps it to a few MB
        check(hwm - rss0 < 8 * 1024, "gwd peak RSS grew by %d kB for a 20 MB body" % (hwm - rss0))


@test
def test_proxy_backend_refused():
    backend_error(get("/deadproxy/x"), 502, "dead")


@test
def test_proxy_query_appended():
    MOCK.reset()
    r = get("/lq?a=2&b=x%20y")
    eq(r.status, 200, "status")
    eq(one_request("/echo/lq")["path"], "/echo/lq?fixed=1&a=2&b=x%20y", "backend target")


@test
def test_proxy_without_template():
    MOCK.reset()
    r = GW.request("PUT", "/echo/raw/x/y?q=1", body=b"abc")
    eq(r.status, 200, "status")
    e = one_request("/echo/raw")
    eq(e["path"], "/echo/raw/x/y?q=1", "backend target (the request's own path)")
    eq(e["body"], b"abc", "body")


@test
def test_proxy_x_forwarded_for():
    MOCK.reset()
    r = get("/legacy/echo/xff", headers={"X-Forwarded-For": "6.6.6.6"})
    eq(r.status, 200, "status")
    xff = one_request("/echo/xff")["hdict"].get("x-forwarded-for", "")
    eq(xff.split(",")[-1].strip(), "127.0.0.1", "last X-Forwarded-For hop (%r)" % xff)


@test
def test_backend_connection_reuse():
    get("/opt/ok")
    MOCK.reset()
    for _ in range(3):
        eq(get("/opt/ok").status, 200, "status")
    peers = {e["peer"] for e in MOCK.requests("/fk/ok")}
    eq(len(MOCK.requests("/fk/ok")), 3, "backend requests")
    eq(len(peers), 1, "backend connections used for 3 sequential calls (%r)" % peers)


@test
def test_pipelining_many():
    c = GW.conn(timeout=10)
    try:
        c.send(b"".join(c.build("GET", "/pipe/%d" % i) for i in range(50)))
        rs = c.read_responses(50, timeout=10)
        eq([jresp(r, 200).get("n") for r in rs], [str(i) for i in range(50)], "50 pipelined responses")
    finally:
        c.close()


@test
def test_pipelining_post_body():
    c = GW.conn()
    try:
        c.send(c.build("POST", "/body", body=b'{"p": 1}') + c.build("POST", "/body", body=b'[2]')
               + c.build("GET", "/pipe/z"))
        rs = c.read_responses(3)
        eq([jresp(r, 200).get("got", jresp(r, 200).get("n")) for r in rs], [{"p": 1}, [2], "z"], "responses")
    finally:
        c.close()


@test
def test_http10_keep_alive():
    c = GW.conn()
    try:
        c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        eq(jresp(c.read_response(), 200), {"hello": "world"}, "first")
        c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        eq(jresp(c.read_response(), 200), {"at": "a"}, "second on the same HTTP/1.0 connection")
    finally:
        c.close()


@test
def test_server_limit_settings():
    """The server { } settings of the HTTP limits reach the parser and the JSON reader."""
    g = Gwd(BUILD, {"m.gw": 'server {{ max_request_line 100b max_header 300b max_headers 5 max_json_depth 3 '
                    'admin "127.0.0.1:{A}" }}\n'
                    'endpoint POST /b {{ respond {{ got: body }} }}\n'
                    'endpoint POST /u {{ respond {{ n: len(unique(body)) }} }}\n'
                    'endpoint GET /hello {{ respond {{ hello: "world" }} }}\n'.format(A=free_port())},
            workdir=tempfile.mkdtemp(dir=TMP))
    check(g.start(), "second gwd: %s" % g.start_error)
    try:
        eq(g.get("/hello").status, 200, "a small request")
        gw_error(g.get("/hello?" + "x" * 120), 414, "a request line over max_request_line")
        gw_error(g.get("/hello", headers={"X-Big": "y" * 320}), 431, "header bytes over max_header")
        gw_error(g.get("/hello", headers={"X-%d" % i: "1" for i in range(6)}), 431, "headers over max_headers")
        eq(g.request("POST", "/b", body=b'[[[1]]]').status, 200, "JSON depth 3")
        gw_error(g.request("POST", "/b", body=b'[[[[1]]]]'), 400, "JSON deeper than max_json_depth")
        # a quadratic builtin on a large client body is stopped by the step budget
        big = json.dumps(list(range(30000))).encode()
        b = gw_error(g.request("POST", "/u", body=big, timeout=10), 500, "unique() of 30,000 elements")
        check("expensive" in b["error"], "error %r" % b["error"])
    finally:
        g.stop()


@test
def test_max_connections_and_idle():
    """A second gwd with max_connections 3 and idle_timeout 2s."""
    g = Gwd(BUILD, {"m.gw": 'server {{ max_connections 3 idle_timeout 2s admin "127.0.0.1:{A}" }}\n'
                    'endpoint GET /hello {{ respond {{ hello: "world" }} }}\n'.format(A=free_port())},
            workdir=tempfile.mkdtemp(dir=TMP))
    check(g.start(), "second gwd: %s" % g.start_error)
    conns = []
    try:
        time.sleep(0.3)   # let gwd see the start-up probe connection close
        for i in range(3):
            c = g.conn()
            conns.append(c)
            eq(c.request("GET", "/hello").status, 200, "connection %d of 3" % (i + 1))
        extra = g.conn(timeout=3)
        conns.append(extra)
        try:
            extra.send(H())
        except OSError:
            pass
        try:
            r = extra.read_response(timeout=3)
            gw_error(r, 503, "connection over max_connections")
        except HTTPError as e:
            check(extra.eof, "connection over max_connections neither answered 503 nor closed (%s)" % e)
        for c in conns[:3]:
            c.close()
        t0 = time.monotonic()
        ok = False
        while time.monotonic() - t0 < 3 and not ok:
            try:
                c = g.conn(timeout=2)
                conns.append(c)
                ok = c.request("GET", "/hello").status == 200
            except (OSError, HTTPError):
                time.sleep(0.1)
        check(ok, "no connection served after the others closed")
        # idle_timeout 2s: the idle keep-alive connection is closed
        t0 = time.monotonic()
        check(c.closed(4.0), "idle connection still open after %.1f s (idle_timeout 2s)" % (time.monotonic() - t0))
        check(g.alive(), "second gwd died")
    finally:
        for c in conns:
            c.close()
        g.stop()


# ---------------------------------------------------------------- command line

def _run_gwd(argv, timeout=15):
    try:
        p = subprocess.run([GWD_EXE] + argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        raise Fail("gwd %s did not exit within %ds" % (" ".join(argv), timeout))
    return p.returncode, p.stdout + p.stderr


@test
def test_check_good():
    code, out = _run_gwd(["--check", GW.prog])
    eq(code, 0, "exit code (output %r)" % out[-500:])
    check(out.strip(), "--check printed no summary")


@test
def test_check_bad_program():
    d = tempfile.mkdtemp(dir=TMP)
    with open(os.path.join(d, "broken.gw"), "w") as f:
        f.write('backend b { url "http://127.0.0.1:1" }\nendpoint GET /x {\n    y = nope GET "/y"\n    respond { y }\n}\n')
    code, out = _run_gwd(["--check", d])
    eq(code, 1, "exit code (output %r)" % out[-500:])
    check("broken.gw:3" in out, "no file:line diagnostic in %r" % out[-500:])
    code, out = _run_gwd(["--listen", "127.0.0.1:%d" % free_port(), d], timeout=10)
    check(code != 0, "gwd served a broken program (exit %r)" % code)


@test
def test_missing_program():
    missing = os.path.join(TMP, "does-not-exist.gw")
    code, out = _run_gwd(["--check", missing])
    check(code != 0, "exit 0 for a missing program")
    check("does-not-exist" in out, "message does not name the file: %r" % out[-300:])
    code, out = _run_gwd(["--listen", "127.0.0.1:%d" % free_port(), missing], timeout=10)
    check(code != 0, "exit 0 for a missing program")
    check("does-not-exist" in out, "message does not name the file: %r" % out[-300:])


@test
def test_port_in_use():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    d = tempfile.mkdtemp(dir=TMP)
    with open(os.path.join(d, "main.gw"), "w") as f:
        f.write(program(MOCK.url, free_port()))
    try:
        code, out = _run_gwd(["--listen", "127.0.0.1:%d" % port, "--workers", "1", d], timeout=10)
    finally:
        s.close()
    check(code != 0, "exit 0 with the port in use")
    check(str(port) in out or "in use" in out.lower(), "message does not say which address: %r" % out[-300:])


@test
def test_proxy_tail_keeps_encoded_slash():
    # a %2F inside a {rest*} segment stays inside it: never a new path segment
    MOCK.reset()
    r = get("/legacy/echo/a%2Fb/c%2F..%2Fadmin")
    eq(r.status, 200, "status")
    eq(one_request("/echo/")["path"], "/echo/a%2Fb/c%2F..%2Fadmin", "backend target")


@test
def test_proxy_streamed_upload():
    # 8 MB, far above max_body: a proxy route streams the request body up
    data = bytes(range(256)) * (8 * 4096)
    MOCK.reset()
    r = GW.request("POST", "/legacy/upload", body=data, timeout=30)
    eq(r.status, 200, "status")
    got = json.loads(r.body)
    eq(got["len"], len(data), "bytes the backend received")
    eq(got["sha256"], hashlib.sha256(data).hexdigest(), "sha256 the backend computed")


@test
def test_proxy_upload_error_then_backend_answers():
    # a streamed upload refused mid-way (bad chunk framing): the backend's late
    # answer must not reach the connection that was closed (it once did: a crash)
    c = GW.conn(timeout=5)
    try:
        c.send(b"POST /legacy/early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\nzz\r\n")
        r = c.read_response()
    finally:
        c.close()
    eq(r.status, 400, "status")
    time.sleep(0.6)                     # the backend answers /early after 0.3 s
    check(GW.alive(), "gwd died")
    eq(get("/hello").status, 200, "a request after it")


@test
def test_max_body_still_applies_to_json_endpoints():
    r = GW.request("POST", "/body", body=b"[" + b"1," * 600000 + b"1]", timeout=10)
    eq(r.status, 413, "status")


@test
def test_client_ip_behind_trusted_proxies():
    # the peer (127.0.0.1) is a trusted proxy: client.ip is the right-most
    # X-Forwarded-For address that is not one; a client can prepend anything
    def ip(xff):
        h = {"X-Forwarded-For": xff} if xff is not None else None
        return json.loads(get("/whoami", headers=h).body)["ip"]
    eq(ip(None), "127.0.0.1", "no X-Forwarded-For")
    eq(ip("203.0.113.7"), "203.0.113.7", "one hop")
    eq(ip("6.6.6.6, 203.0.113.7"), "203.0.113.7", "a forged first entry")
    eq(ip("203.0.113.7, 10.1.2.3"), "203.0.113.7", "through a second trusted proxy")
    eq(ip("not-an-ip"), "127.0.0.1", "garbage falls back to the peer")


@test
def test_large_object_spread():
    # 250,000 keys spread into a new object: building objects stays linear
    # (a quadratic key lookup would take minutes; the client gives up at 20 s)
    r = GW.request("GET", "/spread", timeout=20)
    eq(r.status, 200, "status")
    body = json.loads(r.body)
    eq(len(body), 250001, "keys")
    eq(body["k7"], "seven", "a later key wins in place")
    eq(list(body)[7], "k7", "keeping the first key's position")
    eq(body["n"], 250000, "len()")


@test
def test_client_disconnect_cancels_calls():
    # the client leaves while its call runs: gwd cancels the call, so the
    # backend's late answer finds the connection closed
    MOCK.reset()
    c = GW.conn(timeout=5)
    c.send(c.build("GET", "/gone"))
    time.sleep(0.3)
    c.close()
    rs = MOCK.wait_requests("/gone/slow", 1, 2.0)
    eq(len(rs), 1, "the call reached the backend")
    deadline = time.monotonic() + 3.0
    while rs[0].get("t_end") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    check(rs[0].get("write_failed"), "the backend could still write its answer: the call was not cancelled")


@test
def test_backend_queue_is_bounded():
    # max_connections 1: at most 2 calls in flight per worker; the third fails fast
    r = get("/narrow")
    eq(r.status, 200, "status")
    eq(json.loads(r.body), {"a": "A", "b": "B", "c": None}, "body")
    eq(r.header("X-Gw-Partial"), "true", "X-Gw-Partial")


@test
def test_port_held_by_another_gwd():
    # SO_REUSEPORT must not let a second gwd silently share a port
    d = tempfile.mkdtemp(dir=TMP)
    with open(os.path.join(d, "main.gw"), "w") as f:
        f.write(program(MOCK.url, free_port()))
    code, out = _run_gwd(["--listen", "127.0.0.1:%d" % GW.port, "--admin", "", "--workers", "1", d], timeout=10)
    check(code != 0, "a second gwd started on the port of the first")
    check(str(GW.port) in out, "message does not name the address: %r" % out[-300:])


# ---------------------------------------------------------------- runner

def run_one(name, fn, needs_gwd=True):
    global passed, failed
    t0 = time.monotonic()
    why = None
    if needs_gwd and GW is not None and not GW.alive():
        why = "gwd is not running"
    else:
        try:
            fn()
        except Fail as e:
            why = str(e)
        except HTTPError as e:
            why = "HTTP: %s" % e
        except (KeyError, IndexError, TypeError) as e:
            why = "unexpected response shape (%s: %s)" % (type(e).__name__, e)
        except Exception as e:  # a test bug or an unexpected answer
            why = "%s: %s" % (type(e).__name__, e)
    if why is None and needs_gwd and GW is not None and not GW.alive():
        why = "gwd died (exit %r): %s" % (GW.proc.returncode, GW.stderr()[-600:])
    dt = time.monotonic() - t0
    if why is None:
        passed += 1
        if VERBOSE:
            print("ok   %-45s %6.0f ms" % (name, dt * 1000))
    else:
        failed += 1
        print("FAIL e2e/%s: %s" % (name, why.replace("\n", " ")[:600]))
        sys.stdout.flush()
    return why is None


def main():
    global MOCK, failed
    if not os.path.exists(GWD_EXE):
        print("FAIL e2e: %s not found (build it first)" % GWD_EXE)
        print("0 passed, 1 failed")
        return 1
    t_start = time.monotonic()

    def watchdog():
        print("FAIL e2e: the suite exceeded 240 s; stopping")
        try:
            if GW:
                GW.stop(1)
        finally:
            os._exit(1)
    wd = threading.Timer(240, watchdog)
    wd.daemon = True
    wd.start()
    MOCK = Mock().start()
    setup_mock(MOCK)
    try:
        err = start_main()
        if err:
            failed += 1
            print("FAIL e2e/start: %s" % err.replace("\n", " ")[:800])
        else:
            for name, fn in TESTS:
                if FILTER and FILTER not in name:
                    continue
                ok = run_one(name, fn)
                if not ok and not GW.alive():
                    # restart so one crash does not fail everything after it
                    stderr = GW.stderr()
                    print("     gwd stderr: %s" % stderr[-1000:].replace("\n", " | "))
                    GW.stop()
                    e = start_main()
                    if e:
                        print("FAIL e2e/restart: %s" % e[:500])
                        failed += 1
                        break
            # clean shutdown, no sanitizer report
            if not FILTER or FILTER in "shutdown":
                def shutdown():
                    code = GW.stop(5.0)
                    check(code is not None, "gwd ignored SIGTERM for 5 s (killed)")
                    err = GW.stderr()
                    for pat in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                        check(pat not in err, "sanitizer report in gwd stderr: %s" %
                              err[max(0, err.find(pat) - 200):err.find(pat) + 600])
                    eq(code, 0, "exit code after SIGTERM")
                run_one("shutdown", shutdown, needs_gwd=False)
    finally:
        if GW is not None:
            GW.stop(2.0)
        MOCK.stop()
        wd.cancel()
        shutil.rmtree(TMP, ignore_errors=True)
    if VERBOSE:
        print("e2e: %.1f s" % (time.monotonic() - t_start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
