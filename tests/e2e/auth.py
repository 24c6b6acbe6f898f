#!/usr/bin/python3
"""End-to-end tests of gwd's auth, rate limits and CORS: a real gwd, real keys
made at test time with openssl, real tokens, mock backends in this process,
and a real redis-server on a free loopback port for the shared limits.

    /usr/bin/python3 tests/e2e/auth.py [BUILD_DIR] [-k SUBSTRING] [-v]

Prints one "FAIL e2e-auth/NAME: why" line per failure and ends with
"N passed, N failed" (exit 1 if anything failed). -k runs only the tests whose
name contains SUBSTRING; -v prints every test with its time. Standard library
only (plus the openssl and redis-server commands).

Two fixtures, each started only when a selected test needs it:
  main   one gwd (--workers 2): JWT/API-key policies, local limits, CORS, JWKS url
  redis  a redis-server and two gwd processes sharing it (store redis limits)
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mock import Mock  # noqa: E402
from gwd import Gwd, HTTPError, free_port, suite_args  # noqa: E402
import jwtkit  # noqa: E402
from jwtkit import make_token, b64u, b64u_json  # noqa: E402
from redisd import Redis  # noqa: E402

BUILD, FILTER, VERBOSE = suite_args(sys.argv[1:], ROOT)
GWD_EXE = os.path.join(BUILD, "gwd")

passed = 0
failed = 0
TESTS = []          # (name, group, fn)


class Fail(Exception):
    pass


def test(group="main", name=None):
    def reg(f):
        TESTS.append((name or f.__name__.replace("test_", "", 1), group, f))
        return f
    return reg


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise Fail("%s: expected %r, got %r" % (what, expected, actual))


# ---------------------------------------------------------------- fixtures

TMP = tempfile.mkdtemp(prefix="gw-e2e-auth-")
MOCK = None
GW = None           # the main gwd
GA = GB = None      # the two gwd sharing Redis
REDIS = None
KEYS = None         # made once by make_keys()
TOKENS = []         # every token sent (the log check greps gwd's stderr for them)
APIKEYS = {"mobile-app": ["mk-7d1f0c2a9e5b4411", ], "partner": ["pk-A-55e0c9d2b1", "pk-B-91aa03f7c6"]}
ISS = "https://login.example.com"
AUD = "mobile-app"
HS_SECRET = b"hs256-e2e-secret-0123456789abcdef0123456789abcdef"
JWKS_DOWN_T = None  # when the /jwks/down endpoint went down (see jwks_url tests)


class Keys:
    pass


def make_keys():
    global KEYS
    if KEYS is not None:
        return KEYS
    k = Keys()
    d = os.path.join(TMP, "keys")
    os.makedirs(d, exist_ok=True)
    k.dir = d
    k.rsa1 = jwtkit.Key(d, "rsa1", "rsa")      # configured (key file, JWKS r1)
    k.rsa2 = jwtkit.Key(d, "rsa2", "rsa")      # configured nowhere at first (JWKS url r2 later)
    k.ec1 = jwtkit.Key(d, "ec1", "ec256")      # configured (key file, JWKS e1)
    k.ec2 = jwtkit.Key(d, "ec2", "ec256")      # configured nowhere
    k.jwks = jwtkit.jwks(k.rsa1.jwk("r1", "RS256"), k.ec1.jwk("e1", "ES256"),
                         jwtkit.oct_jwk("h1", HS_SECRET),
                         {"kty": "XYZ", "kid": "x1", "foo": "bar"})      # a type nobody uses: ignored
    KEYS = k
    return k


def write_key_files(prog):
    k = make_keys()
    shutil.copy(k.rsa1.pub, os.path.join(prog, "rsa1.pub.pem"))
    shutil.copy(k.ec1.pub, os.path.join(prog, "ec1.pub.pem"))
    with open(os.path.join(prog, "hs.secret"), "wb") as f:
        f.write(HS_SECRET + b"\n")          # one trailing newline is trimmed
    with open(os.path.join(prog, "jwks.json"), "w") as f:
        f.write(k.jwks)
    lines = ["# API keys of the e2e tests: client-name sha256-hex", ""]
    for i, (client, keys) in enumerate(sorted(APIKEYS.items())):
        for j, key in enumerate(keys):
            h = hashlib.sha256(key.encode()).hexdigest()
            lines.append("%s   %s" % (client, h.upper() if (i + j) % 2 else h))   # hex in either case
        lines.append("")
    with open(os.path.join(prog, "apikeys.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


JWT_POLICIES = ["jrs", "jes", "jhs", "jks", "jmix", "jlw", "jck", "jadm", "jrot", "jdown"]


def main_program(mock_url):
    jwt_eps = "".join("""
endpoint GET /p/{P} {{
    auth {P}
    x = be GET "/be/{P}" headers {{ "X-User-Id": jwt.sub }}
    respond {{ sub: jwt.sub, ok: x.ok }}
}}
""".format(P=p) for p in JWT_POLICIES)
    return """
backend be {{ url "{M}" timeout 2s }}

auth jrs jwt {{
    algorithms RS256
    key file "rsa1.pub.pem"
    issuer   "{ISS}"
    audience "{AUD}"
}}
auth jes jwt {{ algorithms ES256; key file "ec1.pub.pem"; issuer "{ISS}"; audience "{AUD}" }}
auth jhs jwt {{ algorithms HS256; key file "hs.secret"; issuer "{ISS}"; audience "{AUD}" }}
auth jks jwt {{ algorithms RS256 ES256; jwks file "jwks.json"; issuer "{ISS}"; audience "{AUD}" }}
auth jmix jwt {{ algorithms RS256 HS256; jwks file "jwks.json" }}
auth jlw jwt {{ algorithms HS256; key file "hs.secret"; leeway 30s }}
auth jck jwt {{ algorithms HS256; key file "hs.secret"; from cookie "session" }}
auth jadm jwt {{ algorithms HS256; key file "hs.secret"; require "admin" in jwt.roles }}
auth jrot jwt {{ algorithms RS256; jwks url "{M}/jwks/rot" }}
auth jdown jwt {{ algorithms RS256; jwks url "{M}/jwks/down" refresh 10s }}
auth ka apikey {{ keys file "apikeys.txt" }}
auth kq apikey {{ from query "api_key"; keys file "apikeys.txt" }}

{JWT_EPS}

endpoint GET /claims {{
    auth jrs
    respond {{ sub: jwt.sub, roles: jwt.roles, iss: jwt.iss, n: jwt.n }}
}}

endpoint GET /k/header {{
    auth ka
    x = be GET "/be/ka" headers {{ "X-Client": client.name }}
    respond {{ client: client.name, ok: x.ok }}
}}
endpoint GET /k/query {{
    auth kq
    x = be GET "/be/kq"
    respond {{ client: client.name, ok: x.ok }}
}}
endpoint GET /either {{
    auth jrs or ka
    x = be GET "/be/either"
    respond {{ client: client.name, sub: jwt.sub, ok: x.ok }}
}}

limit lip    5/min
limit lb     60/min burst 3 by headers["x-k"]
limit lhk    3/min by headers["x-k"]
limit lsub   3/min by jwt.sub
limit lcli   3/min by client.name
limit lauth  2/min by headers["x-k"]
limit lshare 3/min by headers["x-k"]
limit lconc  10/min by headers["x-k"]
limit lcors  1/min by headers["x-k"]

endpoint GET /lim/ip     {{ limit lip;  x = be GET "/be/lim"; respond {{ ok: x.ok }} }}
endpoint GET /lim/burst  {{ limit lb;   respond {{ ok: true }} }}
endpoint GET /lim/hk     {{ limit lhk;  respond {{ ok: true }} }}
endpoint GET /lim/sub    {{ auth jhs; limit lsub; respond {{ sub: jwt.sub }} }}
endpoint GET /lim/cli    {{ auth ka; limit lcli; respond {{ client: client.name }} }}
endpoint GET /lim/auth   {{ auth jhs; limit lauth; respond {{ sub: jwt.sub }} }}
endpoint GET /lim/s1     {{ limit lshare; respond {{ at: 1 }} }}
endpoint GET /lim/s2     {{ limit lshare; respond {{ at: 2 }} }}
endpoint GET /lim/conc   {{ limit lconc; x = be GET "/be/conc"; respond {{ ok: x.ok }} }}

cors web {{
    origins        ["https://app.example.com"]
    methods        [GET, POST]
    headers        ["X-Custom"]
    credentials    true
    max_age        10m
    expose_headers ["X-Gw-Partial"]
}}
cors any {{ origins ["*"] }}

endpoint GET  /cors/web  {{ cors web; x = be GET "/be/cors"; respond {{ ok: x.ok }} }}
endpoint POST /cors/web  {{ cors web; respond 201 {{ posted: true }} }}
endpoint GET  /cors/any  {{ cors any; respond {{ any: true }} }}
endpoint GET  /cors/auth {{ cors web; auth jhs; respond {{ sub: jwt.sub }} }}
endpoint GET  /nocors    {{ respond {{ plain: true }} }}
endpoint GET  /cors/lim  {{ cors web; limit lcors; respond {{ ok: true }} }}
""".format(M=mock_url, ISS=ISS, AUD=AUD, JWT_EPS=jwt_eps)


def setup_mock(m):
    m.route("/be/*", mode="echo")
    k = make_keys()
    m.route("/jwks/rot", body=jwtkit.jwks(k.rsa1.jwk("r1", "RS256")))
    m.route("/jwks/down", body=jwtkit.jwks(k.rsa1.jwk("r1", "RS256")))
    m.route("/jwks/evil", body=jwtkit.jwks(k.rsa2.jwk("evil", "RS256")))


def admin_args():
    return ["--admin", "127.0.0.1:%d" % free_port()]


def start_main():
    global GW
    g = Gwd(BUILD, {"main.gw": main_program(MOCK.url)}, workers=2, extra_args=admin_args(),
            workdir=tempfile.mkdtemp(dir=TMP, prefix="main-"))
    write_key_files(g.prog)
    GW = g
    if not g.start():
        return g.start_error
    return None


# ---------------------------------------------------------------- helpers

def now():
    return int(time.time())


def claims(**kw):
    c = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": now() - 5, "exp": now() + 600, "roles": ["admin"]}
    for k, v in kw.items():
        if v is DEL:
            c.pop(k, None)
        else:
            c[k] = v
    return c


DEL = object()


def tok(alg="RS256", key=None, secret=None, **kw):
    """A token: kw are claim overrides, plus the make_token options kid,
    header, sig."""
    opts = {o: kw.pop(o) for o in ("kid", "header", "sig") if o in kw}
    k = make_keys()
    if key is None and secret is None:
        if alg.startswith("HS"):
            secret = HS_SECRET
        elif alg.startswith("ES"):
            key = k.ec1
        else:
            key = k.rsa1
    t = make_token(claims(**kw), alg, key=key, secret=secret, **opts)
    TOKENS.append(t)
    return t


def bearer(t, scheme="Bearer"):
    return {"Authorization": "%s %s" % (scheme, t)}


def jresp(r, status, what="response"):
    """The status, a JSON content type, an exact Content-Length, a JSON body
    (returned parsed)."""
    eq(r.status, status, what + " status (body %r)" % r.body[:200])
    ct = r.header("Content-Type") or ""
    check(ct.split(";")[0].strip().lower() == "application/json",
          "%s: Content-Type %r, want application/json" % (what, ct))
    cl = r.header("Content-Length")
    if cl is not None:
        eq(int(cl), len(r.body), what + " Content-Length")
    try:
        return json.loads(r.body.decode("utf-8"))
    except ValueError as e:
        raise Fail("%s: body is not JSON (%s): %r" % (what, e, r.body[:200]))


def log_mark():
    with MOCK.lock:
        return len(MOCK.log)


def requests_since(mark, prefix):
    with MOCK.lock:
        return [e for e in MOCK.log[mark:] if e["path_only"].startswith(prefix)]


def backend_hits():
    return len(MOCK.requests("/be/"))


def get(target, headers=None, timeout=None, gw=None):
    """GET on the main gwd, or on `gw` (the Redis gateways: a shorter wait,
    so a hung gateway fails a test in 3 s)."""
    if timeout is None:
        timeout = 5.0 if gw is None else 3.0
    return (gw or GW).request("GET", target, headers=headers, timeout=timeout)


def no_token_in(r, token, what):
    if not token:
        return
    body = r.body.decode("latin-1")
    hdrs = " ".join("%s: %s" % kv for kv in r.headers)
    for part in [token] + [p for p in token.split(".")[1:] if len(p) >= 16]:
        check(part not in body, "%s: the token appears in the response body" % what)
        check(part not in hdrs, "%s: the token appears in the response headers" % what)


def unauthorized(r, what="response", token=None, jwt=True):
    b = jresp(r, 401, what)
    eq(b, {"error": "unauthorized"}, what + " body")
    if jwt:
        www = r.header("WWW-Authenticate")
        check(www is not None, "%s: no WWW-Authenticate header" % what)
        check(www.split()[0].lower() == "bearer" and 'error="invalid_token"' in www,
              '%s: WWW-Authenticate %r, want Bearer error="invalid_token"' % (what, www))
    no_token_in(r, token, what)


def forbidden(r, what="response", token=None):
    b = jresp(r, 403, what)
    eq(b, {"error": "forbidden"}, what + " body")
    no_token_in(r, token, what)


def refused(path, headers, token=None, what="response", jwt=True):
    """The request is 401 and never reaches a backend."""
    n = backend_hits()
    r = get(path, headers)
    unauthorized(r, what, token, jwt)
    eq(backend_hits(), n, "backend requests after a refused request")
    return r


def accepted(path, headers, sub="alice", what="response"):
    r = get(path, headers)
    b = jresp(r, 200, what)
    if sub is not None:
        eq(b.get("sub"), sub, what + " jwt.sub")
    return b


# ---------------------------------------------------------------- JWT: valid tokens

def _ok_case(name, path, make, sub="alice", scheme="Bearer"):
    @test(name="jwt_ok_" + name)
    def t():
        accepted(path, bearer(make(), scheme))


_ok_case("rs256", "/p/jrs", lambda: tok("RS256"))
_ok_case("es256", "/p/jes", lambda: tok("ES256"))
_ok_case("hs256_secret_file_newline_trimmed", "/p/jhs", lambda: tok("HS256"))
_ok_case("jwks_file_rs256_kid", "/p/jks", lambda: tok("RS256", kid="r1"))
_ok_case("jwks_file_es256_kid", "/p/jks", lambda: tok("ES256", kid="e1"))
_ok_case("jwks_file_hs256_oct_key", "/p/jmix", lambda: tok("HS256", kid="h1"))
_ok_case("aud_array_containing", "/p/jrs", lambda: tok("RS256", aud=["other-app", AUD]))
_ok_case("exp_within_leeway", "/p/jlw", lambda: tok("HS256", exp=now() - 10))
_ok_case("nbf_within_leeway", "/p/jlw", lambda: tok("HS256", nbf=now() + 10))
_ok_case("nbf_past", "/p/jrs", lambda: tok("RS256", nbf=now() - 10))
_ok_case("exp_fractional_number", "/p/jrs", lambda: tok("RS256", exp=now() + 600.5))
_ok_case("scheme_lowercase", "/p/jrs", lambda: tok("RS256"), scheme="bearer")
_ok_case("scheme_uppercase", "/p/jes", lambda: tok("ES256"), scheme="BEARER")
_ok_case("token_7kb", "/p/jrs", lambda: tok("RS256", pad="p" * 5000))


@test()
def test_jwt_claims_to_backend_header():
    t = tok("RS256", sub="user-42")
    mark = log_mark()
    b = accepted("/p/jrs", bearer(t), sub="user-42")
    eq(b.get("ok"), True, "backend answer in the response")
    rs = requests_since(mark, "/be/jrs")
    eq(len(rs), 1, "backend requests")
    eq(rs[0]["hdict"].get("x-user-id"), "user-42", "X-User-Id the backend received")
    check("authorization" not in rs[0]["hdict"], "the Authorization header was forwarded to the backend")


@test()
def test_jwt_claims_in_respond():
    t = tok("RS256", sub="bob", roles=["a", "b"], n=12345678901234567890)
    r = get("/claims", bearer(t))
    b = jresp(r, 200)
    eq(b.get("sub"), "bob", "jwt.sub")
    eq(b.get("roles"), ["a", "b"], "jwt.roles")
    eq(b.get("iss"), ISS, "jwt.iss")
    check(b"12345678901234567890" in r.body, "a big integer claim was not passed through exactly: %r" % r.body)


@test()
def test_jwt_cookie():
    t = tok("HS256")
    accepted("/p/jck", {"Cookie": "theme=dark; session=%s; lang=en" % t})


@test()
def test_jwt_cookie_only_cookie():
    """A `from cookie` policy ignores the Authorization header."""
    t = tok("HS256")
    refused("/p/jck", bearer(t), t)
    refused("/p/jck", {"Cookie": "theme=dark; other=%s" % t}, t)
    refused("/p/jck", {}, None)


@test()
def test_jwt_require_ok():
    accepted("/p/jadm", bearer(tok("HS256", roles=["user", "admin"])))


@test()
def test_jwt_require_fails_403():
    for roles in (["user"], [], DEL):
        t = tok("HS256", roles=roles)
        n = backend_hits()
        forbidden(get("/p/jadm", bearer(t)), "roles=%r" % (roles if roles is not DEL else "absent"), t)
        eq(backend_hits(), n, "backend requests after a 403")


@test()
def test_jwt_require_invalid_token_is_401():
    t = tok("HS256", roles=["admin"], exp=now() - 100)
    refused("/p/jadm", bearer(t), t)


@test()
def test_jwt_verified_token_cache_respects_exp():
    """A token verified (and maybe cached) stops working when it expires."""
    exp = now() + 3
    t = tok("HS256", exp=exp)
    accepted("/p/jhs", bearer(t), what="first use")
    accepted("/p/jhs", bearer(t), what="second use (cached)")
    while time.time() < exp + 1.1:
        time.sleep(0.05)
    refused("/p/jhs", bearer(t), t, what="after exp")


@test()
def test_jwt_cache_per_policy():
    """A token accepted by a lenient policy is still judged by a strict one."""
    t = tok("HS256", exp=now() - 10)          # fine with leeway 30s, expired without
    accepted("/p/jlw", bearer(t), what="leeway policy")
    refused("/p/jhs", bearer(t), t, what="no-leeway policy")
    t2 = tok("HS256", iss=DEL, aud=DEL)      # fine without iss/aud checks
    accepted("/p/jlw", bearer(t2), what="policy without issuer")
    refused("/p/jhs", bearer(t2), t2, what="policy with issuer")


# ---------------------------------------------------------------- JWT: refused tokens

def _bad_case(name, path, make, raw_header=None):
    @test(name="jwt_401_" + name)
    def t():
        token = make()
        if raw_header is not None:
            refused(path, raw_header(token), token)
        else:
            refused(path, bearer(token), token)


def _none_token(spelling, path_claims=None):
    def make():
        h = {"alg": spelling, "typ": "JWT"}
        t = b64u_json(h) + "." + b64u_json(claims()) + "."
        TOKENS.append(t)
        return t
    return make


def _tamper_payload():
    t = tok("RS256")
    h, p, s = t.split(".")
    c = claims(sub="mallory")
    t2 = h + "." + b64u_json(c) + "." + s
    TOKENS.append(t2)
    return t2


def _tamper_sig():
    t = tok("RS256")
    h, p, s = t.split(".")
    s2 = ("A" if s[5] != "A" else "B").join([s[:5], s[6:]])
    return h + "." + p + "." + s2


def _tamper_header():
    t = tok("RS256")
    _, p, s = t.split(".")
    return b64u_json({"alg": "RS256", "typ": "JWT", "kid": "r1", "x": 1}) + "." + p + "." + s


def _big_token():
    return tok("RS256", pad="p" * 9000)


def _hs_with_pem(strip):
    def make():
        pem = make_keys().rsa1.pub_pem
        return tok("HS256", secret=pem.strip() if strip else pem)
    return make


def _hs_with_pem_kid():
    return tok("HS256", secret=make_keys().rsa1.pub_pem, kid="r1")


def _kid_traversal_hs():
    with open("/etc/passwd", "rb") as f:
        data = f.read()
    return tok("HS256", secret=data, kid="../../../../../../../../etc/passwd")


def _jku_token():
    # signed by a key that only the jku URL knows; gwd must not fetch it
    return tok("RS256", key=make_keys().rsa2,
               header={"alg": "RS256", "typ": "JWT", "kid": "evil", "jku": MOCK.url + "/jwks/evil",
                       "x5u": MOCK.url + "/jwks/evil"})


def _es256_der():
    """The signature as OpenSSL makes it (DER), not JWS's raw r||s."""
    k = make_keys().ec1
    si = (b64u_json({"alg": "ES256", "typ": "JWT"}) + "." + b64u_json(claims())).encode()
    der = jwtkit._openssl(["dgst", "-sha256", "-sign", k.priv], data=si)
    t = si.decode() + "." + b64u(der)
    TOKENS.append(t)
    return t


def _payload_not_json():
    h = b64u_json({"alg": "HS256", "typ": "JWT"})
    si = (h + "." + b64u(b"{not json")).encode()
    t = si.decode() + "." + b64u(jwtkit.hmac_sign("HS256", HS_SECRET, si))
    TOKENS.append(t)
    return t


def _payload_array():
    h = b64u_json({"alg": "HS256", "typ": "JWT"})
    si = (h + "." + b64u(b'["sub", "alice"]')).encode()
    return si.decode() + "." + b64u(jwtkit.hmac_sign("HS256", HS_SECRET, si))


_bad_case("expired", "/p/jrs", lambda: tok("RS256", exp=now() - 120))
_bad_case("expired_beyond_leeway", "/p/jlw", lambda: tok("HS256", exp=now() - 120))
_bad_case("nbf_future", "/p/jrs", lambda: tok("RS256", nbf=now() + 120))
_bad_case("nbf_future_beyond_leeway", "/p/jlw", lambda: tok("HS256", nbf=now() + 120))
_bad_case("iat_future", "/p/jrs", lambda: tok("RS256", iat=now() + 3600))
_bad_case("missing_exp", "/p/jrs", lambda: tok("RS256", exp=DEL))
_bad_case("missing_exp_hs", "/p/jlw", lambda: tok("HS256", exp=DEL))
_bad_case("exp_string", "/p/jrs", lambda: tok("RS256", exp=str(now() + 600)))
_bad_case("exp_null", "/p/jrs", lambda: tok("RS256", exp=None))
_bad_case("exp_bool", "/p/jhs", lambda: tok("HS256", exp=True))
_bad_case("nbf_string", "/p/jrs", lambda: tok("RS256", nbf="0"))
_bad_case("exp_negative", "/p/jlw", lambda: tok("HS256", exp=-1))
_bad_case("iss_array", "/p/jrs", lambda: tok("RS256", iss=[ISS]))
_bad_case("aud_empty_array", "/p/jrs", lambda: tok("RS256", aud=[]))
_bad_case("alg_not_string", "/p/jhs", lambda: tok("HS256", header={"alg": 256, "typ": "JWT"}))
_bad_case("es256_der_signature", "/p/jes", _es256_der)
_bad_case("wrong_iss", "/p/jrs", lambda: tok("RS256", iss="https://evil.example.com"))
_bad_case("iss_prefix", "/p/jrs", lambda: tok("RS256", iss=ISS + ".evil.com"))
_bad_case("missing_iss", "/p/jes", lambda: tok("ES256", iss=DEL))
_bad_case("wrong_aud_string", "/p/jrs", lambda: tok("RS256", aud="other-app"))
_bad_case("aud_array_not_containing", "/p/jrs", lambda: tok("RS256", aud=["a", "b"]))
_bad_case("missing_aud", "/p/jhs", lambda: tok("HS256", aud=DEL))
_bad_case("alg_none", "/p/jrs", _none_token("none"))
_bad_case("alg_NONE", "/p/jrs", _none_token("NONE"))
_bad_case("alg_None_hs", "/p/jhs", _none_token("None"))
_bad_case("alg_none_jwks", "/p/jks", _none_token("nOnE"))
_bad_case("alg_none_lenient_policy", "/p/jlw", _none_token("none"))
_bad_case("alg_not_pinned_rs512_same_key", "/p/jrs", lambda: tok("RS512"))
_bad_case("alg_not_pinned_es256_on_rs", "/p/jrs", lambda: tok("ES256"))
_bad_case("alg_not_pinned_hs384_same_secret", "/p/jhs", lambda: tok("HS384"))
_bad_case("alg_not_pinned_rs256_on_es", "/p/jes", lambda: tok("RS256"))
_bad_case("rs_hs_confusion", "/p/jrs", _hs_with_pem(False))
_bad_case("rs_hs_confusion_stripped_pem", "/p/jrs", _hs_with_pem(True))
_bad_case("rs_hs_confusion_jwks_rsa_kid", "/p/jmix", _hs_with_pem_kid)
_bad_case("wrong_key_type_es_on_rsa_kid", "/p/jks", lambda: tok("ES256", kid="r1"))
_bad_case("wrong_key_type_rs_on_oct_kid", "/p/jmix", lambda: tok("RS256", kid="h1"))
_bad_case("wrong_key_rs256", "/p/jrs", lambda: tok("RS256", key=make_keys().rsa2))
_bad_case("wrong_key_es256", "/p/jes", lambda: tok("ES256", key=make_keys().ec2))
_bad_case("hs256_secret_with_its_newline", "/p/jhs", lambda: tok("HS256", secret=HS_SECRET + b"\n"))
_bad_case("wrong_secret_hs256", "/p/jhs", lambda: tok("HS256", secret=b"not-the-secret"))
_bad_case("unknown_kid", "/p/jks", lambda: tok("RS256", kid="zzz"))
_bad_case("kid_path_traversal", "/p/jks", lambda: tok("RS256", kid="../../etc/passwd"))
_bad_case("kid_path_traversal_hs_passwd", "/p/jmix", _kid_traversal_hs)
_bad_case("kid_dev_null_empty_secret", "/p/jmix", lambda: tok("HS256", secret=b"", kid="/dev/null"))
_bad_case("kid_not_string", "/p/jks", lambda: tok("RS256", kid=1))
_bad_case("jku_x5u_not_followed", "/p/jks", _jku_token)
_bad_case("tampered_payload", "/p/jrs", _tamper_payload)
_bad_case("tampered_signature", "/p/jrs", _tamper_sig)
_bad_case("tampered_header", "/p/jrs", _tamper_header)
_bad_case("truncated", "/p/jrs", lambda: tok("RS256")[:-12])
_bad_case("truncated_es256", "/p/jes", lambda: tok("ES256")[:-4])
_bad_case("two_segments", "/p/jrs", lambda: tok("RS256").rsplit(".", 1)[0])
_bad_case("four_segments", "/p/jrs", lambda: tok("RS256") + ".AAAA")
_bad_case("garbage", "/p/jrs", lambda: "!!!.@@@.###")
_bad_case("payload_not_json", "/p/jhs", _payload_not_json)
_bad_case("payload_array", "/p/jlw", _payload_array)
_bad_case("oversized_valid_signature", "/p/jrs", _big_token)
_bad_case("empty_bearer", "/p/jrs", lambda: "", raw_header=lambda t: {"Authorization": "Bearer "})
_bad_case("missing_authorization", "/p/jrs", lambda: "", raw_header=lambda t: {})
_bad_case("basic_scheme", "/p/jrs", lambda: tok("RS256"), raw_header=lambda t: {"Authorization": "Basic " + t})
_bad_case("no_scheme", "/p/jrs", lambda: tok("RS256"), raw_header=lambda t: {"Authorization": t})


@test()
def test_jwt_jku_never_fetched():
    t = _jku_token()
    n = MOCK.count("/jwks/evil")
    refused("/p/jks", bearer(t), t)
    time.sleep(0.2)
    eq(MOCK.count("/jwks/evil"), n, "requests for the jku/x5u URL")


@test()
def test_jwt_oversized_not_cached_as_bad_for_small():
    """After refusing an oversized token, a normal one still passes (the
    limit is about size, not about the signer)."""
    refused("/p/jrs", bearer(_big_token()), None)
    accepted("/p/jrs", bearer(tok("RS256")))


@test()
def test_jwt_many_failures_then_valid():
    """Refusals leave the connection usable and do not poison anything."""
    c = GW.conn()
    try:
        for i, t in enumerate([tok("RS256", exp=now() - 100), "x.y.z", tok("RS256", key=make_keys().rsa2)]):
            r = c.request("GET", "/p/jrs", headers=bearer(t))
            unauthorized(r, "refusal %d on a kept-alive connection" % i, t)
        r = c.request("GET", "/p/jrs", headers=bearer(tok("RS256")))
        eq(jresp(r, 200).get("sub"), "alice", "sub after refusals")
    finally:
        c.close()


# ---------------------------------------------------------------- JWKS url

def _until(fn, timeout):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.05)


@test()
def test_jwks_url_rotation_and_refetch_rate():
    """A new kid is picked up by a refetch; more unknown kids within 30 s do
    not fetch again."""
    k = make_keys()
    t1 = tok("RS256", kid="r1")
    ok = _until(lambda: get("/p/jrot", bearer(t1)).status == 200, 3.0)
    check(ok, "a token with the JWKS url's kid r1 is not accepted within 3 s of start")
    base = MOCK.count("/jwks/rot")
    check(base >= 1, "the JWKS url was never fetched")
    MOCK.route("/jwks/rot", body=jwtkit.jwks(k.rsa1.jwk("r1", "RS256"), k.rsa2.jwk("r2", "RS256")))
    t2 = tok("RS256", key=k.rsa2, kid="r2")
    t0 = time.monotonic()
    statuses = []

    def try2():
        r = get("/p/jrot", bearer(t2))
        statuses.append(r.status)
        return r.status == 200
    ok = _until(try2, 3.0)
    check(ok, "a token with a new kid r2 (now in the JWKS) was not accepted within 3 s "
              "(statuses %r, JWKS fetches %d -> %d)" % (statuses[:10], base, MOCK.count("/jwks/rot")))
    after_rot = MOCK.count("/jwks/rot")
    eq(after_rot - base, 1, "JWKS refetches for the unknown kid r2 (%d tries in %.1f s)" %
       (len(statuses), time.monotonic() - t0))
    # more unknown kids: refused, and no new fetch within 30 s
    for i in range(6):
        t3 = tok("RS256", key=k.rsa2, kid="r3-%d" % i)
        refused("/p/jrot", bearer(t3), t3, what="unknown kid r3-%d" % i)
    time.sleep(0.3)
    eq(MOCK.count("/jwks/rot") - after_rot, 0, "JWKS refetches for 6 unknown kids right after a refetch")
    accepted("/p/jrot", bearer(t1), what="r1 still")
    accepted("/p/jrot", bearer(t2), what="r2 still")


@test(name="jwks_url_down_setup")
def test_jwks_down_setup():
    """The JWKS endpoint goes down (503); its last keys must keep working.
    The check runs late in the suite (jwks_url_down_keeps_keys) so that the
    10 s refresh has failed in between."""
    global JWKS_DOWN_T
    t1 = tok("RS256", kid="r1")
    ok = _until(lambda: get("/p/jdown", bearer(t1)).status == 200, 3.0)
    check(ok, "a token with the JWKS url's kid r1 is not accepted within 3 s of start")
    MOCK.route("/jwks/down", status=503, body={"error": "down"})
    # an unknown kid refetches from the dead endpoint: still a bounded 401
    t9 = tok("RS256", key=make_keys().rsa2, kid="r9")
    r = get("/p/jdown", bearer(t9))
    unauthorized(r, "unknown kid while the JWKS endpoint is down", t9)
    check(r.elapsed < 2.0, "the unknown-kid answer took %.1f s with the JWKS endpoint down" % r.elapsed)
    time.sleep(0.2)
    JWKS_DOWN_T = (time.monotonic(), MOCK.count("/jwks/down"))
    accepted("/p/jdown", bearer(t1), what="r1 right after the endpoint went down")


# ---------------------------------------------------------------- API keys

@test()
def test_apikey_header_ok():
    mark = log_mark()
    b = jresp(get("/k/header", {"X-Api-Key": APIKEYS["mobile-app"][0]}), 200)
    eq(b, {"client": "mobile-app", "ok": True}, "body")
    rs = requests_since(mark, "/be/ka")
    eq(len(rs), 1, "backend requests")
    eq(rs[0]["hdict"].get("x-client"), "mobile-app", "client.name sent to the backend")
    check("x-api-key" not in rs[0]["hdict"], "the API key was forwarded to the backend")


@test()
def test_apikey_several_keys_upper_hex():
    for key in APIKEYS["partner"]:
        eq(jresp(get("/k/header", {"X-Api-Key": key}), 200).get("client"), "partner", "client for " + key)


@test()
def test_apikey_query_ok():
    b = jresp(get("/k/query?api_key=" + APIKEYS["partner"][1]), 200)
    eq(b.get("client"), "partner", "client.name")


@test()
def test_apikey_missing_401():
    refused("/k/header", {}, jwt=False)
    refused("/k/query", {}, jwt=False)
    refused("/k/query?api_key=", {}, jwt=False)


@test()
def test_apikey_wrong_401():
    good = APIKEYS["mobile-app"][0]
    for bad in (good + "x", good[:-1], good.upper(), "", hashlib.sha256(good.encode()).hexdigest()):
        refused("/k/header", {"X-Api-Key": bad}, bad if len(bad) > 5 else None, jwt=False)
    refused("/k/query?api_key=nope", {}, jwt=False)
    refused("/k/query?api_key=" + good + "x", {}, jwt=False)


@test()
def test_apikey_wrong_place_401():
    refused("/k/header?X-Api-Key=" + APIKEYS["mobile-app"][0], {}, jwt=False)
    refused("/k/query", {"X-Api-Key": APIKEYS["mobile-app"][0]}, jwt=False)


@test()
def test_auth_or_either():
    b = jresp(get("/either", bearer(tok("RS256", sub="carol"))), 200, "with a JWT")
    eq(b.get("sub"), "carol", "jwt.sub")
    b = jresp(get("/either", {"X-Api-Key": APIKEYS["mobile-app"][0]}), 200, "with an API key")
    eq(b.get("client"), "mobile-app", "client.name")
    b = jresp(get("/either", dict(bearer(tok("RS256", exp=now() - 100)), **{"X-Api-Key": APIKEYS["partner"][0]})),
              200, "a bad JWT and a good API key")
    eq(b.get("client"), "partner", "client.name")


@test()
def test_auth_or_neither():
    refused("/either", {}, jwt=True)
    t = tok("RS256", exp=now() - 100)
    refused("/either", dict(bearer(t), **{"X-Api-Key": "wrong"}), t, jwt=True)


# ---------------------------------------------------------------- local limits

def rl_int(r, name, what):
    v = r.header(name)
    check(v is not None, "%s: no %s header (headers %r)" % (what, name, r.headers))
    try:
        return int(v.strip())
    except ValueError:
        raise Fail("%s: %s is not an integer: %r" % (what, name, v))


def check_429(r, what, window=60):
    b = jresp(r, 429, what)
    check(isinstance(b, dict) and b, "%s: 429 body is not a JSON object: %r" % (what, b))
    ra = rl_int(r, "Retry-After", what)
    check(1 <= ra <= window + 1, "%s: Retry-After %d not in [1, %d]" % (what, ra, window + 1))
    rem = rl_int(r, "RateLimit-Remaining", what + " (429)")
    eq(rem, 0, what + " RateLimit-Remaining on a 429")
    rl_int(r, "RateLimit-Limit", what + " (429)")
    rl_int(r, "RateLimit-Reset", what + " (429)")
    return b


def burst_of(n, path, headers=None, gw=None):
    return [get(path, headers, gw=gw) for _ in range(n)]


@test()
def test_limit_exact_5_of_8():
    n = backend_hits()
    rs = burst_of(8, "/lim/ip")
    eq([r.status for r in rs], [200] * 5 + [429] * 3, "statuses of 8 requests on 5/min")
    eq(backend_hits() - n, 5, "backend requests (a 429 never reaches the backend)")
    rems = []
    for i, r in enumerate(rs[:5]):
        eq(rl_int(r, "RateLimit-Limit", "allowed #%d" % i), 5, "RateLimit-Limit")
        rems.append(rl_int(r, "RateLimit-Remaining", "allowed #%d" % i))
        reset = rl_int(r, "RateLimit-Reset", "allowed #%d" % i)
        check(0 <= reset <= 61, "RateLimit-Reset %d out of [0, 61]" % reset)
    eq(rems, [4, 3, 2, 1, 0], "RateLimit-Remaining of the allowed responses")
    for i, r in enumerate(rs[5:]):
        check_429(r, "refused #%d" % i)


@test()
def test_limit_burst_and_refill():
    h = {"X-K": "burst-1"}
    rs = burst_of(5, "/lim/burst", h)
    eq([r.status for r in rs], [200] * 3 + [429] * 2, "60/min burst 3: statuses of 5 quick requests")
    check_429(rs[3], "over the burst", 60)
    time.sleep(1.15)                        # one token (1/s) refilled
    t0 = time.monotonic()
    r1 = get("/lim/burst", h)
    r2 = get("/lim/burst", h)
    eq(r1.status, 200, "after 1.15 s one token is back")
    if time.monotonic() - t0 < 0.8:
        eq(r2.status, 429, "and only one")


@test()
def test_limit_by_header_keys_separately():
    a = [r.status for r in burst_of(4, "/lim/hk", {"X-K": "key-a"})]
    b = [r.status for r in burst_of(4, "/lim/hk", {"X-K": "key-b"})]
    eq(a, [200, 200, 200, 429], "key-a")
    eq(b, [200, 200, 200, 429], "key-b (its own bucket)")


@test()
def test_limit_by_jwt_sub():
    ta, tb = tok("HS256", sub="lim-alice"), tok("HS256", sub="lim-bob")
    a = [r.status for r in burst_of(4, "/lim/sub", bearer(ta))]
    ta2 = tok("HS256", sub="lim-alice", iat=now() - 7)     # another token, same subject
    a.append(get("/lim/sub", bearer(ta2)).status)
    b = [r.status for r in burst_of(3, "/lim/sub", bearer(tb))]
    eq(a, [200, 200, 200, 429, 429], "sub lim-alice (two tokens)")
    eq(b, [200, 200, 200], "sub lim-bob (its own bucket)")


@test()
def test_limit_by_client_name():
    m = [r.status for r in burst_of(4, "/lim/cli", {"X-Api-Key": APIKEYS["mobile-app"][0]})]
    p1, p2 = APIKEYS["partner"]
    p = [get("/lim/cli", {"X-Api-Key": k}).status for k in (p1, p2, p1, p2)]
    eq(m, [200, 200, 200, 429], "client mobile-app")
    eq(p, [200, 200, 200, 429], "client partner (two keys, one bucket)")


@test()
def test_limit_after_auth():
    """Refused requests do not spend the limit; the 401 comes first."""
    h = {"X-K": "after-auth"}
    for i in range(4):
        t = tok("HS256", exp=now() - 100)
        unauthorized(get("/lim/auth", dict(h, **bearer(t))), "bad token #%d" % i, t)
    good = tok("HS256")
    st = [get("/lim/auth", dict(h, **bearer(good))).status for _ in range(3)]
    eq(st, [200, 200, 429], "2/min after 4 refused requests")
    t = tok("HS256", exp=now() - 100)
    unauthorized(get("/lim/auth", dict(h, **bearer(t))), "bad token over the limit", t)


@test()
def test_limit_shared_by_two_endpoints():
    h = {"X-K": "shared"}
    st = [get(p, h).status for p in ("/lim/s1", "/lim/s2", "/lim/s1", "/lim/s2", "/lim/s1")]
    eq(st, [200, 200, 200, 429, 429], "one 3/min limit on two endpoints")


def concurrent(n, fn):
    """Run fn(i) in n threads released together; returns the results (or
    the exceptions) in order."""
    out = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        try:
            barrier.wait(10)
            out[i] = fn(i)
        except Exception as e:   # noqa
            out[i] = e
    ths = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(30)
    return out


def status_counts(results, what):
    c = {}
    for r in results:
        if isinstance(r, Exception):
            raise Fail("%s: a request failed: %s" % (what, r))
        c[r.status] = c.get(r.status, 0) + 1
    return c


@test()
def test_limit_exact_two_workers_concurrent():
    n0 = backend_hits()
    t0 = time.monotonic()
    res = concurrent(40, lambda i: get("/lim/conc", {"X-K": "conc-1"}, timeout=10))
    dt = time.monotonic() - t0
    c = status_counts(res, "40 concurrent")
    refill = int(dt * 10 / 60)             # tokens refilled while the burst ran
    check(10 <= c.get(200, 0) <= 10 + refill and c.get(200, 0) + c.get(429, 0) == 40,
          "40 concurrent requests on 10/min with 2 workers: %r (want exactly 10 x 200, 30 x 429; "
          "%.1f s)" % (c, dt))
    eq(backend_hits() - n0, c.get(200, 0), "backend requests")


# ---------------------------------------------------------------- CORS

ORIGIN = "https://app.example.com"


def tokens_of(r, name):
    out = []
    for v in r.header_all(name):
        out += [x.strip().lower() for x in v.split(",") if x.strip()]
    return out


def cors_headers(r):
    return [(k, v) for k, v in r.headers if k.lower().startswith("access-control-allow-")]


def preflight(path, origin=ORIGIN, method="POST", req_headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if req_headers:
        h["Access-Control-Request-Headers"] = req_headers
    return GW.request("OPTIONS", path, headers=h)


@test()
def test_cors_preflight():
    n = backend_hits()
    r = preflight("/cors/web", req_headers="X-Custom")
    eq(r.status, 204, "preflight status")
    eq(r.header("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin")
    m = tokens_of(r, "Access-Control-Allow-Methods")
    check("post" in m and "get" in m, "Access-Control-Allow-Methods %r lacks GET or POST" % m)
    check("x-custom" in tokens_of(r, "Access-Control-Allow-Headers"),
          "Access-Control-Allow-Headers %r lacks X-Custom" % r.header_all("Access-Control-Allow-Headers"))
    eq((r.header("Access-Control-Allow-Credentials") or "").lower(), "true", "Access-Control-Allow-Credentials")
    eq(r.header("Access-Control-Max-Age"), "600", "Access-Control-Max-Age")
    check("origin" in tokens_of(r, "Vary"), "Vary %r lacks Origin" % r.header_all("Vary"))
    eq(backend_hits(), n, "backend requests for a preflight")
    eq(r.body, b"", "preflight body")


@test()
def test_cors_preflight_get_without_request_headers():
    r = preflight("/cors/web", method="GET")
    eq(r.status, 204, "preflight status")
    eq(r.header("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin")
    check("get" in tokens_of(r, "Access-Control-Allow-Methods"), "Allow-Methods lacks GET")


@test()
def test_cors_preflight_header_case_insensitive():
    r = preflight("/cors/web", req_headers="x-custom")
    eq(r.status, 204, "preflight status")
    eq(r.header("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin")


@test()
def test_cors_simple_get():
    r = get("/cors/web", {"Origin": ORIGIN})
    eq(jresp(r, 200), {"ok": True}, "body")
    eq(r.header("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin")
    eq((r.header("Access-Control-Allow-Credentials") or "").lower(), "true", "Access-Control-Allow-Credentials")
    check("origin" in tokens_of(r, "Vary"), "Vary %r lacks Origin" % r.header_all("Vary"))
    check("x-gw-partial" in tokens_of(r, "Access-Control-Expose-Headers"),
          "Access-Control-Expose-Headers %r lacks X-Gw-Partial" % r.header_all("Access-Control-Expose-Headers"))


@test()
def test_cors_simple_post():
    r = GW.request("POST", "/cors/web", headers={"Origin": ORIGIN, "Content-Type": "application/json"}, body="{}")
    eq(jresp(r, 201), {"posted": True}, "body")
    eq(r.header("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin")


@test()
def test_cors_no_origin_no_headers():
    r = get("/cors/web")
    jresp(r, 200)
    eq(cors_headers(r), [], "Access-Control-Allow-* without an Origin")


def _cors_refused(name, origin, method="POST", req_headers=None):
    @test(name="cors_disallowed_" + name)
    def t():
        n = backend_hits()
        r = preflight("/cors/web", origin, method, req_headers)
        check(r.status in (200, 204, 403), "preflight status %d (want an answer: 200/204/403)" % r.status)
        eq(cors_headers(r), [], "Access-Control-Allow-* headers of a refused preflight")
        eq(backend_hits(), n, "backend requests for a preflight")


_cors_refused("origin", "https://evil.example.com")
_cors_refused("origin_suffix", "https://app.example.com.evil.com")
_cors_refused("origin_scheme", "http://app.example.com")
_cors_refused("origin_null", "null")
_cors_refused("method", ORIGIN, method="DELETE")
_cors_refused("header", ORIGIN, req_headers="X-Evil")
_cors_refused("one_of_headers", ORIGIN, req_headers="X-Custom, X-Evil")


@test()
def test_cors_disallowed_origin_simple_get():
    r = get("/cors/web", {"Origin": "https://evil.example.com"})
    jresp(r, 200, "a simple request from another origin is served")
    eq(cors_headers(r), [], "Access-Control-Allow-* on a disallowed origin")
    eq(r.header("Access-Control-Expose-Headers"), None, "Access-Control-Expose-Headers on a disallowed origin")


@test()
def test_cors_star():
    r = get("/cors/any", {"Origin": "https://whoever.example.org"})
    jresp(r, 200)
    eq(r.header("Access-Control-Allow-Origin"), "*", "Access-Control-Allow-Origin")
    eq(r.header("Access-Control-Allow-Credentials"), None, "Access-Control-Allow-Credentials with *")
    r = GW.request("OPTIONS", "/cors/any", headers={"Origin": "https://whoever.example.org",
                                                     "Access-Control-Request-Method": "GET"})
    eq(r.status, 204, "preflight status")
    eq(r.header("Access-Control-Allow-Origin"), "*", "preflight Access-Control-Allow-Origin")


@test()
def test_cors_preflight_needs_no_auth():
    """Browsers send preflights without credentials: the gateway answers
    them before auth."""
    r = preflight("/cors/auth", method="GET")
    eq(r.status, 204, "preflight status on an authenticated endpoint")
    eq(r.header("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin")
    r = get("/cors/auth", {"Origin": ORIGIN})
    unauthorized(r, "GET without a token")
    eq(r.header("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin on the 401 (the page "
                                                        "must be able to read it)")
    r = get("/cors/auth", dict(bearer(tok("HS256")), Origin=ORIGIN))
    eq(jresp(r, 200).get("sub"), "alice", "jwt.sub")
    eq(r.header("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin")


@test()
def test_cors_preflight_spends_no_limit():
    h = {"X-K": "cors-lim"}
    for i in range(3):
        r = GW.request("OPTIONS", "/cors/lim", headers=dict(h, **{"Origin": ORIGIN,
                                                                   "Access-Control-Request-Method": "GET"}))
        eq(r.status, 204, "preflight #%d on a limited endpoint" % i)
    r = get("/cors/lim", dict(h, Origin=ORIGIN))
    eq(r.status, 200, "the one request of a 1/min limit after 3 preflights")
    r = get("/cors/lim", dict(h, Origin=ORIGIN))
    check_429(r, "second request")
    eq(r.header("Access-Control-Allow-Origin"), ORIGIN, "Access-Control-Allow-Origin on the 429")


@test()
def test_cors_not_on_other_routes():
    r = get("/nocors", {"Origin": ORIGIN})
    jresp(r, 200)
    eq(cors_headers(r), [], "Access-Control-Allow-* on a route without cors")


# ---------------------------------------------------------------- late checks (main)

@test(name="jwks_url_down_keeps_keys")
def test_jwks_down_late():
    if JWKS_DOWN_T is None:
        test_jwks_down_setup()
    t_down, n_down = JWKS_DOWN_T
    left = t_down + 11.5 - time.monotonic()     # refresh 10s has run at least once since
    if left > 0:
        time.sleep(left)
    check(MOCK.count("/jwks/down") > n_down, "the JWKS url (refresh 10s) was not fetched again in 11.5 s")
    accepted("/p/jdown", bearer(tok("RS256", kid="r1")), what="r1 after a failed refresh")


@test(name="tokens_not_logged")
def test_tokens_not_logged():
    err = GW.stderr()
    for t in TOKENS:
        parts = [t] + [p for p in t.split(".")[1:] if len(p) >= 16]
        for p in parts:
            if p in err:
                i = err.find(p)
                raise Fail("a token (or its payload/signature) is in gwd's stderr: ...%s..." %
                           err[max(0, i - 120):i + 40].replace("\n", " | "))


@test(name="apikeys_not_logged")
def test_apikeys_not_logged():
    err = GW.stderr()
    for keys in APIKEYS.values():
        for k in keys:
            check(k not in err, "an API key is in gwd's stderr")


# ---------------------------------------------------------------- Redis

def redis_program(redis_port, mock_url):
    return """
server {{ redis "redis://127.0.0.1:{P}" }}
backend be {{ url "{M}" timeout 2s }}

limit r5     5/min     by headers["x-k"] store redis
limit r10    10/min    by headers["x-k"] store redis
limit rallow 1000/min  by headers["x-k"] store redis on_error allow
limit rdeny  1000/min  by headers["x-k"] store redis on_error deny
limit rdef   1000/min  by headers["x-k"] store redis

endpoint GET /r5     {{ limit r5; x = be GET "/be/r5"; respond {{ ok: x.ok }} }}
endpoint GET /r10    {{ limit r10; respond {{ ok: true }} }}
endpoint GET /rallow {{ limit rallow; respond {{ ok: true }} }}
endpoint GET /rdeny  {{ limit rdeny; respond {{ ok: true }} }}
endpoint GET /rdef   {{ limit rdef; respond {{ ok: true }} }}
""".format(P=redis_port, M=mock_url)


def start_redis_fixture():
    global REDIS, GA, GB
    REDIS = Redis()
    err = REDIS.start()
    if err:
        return err
    prog = redis_program(REDIS.port, MOCK.url)
    GA = Gwd(BUILD, {"main.gw": prog}, workers=2, extra_args=admin_args(), workdir=tempfile.mkdtemp(dir=TMP, prefix="ra-"))
    GB = Gwd(BUILD, {"main.gw": prog}, workers=2, extra_args=admin_args(), workdir=tempfile.mkdtemp(dir=TMP, prefix="rb-"))
    if not GA.start():
        return "gateway A: " + GA.start_error
    if not GB.start():
        return "gateway B: " + GB.start_error
    return None


BOUND = 1.0         # seconds an answer may take while Redis is paused or dead (x2.5 under ASan)


_ASAN = []


def bound():
    if not _ASAN:
        _ASAN.append(GA is not None and GA.alive() and GA.under_asan())
    return BOUND * (2.5 if _ASAN[0] else 1.0)


_kseq = [0]


def fresh(prefix):
    _kseq[0] += 1
    return {"X-K": "%s-%d-%d" % (prefix, os.getpid(), _kseq[0])}


def ensure_redis_up():
    """Between tests: Redis running (resumed, restarted) and answering."""
    if REDIS.stopped:
        REDIS.resume()
    if REDIS.proc is None or REDIS.proc.poll() is not None:
        err = REDIS.start()
        check(err is None, "restarting redis-server: %s" % err)


def wait_redis_decisions(gw, timeout=6.0):
    """Until `gw` gets answers from Redis again: on_error deny answers 200
    only when Redis decided. Each worker has its own Redis connection and a
    new client connection lands on any worker, so 8 answers in a row must
    come from Redis (one alone could come from the one worker back so far)."""
    return _until(lambda: all(get("/rdeny", fresh("probe"), gw=gw).status == 200 for _ in range(8)), timeout)


@test(group="redis")
def test_redis_exact_5_of_8():
    n = backend_hits()
    rs = burst_of(8, "/r5", fresh("exact"), gw=GA)
    eq([r.status for r in rs], [200] * 5 + [429] * 3, "statuses of 8 requests on 5/min (store redis)")
    eq(backend_hits() - n, 5, "backend requests")
    eq([rl_int(r, "RateLimit-Remaining", "allowed") for r in rs[:5]], [4, 3, 2, 1, 0], "RateLimit-Remaining")
    for r in rs[:5]:
        eq(rl_int(r, "RateLimit-Limit", "allowed"), 5, "RateLimit-Limit")
        rl_int(r, "RateLimit-Reset", "allowed")
    for r in rs[5:]:
        check_429(r, "refused (store redis)")


@test(group="redis")
def test_redis_two_gateways_one_limit():
    h = fresh("two")
    st = [get("/r5", h, gw=(GA, GB)[i % 2]).status for i in range(8)]
    eq(st, [200] * 5 + [429] * 3, "8 requests alternating between two gateways on one 5/min limit")


@test(group="redis")
def test_redis_two_gateways_concurrent():
    h = fresh("conc")
    t0 = time.monotonic()
    res = concurrent(40, lambda i: get("/r10", h, gw=(GA, GB)[i % 2], timeout=10))
    dt = time.monotonic() - t0
    c = status_counts(res, "40 concurrent on two gateways")
    refill = int(dt * 10 / 60)
    check(10 <= c.get(200, 0) <= 10 + refill and c.get(200, 0) + c.get(429, 0) == 40,
          "40 concurrent requests over two gateways (2 workers each) on 10/min: %r "
          "(want exactly 10 x 200, 30 x 429; %.1f s)" % (c, dt))


@test(group="redis")
def test_redis_keys_have_ttl():
    burst_of(2, "/r5", fresh("ttl"), gw=GA)
    keys = REDIS.cmd("KEYS", "*")
    check(keys, "no keys in Redis after limited requests")
    no_ttl = [k for k in keys if REDIS.cmd("PTTL", k) < 0]
    eq(no_ttl, [], "Redis keys without a TTL")


@test(group="redis")
def test_redis_script_flush_reloaded():
    """EVALSHA answered NOSCRIPT: the script is loaded again, the decision
    stays exact."""
    REDIS.cmd("SCRIPT", "FLUSH")
    h = fresh("noscript")
    st = [get("/r5", h, gw=(GA, GB)[i % 2]).status for i in range(8)]
    eq(st, [200] * 5 + [429] * 3, "8 requests after SCRIPT FLUSH")


def _timed(gw, path, h):
    t0 = time.monotonic()
    r = get(path, h, gw=gw, timeout=10)
    return r, time.monotonic() - t0


def _check_bounded_deny(r, dt, what):
    check(dt <= bound(), "%s: answered in %.2f s (bound %.1f s)" % (what, dt, bound()))
    eq(r.status, 429, "%s: status (on_error deny answers 429, docs/limits.md)" % what)
    b = jresp(r, r.status, what)
    check(isinstance(b, dict) and b.get("error"), "%s: the refusal has no JSON error: %r" % (what, b))


@test(group="redis")
def test_redis_paused_bounded():
    ensure_redis_up()
    check(wait_redis_decisions(GA), "gateway A gets no Redis decisions before the pause")
    REDIS.pause()
    try:
        for gw, gname in ((GA, "A"), (GB, "B")):
            for i in range(3):
                r, dt = _timed(gw, "/rallow", fresh("pa"))
                check(dt <= bound(), "gateway %s, on_error allow, Redis paused: answered in %.2f s" % (gname, dt))
                eq(r.status, 200, "gateway %s, on_error allow, Redis paused: status" % gname)
                r, dt = _timed(gw, "/rdef", fresh("pdef"))
                check(dt <= bound(), "gateway %s, default on_error, Redis paused: %.2f s" % (gname, dt))
                eq(r.status, 200, "gateway %s, default on_error (allow), Redis paused: status" % gname)
                r, dt = _timed(gw, "/rdeny", fresh("pd"))
                _check_bounded_deny(r, dt, "gateway %s, on_error deny, Redis paused" % gname)
        # concurrent requests while paused: every one bounded
        res = concurrent(16, lambda i: _timed((GA, GB)[i % 2], ("/rallow", "/rdeny")[i // 2 % 2], fresh("pc")))
        for i, x in enumerate(res):
            if isinstance(x, Exception):
                raise Fail("concurrent request %d while Redis is paused: %s" % (i, x))
            r, dt = x
            check(dt <= bound() * 1.5, "concurrent request %d while Redis is paused: %.2f s" % (i, dt))
    finally:
        REDIS.resume()
    check(wait_redis_decisions(GA) and wait_redis_decisions(GB), "no Redis decisions 6 s after SIGCONT")
    h = fresh("after-pause")
    st = [get("/r5", h, gw=(GA, GB)[i % 2]).status for i in range(8)]
    eq(st, [200] * 5 + [429] * 3, "exact limiting after Redis resumed")


@test(group="redis")
def test_redis_killed_mid_run_and_back():
    ensure_redis_up()
    check(wait_redis_decisions(GA), "gateway A gets no Redis decisions before the kill")
    results = []
    stop = threading.Event()

    def load(i):
        gw = (GA, GB)[i % 2]
        path = ("/rallow", "/rdeny")[i // 2 % 2]
        while not stop.is_set():
            try:
                r, dt = _timed(gw, path, fresh("kill"))
                results.append((path, r.status, dt, r))
            except Exception as e:  # noqa
                results.append((path, None, 0, e))
    ths = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(4)]
    for t in ths:
        t.start()
    time.sleep(0.4)
    REDIS.kill()
    time.sleep(1.2)
    stop.set()
    for t in ths:
        t.join(15)
    check(results, "no answers at all under load")
    for path, st, dt, r in results:
        if st is None:
            raise Fail("%s: a request failed while Redis was killed: %s" % (path, r))
        check(dt <= bound(), "%s: an answer took %.2f s around the kill (bound %.1f s)" % (path, dt, bound()))
        if path == "/rallow":
            eq(st, 200, "on_error allow while Redis is dead")
        else:
            check(st in (200, 429), "on_error deny around the kill: status %d (200 while Redis still decided)" % st)
    # dead: bounded answers, declared policy
    for gw, gname in ((GA, "A"), (GB, "B")):
        r, dt = _timed(gw, "/rallow", fresh("dead"))
        check(dt <= bound(), "gateway %s, Redis dead, allow: %.2f s" % (gname, dt))
        eq(r.status, 200, "gateway %s, Redis dead, on_error allow" % gname)
        r, dt = _timed(gw, "/rdeny", fresh("dead"))
        _check_bounded_deny(r, dt, "gateway %s, Redis dead, on_error deny" % gname)
    # back on the same port: limiting resumes (the script is loaded again)
    err = REDIS.start()
    check(err is None, "restarting redis-server: %s" % err)
    check(wait_redis_decisions(GA, 8.0), "gateway A: no Redis decisions 8 s after Redis came back")
    check(wait_redis_decisions(GB, 8.0), "gateway B: no Redis decisions 8 s after Redis came back")
    h = fresh("back")
    st = [get("/r5", h, gw=(GA, GB)[i % 2]).status for i in range(8)]
    eq(st, [200] * 5 + [429] * 3, "exact limiting after Redis came back")


# ---------------------------------------------------------------- runner

def run_one(name, fn, gws):
    global passed, failed
    t0 = time.monotonic()
    why = None
    dead = [g for g in gws if g is not None and not g.alive()]
    if dead:
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
    if why is None:
        for g in gws:
            if g is not None and not g.alive():
                why = "gwd died (exit %r): %s" % (g.proc.returncode, g.stderr()[-600:])
    dt = time.monotonic() - t0
    if why is None:
        passed += 1
        if VERBOSE:
            print("ok   %-50s %6.0f ms" % (name, dt * 1000))
    else:
        failed += 1
        print("FAIL e2e-auth/%s: %s" % (name, why.replace("\n", " ")[:700]))
    sys.stdout.flush()
    return why is None


def shutdown_check(g, label):
    def fn():
        code = g.stop(5.0)
        check(code is not None, "gwd ignored SIGTERM for 5 s (killed)")
        err = g.stderr()
        for pat in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            check(pat not in err, "sanitizer report in gwd stderr: %s" %
                  err[max(0, err.find(pat) - 200):err.find(pat) + 600])
        eq(code, 0, "exit code after SIGTERM")
    if not FILTER or FILTER in label:
        run_one(label, fn, [])


def restart_main_if_dead():
    if GW is not None and not GW.alive():
        print("     gwd stderr: %s" % GW.stderr()[-1000:].replace("\n", " | "))
        GW.stop()
        e = start_main()
        if e:
            return e
    return None


FIRST = ("jwks_url_down_setup",)     # starts a wait that the rest of the group overlaps


def run_group(group, gws_fn):
    global failed
    order = sorted(TESTS, key=lambda t: 0 if t[0] in FIRST else 1)
    for name, g, fn in order:
        if g != group or (FILTER and FILTER not in name):
            continue
        ok = run_one(name, fn, gws_fn())
        if not ok and group == "main":
            e = restart_main_if_dead()
            if e:
                print("FAIL e2e-auth/restart: %s" % e[:500])
                failed += 1
                return


def selected(group):
    return any(g == group and (not FILTER or FILTER in n) for n, g, _ in TESTS)


def main():
    global MOCK, failed
    if not os.path.exists(GWD_EXE):
        print("FAIL e2e-auth: %s not found (build it first)" % GWD_EXE)
        print("0 passed, 1 failed")
        return 1
    t_start = time.monotonic()

    def watchdog():
        print("FAIL e2e-auth: the suite exceeded 200 s; stopping")
        sys.stdout.flush()
        for g in (GW, GA, GB):
            try:
                if g:
                    g.stop(1)
            except Exception:
                pass
        try:
            if REDIS:
                REDIS.cleanup()
        finally:
            os._exit(1)
    wd = threading.Timer(200, watchdog)
    wd.daemon = True
    wd.start()
    try:
        make_keys()
    except Exception as e:
        print("FAIL e2e-auth/keys: making keys with openssl: %s" % e)
        print("0 passed, 1 failed")
        return 1
    MOCK = Mock().start()
    setup_mock(MOCK)
    try:
        if selected("main"):
            err = start_main()
            if err:
                failed += 1
                print("FAIL e2e-auth/start: %s" % err.replace("\n", " ")[:800])
            else:
                run_group("main", lambda: [GW])
                shutdown_check(GW, "shutdown")
        if selected("redis"):
            err = start_redis_fixture()
            if err:
                failed += 1
                print("FAIL e2e-auth/redis_start: %s" % err.replace("\n", " ")[:800])
            else:
                run_group("redis", lambda: [GA, GB])
                if REDIS.stopped:
                    REDIS.resume()
                shutdown_check(GA, "redis_shutdown_a")
                shutdown_check(GB, "redis_shutdown_b")
    finally:
        for g in (GW, GA, GB):
            if g is not None:
                try:
                    g.stop(2.0)
                except Exception:
                    pass
        if REDIS is not None:
            REDIS.cleanup()
        MOCK.stop()
        wd.cancel()
        shutil.rmtree(TMP, ignore_errors=True)
    if VERBOSE:
        print("e2e-auth: %.1f s" % (time.monotonic() - t_start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
