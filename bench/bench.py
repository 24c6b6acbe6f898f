#!/usr/bin/python3
"""bench/bench.py — gwd measured side by side with nginx and OpenResty (ngx_lua).

    bench/run.sh BUILD_DIR [--quick] [--soak] [--only a,b] [--rounds N] [--duration S]

Everything runs on loopback and is started and stopped here, with configs written
into a temp dir from the templates in bench/conf and bench/lua:

  CPU 0  load generator (wrk, bench/loadgen.c) and the mock backends (one nginx
         worker serving static JSON files on ten ports)
  CPU 1  the system under test, alone: gwd --workers 1, or the peer nginx
         (worker_processes 1; ngx_lua + cjson for the aggregation scenarios)

Rounds alternate peer / gateway (ABBA order). Figures are medians with the
range; ratios are against the peer measured in the same run. Writes
bench/results/latest.md, latest.json and (with gnuplot) latest.svg.
"""
import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Ports are picked free at start (other things may run on this machine).
BACKEND_PORTS = []          # ten mock backend ports
PEER_PORT = 0
GW_PORT = 0
CONNS = 64                  # wrk / loadgen connections

# name, path, what the peer is, whether to measure fixed-rate latency, in --quick
SCENARIOS = [
    dict(name="static", path="/static", peer="nginx `return 200`", lat=True, quick=True),
    dict(name="proxy-1", path="/proxy1", peer="nginx proxy_pass (keepalive)", lat=True, quick=True),
    dict(name="agg-3", path="/agg3", peer="OpenResty (ngx_lua+cjson)", lat=True, quick=True),
    dict(name="agg-3-delayed", path="/agg3d", peer="OpenResty (ngx_lua+cjson)", lat=True, fracs=[0.25], quick=True,
         note="backends delayed 5/5/10 ms: p50 should be ≈ 10 ms + ε"),
    dict(name="agg-10", path="/agg10", peer="OpenResty (ngx_lua+cjson)", lat=True, quick=False),
    dict(name="rate-limited", path="/limited", peer="nginx limit_req + static file", lat=False, quick=False),
    dict(name="timeout-100", path="/slow", peer="OpenResty (proxy_read_timeout 100ms)", lat=False, quick=False,
         note="one of two backends answers after 1 s; the call gives up at 100 ms"),
    dict(name="conn-close", path="/static", peer="nginx `return 200`", lat=False, quick=False,
         headers=["Connection: close"], note="every request on a new connection"),
    # jwt: the same tokens on both sides (signed here at start, see Jwt below); the
    # peer is bench/lua/jwt.lua (LuaJIT FFI to libcrypto). cached: one token on every
    # request (gwd's verified-token cache and the peer's per-worker table hit);
    # cold: a wrk script cycles through JWT_COLD_TOKENS tokens, the peer caches nothing.
    dict(name="jwt-hs256-cached", path="/jwt/hs256", peer="OpenResty (FFI libcrypto HMAC, Lua cache)", lat=False,
         quick=False, jwt="HS256", note="HS256, the same token on every request: both sides' caches hit"),
    dict(name="jwt-hs256-cold", path="/jwt/hs256-cold", peer="OpenResty (FFI libcrypto HMAC)", lat=False,
         quick=False, jwt="HS256", cold=True),
    dict(name="jwt-rs256-cached", path="/jwt/rs256", peer="OpenResty (FFI libcrypto RSA, Lua cache)", lat=False,
         quick=False, jwt="RS256", note="RS256 (2048-bit key), the same token on every request: both sides' caches hit"),
    dict(name="jwt-rs256-cold", path="/jwt/rs256-cold", peer="OpenResty (FFI libcrypto RSA)", lat=False,
         quick=False, jwt="RS256", cold=True),
    dict(name="everything", path="/everything", peer="OpenResty (limit_req + jwt.lua RS256 + agg.lua)", lat=False,
         quick=False, jwt="RS256",
         note="RS256 auth with one token (cached on both sides) + the never-refusing limit + agg-3, one endpoint"),
]

JWT_EXP = 4102444800            # 2100-01-01: every token's exp, far in the future
JWT_COLD_TOKENS = 40000         # distinct tokens of the *-cold scenarios; gwd caches 4,096 per policy
for _sc in SCENARIOS:
    if _sc.get("cold"):
        _sc["note"] = ("%s, %s distinct tokens round robin; the peer verifies every request, gwd misses its "
                       "cache except for the ≤ 3,072 tokens its 4-way sets keep for good (3 of 4 ways when "
                       "every exp is the same): ≈ %.0f%% hits"
                       % (_sc["jwt"], "{:,}".format(JWT_COLD_TOKENS), 100.0 * 3072 / JWT_COLD_TOKENS))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the mock data

def make_data(d):
    """Deterministic backend bodies: ~4 KB for agg-3, 10 KB for agg-10, 1 KB for proxy-1.
    Numbers are integers or short decimals, so cjson (%.14g) and gwd (text kept)
    print them the same."""
    rnd = random.Random(42)
    os.makedirs(d, exist_ok=True)

    def words(n):
        return " ".join(rnd.choice(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot",
                                    "golf", "hotel", "india", "juliet"]) for _ in range(n))

    def dump(name, obj, target=None):
        s = json.dumps(obj, separators=(",", ":"))
        if target:
            # pad with a field nobody reads, to the target size
            obj["padding"] = ""
            s = json.dumps(obj, separators=(",", ":"))
            obj["padding"] = "x" * max(0, target - len(s))
            s = json.dumps(obj, separators=(",", ":"))
        with open(os.path.join(d, name), "w") as f:
            f.write(s)
        return len(s)

    user = {"id": 1234, "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
            "segment": "gold", "address": {"street": "12 St James Square", "city": "London",
                                           "country": "GB", "zip": "SW1Y 4JH"},
            "prefs": {"lang": "en", "currency": "GBP", "newsletter": True},
            "history": [{"at": 1700000000 + i * 3600, "event": words(3)} for i in range(40)]}
    orders = {"user": 1234, "items": [
        {"id": 5000 + i, "total": round(rnd.uniform(5, 500), 2), "status": rnd.choice(["open", "shipped", "closed"]),
         "created": 1700000000 + i * 86400, "lines": [{"sku": "SKU-%d" % rnd.randint(1, 9999), "qty": rnd.randint(1, 5)}
                                                      for _ in range(3)]}
        for i in range(14)]}
    recs = {"products": [
        {"id": 900 + i, "name": words(2), "price": round(rnd.uniform(1, 99), 2), "score": round(rnd.random(), 3),
         "description": words(8)} for i in range(20)]}
    sizes = {"user.json": dump("user.json", user, 4096),
             "orders.json": dump("orders.json", orders, 4096),
             "recs.json": dump("recs.json", recs, 4096)}
    sizes["1k.json"] = dump("1k.json", {"id": 1, "name": "one kilobyte"}, 1024)
    for s in range(10):
        obj = {"id": s, "name": "service-%d" % s, "items": [
            {"id": s * 1000 + i, "v": rnd.randint(0, 100000), "txt": words(6)} for i in range(60)]}
        sizes["s%d.json" % s] = dump("s%d.json" % s, obj, 10240)
    with open(os.path.join(d, "ok.json"), "w") as f:
        f.write('{"ok":true}')
    return sizes


# ---------------------------------------------------------------- JWT keys and tokens

def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Jwt:
    """The keys of the jwt scenarios, written into KEYDIR for both sides at start
    (hs256.key: a fresh 64-byte secret; rs256.pub.pem: the public half of a fresh
    RSA-2048 key, whose private half stays here), and tokens signed with them on
    first use: header {"alg","typ"}, payload {"sub": "user-N", "iat", "exp": 2100}.
    RS256 signs with python3-cryptography when installed (≈ 0.2 ms a token), else
    one `openssl dgst -sign` process per token (enough for the cached scenarios only)."""

    def __init__(self, keydir):
        self.dir = keydir
        os.makedirs(keydir, exist_ok=True)
        self.secret = os.urandom(32).hex().encode()
        with open(os.path.join(keydir, "hs256.key"), "wb") as f:
            f.write(self.secret)
        self.tokens = {"HS256": [], "RS256": []}
        self.files = {}
        pub = os.path.join(keydir, "rs256.pub.pem")
        try:
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import padding, rsa
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            with open(pub, "wb") as f:
                f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
            self.rs_sign = lambda msg: key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
            self.fast = True
        except ImportError:
            # the private key lives outside the dirs nginx reads
            fd, priv = tempfile.mkstemp(prefix="gw-bench-rs256-", suffix=".pem")
            os.close(fd)
            self.priv = priv
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                            "-out", priv], check=True, capture_output=True)
            subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True, capture_output=True)
            self.rs_sign = lambda msg: subprocess.run(["openssl", "dgst", "-sha256", "-sign", priv], input=msg,
                                                      check=True, capture_output=True).stdout
            self.fast = False

    def close(self):
        if getattr(self, "priv", None):
            os.unlink(self.priv)

    def get(self, alg, n):
        """The first n tokens of alg (signing the missing ones)."""
        toks = self.tokens[alg]
        if len(toks) < n:
            if alg == "RS256" and not self.fast and n > 100:
                raise SystemExit("bench: signing %d RS256 tokens needs python3-cryptography "
                                 "(apt-get install python3-cryptography)" % n)
            t0 = time.time()
            head = b64u(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode()) + "."
            for i in range(len(toks), n):
                body = json.dumps({"sub": "user-%d" % i, "iat": 1700000000, "exp": JWT_EXP}, separators=(",", ":"))
                signed = (head + b64u(body.encode())).encode()
                if alg == "HS256":
                    sig = hmac.new(self.secret, signed, hashlib.sha256).digest()
                else:
                    sig = self.rs_sign(signed)
                toks.append(signed.decode() + "." + b64u(sig))
            if n > 1:
                log("   signed %s %s tokens (%.1f s)" % ("{:,}".format(n), alg, time.time() - t0))
        return toks[:n]

    def file(self, alg, n):
        """A file of n tokens of alg, one a line (for bench/lua/wrk_tokens.lua)."""
        if (alg, n) not in self.files:
            path = os.path.join(self.dir, "tokens-%s-%d.txt" % (alg.lower(), n))
            with open(path, "w") as f:
                f.write("\n".join(self.get(alg, n)) + "\n")
            self.files[(alg, n)] = path
        return self.files[(alg, n)]


# ---------------------------------------------------------------- processes

def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port, proc, what, timeout=30):
    t = time.time() + timeout
    while time.time() < t:
        if proc.poll() is not None:
            raise SystemExit("bench: %s exited at start (status %s)" % (what, proc.returncode))
        if port_open(port):
            return
        time.sleep(0.05)
    raise SystemExit("bench: %s did not open port %d" % (what, port))


def pick_ports():
    global PEER_PORT, GW_PORT
    socks = []
    for _ in range(12):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    PEER_PORT, GW_PORT = ports[0], ports[1]
    BACKEND_PORTS[:] = ports[2:]


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree(pid):
    out = [pid]
    for c in children(pid):
        out += tree(c)
    return out


def cpu_seconds(pids):
    """(user, kernel) seconds — utime+cutime, stime+cstime — of every process of
    the system under test."""
    usr = sys_ = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = [int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15]]
            usr += fields[0] + fields[2]
            sys_ += fields[1] + fields[3]
        except OSError:
            pass
    return usr / CLK_TCK, sys_ / CLK_TCK


def status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class System:
    """A system under test on CPU 1: gwd, or the peer nginx."""

    def __init__(self, kind, cmd, port, logpath, env=None):
        self.kind, self.cmd, self.port = kind, cmd, port
        self.logf = open(logpath, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=os.setsid)
        wait_port(port, self.proc, kind)
        time.sleep(0.1)

    def pids(self):
        return tree(self.proc.pid)

    def serving_pid(self):
        """The process that serves requests: gwd itself, or nginx's worker."""
        ch = children(self.proc.pid)
        return ch[0] if (self.kind == "peer" and ch) else self.proc.pid

    def cpu(self):
        """(user, kernel) CPU seconds so far."""
        return cpu_seconds(self.pids())

    def hwm_kb(self):
        return status_kb(self.serving_pid(), "VmHWM")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT if self.kind == "peer" else signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.logf.close()


# ---------------------------------------------------------------- load

def run_wrk(port, path, secs, headers=(), script=None):
    """script: None, or [LUA_FILE, ARG...] — `wrk -s LUA_FILE URL -- ARG...`."""
    cmd = ["taskset", "-c", "0", "wrk", "-t1", "-c%d" % CONNS, "-d%ds" % secs, "--latency", "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script[0]]
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    if script and len(script) > 1:
        cmd += ["--"] + list(script[1:])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30).stdout
    r = {"requests": 0, "rps": 0.0, "non2xx": 0, "sockerr": 0, "p50_ms": None, "p99_ms": None}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["sockerr"] = sum(int(x) for x in m.groups())

    def ms(v, unit):
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    for q, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % q, out, re.M)
        if m:
            r[key] = ms(m.group(1), m.group(2))
    return r


def run_loadgen(loadgen, port, path, args, timeout):
    cmd = ["taskset", "-c", "0", loadgen] + args + ["127.0.0.1", str(port), path]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
    r = {}
    for kv in out.split():
        k, _, v = kv.partition("=")
        r[k] = float(v)
    return r


def fetch(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path, headers=headers or {})
    resp = c.getresponse()
    body = resp.read()
    c.close()
    return resp.status, body


# ---------------------------------------------------------------- statistics

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rng(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def fnum(v, digits=0):
    if v is None:
        return "—"
    if digits == 0:
        return "{:,.0f}".format(v)
    return "{:,.{}f}".format(v, digits)


def fratio(a, b):
    if not a or not b:
        return "—"
    return "%.2f×" % (a / b)


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build_dir)
        self.gwd = os.path.join(self.build, "gwd")
        if not os.access(self.gwd, os.X_OK):
            raise SystemExit("bench: %s not found (run make first)" % self.gwd)
        for tool in ("nginx", "wrk", "taskset", "cc"):
            if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
                raise SystemExit("bench: %s is missing: apt-get install nginx-light libnginx-mod-http-lua "
                                 "lua-cjson wrk gnuplot-nox valgrind" % tool)
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if (os.cpu_count() or 1) < 2:
            raise SystemExit("bench: needs 2 CPUs (load on CPU 0, system under test on CPU 1)")
        pick_ports()
        self.tmp = tempfile.mkdtemp(prefix="gw-bench-")
        os.chmod(self.tmp, 0o755)     # nginx workers run as nobody
        for sub in ("tmp", "lua", "data"):
            os.makedirs(os.path.join(self.tmp, sub))
        self.backends = None
        self.jwt = None
        self.systems = []
        self.results = {"scenarios": []}

    # -- setup
    def write_configs(self):
        self.sizes = make_data(os.path.join(self.tmp, "data"))
        self.jwt = Jwt(os.path.join(self.tmp, "keys"))
        subst = {"@TMP@": self.tmp, "@PORT@": str(PEER_PORT)}
        for i in range(10):
            subst["@B%d@" % i] = str(BACKEND_PORTS[i])
        subst["@LISTENS@"] = "\n".join("        listen 127.0.0.1:%d backlog=4096;" % (BACKEND_PORTS[i])
                                       for i in range(10))
        subst["@UPSTREAMS@"] = "\n".join(
            "    upstream b%d { server 127.0.0.1:%d; keepalive 64; keepalive_requests 10000000; }"
            % (i, BACKEND_PORTS[i]) for i in range(10))
        subst["@CAPTURES@"] = "\n".join(
            "        location /_b%d/ { internal; proxy_pass http://b%d/; proxy_http_version 1.1; "
            "proxy_set_header Connection \"\"; }" % (i, i) for i in range(10))

        def render(src, dst):
            with open(os.path.join(HERE, src)) as f:
                text = f.read()
            for k, v in subst.items():
                text = text.replace(k, v)
            with open(os.path.join(self.tmp, dst), "w") as f:
                f.write(text)
        render("conf/backends.conf.in", "backends.conf")
        render("conf/peer.conf.in", "peer.conf")
        render("conf/bench.gw.in", "bench.gw")
        for lua in ("agg.lua", "jwt.lua"):
            shutil.copy(os.path.join(HERE, "lua", lua), os.path.join(self.tmp, "lua", lua))
        for root, dirs, files in os.walk(self.tmp):
            for x in dirs:
                os.chmod(os.path.join(root, x), 0o755)
            for x in files:
                os.chmod(os.path.join(root, x), 0o644)
        self.loadgen = os.path.join(self.tmp, "loadgen")
        subprocess.run(["cc", "-O2", "-o", self.loadgen, os.path.join(HERE, "loadgen.c")], check=True)

    def start_backends(self):
        cmd = ["taskset", "-c", "0", self.nginx, "-p", self.tmp, "-c", os.path.join(self.tmp, "backends.conf"),
               "-g", "daemon off;"]
        self.backends = System("backends", cmd, BACKEND_PORTS[9], os.path.join(self.tmp, "backends.log"))
        self.backends.kind = "peer"
        for i in range(10):
            wait_port(BACKEND_PORTS[i], self.backends.proc, "backend nginx")

    def start_peer(self):
        cmd = ["taskset", "-c", "1", self.nginx, "-p", self.tmp, "-c", os.path.join(self.tmp, "peer.conf"),
               "-g", "daemon off;"]
        return System("peer", cmd, PEER_PORT, os.path.join(self.tmp, "peer.log"))

    def gwd_cmd(self):
        return [self.gwd, "--listen", "127.0.0.1:%d" % GW_PORT, "--admin", "", "--workers", "1",
                "--drain-timeout", "1000", "--access-log", "off", os.path.join(self.tmp, "bench.gw")]

    def start_gw(self):
        return System("gw", ["taskset", "-c", "1"] + self.gwd_cmd(), GW_PORT, os.path.join(self.tmp, "gwd.log"))

    def cleanup(self):
        for s in self.systems:
            try:
                s.stop()
            except Exception:
                pass
        if self.backends:
            self.backends.stop()
        if self.jwt:
            self.jwt.close()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log("bench: kept", self.tmp)

    # -- one scenario
    def load(self, sc):
        """(wrk headers, wrk script) of a scenario: a jwt scenario's token in an
        Authorization header, or (cold) bench/lua/wrk_tokens.lua cycling through
        JWT_COLD_TOKENS of them."""
        hdrs = list(sc.get("headers", []))
        alg = sc.get("jwt")
        if not alg:
            return hdrs, None
        if sc.get("cold"):
            return hdrs, [os.path.join(HERE, "lua", "wrk_tokens.lua"), self.jwt.file(alg, JWT_COLD_TOKENS)]
        return hdrs + ["Authorization: Bearer " + self.jwt.get(alg, 1)[0]], None

    def same_answer(self, sc, gw, peer):
        if sc.get("headers"):
            return "n/a"
        auth = {}
        if sc.get("jwt"):
            auth = {"Authorization": "Bearer " + self.jwt.get(sc["jwt"], 1)[0]}
        sg, bg = fetch(gw.port, sc["path"], auth)
        sp, bp = fetch(peer.port, sc["path"], auth)
        try:
            same = sg == sp and json.loads(bg) == json.loads(bp)
        except ValueError:
            same = False
        if not same:
            log("bench: %s: gwd and the peer answer differently:\n  gwd  %d %s\n  peer %d %s"
                % (sc["name"], sg, bg[:300], sp, bp[:300]))
        if same and auth:
            # a token with one signature character changed: 401 on both sides
            tok = auth["Authorization"]
            bad = {"Authorization": tok[:-10] + ("B" if tok[-10] == "A" else "A") + tok[-9:]}
            sg, bg = fetch(gw.port, sc["path"], bad)
            sp, bp = fetch(peer.port, sc["path"], bad)
            if not (sg == sp == 401):
                log("bench: %s: a bad token is not refused by both sides:\n  gwd  %d %s\n  peer %d %s"
                    % (sc["name"], sg, bg[:300], sp, bp[:300]))
                same = False
        return "yes" if same else "NO"

    def scenario(self, sc):
        a = self.args
        log("== %s" % sc["name"])
        peer, gw = self.start_peer(), self.start_gw()
        self.systems = [peer, gw]
        res = {"name": sc["name"], "peer": sc["peer"], "note": sc.get("note", ""), "rounds": {"gw": [], "peer": []},
               "latency": []}
        try:
            res["same_json"] = self.same_answer(sc, gw, peer)
            hdrs, script = self.load(sc)
            secs = a.duration if sc["lat"] or a.quick else max(4, a.duration - 2)
            # warm-up: pools filled, LuaJIT traces compiled
            for s in (peer, gw):
                run_wrk(s.port, sc["path"], 1, hdrs, script)
            for r in range(a.rounds):
                order = (peer, gw) if r % 2 == 0 else (gw, peer)
                for s in order:
                    u0, k0 = s.cpu()
                    w = run_wrk(s.port, sc["path"], secs, hdrs, script)
                    u1, k1 = s.cpu()
                    n = w["requests"]
                    w["cpu_s"] = (u1 - u0) + (k1 - k0)
                    w["cpu_us_per_req"] = w["cpu_s"] * 1e6 / n if n else None
                    w["usr_us_per_req"] = (u1 - u0) * 1e6 / n if n else None
                    w["sys_us_per_req"] = (k1 - k0) * 1e6 / n if n else None
                    res["rounds"][s.kind].append(w)
                    log("   %-4s round %d: %8.0f req/s  %6s µs CPU/req (user %s, kernel %s)  p50 %s ms  p99 %s ms"
                        "  errors %d"
                        % (s.kind, r + 1, w["rps"], fnum(w["cpu_us_per_req"], 1), fnum(w["usr_us_per_req"], 1),
                           fnum(w["sys_us_per_req"], 1), fnum(w["p50_ms"], 2),
                           fnum(w["p99_ms"], 2), w["non2xx"] + w["sockerr"]))
            peak = med([w["rps"] for w in res["rounds"]["peer"]])
            if sc["lat"] and peak:
                fracs = sc.get("fracs") or ([0.5] if a.quick else [0.25, 0.5, 0.75])
                for i, frac in enumerate(fracs):
                    rate = peak * frac
                    row = {"frac": frac, "rate": rate}
                    order = (peer, gw) if i % 2 == 0 else (gw, peer)
                    for s in order:
                        lg = run_loadgen(self.loadgen, s.port, sc["path"],
                                         ["-r", "%.0f" % rate, "-d", str(a.lat_duration), "-c", str(CONNS)],
                                         a.lat_duration + 30)
                        row[s.kind] = lg
                        log("   %-4s at %3d%% (%6.0f/s): p50 %s µs  p99 %s µs  late %d errors %d"
                            % (s.kind, frac * 100, rate, fnum(lg.get("p50_us")), fnum(lg.get("p99_us")),
                               lg.get("late", 0), lg.get("errors", 0)))
                    res["latency"].append(row)
            res["rss_kb"] = {"gw": gw.hwm_kb(), "peer": peer.hwm_kb()}
        finally:
            for s in (peer, gw):
                s.stop()
            self.systems = []
        self.results["scenarios"].append(res)

    # -- callgrind
    def callgrind_run(self, path, nreq, out):
        """gwd under callgrind serving nreq requests on one connection; returns the
        per-function self costs and the total, written when gwd exits."""
        cmd = ["taskset", "-c", "1", "valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + self.gwd_cmd()
        s = System("gw", cmd, GW_PORT, os.path.join(self.tmp, "callgrind.log"))
        try:
            lg = run_loadgen(self.loadgen, GW_PORT, path, ["-n", str(nreq), "-c", "1"], 900)
        finally:
            s.stop()
        ann = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", out],
                             capture_output=True, text=True, timeout=120).stdout
        total, fns = None, {}
        for line in ann.splitlines():
            m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*)$", line)
            if not m:
                continue
            v = int(m.group(1).replace(",", ""))
            if "PROGRAM TOTALS" in line:
                total = v
            else:
                fn = m.group(2)
                obj = re.search(r"\s+\[([^]]*)\]$", fn)
                fn = fn[:obj.start()] if obj else fn
                if fn.startswith("???") and obj:
                    fn = "%s (%s)" % (fn, os.path.basename(obj.group(1)))
                fns[fn] = fns.get(fn, 0) + v
        return total, fns, int(lg.get("ok", 0)), int(lg.get("errors", 0))

    def callgrind(self, path="/agg3"):
        """Instructions per request = (run with W+N requests − run with W) / N, so
        start-up, program compilation and shutdown cancel out."""
        if not shutil.which("valgrind"):
            log("bench: valgrind missing; no instruction counts")
            return
        a = self.args
        warm, n = (50, 300) if a.quick else (200, 2000)
        log("== callgrind: gwd %s, (%d + %d) − %d requests" % (path, warm, n, warm))
        t0 = time.time()
        base_total, base_fns, ok0, err0 = self.callgrind_run(path, warm, os.path.join(self.tmp, "cg.base"))
        out = os.path.join(self.tmp, "cg.full")
        total, fns, ok1, err1 = self.callgrind_run(path, warm + n, out)
        ok = ok1 - ok0
        if not (total and base_total and ok > 0) or err0 or err1:
            log("bench: callgrind runs failed (%s errors)" % (err0 + err1))
            return
        per = (total - base_total) / ok
        top = sorted(((fns[f] - base_fns.get(f, 0), f) for f in fns), reverse=True)[:15]
        top = [(d / ok, 100.0 * d / (total - base_total), f) for d, f in top]
        self.results["callgrind"] = {"path": path, "requests": ok, "instructions": total - base_total,
                                     "per_request": per, "top": top}
        log("   %s instructions per request (%.0f s)" % (fnum(per), time.time() - t0))
        if a.save_callgrind:
            name = "agg3" if path == "/agg3" else path.strip("/").replace("/", "_")
            shutil.copy(out, os.path.join(HERE, "results", "callgrind.%s.out" % name))

    # -- soak (not run by default)
    def soak(self, minutes):
        a = self.args
        log("== soak: agg-3 at 50%% of OpenResty's peak for %d min" % minutes)
        peer = self.start_peer()
        self.systems = [peer]
        run_wrk(peer.port, "/agg3", 1)
        peak = run_wrk(peer.port, "/agg3", 5)["rps"]
        peer.stop()
        gw = self.start_gw()
        self.systems = [gw]
        samples = []
        try:
            step = 30
            for i in range(max(1, minutes * 60 // step)):
                lg = run_loadgen(self.loadgen, gw.port, "/agg3",
                                 ["-r", "%.0f" % (peak * 0.5), "-d", str(step), "-c", str(CONNS)], step + 30)
                pid = gw.serving_pid()
                fds = len(os.listdir("/proc/%d/fd" % pid))
                samples.append({"t": (i + 1) * step, "rss_kb": status_kb(pid, "VmRSS"), "fds": fds,
                                "p99_us": lg.get("p99_us"), "errors": lg.get("errors")})
                log("   t=%4ds RSS %d kB fds %d p99 %s µs" % (samples[-1]["t"], samples[-1]["rss_kb"], fds,
                                                              fnum(lg.get("p99_us"))))
        finally:
            gw.stop()
            self.systems = []
        first = samples[min(1, len(samples) - 1)]  # after the first interval: warmed up
        last = samples[-1]
        self.results["soak"] = {"rate": peak * 0.5, "samples": samples,
                                "rss_drift": (last["rss_kb"] - first["rss_kb"]) / first["rss_kb"] if first["rss_kb"] else None,
                                "fds_first": first["fds"], "fds_last": last["fds"]}

    # -- the whole run
    def run(self):
        a = self.args
        t0 = time.time()
        self.results["machine"] = machine()
        self.results["commit"] = commit()
        self.results["mode"] = "quick" if a.quick else "default"
        self.results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.results["settings"] = {"rounds": a.rounds, "duration_s": a.duration, "lat_duration_s": a.lat_duration,
                                    "connections": CONNS}
        self.results["bodies"] = {}
        try:
            self.write_configs()
            self.results["bodies"] = self.sizes
            self.start_backends()
            if a.profile:
                for path in a.profile:
                    self.callgrind(path)
                    cg = self.results.get("callgrind")
                    if cg:
                        print("%s: %s instructions per request" % (path, fnum(cg["per_request"])))
                        for per, pct, fn in cg["top"]:
                            print("  %10s  %5.1f%%  %s" % (fnum(per), pct, fn))
                return
            if not a.soak_only:
                for sc in SCENARIOS:
                    if a.only and sc["name"] not in a.only:
                        continue
                    if a.quick and not sc["quick"] and not a.only:
                        continue
                    self.scenario(sc)
                if not a.no_callgrind and (not a.only or "agg-3" in a.only):
                    self.callgrind()
            if a.soak:
                self.soak(a.soak_minutes)
        finally:
            self.cleanup()
        self.results["elapsed_s"] = time.time() - t0
        if not a.profile:
            write_results(self.results, a)


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release()}


def commit():
    try:
        h = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return h + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


# ---------------------------------------------------------------- output

def summarize(sc):
    g, p = sc["rounds"]["gw"], sc["rounds"]["peer"]
    s = {}
    for who, rounds in (("gw", g), ("peer", p)):
        s[who] = {
            "rps": med([w["rps"] for w in rounds]), "rps_range": rng([w["rps"] for w in rounds]),
            "cpu": med([w["cpu_us_per_req"] for w in rounds]), "cpu_range": rng([w["cpu_us_per_req"] for w in rounds]),
            "p50": med([w["p50_ms"] for w in rounds]), "p99": med([w["p99_ms"] for w in rounds]),
            "errors": sum(w["non2xx"] + w["sockerr"] for w in rounds),
        }
    return s


def table(results):
    L = []
    m, a = results["machine"], results
    L.append("# gw benchmark — %s run" % a["mode"])
    L.append("")
    L.append("- machine: %d × %s, Linux %s" % (m["nproc"], m["cpu"], m["kernel"]))
    L.append("- commit: `%s`" % a["commit"])
    L.append("- date: %s; took %.0f s" % (a["started"], a.get("elapsed_s", 0)))
    st = a["settings"]
    L.append("- placement: load generator + mock backends on CPU 0, system under test alone on CPU 1, one worker "
             "each; %d round(s) of %d s per system (wrk, %d connections), alternating peer/gwd"
             % (st["rounds"], st["duration_s"], st["connections"]))
    L.append("- figures: median over rounds [min–max]; *ratio* = gwd / peer. CPU = utime+stime of the process "
             "tree under test / requests served (lower is better; *peer/gwd* > 1 means gwd is more efficient)")
    L.append("")
    if a["scenarios"]:
        L.append("## Throughput and CPU per request")
        L.append("")
        L.append("| scenario | peer | same JSON | gwd req/s | peer req/s | req/s ratio | gwd CPU µs/req | "
                 "peer CPU µs/req | CPU peer/gwd | gwd RSS MB | peer RSS MB | closed-loop p50 / p99 ms gwd | peer | errors gwd/peer |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for sc in a["scenarios"]:
            s = summarize(sc)
            g, p = s["gw"], s["peer"]
            L.append("| %s | %s | %s | %s [%s–%s] | %s [%s–%s] | **%s** | %s [%s–%s] | %s [%s–%s] | **%s** | %s | %s | %s / %s | %s / %s | %d / %d |" % (
                sc["name"], sc["peer"], sc.get("same_json", "?"),
                fnum(g["rps"]), fnum(g["rps_range"][0]), fnum(g["rps_range"][1]),
                fnum(p["rps"]), fnum(p["rps_range"][0]), fnum(p["rps_range"][1]),
                fratio(g["rps"], p["rps"]),
                fnum(g["cpu"], 1), fnum(g["cpu_range"][0], 1), fnum(g["cpu_range"][1], 1),
                fnum(p["cpu"], 1), fnum(p["cpu_range"][0], 1), fnum(p["cpu_range"][1], 1),
                fratio(p["cpu"], g["cpu"]),
                fnum(sc["rss_kb"]["gw"] / 1024, 1), fnum(sc["rss_kb"]["peer"] / 1024, 1),
                fnum(g["p50"], 2), fnum(g["p99"], 2), fnum(p["p50"], 2), fnum(p["p99"], 2),
                g["errors"], p["errors"]))
        notes = [sc for sc in a["scenarios"] if sc["note"]]
        if notes:
            L.append("")
            for sc in notes:
                L.append("- %s: %s." % (sc["name"], sc["note"]))
        lat = [sc for sc in a["scenarios"] if sc["latency"]]
        if lat:
            L.append("")
            L.append("## Latency at fixed rates (open loop, from the intended send time)")
            L.append("")
            L.append("Rates are fractions of the peer's median req/s above; %d connections; %d s per point. "
                     "*late* = requests still queued or unanswered at the end (counted with their age)."
                     % (CONNS, a["settings"]["lat_duration_s"]))
            L.append("")
            L.append("| scenario | rate | gwd p50 µs | gwd p99 µs | peer p50 µs | peer p99 µs | p99 gwd/peer | late gwd/peer |")
            L.append("|---|---|---|---|---|---|---|---|")
            for sc in lat:
                for row in sc["latency"]:
                    g, p = row.get("gw", {}), row.get("peer", {})
                    L.append("| %s | %d%% (%s/s) | %s | %s | %s | %s | **%s** | %d / %d |" % (
                        sc["name"], row["frac"] * 100, fnum(row["rate"]),
                        fnum(g.get("p50_us")), fnum(g.get("p99_us")), fnum(p.get("p50_us")), fnum(p.get("p99_us")),
                        fratio(g.get("p99_us"), p.get("p99_us")), g.get("late", 0), p.get("late", 0)))
    cg = a.get("callgrind")
    if cg:
        L.append("")
        L.append("## Instructions per request (callgrind, gwd alone, one connection)")
        L.append("")
        L.append("| scenario | requests | instructions | **instructions / request** |")
        L.append("|---|---|---|---|")
        L.append("| agg-3 (`%s`) | %d | %s | **%s** |" % (cg["path"], cg["requests"], fnum(cg["instructions"]),
                                                         fnum(cg["per_request"])))
        if cg["top"]:
            L.append("")
            L.append("Top functions (self instructions, share of the total):")
            L.append("")
            L.append("| instructions / request | share | function |")
            L.append("|---|---|---|")
            for ins, pctv, fn in cg["top"][:10]:
                L.append("| %s | %.1f%% | `%s` |" % (fnum(ins), pctv, fn.replace("|", "\\|")))
    so = a.get("soak")
    if so:
        L.append("")
        L.append("## Soak (agg-3 at %s req/s)" % fnum(so["rate"]))
        L.append("")
        L.append("RSS drift %s; open fds %d → %d." % (
            "%.1f%%" % (so["rss_drift"] * 100) if so["rss_drift"] is not None else "—", so["fds_first"], so["fds_last"]))
    L.append("")
    L.append("Backend bodies (bytes): " + ", ".join("%s %d" % kv for kv in sorted(a.get("bodies", {}).items())))
    return "\n".join(L) + "\n"


def chart(results, outdir):
    if not shutil.which("gnuplot") or not results["scenarios"]:
        return None
    datf = os.path.join(outdir, "latest.dat")
    with open(datf, "w") as f:
        f.write("# scenario rps_ratio cpu_efficiency(peer/gwd)\n")
        for sc in results["scenarios"]:
            s = summarize(sc)
            rr = s["gw"]["rps"] / s["peer"]["rps"] if s["gw"]["rps"] and s["peer"]["rps"] else 0
            ce = s["peer"]["cpu"] / s["gw"]["cpu"] if s["gw"]["cpu"] and s["peer"]["cpu"] else 0
            f.write('"%s" %.3f %.3f\n' % (sc["name"], rr, ce))
    svg = os.path.join(outdir, "latest.svg")
    title = "gwd vs peer (%s, %s)" % (results["commit"][:12], results["machine"]["cpu"])
    script = """
set terminal svg size 900,420 dynamic font 'sans,11'
set output '%s'
set title "%s" noenhanced
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set yrange [0:*]
set ylabel 'ratio (1 = same as the peer; higher is better for gwd)'
set xtics rotate by -20 noenhanced
set grid ytics
set key top right
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb '#444444' front
plot '%s' using 2:xtic(1) title 'req/s gwd / peer', '' using 3 title 'CPU per request peer / gwd'
""" % (svg, title, datf)
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    os.unlink(datf)
    if r.returncode != 0:
        log("bench: gnuplot failed:", r.stderr.strip())
        return None
    return svg


def write_results(results, args):
    outdir = os.path.join(HERE, "results")
    os.makedirs(outdir, exist_ok=True)
    md = table(results)
    svg = chart(results, outdir)
    if svg:
        md += "\n![gwd vs peer](latest.svg)\n"
    with open(os.path.join(outdir, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(outdir, "latest.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(md)
    log("bench: wrote %s/latest.md%s (%.0f s)" % (outdir, " and latest.svg" if svg else "", results.get("elapsed_s", 0)))


def main():
    ap = argparse.ArgumentParser(description="gwd side by side with nginx and OpenResty")
    ap.add_argument("build_dir", help="the build directory holding gwd (e.g. build)")
    ap.add_argument("--quick", action="store_true", help="~2 minutes: fewer, shorter rounds, fewer scenarios")
    ap.add_argument("--only", type=lambda s: s.split(","), help="comma-separated scenario names")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--duration", type=int, help="seconds per wrk round")
    ap.add_argument("--lat-duration", type=int, help="seconds per fixed-rate latency point")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--save-callgrind", action="store_true", help="copy the agg-3 callgrind profile into results/")
    ap.add_argument("--profile", type=lambda s: s.split(","), metavar="PATHS",
                    help="only the callgrind figure for these gwd paths (e.g. /agg3,/proxy1); writes no results")
    ap.add_argument("--soak", action="store_true", help="also run the soak (agg-3 at 50%% load, RSS and fds)")
    ap.add_argument("--soak-only", action="store_true", help="run only the soak")
    ap.add_argument("--soak-minutes", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, profiles)")
    a = ap.parse_args()
    if a.soak_only:
        a.soak = True
    if a.rounds is None:
        a.rounds = 2 if a.quick else 3
    if a.duration is None:
        a.duration = 4 if a.quick else 8
    if a.lat_duration is None:
        a.lat_duration = 3 if a.quick else 4
    b = Bench(a)

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    b.run()


if __name__ == "__main__":
    main()
