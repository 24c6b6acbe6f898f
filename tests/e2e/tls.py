#!/usr/bin/python3
"""End-to-end tests of TLS in gwd: HTTPS listeners (versions, ciphers, ALPN,
SNI, handshake failures, close_notify, reload), the command-line listeners,
load errors, and TLS to backends (CA, verify, mutual TLS). Certificates are
made at test time with the openssl command in a temporary directory; the
mock backends (plain and HTTPS) run in this process; everything on loopback.

    /usr/bin/python3 tests/e2e/tls.py [BUILD_DIR] [-k SUBSTRING] [-v]

Prints one "FAIL e2e-tls/NAME: why" line per failure and ends with
"N passed, N failed" (exit 1 if anything failed). Standard library only
(plus the openssl command).

Fixtures, each started only when a selected test needs it:
  main    one gwd serving its program's listeners: HTTPS (two certificates,
          SNI) and plain, header_timeout 1s, backends over TLS
  cli     one gwd whose --listen/--listen-tls replace the program's listeners
  reload  one gwd whose certificate files are replaced, then SIGHUP
"""
import hashlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)   # ssl.TLSVersion.TLSv1: refused on purpose

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mock import Mock, stream_digest  # noqa: E402
from gwd import Gwd, Conn, free_port  # noqa: E402
from suite import Suite, Fail, check, eq  # noqa: E402

S = Suite("e2e-tls", ROOT, watchdog=200, width=50, limit=700, http_errors=True)
BUILD = S.build
GWD_EXE = S.gwd_exe

TESTS = []          # (name, group, fn): run by group, not by S.run_tests
TMP = tempfile.mkdtemp(prefix="gw-e2e-tls-")
CERTS = os.path.join(TMP, "certs")
MOCK = HMOCK = RMOCK = MMOCK = None
GW = GC = GR = None
STREAM_SIZE = 3 * 1024 * 1024


def test(group="main", name=None):
    def reg(f):
        TESTS.append((name or f.__name__.replace("test_", "", 1), group, f))
        return f
    return reg


# ---------------------------------------------------------------- certificates

def openssl(*args):
    r = subprocess.run(["openssl"] + list(args), cwd=CERTS, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args[:2]), r.stderr[-500:]))


def make_ca(name, cn):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".pem",
            "-days", "3", "-subj", "/CN=" + cn,
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_leaf(name, ca, cn, san, usage="serverAuth"):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
    with open(os.path.join(CERTS, name + ".ext"), "w") as f:
        if san:
            f.write("subjectAltName=%s\n" % san)
        f.write("extendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n" % usage)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-set_serial", str(random.randrange(1 << 60, 1 << 62)), "-days", "3",
            "-out", name + ".pem", "-extfile", name + ".ext")


def make_certs():
    os.makedirs(CERTS, exist_ok=True)
    make_ca("ca", "gw e2e test CA")
    make_ca("rogue", "gw e2e rogue CA")
    make_leaf("api", "ca", "api.test", "DNS:api.test")
    make_leaf("other", "ca", "other.test", "DNS:other.test,DNS:*.other.test")
    make_leaf("api2", "ca", "api.test", "DNS:api.test")              # the renewed api certificate (reload)
    make_leaf("backend", "ca", "127.0.0.1", "IP:127.0.0.1,DNS:localhost")
    make_leaf("roguebackend", "rogue", "127.0.0.1", "IP:127.0.0.1,DNS:localhost")
    make_leaf("client", "ca", "gw-client", None, usage="clientAuth")
    with open(os.path.join(CERTS, "garbage.pem"), "w") as f:
        f.write("not a certificate\n")


def cpath(name):
    return os.path.join(CERTS, name)


def der(name):
    with open(cpath(name + ".pem")) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


# ---------------------------------------------------------------- TLS clients

def client_ctx(verify=True, minv=None, maxv=None, ciphers=None, alpn=None, check_hostname=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cpath("ca.pem"))
        ctx.check_hostname = check_hostname
        if not check_hostname:
            ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if ciphers:
        ctx.set_ciphers(ciphers)
    if minv:
        ctx.minimum_version = minv
    if maxv:
        ctx.maximum_version = maxv
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_connect(port, sni="api.test", ctx=None, timeout=5.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return (ctx or client_ctx()).wrap_socket(raw, server_hostname=sni, suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise


class TlsConn(Conn):
    """gwd.Conn over TLS (the same request building and response parsing)."""

    def __init__(self, port, sni="api.test", ctx=None, timeout=5.0):
        self.port = port
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.sock = tls_connect(port, sni, ctx, timeout)


def tls_get(port, target, sni="api.test", ctx=None, headers=None):
    c = TlsConn(port, sni, ctx)
    try:
        return c.request("GET", target, headers=headers)
    finally:
        c.close()


def handshake_fails(port, ctx, sni="api.test"):
    """True when the TLS handshake is refused (an SSLError or a closed
    connection), False when it succeeds."""
    try:
        s = tls_connect(port, sni, ctx)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True
    except OSError as e:
        if "EOF" in str(e) or "reset" in str(e).lower():
            return True
        raise
    s.close()
    return False


# ---------------------------------------------------------------- fixtures

def https_mock(cert, key, client_ca=None):
    """A mock backend (mock.Mock) serving HTTPS with cert/key; with
    client_ca it requires a client certificate signed by that CA."""
    m = Mock()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cpath(cert), cpath(key))
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cpath(client_ca))
    # the handshake happens in the handler thread, at the first read
    m.server.socket = ctx.wrap_socket(m.server.socket, server_side=True, do_handshake_on_connect=False)
    m.url = "https://127.0.0.1:%d" % m.port
    return m


def setup_mock(m):
    m.route("/echo", mode="echo")
    m.route("/stream", mode="stream", size=STREAM_SIZE, ctype="application/octet-stream")


class ProgGwd(Gwd):
    """A gwd that serves the listeners of its program (no --listen); port is
    the plain listener used to see that it is up."""

    def argv(self):
        return [self.exe, "--workers", str(self.workers)] + self.extra_args + [self.prog]


def copy_tls_files(prog, names):
    d = os.path.join(prog, "tls")
    os.makedirs(d, exist_ok=True)
    for n in names:
        shutil.copy(cpath(n), os.path.join(d, n))


MAIN = {}           # ports of the main fixture: tls, plain, admin


def main_program():
    return """
server {{
    listen "127.0.0.1:{T}" tls {{ cert "tls/api.pem" key "tls/api.key" cert "tls/other.pem" key "tls/other.key" }}
    listen "127.0.0.1:{P}"
    admin "127.0.0.1:{A}"
    header_timeout 1s
}}

backend plain      {{ url "{M}" }}
backend secure     {{ url "{H}" tls {{ ca "tls/ca.pem" }} }}
backend untrusted  {{ url "{R}" timeout 2s }}
backend wrongca    {{ url "{R}" timeout 2s tls {{ ca "tls/ca.pem" }} }}
backend insecure   {{ url "{R}" tls {{ verify false }} }}
backend mtls_ok    {{ url "{MT}" tls {{ ca "tls/ca.pem" cert "tls/client.pem" key "tls/client.key" }} }}
backend mtls_no    {{ url "{MT}" timeout 2s tls {{ ca "tls/ca.pem" }} }}

endpoint GET /hello {{ respond {{ hello: "world" }} }}
endpoint GET /call {{ x = plain GET "/echo"; respond {{ ok: x.ok }} }}
endpoint GET /px/{{rest*}} {{ proxy plain "/{{rest}}" }}
endpoint GET /b/secure {{ x = secure GET "/echo"; respond {{ ok: x.ok }} }}
endpoint GET /b/untrusted {{ x = untrusted GET "/echo"; respond {{ ok: x.ok }} }}
endpoint GET /b/wrongca {{ x = wrongca GET "/echo"; respond {{ ok: x.ok }} }}
endpoint GET /b/insecure {{ x = insecure GET "/echo"; respond {{ ok: x.ok }} }}
endpoint GET /b/mtls_ok {{ x = mtls_ok GET "/echo"; respond {{ ok: x.ok }} }}
endpoint GET /b/mtls_no {{ x = mtls_no GET "/echo"; respond {{ ok: x.ok }} }}
endpoint GET /b/proxy/{{rest*}} {{ proxy secure "/{{rest}}" }}
""".format(T=MAIN["tls"], P=MAIN["plain"], A=MAIN["admin"], M=MOCK.url, H=HMOCK.url, R=RMOCK.url, MT=MMOCK.url)


MAIN_TLS_FILES = ["api.pem", "api.key", "other.pem", "other.key", "ca.pem", "client.pem", "client.key"]


def start_main():
    global GW
    MAIN.update(tls=free_port(), plain=free_port(), admin=free_port())
    GW = ProgGwd(BUILD, {"main.gw": main_program()}, workers=1, workdir=os.path.join(TMP, "main"))
    GW.port = MAIN["plain"]
    copy_tls_files(GW.prog, MAIN_TLS_FILES)
    if not GW.start():
        return GW.start_error
    return None


def tls_port():
    return MAIN["tls"]


# ---------------------------------------------------------------- main: the listener

@test()
def test_https_request():
    s = tls_connect(tls_port())
    try:
        eq(s.version(), "TLSv1.3", "default protocol version")
        eq(s.getpeercert(True), der("api"), "certificate for api.test")
    finally:
        s.close()
    r = tls_get(tls_port(), "/hello")
    eq(r.status, 200, "status")
    eq(r.json(), {"hello": "world"}, "body")


@test()
def test_https_keepalive_and_pipelining():
    c = TlsConn(tls_port())
    try:
        for i in range(3):
            r = c.request("GET", "/hello")
            eq(r.status, 200, "request %d on one TLS connection" % i)
        c.send(c.build("GET", "/hello") * 3)
        for i, r in enumerate(c.read_responses(3)):
            eq(r.status, 200, "pipelined response %d" % i)
    finally:
        c.close()


@test()
def test_https_large_proxied_body():
    """A body much larger than the socket buffers: the SSL bufferevent
    writes it (never a raw write on the socket), paced by the client."""
    c = TlsConn(tls_port(), timeout=20)
    h = hashlib.sha256()
    try:
        c.send(c.build("GET", "/px/stream"))
        time.sleep(0.3)      # let the output back up first
        r = c.read_response(sink=h.update, timeout=20)
        eq(r.status, 200, "status")
        eq(h.hexdigest(), stream_digest(STREAM_SIZE), "body digest")
        r = c.request("GET", "/hello")
        eq(r.status, 200, "the connection is still usable")
    finally:
        c.close()


@test()
def test_https_calls_a_backend():
    r = tls_get(tls_port(), "/call")
    eq((r.status, r.json()), (200, {"ok": True}), "answer")


@test()
def test_sni_other_certificate():
    s = tls_connect(tls_port(), sni="other.test")
    try:
        eq(s.getpeercert(True), der("other"), "certificate for other.test")
        check(("DNS", "other.test") in s.getpeercert()["subjectAltName"], "SAN names other.test")
    finally:
        s.close()
    r = tls_get(tls_port(), "/hello", sni="other.test")
    eq(r.status, 200, "request with SNI other.test")


@test()
def test_sni_wildcard():
    s = tls_connect(tls_port(), sni="eu.other.test")
    try:
        eq(s.getpeercert(True), der("other"), "*.other.test matches eu.other.test")
    finally:
        s.close()


@test()
def test_sni_unknown_or_absent_gets_first():
    ctx = client_ctx(check_hostname=False)
    for sni in ("unknown.test", "a.b.other.test", None):
        s = tls_connect(tls_port(), sni=sni, ctx=ctx)
        try:
            eq(s.getpeercert(True), der("api"), "certificate for SNI %r" % sni)
        finally:
            s.close()


@test()
def test_tls12_and_13_accepted():
    for v, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = client_ctx(minv=v, maxv=v)
        c = TlsConn(tls_port(), ctx=ctx)
        try:
            eq(c.sock.version(), name, "negotiated version")
            r = c.request("GET", "/hello")
            eq(r.status, 200, "request over %s" % name)
            if name == "TLSv1.2":
                cipher = c.sock.cipher()[0]
                check(cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher),
                      "TLS 1.2 cipher %s is not ECDHE with an AEAD" % cipher)
        finally:
            c.close()


@test()
def test_tls10_and_11_refused():
    for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        # the client must really offer the old version: OpenSSL 3 needs SECLEVEL 0 for it
        ctx = client_ctx(minv=v, maxv=v, ciphers="DEFAULT:@SECLEVEL=0")
        check(handshake_fails(tls_port(), ctx), "%s was accepted" % v.name)
    eq(tls_get(tls_port(), "/hello").status, 200, "serving after refused handshakes")


def s_client(port, *args, request=None):
    """openssl s_client against the test CA; (exit code, output)."""
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", cpath("ca.pem"),
            "-verify_return_error", "-ign_eof"] + list(args)
    r = subprocess.run(argv, input=request or b"", capture_output=True, timeout=20)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")


@test()
def test_openssl_s_client_and_curl():
    """The tools an operator checks a listener with: openssl s_client and
    curl (libcurl), verifying the chain against the test CA."""
    req = b"GET /hello HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
    for v in ("-tls1_2", "-tls1_3"):
        code, out = s_client(tls_port(), v, "-servername", "api.test", "-alpn", "http/1.1", request=req)
        eq(code, 0, "s_client %s: exit code (%s)" % (v, out[-400:]))
        check("Verify return code: 0 (ok)" in out, "s_client %s: the chain does not verify: %s" % (v, out[-600:]))
        check("ALPN protocol: http/1.1" in out, "s_client %s: no ALPN http/1.1" % v)
        check("HTTP/1.1 200 OK" in out and '{"hello":"world"}' in out, "s_client %s: no answer: %s" % (v, out[-400:]))
    code, out = s_client(tls_port(), "-servername", "x.other.test", request=req)
    check(code == 0 and "CN = other.test" in out, "s_client with SNI x.other.test: %s" % out[-400:])
    for args in (("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"), ("-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"),
                 ("-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"),
                 ("-tls1_2", "-cipher", "AES128-GCM-SHA256")):
        code, out = s_client(tls_port(), *args, request=req)
        check(code != 0 and "HTTP/1.1" not in out, "s_client %s was served: %s" % (" ".join(args), out[-300:]))
    curl = shutil.which("curl")
    if not curl:
        return                      # libcurl is gwd's own backend client; the command is optional
    base = [curl, "-sS", "--cacert", cpath("ca.pem"), "--resolve", "api.test:%d:127.0.0.1" % tls_port(),
            "https://api.test:%d/hello" % tls_port()]
    r = subprocess.run(base + ["-w", "\n%{http_version} %{ssl_verify_result}"], capture_output=True, timeout=20)
    eq(r.returncode, 0, "curl: exit code (%r)" % r.stderr[-300:])
    eq(r.stdout, b'{"hello":"world"}\n1.1 0', "curl: body, HTTP version, verify result")
    r = subprocess.run(base + ["--tls-max", "1.1"], capture_output=True, timeout=20)
    check(r.returncode != 0, "curl --tls-max 1.1 was served")


@test()
def test_weak_tls12_ciphers_refused():
    offered = []
    for cipher in ("ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384", "AES128-GCM-SHA256", "AES256-SHA",
                   "DES-CBC3-SHA", "RC4-SHA"):
        try:
            ctx = client_ctx(maxv=ssl.TLSVersion.TLSv1_2, ciphers=cipher + ":@SECLEVEL=0")
        except ssl.SSLError:
            continue            # the client's OpenSSL does not have it (3DES, RC4): nothing to offer
        offered.append(cipher)
        check(handshake_fails(tls_port(), ctx), "TLS 1.2 cipher %s was accepted" % cipher)
    check("ECDHE-RSA-AES128-SHA" in offered and "AES128-GCM-SHA256" in offered,
          "the client could not offer CBC-SHA1 / static RSA: %r" % offered)


@test()
def test_server_cipher_preference():
    ctx = client_ctx(maxv=ssl.TLSVersion.TLSv1_2,
                     ciphers="ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256")
    s = tls_connect(tls_port(), ctx=ctx)
    try:
        eq(s.cipher()[0], "ECDHE-RSA-AES128-GCM-SHA256", "the server's first choice wins")
    finally:
        s.close()


@test()
def test_alpn():
    s = tls_connect(tls_port(), ctx=client_ctx(alpn=["h2", "http/1.1"]))
    try:
        eq(s.selected_alpn_protocol(), "http/1.1", "ALPN with h2 and http/1.1 offered")
    finally:
        s.close()
    s = tls_connect(tls_port())
    try:
        eq(s.selected_alpn_protocol(), None, "no ALPN offered: none selected")
    finally:
        s.close()
    check(handshake_fails(tls_port(), client_ctx(alpn=["h2"])), "an h2-only client was accepted")
    r = tls_get(tls_port(), "/hello", ctx=client_ctx(alpn=["http/1.1"]))
    eq(r.status, 200, "request after ALPN http/1.1")


@test()
def test_plain_http_to_tls_port():
    s = socket.create_connection(("127.0.0.1", tls_port()), timeout=5)
    try:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: api.test\r\n\r\n")
        data = b""
        end = time.monotonic() + 3
        while time.monotonic() < end:
            try:
                d = s.recv(4096)
            except ConnectionResetError:
                break
            if not d:
                break
            data += d
        check(time.monotonic() < end, "the connection was not closed")
        check(b"HTTP/" not in data and b"world" not in data, "answered in plain text: %r" % data[:100])
    finally:
        s.close()
    eq(tls_get(tls_port(), "/hello").status, 200, "serving afterwards")


@test()
def test_silent_client_dropped_after_header_timeout():
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", tls_port()), timeout=6)
    half = socket.create_connection(("127.0.0.1", tls_port()), timeout=6)
    try:
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # a ClientHello, cut short
        # meanwhile others are served
        for _ in range(3):
            r = tls_get(tls_port(), "/hello")
            eq(r.status, 200, "a request while handshakes stall")
        check(time.monotonic() - t0 < 0.9, "requests waited for the stalled handshakes")
        for name, sock in (("silent", s), ("half a ClientHello", half)):
            try:
                d = sock.recv(100)
            except ConnectionResetError:
                d = b""
            dt = time.monotonic() - t0
            eq(d, b"", "%s client: closed without data" % name)
            check(0.8 <= dt <= 3.5, "%s client closed after %.2f s (header_timeout 1s)" % (name, dt))
    finally:
        s.close()
        half.close()


@test()
def test_close_notify_on_close():
    c = TlsConn(tls_port())
    try:
        r = c.request("GET", "/hello", headers={"Connection": "close"})
        eq(r.status, 200, "status")
        c.sock.settimeout(3)
        try:
            d = c.sock.recv(100)     # suppress_ragged_eofs=False: a FIN without close_notify raises
        except ssl.SSLEOFError as e:
            raise Fail("closed without close_notify: %s" % e)
        eq(d, b"", "nothing after the response")
    finally:
        c.close()


@test()
def test_handshake_failures_counted():
    before = GW.stderr().count("tls: a handshake from")
    for _ in range(5):
        handshake_fails(tls_port(), client_ctx(alpn=["h2"]))
    # the first failure logs (the line says how many the worker has counted);
    # the others of the minute do not
    end = time.monotonic() + 2
    while time.monotonic() < end and "failed handshakes" not in GW.stderr():
        time.sleep(0.05)
    err = GW.stderr()
    lines = [l for l in err.splitlines() if "tls: a handshake from 127.0.0.1 failed" in l]
    check(lines, "no log line about failed handshakes: %s" % err[-600:])
    check(len(lines) <= 1 + before and len(lines) <= 1, "one line a minute at most, got %d" % len(lines))
    check("counted" in lines[0] and "failed handshakes" in lines[0], "the line carries the count: %s" % lines[0])
    # the counter itself, when the admin listener has metrics
    r = Conn(MAIN["admin"]).request("GET", "/metrics")
    if r.status == 404:
        return
    import re
    m = re.search(rb"^gw_tls_handshake_failures_total\s+(\d+)$", r.body, re.M)
    check(m is not None, "no gw_tls_handshake_failures_total in /metrics")
    check(int(m.group(1)) >= 5, "gw_tls_handshake_failures_total %s, want 5 at least" % m.group(1).decode())


def handshake_failures():
    import re
    r = Conn(MAIN["admin"]).request("GET", "/metrics")
    m = re.search(rb"^gw_tls_handshake_failures_total\s+(\d+)$", r.body, re.M)
    check(m is not None, "no gw_tls_handshake_failures_total in /metrics")
    return int(m.group(1))


def closed_by_server(s, what):
    s.settimeout(4)
    try:
        d = s.recv(100)
    except (ConnectionResetError, socket.timeout) as e:
        d = repr(e) if isinstance(e, socket.timeout) else b""
    eq(d, b"", "%s: closed by gwd" % what)


@test()
def test_stalled_handshakes_counted_silent_clients_not():
    """A handshake begun and then abandoned or stalled past header_timeout is
    a failed one; a client that never sends a byte (a load balancer's TCP
    check, a preconnect) is not."""
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"A" * 32    # a ClientHello, cut short
    n0 = handshake_failures()
    for _ in range(3):                                   # connect, close
        socket.create_connection(("127.0.0.1", tls_port()), timeout=5).close()
    silent = socket.create_connection(("127.0.0.1", tls_port()), timeout=5)
    stalled = socket.create_connection(("127.0.0.1", tls_port()), timeout=5)
    try:
        stalled.sendall(hello)
        gone = socket.create_connection(("127.0.0.1", tls_port()), timeout=5)
        gone.sendall(hello)
        time.sleep(0.2)
        gone.close()                                     # begun, then abandoned
        closed_by_server(silent, "a silent client")      # header_timeout 1s
        closed_by_server(stalled, "a stalled handshake")
    finally:
        silent.close()
        stalled.close()
    time.sleep(0.2)
    eq(handshake_failures() - n0, 2, "failed handshakes counted (the abandoned and the stalled one, "
                                     "not the 4 silent clients)")


@test()
def test_plain_listener_beside_tls():
    r = GW.get("/hello")
    eq(r.status, 200, "plain listener")
    check(handshake_fails(MAIN["plain"], client_ctx()), "the plain listener spoke TLS")


@test()
def test_x_forwarded_proto():
    MOCK.reset()
    eq(tls_get(tls_port(), "/px/echo").status, 200, "proxied over TLS")
    eq(GW.get("/px/echo").status, 200, "proxied over plain")
    eq(tls_get(tls_port(), "/call").status, 200, "call over TLS")
    reqs = MOCK.wait_requests("/echo", 3)
    eq([q["hdict"].get("x-forwarded-proto") for q in reqs], ["https", "http", "https"], "X-Forwarded-Proto")


# ---------------------------------------------------------------- main: backend TLS

def backend_502(path, kinds=("connect",)):
    r = GW.get(path, timeout=8)
    eq(r.status, 502, "%s: status (%r)" % (path, r.body[:200]))
    check(r.json().get("error") in kinds, "%s: error kind %r, want one of %r" % (path, r.json(), kinds))


@test()
def test_backend_tls_with_ca():
    r = GW.get("/b/secure")
    eq((r.status, r.json()), (200, {"ok": True}), "a backend verified with its ca")
    r = tls_get(tls_port(), "/b/proxy/echo")
    eq(r.status, 200, "proxied to an HTTPS backend")


@test()
def test_backend_untrusted_refused():
    backend_502("/b/untrusted")        # system CAs
    backend_502("/b/wrongca")          # another CA


@test()
def test_backend_verify_false():
    r = GW.get("/b/insecure")
    eq((r.status, r.json()), (200, {"ok": True}), "verify false accepts any certificate")


@test()
def test_backend_mtls():
    r = GW.get("/b/mtls_ok")
    eq((r.status, r.json()), (200, {"ok": True}), "with the client certificate")
    # TLS 1.3: the refusal arrives after the handshake, as a read error
    backend_502("/b/mtls_no", kinds=("connect", "connection"))


@test()
def test_tls_client_unharmed_by_backend_tls_failures():
    """Failed TLS to backends (libcurl, OpenSSL) on the worker's thread must
    not leave errors that the client connections' TLS then reads as theirs."""
    c = TlsConn(tls_port())
    try:
        eq(c.request("GET", "/hello").status, 200, "first request")
        for path in ("/b/untrusted", "/b/wrongca", "/b/mtls_no"):
            eq(c.request("GET", path).status, 502, path + " over the same TLS connection")
            eq(c.request("GET", "/hello").status, 200, "the TLS connection after " + path)
        eq(c.request("GET", "/px/echo").status, 200, "proxied after the failures")
    finally:
        c.close()


# ---------------------------------------------------------------- cli

CLI = {}


def cli_program():
    return """
server {{ listen "127.0.0.1:{Q}" tls {{ cert "tls/api.pem" key "tls/api.key" }} header_timeout 2s }}
endpoint GET /hello {{ respond {{ hello: "cli" }} }}
""".format(Q=CLI["prog_port"])


def start_cli():
    global GC
    CLI.update(prog_port=free_port(), tls=free_port(), tls2=free_port())
    d = os.path.join(TMP, "cli")
    os.makedirs(d, exist_ok=True)
    for n in ("api.pem", "api.key", "other.pem", "other.key"):
        shutil.copy(cpath(n), os.path.join(d, n))
    GC = Gwd(BUILD, {"cli.gw": cli_program()}, workers=2, workdir=d,
             extra_args=["--admin", "",
                         "--listen-tls", "127.0.0.1:%d" % CLI["tls"],
                         "--tls-cert", "other.pem", "--tls-key", "other.key",        # relative: gwd's directory
                         "--tls-cert", cpath("api.pem"), "--tls-key", cpath("api.key"),
                         "--listen-tls", "127.0.0.1:%d" % CLI["tls2"],
                         "--tls-cert", "api.pem", "--tls-key", "api.key"])
    copy_tls_files(GC.prog, ["api.pem", "api.key"])
    if not GC.start():
        return GC.start_error
    return None


@test("cli")
def test_cli_listeners_replace_programs():
    r = GC.get("/hello")
    eq((r.status, r.json()), (200, {"hello": "cli"}), "--listen (plain)")
    r = tls_get(CLI["tls"], "/hello", sni="other.test")
    eq((r.status, r.json()), (200, {"hello": "cli"}), "--listen-tls")
    r = tls_get(CLI["tls2"], "/hello")
    eq(r.status, 200, "the second --listen-tls")
    try:
        socket.create_connection(("127.0.0.1", CLI["prog_port"]), timeout=1).close()
        raise Fail("the program's listener is open although the command line names listeners")
    except ConnectionRefusedError:
        pass


@test("cli")
def test_cli_sni_pairs():
    ctx = client_ctx(check_hostname=False)
    for sni, want in (("api.test", "api"), ("other.test", "other"), ("x.other.test", "other"), (None, "other")):
        s = tls_connect(CLI["tls"], sni=sni, ctx=ctx)
        try:
            eq(s.getpeercert(True), der(want), "--listen-tls certificate for SNI %r" % sni)
        finally:
            s.close()


@test("cli")
def test_cli_reload_rereads_files():
    if "reloaded" not in open(os.path.join(ROOT, "runtime", "gwr_server.c")).read():
        return                       # no reload in this build
    # the second --listen-tls names api.pem/api.key relative to gwd's directory
    shutil.copy(cpath("api2.pem"), os.path.join(GC.dir, "api.pem"))
    shutil.copy(cpath("api2.key"), os.path.join(GC.dir, "api.key"))
    sighup_and_wait(GC, "reloaded")
    for port, want in ((CLI["tls2"], "api2"), (CLI["tls"], "api")):
        s = tls_connect(port)
        try:
            eq(s.getpeercert(True), der(want), "certificate of 127.0.0.1:%d after the reload" % port)
        finally:
            s.close()
    os.remove(os.path.join(GC.dir, "api.key"))
    sighup_and_wait(GC, "refused")
    check("api.key" in GC.stderr()[-800:], "the refusal names the file: %s" % GC.stderr()[-500:])
    eq(tls_get(CLI["tls2"], "/hello").status, 200, "serving after a refused reload")


def run_gwd(args, files=None, cwd=None, timeout=20):
    d = tempfile.mkdtemp(dir=TMP)
    prog = os.path.join(d, "prog")
    os.makedirs(prog)
    for name, text in (files or {"p.gw": 'endpoint GET /a { respond { a: 1 } }\n'}).items():
        with open(os.path.join(prog, name), "w") as f:
            f.write(text)
    argv = [GWD_EXE, "--admin", ""] + [a.replace("{PROG}", prog) for a in args] + [prog]
    return subprocess.run(argv, cwd=cwd or d, capture_output=True, text=True, timeout=timeout), prog


@test("start")
def test_cli_usage_errors():
    p = "127.0.0.1:%d" % free_port()
    cases = [
        (["--tls-cert", cpath("api.pem"), "--tls-key", cpath("api.key")], "must follow --listen-tls"),
        (["--listen", p, "--tls-cert", cpath("api.pem"), "--tls-key", cpath("api.key")], "must follow --listen-tls"),
        (["--listen-tls", p], "needs --tls-cert"),
        (["--listen-tls", p, "--tls-cert", cpath("api.pem")], "has no --tls-key"),
        (["--listen-tls", p, "--tls-key", cpath("api.key")], "must follow --tls-cert"),
        (["--listen-tls", p, "--tls-cert", cpath("api.pem"), "--listen", p], "has no --tls-key"),
    ]
    for args, msg in cases:
        r, _ = run_gwd(args)
        eq(r.returncode, 2, "exit status of %s" % " ".join(args))
        check(msg in r.stderr, "%s: stderr %r lacks %r" % (" ".join(args), r.stderr[-300:], msg))


def tls_prog(cert, key, extra=""):
    return {"p.gw": 'server {{ listen "127.0.0.1:{P}" tls {{ cert "{C}" key "{K}" }} }}\n{X}'
            'endpoint GET /a {{ respond {{ a: 1 }} }}\n'.format(P=free_port(), C=cert, K=key, X=extra)}


@test("start")
def test_load_errors_name_the_file():
    missing = cpath("nope.pem")
    cases = [
        (tls_prog(missing, cpath("api.key")), [], missing),
        (tls_prog(cpath("api.pem"), cpath("nokey.key")), [], "nokey.key"),
        (tls_prog(cpath("garbage.pem"), cpath("api.key")), [], "garbage.pem"),
        (tls_prog(cpath("api.pem"), cpath("other.key")), [], "does not match"),
        (tls_prog(cpath("api.pem"), cpath("api.pem")), [], "api.pem"),          # a certificate as key
        (None, ["--listen-tls", "127.0.0.1:%d" % free_port(), "--tls-cert", missing, "--tls-key", cpath("api.key")], missing),
        ({"p.gw": 'backend b { url "https://127.0.0.1:1" tls { ca "%s" } }\n'
                  'endpoint GET /a { x = b GET "/"; respond x }\n' % missing}, [], missing),
        ({"p.gw": 'backend b { url "https://127.0.0.1:1" tls { ca "%s" cert "%s" key "%s" } }\n'
                  'endpoint GET /a { x = b GET "/"; respond x }\n' % (cpath("ca.pem"), cpath("client.pem"), cpath("api.key"))},
         [], "does not match"),
    ]
    for files, args, want in cases:
        r, _ = run_gwd(args, files=files)
        eq(r.returncode, 1, "exit status (%s)" % want)
        check(want in r.stderr, "stderr %r does not name %r" % (r.stderr[-400:], want))
        check("PRIVATE KEY" not in r.stderr and "BEGIN" not in r.stderr, "key material in stderr")
    # a relative name is the .gw file's directory's
    r, prog = run_gwd([], files=tls_prog("tls/none.pem", "tls/none.key"))
    eq(r.returncode, 1, "exit status (relative)")
    check(os.path.join(prog, "tls", "none.pem") in r.stderr, "relative path resolved: %r" % r.stderr[-300:])


@test("start")
def test_check_validates_tls_files():
    r, _ = run_gwd(["--check"], files=tls_prog(cpath("nope.pem"), cpath("api.key")))
    eq(r.returncode, 1, "--check exit status")
    check("nope.pem" in r.stderr, "--check names the file: %r" % r.stderr[-300:])
    # the files of --listen-tls too: a start would fail on them, so --check does
    r, _ = run_gwd(["--check", "--listen-tls", "127.0.0.1:%d" % free_port(),
                    "--tls-cert", cpath("nope2.pem"), "--tls-key", cpath("api.key")])
    eq(r.returncode, 1, "--check with a --listen-tls file missing: exit status")
    check("nope2.pem" in r.stderr, "--check names the --listen-tls file: %r" % r.stderr[-300:])
    r, _ = run_gwd(["--check", "--listen-tls", "127.0.0.1:%d" % free_port(),
                    "--tls-cert", cpath("api.pem"), "--tls-key", cpath("api.key")])
    eq(r.returncode, 0, "--check with good --listen-tls files: exit status (%r)" % r.stderr[-300:])


# ---------------------------------------------------------------- reload

REL = {}


def start_reload():
    global GR
    REL.update(tls=free_port(), plain=free_port(), cli=free_port())
    d = os.path.join(TMP, "reload")
    os.makedirs(d, exist_ok=True)
    for n in ("api.pem", "api.key"):
        shutil.copy(cpath(n), os.path.join(d, "cli-" + n))
    prog = """
server {{ listen "127.0.0.1:{T}" tls {{ cert "tls/api.pem" key "tls/api.key" }} listen "127.0.0.1:{P}" }}
endpoint GET /hello {{ respond {{ hello: "reload" }} }}
""".format(T=REL["tls"], P=REL["plain"])
    GR = ProgGwd(BUILD, {"r.gw": prog}, workers=2, workdir=d, extra_args=["--admin", ""])
    GR.port = REL["plain"]
    copy_tls_files(GR.prog, ["api.pem", "api.key"])
    if not GR.start():
        return GR.start_error
    return None


def sighup_and_wait(g, word):
    n = g.stderr().count(word)
    g.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if g.stderr().count(word) > n:
            time.sleep(0.2)          # the workers take the new program up on their loops
            return
        time.sleep(0.05)
    raise Fail("no %r in the log after SIGHUP: %s" % (word, g.stderr()[-500:]))


@test("reload")
def test_reload_rereads_certificates():
    if "reloaded" not in open(os.path.join(ROOT, "runtime", "gwr_server.c")).read():
        return                       # no reload in this build
    old = tls_connect(REL["tls"])
    try:
        eq(old.getpeercert(True), der("api"), "the certificate at start")
        tlsdir = os.path.join(GR.prog, "tls")
        shutil.copy(cpath("api2.pem"), os.path.join(tlsdir, "api.pem"))
        shutil.copy(cpath("api2.key"), os.path.join(tlsdir, "api.key"))
        sighup_and_wait(GR, "reloaded")
        s = tls_connect(REL["tls"])
        try:
            eq(s.getpeercert(True), der("api2"), "the certificate after the reload")
        finally:
            s.close()
        # the connection opened before keeps its session
        old.sendall(b"GET /hello HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        data = b""
        while b"reload" not in data:
            d = old.recv(4096)
            if not d:
                break
            data += d
        check(data.startswith(b"HTTP/1.1 200"), "the old connection after the reload: %r" % data[:80])
    finally:
        old.close()
    # a broken file: the reload is refused, the current certificate stays
    with open(os.path.join(GR.prog, "tls", "api.key"), "w") as f:
        f.write("broken\n")
    sighup_and_wait(GR, "refused")
    check("api.key" in GR.stderr().split("refused")[-1][:600] or "api.key" in GR.stderr()[-1500:],
          "the refusal names the file: %s" % GR.stderr()[-600:])
    s = tls_connect(REL["tls"])
    try:
        eq(s.getpeercert(True), der("api2"), "the certificate after a refused reload")
    finally:
        s.close()
    eq(tls_get(REL["tls"], "/hello").status, 200, "serving after a refused reload")


@test("reload")
def test_reload_never_turns_tls_plain():
    if "reloaded" not in open(os.path.join(ROOT, "runtime", "gwr_server.c")).read():
        return
    path = os.path.join(GR.prog, "r.gw")
    with open(path) as f:
        text = f.read()
    plain = text.replace(' tls { cert "tls/api.pem" key "tls/api.key" }', "")
    check(plain != text, "test setup: no tls block found")
    with open(path, "w") as f:
        f.write(plain)
    try:
        sighup_and_wait(GR, "refused")
        check("serves TLS" in GR.stderr()[-800:], "the refusal says why: %s" % GR.stderr()[-500:])
        s = tls_connect(REL["tls"])
        s.close()
    finally:
        with open(path, "w") as f:
            f.write(text)


# ---------------------------------------------------------------- runner

def shutdown_check(g, label):
    def fn():
        code = g.stop(5.0)
        check(code is not None, "gwd ignored SIGTERM for 5 s (killed)")
        err = g.stderr()
        for pat in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            check(pat not in err, "sanitizer report in gwd stderr: %s" %
                  err[max(0, err.find(pat) - 200):err.find(pat) + 600])
        eq(code, 0, "exit code after SIGTERM")
    if S.selected(label):
        S.run_one(label, fn, [])


def selected(group):
    return any(g == group and S.selected(n) for n, g, _ in TESTS)


def run_group(group, gws):
    for name, g, fn in TESTS:
        if g == group and S.selected(name):
            S.run_one(name, fn, gws)


def fixture(group, start, label):
    if not selected(group):
        return None
    err = start()
    if err:
        S.fail(label, err, limit=800)
        return None
    return True


def setup():
    global MOCK, HMOCK, RMOCK, MMOCK
    try:
        make_certs()
    except Exception as e:
        print("FAIL e2e-tls/certs: making certificates with openssl: %s" % e)
        print("0 passed, 1 failed")
        return 1
    MOCK = Mock()
    HMOCK = https_mock("backend.pem", "backend.key")
    RMOCK = https_mock("roguebackend.pem", "roguebackend.key")
    MMOCK = https_mock("backend.pem", "backend.key", client_ca="ca.pem")
    for m in (MOCK, HMOCK, RMOCK, MMOCK):
        setup_mock(m)
        m.start()
    return None


def run():
    if fixture("main", start_main, "main_start"):
        run_group("main", [GW])
        shutdown_check(GW, "main_shutdown")
    if fixture("cli", start_cli, "cli_start"):
        run_group("cli", [GC])
        shutdown_check(GC, "cli_shutdown")
    run_group("start", [])
    if fixture("reload", start_reload, "reload_start"):
        run_group("reload", [GR])
        shutdown_check(GR, "reload_shutdown")


def teardown():
    for g in (GW, GC, GR):
        if g is not None:
            try:
                g.stop(2.0)
            except Exception:
                pass
    for m in (MOCK, HMOCK, RMOCK, MMOCK):
        try:
            m.stop()
        except Exception:
            pass
    shutil.rmtree(TMP, ignore_errors=True)


def stop_all():
    for g in (GW, GC, GR):
        try:
            if g:
                g.stop(1)
        except Exception:
            pass


def main():
    return S.main(setup=setup, run=run, teardown=teardown, on_timeout=stop_all,
                  timeout_summary=False, timing=True)


if __name__ == "__main__":
    sys.exit(main())
