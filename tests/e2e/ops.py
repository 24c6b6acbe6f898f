#!/usr/bin/python3
"""End-to-end tests of gwd's operations side: GET /metrics (parsed strictly as
Prometheus text format 0.0.4), GET /routes, the access log, --access-log and
--log-level. A real gwd, mock backends in this process, raw sockets on
127.0.0.1.

    /usr/bin/python3 tests/e2e/ops.py [BUILD_DIR] [-k SUBSTRING] [-v]

Prints one "FAIL e2e-ops/NAME: why" line per failure and ends with
"N passed, N failed" (exit 1 if anything failed). -k runs only the tests whose
name contains SUBSTRING; -v prints every test with its time. Standard library
only.

The main gwd (--workers 2, --access-log FILE) serves every test but those
that start their own (access log off, the default stdout, log levels).
"""
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mock import Mock  # noqa: E402
from gwd import Gwd, Conn, free_port, closed_port  # noqa: E402
from jwtkit import make_token  # noqa: E402
from suite import Suite, Fail, check, eq  # noqa: E402

S = Suite("e2e-ops", ROOT, watchdog=200, width=50, limit=900, http_errors=True)
BUILD = S.build
GWD_EXE = S.gwd_exe


test = S.test


# ---------------------------------------------------------------- fixtures

TMP = tempfile.mkdtemp(prefix="gw-e2e-ops-")
MOCK = None
GW = None           # the main gwd
ADMIN = None        # its admin port
ALOG = None         # its access log file
DEAD_PORT = closed_port()
API_KEY = "ak-3c9e1f7b2d5a4e60"                  # the valid key of client "app"
HS_SECRET = b"ops-e2e-hs256-secret-0123456789abcdef0123456789"
SECRETS = []        # every secret value sent: none may appear in an access log


def program(mock_url):
    return """
backend be   {{ url "{M}" timeout 2s }}
backend slow {{ url "{M}" timeout 3s }}
backend dead {{ url "http://127.0.0.1:{D}" timeout 1s connect_timeout 300ms }}

auth ka apikey {{ keys file "apikeys.txt" }}
auth kq apikey {{ from query "api_key"; keys file "apikeys.txt" }}
auth jh jwt {{ algorithms HS256; key file "hs.secret" }}
auth jadm jwt {{ algorithms HS256; key file "hs.secret"; require "admin" in jwt.roles }}

limit one 1/min by headers["x-k"]

endpoint GET /users/{{id}} {{
    u = be GET "/users/{{id}}"
    respond {{ id: u.id }}
}}
endpoint GET  /static {{ respond {{ ok: true }} }}
endpoint POST /static {{ respond 201 {{ posted: true }} }}
endpoint GET  /fail {{ x = dead GET "/x"; respond {{ x }} }}
endpoint GET  /optfail {{ x = be GET "/status/500" optional; respond {{ x, ok: true }} }}
endpoint GET  /cond {{ x = be GET "/users/1" if query.go == "yes"; respond {{ x, ok: true }} }}
endpoint GET  /lim {{ limit one; respond {{ ok: true }} }}
endpoint GET  /k/header {{ auth ka; x = be GET "/users/2"; respond {{ c: client.name, id: x.id }} }}
endpoint GET  /k/query {{ auth kq; respond {{ c: client.name }} }}
endpoint GET  /jwt {{ auth jh; respond {{ sub: jwt.sub }} }}
endpoint GET  /adm {{ auth jadm; respond {{ sub: jwt.sub }} }}
endpoint GET  /slow {{ x = slow GET "/delay"; respond {{ x }} }}
endpoint GET  /multi {{
    a = be GET "/users/1"
    b = be GET "/users/{{a.id}}"
    c = be GET "/status/500" optional
    d = be GET "/users/3" if query.x == "1"
    respond {{ a: a.id, b: b.id, c, d }}
}}
endpoint GET /px/{{rest*}} {{ proxy be "/users/{{rest}}" }}
endpoint GET /p/{{v}} {{ respond {{ v }} }}
""".format(M=mock_url, D=DEAD_PORT)


def setup_mock(m):
    m.route("/users/*", fn=lambda e: (200, [], {"id": e["path_only"].rsplit("/", 1)[-1]}))
    m.route("/status/500", status=500, body={"error": "boom"})
    m.route("/delay", body={"late": True}, delay=1.5)


def write_files(prog):
    with open(os.path.join(prog, "apikeys.txt"), "w") as f:
        f.write("app %s\n" % hashlib.sha256(API_KEY.encode()).hexdigest())
    with open(os.path.join(prog, "hs.secret"), "wb") as f:
        f.write(HS_SECRET)


def start_gwd(extra=(), workers=2, admin=True, name="gwd"):
    """A gwd serving the test program; returns (gwd, admin port or None) or
    raises Fail."""
    args = list(extra)
    port = None
    if admin:
        port = free_port()
        args += ["--admin", "127.0.0.1:%d" % port]
    g = Gwd(BUILD, {"main.gw": program(MOCK.url)}, workers=workers, extra_args=args,
            workdir=tempfile.mkdtemp(dir=TMP, prefix=name + "-"))
    write_files(g.prog)
    if not g.start():
        raise Fail("gwd did not start: %s" % g.start_error)
    return g, port


def admin_get(path, method="GET", port=None):
    c = Conn(port or ADMIN, timeout=5.0)
    try:
        return c.request(method, path)
    finally:
        c.close()


def token(**claims):
    c = {"sub": "alice", "exp": int(time.time()) + 600, "roles": ["user"]}
    c.update(claims)
    t = make_token(c, "HS256", secret=HS_SECRET)
    SECRETS.append(t)
    return t


# ---------------------------------------------------------------- the exposition format, strictly

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(r"^(" + NAME + r")(\{(.*)\})? (\S+)( -?\d+)?$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')


def parse_value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.match(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$", s):
        raise Fail("bad sample value %r" % s)
    return float(s)


def parse_labels(text):
    out = {}
    pos = 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if not m:
            raise Fail("bad label set {%s}" % text)
        k = m.group(1)
        if k in out:
            raise Fail("label %s twice in {%s}" % (k, text))
        v = m.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        out[k] = v
        pos = m.end()
    return out


def parse_metrics(text):
    """{(name, frozenset(labels)): value}, and {family: type}, checking the
    text format as a strict scraper would. Raises Fail."""
    check(text.endswith("\n"), "the exposition does not end with a newline")
    types, helps, samples = {}, {}, {}
    current = None               # the family whose samples are being read
    done = set()                 # families whose samples are over
    order = []
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d %r" % (n, line[:120])
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                fam = parts[2]
                check(re.match("^" + NAME + "$", fam), "%s: bad metric name" % where)
                if parts[1] == "TYPE":
                    check(len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"),
                          "%s: bad TYPE" % where)
                    check(fam not in types, "%s: a second TYPE for %s" % (where, fam))
                    check(fam not in done and fam != current, "%s: TYPE after samples of %s" % (where, fam))
                    types[fam] = parts[3]
                else:
                    check(fam not in helps, "%s: a second HELP for %s" % (where, fam))
                    helps[fam] = parts[3] if len(parts) == 4 else ""
            continue
        check(line.strip() != "", "%s: an empty line" % where)
        m = SAMPLE.match(line)
        check(m, "%s: not a sample line" % where)
        name, labels, value = m.group(1), parse_labels(m.group(3) or ""), parse_value(m.group(4))
        fam = name
        for suf in ("_bucket", "_sum", "_count"):
            if name.endswith(suf) and types.get(name[:-len(suf)]) == "histogram":
                fam = name[:-len(suf)]
        check(fam in types, "%s: a sample of %s before (or without) its TYPE line" % (where, fam))
        if fam != current:
            check(fam not in done, "%s: the samples of %s are not together" % (where, fam))
            if current:
                done.add(current)
            current = fam
            order.append(fam)
        key = (name, frozenset(labels.items()))
        check(key not in samples, "%s: a series twice" % where)
        samples[key] = value
        if types[fam] == "counter":
            check(name.endswith("_total"), "%s: a counter whose name does not end in _total" % where)
            check(value >= 0, "%s: a negative counter" % where)
    # histograms: cumulative buckets ending with +Inf == _count, and a _sum
    for fam, t in types.items():
        if t != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                d = dict(labels)
                check("le" in d, "%s_bucket without le" % fam)
                le = d.pop("le")
                series.setdefault(frozenset(d.items()), []).append((parse_value(le), v))
        for key, buckets in series.items():
            buckets.sort()
            check(buckets[-1][0] == math.inf, "%s%s: the last bucket is not le=\"+Inf\"" % (fam, dict(key)))
            for (a, va), (b, vb) in zip(buckets, buckets[1:]):
                check(vb >= va, "%s%s: buckets not cumulative (%s: %s, %s: %s)" % (fam, dict(key), a, va, b, vb))
            cnt = samples.get((fam + "_count", key))
            check(cnt is not None, "%s%s: no _count" % (fam, dict(key)))
            eq(cnt, buckets[-1][1], "%s%s: _count vs the +Inf bucket" % (fam, dict(key)))
            check((fam + "_sum", key) in samples, "%s%s: no _sum" % (fam, dict(key)))
    return samples, types


def scrape(port=None):
    r = admin_get("/metrics", port=port)
    eq(r.status, 200, "GET /metrics status")
    ct = r.header("Content-Type") or ""
    check(ct.startswith("text/plain") and "version=0.0.4" in ct, "Content-Type %r" % ct)
    return parse_metrics(r.body.decode("utf-8"))[0]


def val(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def delta(before, after):
    """The series that changed, with their change (histogram buckets and sums,
    and the connection and byte counters, left out)."""
    out = {}
    for k in set(before) | set(after):
        name = k[0]
        if name.endswith("_bucket") or name.endswith("_sum") or name.startswith("gw_bytes_") \
                or name.startswith("gw_connections_") or name.startswith("gw_access_log_"):
            continue
        d = after.get(k, 0) - before.get(k, 0)
        if d:
            out[(name, tuple(sorted(k[1])))] = d
    return out


def series(name, **labels):
    return (name, tuple(sorted(labels.items())))


# ---------------------------------------------------------------- /metrics

@test
def test_metrics_format_strict():
    get("/static")
    get("/users/5")
    r = admin_get("/metrics")
    eq(r.status, 200, "status")
    samples, types = parse_metrics(r.body.decode("utf-8"))
    for fam, t in [("gw_requests_total", "counter"), ("gw_request_duration_seconds", "histogram"),
                   ("gw_backend_calls_total", "counter"), ("gw_backend_call_duration_seconds", "histogram"),
                   ("gw_calls_skipped_total", "counter"), ("gw_partial_responses_total", "counter"),
                   ("gw_auth_failures_total", "counter"), ("gw_rate_limit_decisions_total", "counter"),
                   ("gw_connections_open", "gauge"), ("gw_connections_total", "counter"),
                   ("gw_bytes_received_total", "counter"), ("gw_bytes_sent_total", "counter"),
                   ("gw_tls_handshake_failures_total", "counter"), ("gw_program_generation", "gauge"),
                   ("gw_reloads_total", "counter"), ("gw_build_info", "gauge")]:
        eq(types.get(fam), t, "TYPE of " + fam)
    check(val(samples, "gw_requests_total", route="GET /static", status="2xx") >= 1, "GET /static not counted")
    les = sorted(dict(k[1])["le"] for k in samples if k[0] == "gw_request_duration_seconds_bucket"
                 and dict(k[1]).get("route") == "GET /static")
    eq(sorted(les), sorted(["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]),
       "the buckets of gw_request_duration_seconds")
    check(any(k[0] == "gw_build_info" for k in samples), "no gw_build_info")
    check(val(samples, "gw_program_generation") >= 1, "gw_program_generation")
    # HEAD has the headers without a body; other methods are refused
    r = admin_get("/metrics", method="HEAD")
    eq((r.status, r.body), (200, b""), "HEAD /metrics")
    eq(admin_get("/metrics", method="POST").status, 405, "POST /metrics status")


@test
def test_label_values_escaped():
    # a route pattern with a quote and a backslash would need escaping; the
    # parser above unescapes, so a round trip through a label proves it
    text = 'gw_x_total{route="a\\"b\\\\c\\nd"} 1\n'
    got, _ = parse_metrics("# TYPE gw_x_total counter\n" + text)
    eq(list(got)[0][1], frozenset({("route", 'a"b\\c\nd')}), "the parser's unescaping")


def moves(actions, expected, what):
    """Run actions(); the counters that changed must be exactly `expected`."""
    before = scrape()
    actions()
    after = scrape()
    got = delta(before, after)
    want = {series(n, **l): d for (n, l, d) in expected}
    if got != want:
        extra = {k: v for k, v in got.items() if want.get(k) != v}
        missing = {k: v for k, v in want.items() if got.get(k) != v}
        raise Fail("%s: unexpected changes %r; expected but not seen %r" % (what, extra, missing))
    return before, after


@test
def test_counters_route_and_backend():
    def act():
        r = get("/users/7")
        eq(r.status, 200, "GET /users/7")
    before, after = moves(act, [
        ("gw_requests_total", {"route": "GET /users/{id}", "status": "2xx"}, 1),
        ("gw_request_duration_seconds_count", {"route": "GET /users/{id}"}, 1),
        ("gw_backend_calls_total", {"backend": "be", "result": "ok"}, 1),
        ("gw_backend_call_duration_seconds_count", {"backend": "be"}, 1),
    ], "a request to a route")
    eq(val(after, "gw_connections_total") - val(before, "gw_connections_total"), 1, "gw_connections_total")
    check(val(after, "gw_bytes_received_total") - val(before, "gw_bytes_received_total") > 30, "gw_bytes_received_total")
    check(val(after, "gw_bytes_sent_total") - val(before, "gw_bytes_sent_total") > 60, "gw_bytes_sent_total")


@test
def test_counters_unmatched():
    def act():
        eq(get("/no/such/route").status, 404, "404")
        eq(GW.request("DELETE", "/static").status, 405, "405")
        c = Conn(GW.port)
        try:
            c.send(b"GET /static HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            eq(c.read_response().status, 400, "a malformed request")
        finally:
            c.close()
    moves(act, [
        ("gw_requests_total", {"route": "unmatched", "status": "4xx"}, 3),
        ("gw_request_duration_seconds_count", {"route": "unmatched"}, 3),
    ], "404, 405 and 400")


@test
def test_counters_failing_backend():
    def act():
        r = get("/fail")
        eq(r.status, 502, "GET /fail")
        eq(r.json(), {"error": "connect", "backend": "dead"}, "body")
    moves(act, [
        ("gw_requests_total", {"route": "GET /fail", "status": "5xx"}, 1),
        ("gw_request_duration_seconds_count", {"route": "GET /fail"}, 1),
        ("gw_backend_calls_total", {"backend": "dead", "result": "connect"}, 1),
        ("gw_backend_call_duration_seconds_count", {"backend": "dead"}, 1),
    ], "a failing backend")


@test
def test_counters_partial_and_skipped():
    def act():
        r = get("/optfail")
        eq((r.status, r.header("X-Gw-Partial")), (200, "true"), "GET /optfail")
        eq(get("/cond").status, 200, "GET /cond")
    moves(act, [
        ("gw_requests_total", {"route": "GET /optfail", "status": "2xx"}, 1),
        ("gw_request_duration_seconds_count", {"route": "GET /optfail"}, 1),
        ("gw_requests_total", {"route": "GET /cond", "status": "2xx"}, 1),
        ("gw_request_duration_seconds_count", {"route": "GET /cond"}, 1),
        ("gw_backend_calls_total", {"backend": "be", "result": "status"}, 1),
        ("gw_backend_call_duration_seconds_count", {"backend": "be"}, 1),
        ("gw_partial_responses_total", {"route": "GET /optfail"}, 1),
        ("gw_calls_skipped_total", {"route": "GET /cond"}, 1),
    ], "a partial response and a skipped call")


@test
def test_counters_rate_limit():
    k = "ops-%d" % random.randrange(10 ** 9)

    def act():
        eq(get("/lim", {"X-K": k}).status, 200, "first")
        eq(get("/lim", {"X-K": k}).status, 429, "second")
    moves(act, [
        ("gw_requests_total", {"route": "GET /lim", "status": "2xx"}, 1),
        ("gw_requests_total", {"route": "GET /lim", "status": "4xx"}, 1),
        ("gw_request_duration_seconds_count", {"route": "GET /lim"}, 2),
        ("gw_rate_limit_decisions_total", {"limit": "one", "decision": "allowed"}, 1),
        ("gw_rate_limit_decisions_total", {"limit": "one", "decision": "limited"}, 1),
    ], "an allowed and a limited request")


@test
def test_counters_auth_failures():
    def act():
        eq(get("/k/header").status, 401, "no key")
        eq(get("/k/header", {"X-Api-Key": "not-a-key"}).status, 401, "a wrong key")
        eq(get("/k/header", {"X-Api-Key": API_KEY}).status, 200, "the key")
        eq(get("/jwt", {"Authorization": "Bearer " + token(exp=int(time.time()) - 100)}).status, 401, "expired")
        eq(get("/jwt", {"Authorization": "Bearer " + token()[:-4] + "AAAA"}).status, 401, "bad signature")
        eq(get("/adm", {"Authorization": "Bearer " + token()}).status, 403, "require fails")
    moves(act, [
        ("gw_requests_total", {"route": "GET /k/header", "status": "4xx"}, 2),
        ("gw_requests_total", {"route": "GET /k/header", "status": "2xx"}, 1),
        ("gw_request_duration_seconds_count", {"route": "GET /k/header"}, 3),
        ("gw_backend_calls_total", {"backend": "be", "result": "ok"}, 1),
        ("gw_backend_call_duration_seconds_count", {"backend": "be"}, 1),
        ("gw_requests_total", {"route": "GET /jwt", "status": "4xx"}, 2),
        ("gw_request_duration_seconds_count", {"route": "GET /jwt"}, 2),
        ("gw_requests_total", {"route": "GET /adm", "status": "4xx"}, 1),
        ("gw_request_duration_seconds_count", {"route": "GET /adm"}, 1),
        ("gw_auth_failures_total", {"policy": "ka", "reason": "missing"}, 1),
        ("gw_auth_failures_total", {"policy": "ka", "reason": "invalid"}, 1),
        ("gw_auth_failures_total", {"policy": "jh", "reason": "expired"}, 1),
        ("gw_auth_failures_total", {"policy": "jh", "reason": "invalid"}, 1),
        ("gw_auth_failures_total", {"policy": "jadm", "reason": "forbidden"}, 1),
    ], "auth failures")


@test
def test_counters_proxy():
    def act():
        r = get("/px/a/b")
        eq(r.status, 200, "GET /px/a/b")
    moves(act, [
        ("gw_requests_total", {"route": "GET /px/{rest*}", "status": "2xx"}, 1),
        ("gw_request_duration_seconds_count", {"route": "GET /px/{rest*}"}, 1),
        ("gw_backend_calls_total", {"backend": "be", "result": "ok"}, 1),
        ("gw_backend_call_duration_seconds_count", {"backend": "be"}, 1),
    ], "a proxied request")


@test
def test_label_cardinality_bounded():
    get("/no/such/route")
    get("/p/0")
    before = scrape()
    rnd = random.Random(7)
    c = Conn(GW.port)
    try:
        for i in range(1000):
            path = "/%x/%x?%x=%x" % (rnd.getrandbits(48), rnd.getrandbits(32), rnd.getrandbits(16), rnd.getrandbits(40))
            if i % 2:
                path = "/p/%x?q=%d" % (rnd.getrandbits(64), i)           # a parameter: one route, any value
            r = c.request("GET", path, headers={"X-Request-Id": "r%d" % i, "X-K": str(i)})
            check(r.status in (200, 404), "status %d for %s" % (r.status, path))
    finally:
        c.close()
    after = scrape()
    new = set(after) - set(before)
    check(not new, "%d new series after 1000 distinct paths, e.g. %r" % (len(new), sorted(new)[:3]))
    eq(val(after, "gw_requests_total", route="unmatched", status="4xx")
       - val(before, "gw_requests_total", route="unmatched", status="4xx"), 500, "unmatched 404s")


@test
def test_reload_keeps_counters():
    get("/static")
    before = scrape()
    r = admin_get("/reload", method="POST")
    eq(r.status, 200, "POST /reload (%r)" % r.body[:200])
    after = scrape()
    eq(val(after, "gw_program_generation"), val(before, "gw_program_generation") + 1, "gw_program_generation")
    eq(val(after, "gw_reloads_total", result="ok"), val(before, "gw_reloads_total", result="ok") + 1, "reloads ok")
    eq(val(after, "gw_requests_total", route="GET /static", status="2xx"),
       val(before, "gw_requests_total", route="GET /static", status="2xx"), "GET /static count across the reload")
    time.sleep(0.1)                       # the workers take the new program up on their loops
    get("/static")
    eq(val(scrape(), "gw_requests_total", route="GET /static", status="2xx"),
       val(before, "gw_requests_total", route="GET /static", status="2xx") + 1, "the same series after the reload")


# ---------------------------------------------------------------- /routes

@test
def test_admin_health_ready_head_and_methods():
    """A load balancer's HEAD /health or HEAD /ready gets the head alone (a
    body would be read as the next answer on a kept-alive connection);
    methods other than GET and HEAD get 405."""
    c = Conn(ADMIN, timeout=5.0)
    try:
        for path, body in (("/health", b'{"status":"ok"}'), ("/ready", b'{"status":"ready"}')):
            r = c.request("HEAD", path)
            eq(r.status, 200, "HEAD %s" % path)
            eq(r.body, b"", "HEAD %s: no body" % path)
            # the same connection: the next answer starts where it should
            r = c.request("GET", path)
            eq((r.status, r.body), (200, body), "GET %s after HEAD %s" % (path, path))
        r = c.request("HEAD", "/metrics")
        eq((r.status, r.body), (200, b""), "HEAD /metrics")
        r = c.request("GET", "/health")
        eq((r.status, r.body), (200, b'{"status":"ok"}'), "GET /health after HEAD /metrics")
    finally:
        c.close()
    for m in ("POST", "DELETE", "PUT"):
        for path in ("/health", "/ready"):
            r = admin_get(path, method=m)
            eq(r.status, 405, "%s %s" % (m, path))
            eq(r.header("Allow"), "GET, HEAD", "%s %s: Allow" % (m, path))


@test
def test_routes_table():
    r = admin_get("/routes")
    eq(r.status, 200, "status")
    eq((r.header("Content-Type") or "").split(";")[0], "application/json", "Content-Type")
    doc = json.loads(r.body)
    check(isinstance(doc.get("generation"), int), "no generation")
    routes = {(x["method"], x["pattern"]): x for x in doc["routes"]}
    for key in [("GET", "/users/{id}"), ("GET", "/static"), ("POST", "/static"), ("GET", "/multi"), ("GET", "/lim")]:
        check(key in routes, "%s %s missing from %r" % (key[0], key[1], sorted(routes)))
        eq(routes[key]["kind"], "endpoint", "kind of %s %s" % key)
    px = routes.get(("GET", "/px/{rest*}"))
    check(px is not None, "the proxy route is missing")
    eq((px["kind"], px["backend"]), ("proxy", "be"), "the proxy route")
    eq(routes[("GET", "/k/header")]["auth"], ["ka"], "auth of /k/header")
    eq(routes[("GET", "/lim")]["limits"], ["one"], "limits of /lim")
    eq(routes[("GET", "/multi")]["calls"], 4, "calls of /multi")
    check(re.match(r"^.*main\.gw:\d+$", routes[("GET", "/static")]["source"]), "source %r" % routes[("GET", "/static")]["source"])
    eq(len(doc["routes"]), 15, "routes")


# ---------------------------------------------------------------- the access log

def log_mark():
    """The lines in the main log once what earlier tests buffered is written
    (the timer writes every 200 ms)."""
    time.sleep(0.35)
    return len(read_log(ALOG, 0, 0)[1])


def read_log(path, n, timeout=3.0):
    """The lines of the log once there are n of them (the timer writes every 200 ms)."""
    end = time.monotonic() + timeout
    while True:
        with open(path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        check(lines[-1] == b"", "the log does not end with a whole line")
        if len(lines) - 1 >= n or time.monotonic() > end:
            return data, [json.loads(x) for x in lines[:-1]]
        time.sleep(0.05)


FIELDS = {"time": str, "id": (str, type(None)), "client": str, "method": (str, type(None)),
          "route": (str, type(None)), "path": (str, type(None)), "status": int, "bytes": int,
          "duration_ms": (int, float), "calls": list}


def check_line(x):
    for k, t in FIELDS.items():
        check(k in x, "field %s missing in %r" % (k, x))
        check(isinstance(x[k], t), "field %s of %r" % (k, x))
    check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", x["time"]), "time %r" % x["time"])
    for c in x["calls"]:
        eq(sorted(c), ["backend", "ms", "name", "result", "status"], "call fields")
        check(c["result"] in ("ok", "connect", "timeout", "status", "invalid_body", "too_large", "overloaded",
                              "unavailable", "breaker_open", "cancelled", "error", "skipped"), "result %r" % c["result"])


@test
def test_access_log_lines():
    n0 = log_mark()
    sent = []

    def send(path, headers=None, status=None, method="GET"):
        rid = "ops-%d-%d" % (len(sent), random.randrange(10 ** 6))
        h = {"X-Request-Id": rid}
        h.update(headers or {})
        r = GW.request(method, path, headers=h)
        if status is not None:
            eq(r.status, status, "%s %s" % (method, path))
        sent.append((rid, method, path, r.status))
        return r

    send("/multi?x=1", status=200)
    send("/multi", status=200)
    send("/static", status=200)
    send("/static", status=201, method="POST")
    send("/nope/nope", status=404)
    send("/fail", status=502)
    send("/px/q?a=1", status=200)
    send("/lim", {"X-K": "log-%d" % random.randrange(10 ** 9)}, status=200)
    data, lines = read_log(ALOG, n0 + len(sent))
    lines = lines[n0:]
    eq(len(lines), len(sent), "lines for %d requests" % len(sent))
    by_id = {x["id"]: x for x in lines}
    for rid, method, path, status in sent:
        x = by_id.get(rid)
        check(x is not None, "no line with id %s" % rid)
        check_line(x)
        eq((x["method"], x["path"], x["status"]), (method, path, status), "line of %s" % rid)
        eq(x["client"], "127.0.0.1", "client")
        check(x["bytes"] > 0, "bytes")
    m = by_id[sent[0][0]]
    eq(m["route"], "/multi", "route")
    eq([(c["name"], c["backend"], c["result"]) for c in m["calls"]],
       [("a", "be", "ok"), ("b", "be", "ok"), ("c", "be", "status"), ("d", "be", "ok")], "calls of /multi?x=1")
    eq(m["calls"][2]["status"], 500, "the failed call's status")
    eq([c["result"] for c in by_id[sent[1][0]]["calls"]], ["ok", "ok", "status", "skipped"], "calls of /multi")
    eq(by_id[sent[1][0]]["calls"][3]["status"], None, "a skipped call's status")
    eq(by_id[sent[4][0]]["route"], None, "the route of a 404")
    eq([(c["backend"], c["result"]) for c in by_id[sent[5][0]]["calls"]], [("dead", "connect")], "calls of /fail")
    eq([(c["name"], c["backend"], c["status"], c["result"]) for c in by_id[sent[6][0]]["calls"]],
       [("proxy", "be", 200, "ok")], "calls of a proxied request")


@test
def test_access_log_never_secrets():
    n0 = log_mark()
    bearer = token(sub="secret-holder")
    cookie = "session=COOKIE-SECRET-%d" % random.randrange(10 ** 9)
    qtok = "QTOKEN-%d" % random.randrange(10 ** 9)
    SECRETS.extend([cookie.split("=", 1)[1], qtok, API_KEY])
    eq(get("/jwt", {"Authorization": "Bearer " + bearer, "Cookie": cookie, "X-Request-Id": "s0"}).status, 200,
       "a bearer token")
    eq(get("/k/header", {"X-Api-Key": API_KEY, "Cookie": cookie, "X-Request-Id": "s1"}).status, 200,
       "an API key in a header")
    eq(get("/k/query?api_key=%s&access_token=%s&x=1" % (API_KEY, qtok), {"X-Request-Id": "s2"}).status, 200,
       "an API key in the query")
    eq(get("/k/query?API%%5Fkey=%s&a=2" % API_KEY, {"X-Request-Id": "s3"}).status, 401, "an encoded name")
    qjwt = token(sub="query-holder")             # a JWT under a name no rule knows, and alone
    eq(get("/static?t=%s&u=1&%s" % (qjwt, qjwt), {"X-Request-Id": "s4"}).status, 200, "a JWT in the query")
    data, lines = read_log(ALOG, n0 + 5)
    lines = sorted((x for x in lines[n0:]), key=lambda x: x["id"])
    eq([x["id"] for x in lines], ["s0", "s1", "s2", "s3", "s4"], "lines")
    eq(lines[4]["path"], "/static?t=***&u=1&***", "JWTs in the query")
    SECRETS.extend([qjwt.split(".")[1], qjwt.split(".")[2]])
    text = data.decode("utf-8")
    for s in SECRETS + [bearer.split(".")[2], bearer.split(".")[1]]:
        check(s not in text, "a secret (%s…) appears in the access log" % s[:12])
    eq(lines[2]["path"], "/k/query?api_key=***&access_token=***&x=1", "the masked query")
    eq(lines[3]["path"], "/k/query?API%5Fkey=***&a=2", "a masked name written percent-encoded")
    for x in lines:
        check("authorization" not in json.dumps(x).lower(), "a header name in the log")


@test
def test_access_log_client_gone():
    n0 = log_mark()
    c = Conn(GW.port)
    c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Request-Id: gone-1\r\n\r\n")
    MOCK.wait_requests("/delay", 1, 3.0)
    time.sleep(0.2)
    c.close()
    data, lines = read_log(ALOG, n0 + 1)
    x = [y for y in lines[n0:] if y["id"] == "gone-1"]
    eq(len(x), 1, "lines of the abandoned request")
    eq(x[0]["status"], 499, "status of an abandoned request")
    eq([(c["name"], c["result"]) for c in x[0]["calls"]], [("x", "cancelled")], "its calls")


@test
def test_access_log_off():
    g, _ = start_gwd(["--access-log", "off"], workers=1, admin=False, name="off")
    try:
        for p in ("/static", "/users/1", "/nope"):
            g.get(p)
    finally:
        code = g.stop()
    eq(code, 0, "exit code")
    with open(g.stdout_path, "rb") as f:
        eq(f.read(), b"", "stdout with --access-log off")
    check(not [f for f in os.listdir(g.dir) if f not in ("prog", "gwd.stderr", "gwd.stdout")],
          "files written: %r" % os.listdir(g.dir))


@test
def test_access_log_default_stdout():
    g, _ = start_gwd([], workers=1, admin=False, name="stdout")
    try:
        for p in ("/static", "/users/1", "/nope"):
            g.get(p)
    finally:
        code = g.stop()
    eq(code, 0, "exit code")
    with open(g.stdout_path, "rb") as f:
        lines = [json.loads(x) for x in f.read().splitlines()]
    eq([(x["path"], x["status"]) for x in lines], [("/static", 200), ("/users/1", 200), ("/nope", 404)],
       "stdout lines (written at shutdown at the latest)")


@test
def test_access_log_many_workers_whole_lines():
    # four workers, 800 requests on 8 connections at once: every line whole, once
    path = os.path.join(TMP, "many.log")
    g, _ = start_gwd(["--access-log", path], workers=4, admin=False, name="many")
    errs = []

    def client(k):
        try:
            c = Conn(g.port)
            try:
                for i in range(100):
                    r = c.request("GET", "/users/%d-%d?pad=%s" % (k, i, "x" * (i * 7)),
                                  headers={"X-Request-Id": "m-%d-%d" % (k, i)})
                    if r.status != 200:
                        errs.append(r.status)
            finally:
                c.close()
        except Exception as e:
            errs.append(e)
    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    code = g.stop()
    eq((errs, code), ([], 0), "requests and exit")
    with open(path, "rb") as f:
        lines = [json.loads(x) for x in f.read().split(b"\n")[:-1]]
    ids = sorted(x["id"] for x in lines)
    eq(ids, sorted("m-%d-%d" % (k, i) for k in range(8) for i in range(100)), "one line per request")


@test
def test_access_log_write_errors_counted():
    # /dev/full: every write fails with ENOSPC; requests do not notice
    if not os.path.exists("/dev/full"):
        return
    g, port = start_gwd(["--access-log", "/dev/full"], workers=1, name="full")
    try:
        for i in range(5):
            eq(g.get("/static").status, 200, "request %d" % i)
        time.sleep(0.5)                           # the 200 ms timer writes (and fails)
        eq(g.get("/static").status, 200, "a request after the failed write")
        time.sleep(0.5)
        m = scrape(port)
        check(val(m, "gw_access_log_errors_total") >= 1, "gw_access_log_errors_total is 0")
        eq(val(m, "gw_access_log_dropped_lines_total"), 6, "gw_access_log_dropped_lines_total")
    finally:
        g.stop()
    warns = [x for x in g.stderr().splitlines() if "access log: write failed" in x]
    eq(len(warns), 1, "warnings about the failed writes")


# ---------------------------------------------------------------- log levels

def log_levels(err):
    out = []
    for line in err.splitlines():
        try:
            out.append(json.loads(line)["level"])
        except (ValueError, KeyError):
            pass
    return out


@test
def test_log_level_warn_hides_info():
    g, _ = start_gwd(["--log-level", "warn", "--access-log", "off"], workers=1, admin=False, name="warn")
    try:
        eq(g.get("/fail").status, 502, "GET /fail")       # a warn line: the required call failed
        eq(g.get("/optfail").status, 200, "GET /optfail")  # an info line: the optional call failed
    finally:
        g.stop()
    levels = log_levels(g.stderr())
    check("warn" in levels, "no warn line with --log-level warn: %r" % g.stderr()[-500:])
    check("info" not in levels, "info lines with --log-level warn: %r" % g.stderr()[-500:])
    g, _ = start_gwd(["--access-log", "off"], workers=1, admin=False, name="info")
    try:
        g.get("/optfail")
    finally:
        g.stop()
    check("info" in log_levels(g.stderr()), "no info line by default")


@test
def test_log_level_bad_value():
    import subprocess
    p = subprocess.run([GWD_EXE, "--log-level", "loud", "x.gw"], capture_output=True, text=True, timeout=10)
    eq(p.returncode, 2, "exit code")
    check("--log-level" in p.stderr, "message %r" % p.stderr)
    p = subprocess.run([GWD_EXE, "--access-log", os.path.join(TMP, "no", "such", "dir.log"), "--admin", "",
                        "--listen", "127.0.0.1:%d" % free_port(), GW.prog], capture_output=True, text=True, timeout=10)
    eq(p.returncode, 1, "exit code with an access log that cannot be opened")
    check("access log" in p.stderr, "message %r" % p.stderr)


def json_lines(text, what):
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise Fail("%s: a stderr line that is not JSON: %r" % (what, line[:200]))
    return out


@test
def test_start_failures_are_json_lines():
    """A gwd that cannot start says why as JSON log lines (level error), the
    compiler's diagnostics included; --check, run by a person, prints them as
    gwc does."""
    import subprocess
    d = tempfile.mkdtemp(dir=TMP, prefix="broken-")
    with open(os.path.join(d, "main.gw"), "w") as f:
        f.write("endpoint GET /x { respond { x: nope } }\n")
    p = subprocess.run([GWD_EXE, "--admin", "", "--listen", "127.0.0.1:%d" % free_port(), d],
                       capture_output=True, text=True, timeout=20)
    eq(p.returncode, 1, "exit code of a broken program")
    lines = json_lines(p.stderr, "a broken program")
    check(all(x["level"] == "error" for x in lines), "levels: %r" % lines)
    check(any("main.gw:1:" in x["msg"] and "error: unknown name 'nope'" in x["msg"] for x in lines),
          "the diagnostic: %r" % lines)
    # a port in use, an access log that cannot be opened
    busy = GW.port
    for args, want in ((["--listen", "127.0.0.1:%d" % busy], "127.0.0.1:%d" % busy),
                       (["--access-log", os.path.join(TMP, "no", "such", "a.log")], "access log")):
        p = subprocess.run([GWD_EXE, "--admin", ""] + args + [GW.prog], capture_output=True, text=True, timeout=20)
        eq(p.returncode, 1, "exit code (%s)" % want)
        lines = json_lines(p.stderr, want)
        check(any(x["level"] == "error" and want in x["msg"] for x in lines), "%s: %r" % (want, lines))
    p = subprocess.run([GWD_EXE, "--check", d], capture_output=True, text=True, timeout=20)
    eq(p.returncode, 1, "--check exit code")
    check(p.stderr.startswith("%s/main.gw:1:" % d) and "gwd: " in p.stderr, "--check output: %r" % p.stderr)


def listening_on(port):
    """The IPv4 addresses a socket listens on at port (from /proc/net/tcp)."""
    out = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                out.append(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return out


@test
def test_admin_bare_port_is_loopback():
    """The admin API has no authentication: --admin PORT (no address) listens
    on loopback only; another interface must be named."""
    port = free_port()
    g, _ = start_gwd(["--admin", str(port)], workers=1, admin=False, name="adminport")
    try:
        eq(listening_on(port), ["127.0.0.1"], "where --admin %d listens" % port)
        r = admin_get("/health", port=port)
        eq(r.status, 200, "GET /health on 127.0.0.1")
        check("admin on 127.0.0.1:%d" % port in g.stderr(), "the log line: %s" % g.stderr()[-400:])
    finally:
        g.stop()


# ---------------------------------------------------------------- runner

def get(target, headers=None):
    return GW.request("GET", target, headers=headers, timeout=5.0)


def setup():
    global MOCK
    MOCK = Mock().start()
    setup_mock(MOCK)


def run():
    global GW, ADMIN, ALOG
    ALOG = os.path.join(TMP, "access.log")
    try:
        GW, ADMIN = start_gwd(["--access-log", ALOG], workers=2, name="main")
    except Fail as e:
        S.fail("start", str(e), limit=800)
        GW = None
    if GW is not None:
        S.run_tests([GW])

        def shutdown():
            code = GW.stop(5.0)
            err = GW.stderr()
            for pat in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                check(pat not in err, "sanitizer report in gwd stderr: %s" %
                      err[max(0, err.find(pat) - 200):err.find(pat) + 600])
            eq(code, 0, "exit code after SIGTERM")
        if S.selected("shutdown"):
            S.run_one("shutdown", shutdown, [GW], after=False)


def teardown():
    if GW is not None:
        GW.stop(2.0)
    MOCK.stop()
    shutil.rmtree(TMP, ignore_errors=True)


def stop_main():
    if GW:
        GW.stop(1)


def main():
    return S.main(setup=setup, run=run, teardown=teardown, on_timeout=stop_main,
                  timeout_summary=False, timing=True)


if __name__ == "__main__":
    sys.exit(main())
