"""Test suites run by tests/run.py (suites.run(runner)):

  lexer chunks     build/test_lexer over every .gw of endpoints/, examples/ and
                   tests/corpus/lexer/: the token stream must not depend on how
                   the input is cut into reads
  parser chunks    `gwc check` with GWC_LEX_CHUNK=1 and 7 says what it says
                   reading whole files
  lexer golden     the token streams of tests/corpus/lexer/*.gw against their
                   .tokens files (GW_UPDATE=1 rewrites them)
  program          build/test_program: the .gwb reader/verifier on hostile images,
                   and in bounded time on a chain of lambdas
  source robustness  hand-written hostile inputs (tests/corpus/robust/) and
                   mutated copies of the endpoints/ and examples/ sources:
                   `gwc check` exits 0 or 1, never crashes or hangs, and every
                   diagnostic has the form path:line:col: severity: message
  .gwb mutants     mutated copies of a compiled program (some with the SHA-256
                   fixed up, so the verifier and not only the checksum is
                   exercised): `gwc dump` exits 0, or 1 with one `gwc: ` line

Everything is seeded: a failure reproduces. Failing mutants are kept in
BUILD/robustness/ with the mutation that made them.
"""
import hashlib
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

SEED = 20240611
N_SRC_MUTANTS = 300
TIMEOUT = 5
WORKERS = 4
MAX_DETAILS = 10          # failures reported in full; later ones in one line each

HEADER = 48
GW_NONE = 0xFFFFFFFF
SEC_BLOB = 29            # GW_SEC_BLOB (gw_bytecode.h)


def _rel(R, p):
    return os.path.relpath(p, R.ROOT)


def _sources(R):
    """The directories of .gw sources (endpoints/, examples/*/) and their files."""
    dirs = [os.path.join(R.ROOT, "endpoints")]
    ex = os.path.join(R.ROOT, "examples")
    dirs += sorted(os.path.join(ex, d) for d in os.listdir(ex) if os.path.isdir(os.path.join(ex, d)))
    out = []
    for d in dirs:
        files = []
        for base, subdirs, names in os.walk(d):
            subdirs.sort()
            files += sorted(os.path.join(base, n) for n in names if n.endswith(".gw"))
        if files:
            out.append((d, files))
    return out


def _binary(R, name):
    path = os.path.join(R.B, name)
    if not os.path.exists(path):
        R.bad(name, "%s is not built" % _rel(R, path))
        return None
    return path


def _sanitizer(text):
    return "Sanitizer" in text or "runtime error:" in text


def _report(R, suite, failures, npassed):
    """One ok per passing case; failures one by one up to MAX_DETAILS."""
    for _ in range(npassed):
        R.ok(suite)
    for k, (name, why) in enumerate(failures):
        R.bad("%s %s" % (suite, name), why if k < MAX_DETAILS else why.split("\n")[0][:120])


def _keep(R, name, data, note):
    """Keep a failing input for reproduction; returns its path."""
    d = os.path.join(R.B, "robustness")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".why", "w") as f:
        f.write(note + "\n")
    return _rel(R, path)


# ---- the lexer ----------------------------------------------------------------

def _parse_c_test(R, suite, r, expect=None):
    """Results of a C test printing 'ok NAME' / 'FAIL NAME: why' lines and
    'N passed, N failed' last."""
    if r.returncode < 0 or _sanitizer(r.stdout + r.stderr):
        R.bad(suite, "crashed (exit %d)\n%s%s" % (r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        return
    lines = r.stdout.splitlines()
    m = re.match(r"^(\d+) passed, (\d+) failed$", lines[-1]) if lines else None
    if not m:
        R.bad(suite, "no summary line (exit %d)\n%s" % (r.returncode, r.stderr[-2000:]))
        return
    seen = []
    for line in lines[:-1]:
        if line.startswith("ok   "):
            seen.append(line[5:].split(":")[0])
            R.ok(suite)
        elif line.startswith("FAIL "):
            seen.append(line[5:].split(":")[0])
            R.bad(suite, line[5:])
    np, nf = int(m.group(1)), int(m.group(2))
    if (nf == 0) != (r.returncode == 0) or np + nf != len(seen):
        R.bad(suite, "summary '%s' does not match the results (exit %d)" % (lines[-1], r.returncode))
    for e in expect or []:
        if e not in seen:
            R.bad(suite, "no result for %s" % e)


def lexer_chunks(R):
    exe = _binary(R, "test_lexer")
    if not exe:
        return
    files = [f for _, fs in _sources(R) for f in fs]
    corpus = os.path.join(R.ROOT, "tests", "corpus", "lexer")
    files += sorted(os.path.join(corpus, f) for f in os.listdir(corpus) if f.endswith(".gw"))
    files = [_rel(R, f) for f in files]
    r = subprocess.run([exe] + files, cwd=R.ROOT, capture_output=True, text=True, errors="replace",
                       timeout=300)
    _parse_c_test(R, "lexer chunks", r, files)


def parser_chunks(R):
    """gwc check with the lexer fed in small chunks (GWC_LEX_CHUNK) must say
    exactly what it says reading whole files."""
    gwc = _binary(R, "gwc")
    if not gwc:
        return
    corpus = os.path.join(R.ROOT, "tests", "corpus", "lexer")
    targets = [d for d, _ in _sources(R)]
    targets += sorted(os.path.join(corpus, f) for f in os.listdir(corpus) if f.endswith(".gw"))
    for t in targets:
        t = _rel(R, t)
        outs = []
        for chunk in ("0", "1", "7"):
            env = dict(os.environ, GWC_LEX_CHUNK=chunk)
            r = subprocess.run([gwc, "check", t], cwd=R.ROOT, capture_output=True, env=env, timeout=60)
            outs.append((r.returncode, r.stderr))
        if r.returncode < 0 or _sanitizer(r.stderr.decode(errors="replace")):
            R.bad("parser chunks " + t, "crashed: exit %d" % r.returncode)
        elif outs[1] == outs[0] and outs[2] == outs[0]:
            R.ok("parser chunks " + t)
        else:
            k = 1 if outs[1] != outs[0] else 2
            R.bad("parser chunks " + t, "GWC_LEX_CHUNK=%s changes the result: exit %d vs %d\n%s\n---\n%s"
                  % ("17"[k - 1], outs[k][0], outs[0][0], outs[0][1].decode(errors="replace")[-800:],
                     outs[k][1].decode(errors="replace")[-800:]))


def lexer_golden(R):
    exe = _binary(R, "test_lexer")
    if not exe:
        return
    corpus = os.path.join(R.ROOT, "tests", "corpus", "lexer")
    for name in sorted(os.listdir(corpus)):
        path = os.path.join(corpus, name)
        if not name.endswith(".gw") or os.path.getsize(path) >= 4096:
            continue
        r = subprocess.run([exe, "--dump", _rel(R, path)], cwd=R.ROOT, capture_output=True, timeout=60)
        want_path = path[:-3] + ".tokens"
        if r.returncode != 0:
            R.bad("lexer golden " + name, "exit %d: %s" % (r.returncode, r.stderr.decode(errors="replace")))
            continue
        if R.UPDATE:
            with open(want_path, "wb") as f:
                f.write(r.stdout)
        if not os.path.exists(want_path):
            R.bad("lexer golden " + name, "%s is missing (make test-update writes it)" % _rel(R, want_path))
            continue
        with open(want_path, "rb") as f:
            want = f.read()
        if want == r.stdout:
            R.ok("lexer golden " + name)
        else:
            got, exp = r.stdout.decode(errors="replace").splitlines(), want.decode(errors="replace").splitlines()
            i = next((i for i in range(min(len(got), len(exp))) if got[i] != exp[i]), min(len(got), len(exp)))
            R.bad("lexer golden " + name, "first difference at line %d:\n  expected: %s\n  got:      %s"
                  % (i + 1, exp[i] if i < len(exp) else "(end)", got[i] if i < len(got) else "(end)"))


def program_unit(R):
    exe = _binary(R, "test_program")
    if not exe:
        return
    r = subprocess.run([exe, "tests/corpus/program/small.gw"], cwd=R.ROOT, capture_output=True,
                       text=True, errors="replace", timeout=120)
    _parse_c_test(R, "program", r)
    # lambdas that each run the next one twice: 2^40 paths through 40
    # blocks; the verifier must not walk them all
    try:
        r = subprocess.run([exe, "--chain=40", "tests/corpus/program/small.gw"], cwd=R.ROOT,
                           capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        R.bad("program nested lambdas", "verifying a chain of 40 lambdas, each running the next twice, "
              "took over %d s (block_reads in gw_program.c is exponential; "
              "repro: %s --chain=24 takes visibly long)" % (TIMEOUT, _rel(R, exe)))
        return
    if r.returncode == 0 and "lambda chain of 40 finished" in r.stdout:
        R.ok("program nested lambdas")
    else:
        R.bad("program nested lambdas", "exit %d\n%s" % (r.returncode, r.stdout[-1000:]))


# ---- source mutants -------------------------------------------------------------

TOKENS = [b"{", b"}", b'"', b"#", b"\x00", b"..", b"...", b"{{", b"}}", b"\\", b"\\u", b"\\ud800",
          b"\\ud83d\\ude00", b"=", b"==", b"?", b"??", b"[", b"]", b"[?", b"[*]", b"(", b")", b",",
          b":", b";", b"*", b"/", b"{id:int}", b"{rest*}", b"{x:uuid}", b"endpoint", b"respond",
          b"fail", b"proxy", b"GET", b"POST", b"auth", b"limit", b"cache", b"backend", b"server",
          b"import", b"1e999", b"99999999999999999999", b"0.", b"-", b"!", b"\n", b"\t", b"\r",
          b"\xff", b"\xc3", b"\xe2\x82", "\u00e9".encode(), b".", b"null", b"true", b"env(", b"len(",
          b"10ms", b"0ms", b"5/s", b"0/s", b"1mb", b"999999999999gb", b"respond 200", b"fail 999",
          b"endpoint GET /", b"x = users GET \"/\"\n", b"optional", b"default", b"if", b"in",
          b'"{', b'}"', b"{ a: 1 }", b"[1, 2]", b"sort_by(", b"...x", b"query.", b"jwt.", b"body."]


def _mutate(rng, data):
    """One to three random edits of data; returns (bytes, description)."""
    what = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        n = len(data)
        kind = rng.choice(("flip", "byte", "delete", "insert", "token", "token", "token",
                           "truncate", "dupline", "delline", "swaplines"))
        pos = rng.randrange(n + 1)
        if kind == "flip" and n:
            pos = min(pos, n - 1)
            bit = 1 << rng.randrange(8)
            data = data[:pos] + bytes([data[pos] ^ bit]) + data[pos + 1:]
            what.append("flip bit %d at %d" % (bit, pos))
        elif kind == "byte" and n:
            pos = min(pos, n - 1)
            b = rng.randrange(256)
            data = data[:pos] + bytes([b]) + data[pos + 1:]
            what.append("byte %d at %d" % (b, pos))
        elif kind == "delete" and n:
            k = rng.randint(1, 16)
            data = data[:pos] + data[pos + k:]
            what.append("delete %d at %d" % (k, pos))
        elif kind == "insert":
            ins = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            data = data[:pos] + ins + data[pos:]
            what.append("insert %r at %d" % (ins, pos))
        elif kind == "token":
            tok = rng.choice(TOKENS)
            data = data[:pos] + tok + data[pos:]
            what.append("insert %r at %d" % (tok, pos))
        elif kind == "truncate":
            data = data[:pos]
            what.append("truncate at %d" % pos)
        else:
            lines = data.split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if kind == "dupline":
                lines.insert(i, lines[i])
                what.append("duplicate line %d" % (i + 1))
            elif kind == "delline":
                del lines[i]
                what.append("delete line %d" % (i + 1))
            else:
                lines[i], lines[j] = lines[j], lines[i]
                what.append("swap lines %d and %d" % (i + 1, j + 1))
            data = b"\n".join(lines)
    return data, "; ".join(what)


DIAG_RE = re.compile(r"^(?P<path>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning|note): \S")
NOTE_RE = re.compile(r"^(?P<path>[^\s:][^:]*): note: too many errors, stopping this file$")


def _check_diagnostics(stderr, prefix):
    """Problems with gwc's stderr: every unindented line must be a
    diagnostic about a file under prefix. Returns (problem, nerrors)."""
    nerr = 0
    for line in stderr.split("\n"):
        if line == "" or line.startswith("    "):
            continue        # source line and caret
        m = DIAG_RE.match(line) or NOTE_RE.match(line)
        if not m:
            return "not a diagnostic line: %r" % line[:200], nerr
        if not m.group("path").startswith(prefix):
            return "diagnostic about an unexpected file: %r" % line[:200], nerr
        if m.re is DIAG_RE:
            if int(m.group("line")) < 1 or int(m.group("col")) < 1:
                return "bad position: %r" % line[:200], nerr
            if m.group("sev") == "error":
                nerr += 1
    return None, nerr


def _run_check(gwc, cwd, name):
    try:
        r = subprocess.run([gwc, "check", name], cwd=cwd, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, "timed out after %d s" % TIMEOUT
    out = r.stdout.decode("utf-8", "replace")
    err = r.stderr.decode("utf-8", "replace")
    if r.returncode < 0:
        return None, "killed by signal %d" % -r.returncode
    if _sanitizer(err):
        return None, "sanitizer report:\n" + err[-3000:]
    if r.returncode not in (0, 1):
        return None, "exit %d\n%s" % (r.returncode, err[-1000:])
    if "internal error" in out + err:
        return None, "internal error:\n" + err[-1000:]
    if out:
        return None, "output on stdout: %r" % out[:200]
    problem, nerr = _check_diagnostics(err, name + "/")
    if problem:
        return None, problem
    if r.returncode == 1 and nerr == 0:
        return None, "exit 1 without an error diagnostic"
    if r.returncode == 0 and nerr:
        return None, "exit 0 with %d error diagnostics" % nerr
    return r.returncode, None


def source_mutants(R):
    gwc = _binary(R, "gwc")
    if not gwc:
        return
    t0 = time.perf_counter()
    rng = random.Random(SEED)
    sources = _sources(R)
    pool = [(d, f) for d, fs in sources for f in fs]
    corpus = os.path.join(R.ROOT, "tests", "corpus", "robust")
    failures = []
    with tempfile.TemporaryDirectory(prefix="gw-mut-") as tmp:
        jobs = []       # (dir name, kind, source file, mutation, data)
        # the unmodified copies must compile: the setup itself is sound
        for i, (d, _) in enumerate(sources):
            name = "base%d" % i
            shutil.copytree(d, os.path.join(tmp, name))
            jobs.append((name, "base", d, None, None))
        # hand-written hostile inputs, each alone in a directory
        for i, f in enumerate(sorted(x for x in os.listdir(corpus) if x.endswith(".gw"))):
            name = "c%d" % i
            os.mkdir(os.path.join(tmp, name))
            shutil.copy(os.path.join(corpus, f), os.path.join(tmp, name, f))
            jobs.append((name, "corpus", os.path.join(corpus, f), None, None))
        for i in range(N_SRC_MUTANTS):
            d, f = rng.choice(pool)
            with open(f, "rb") as fh:
                data, what = _mutate(rng, fh.read())
            name = "m%d" % i
            shutil.copytree(d, os.path.join(tmp, name))
            with open(os.path.join(tmp, name, os.path.relpath(f, d)), "wb") as fh:
                fh.write(data)
            jobs.append((name, "mutant", f, what, data))

        def one(job):
            return job, _run_check(gwc, tmp, job[0])

        with ThreadPoolExecutor(WORKERS) as ex:
            results = list(ex.map(one, jobs))
    counts = {0: 0, 1: 0}
    npass = nfail = 0
    for (name, kind, f, what, data), (rc, problem) in results:
        if kind == "base":
            if problem or rc != 0:
                failures.append(("copy of " + _rel(R, f), "the unmodified copy does not compile: %s"
                                 % (problem or "exit %s" % rc)))
            else:
                npass += 1
        elif kind == "corpus":
            if problem:
                failures.append((_rel(R, f), problem))
            else:
                npass += 1
        elif problem:
            nfail += 1
            kept = _keep(R, "src-%s-%s" % (name, os.path.basename(f)), data,
                         "%s mutated: %s (check it in a copy of %s)" % (_rel(R, f), what, _rel(R, os.path.dirname(f))))
            failures.append(("%s (%s: %s; kept as %s)" % (name, _rel(R, f), what, kept), problem))
        else:
            counts[rc] += 1
            npass += 1
    print("source mutants: %d checked: %d accepted, %d refused with diagnostics, %d failed (%.1f s)"
          % (N_SRC_MUTANTS, counts[0], counts[1], nfail, time.perf_counter() - t0))
    _report(R, "source robustness", failures, npass)


# ---- .gwb mutants -----------------------------------------------------------------

def _fix_sha(img):
    img[16:48] = hashlib.sha256(bytes(img[HEADER:])).digest()


def _u32(img, off):
    return struct.unpack_from("<I", img, off)[0]


def _put(img, off, v):
    struct.pack_into("<I", img, off, v & 0xFFFFFFFF)


def _table(img):
    nsec = _u32(img, 12)
    return [(HEADER + 12 * s,) + struct.unpack_from("<III", img, HEADER + 12 * s) for s in range(nsec)]


def _interesting(rng, orig, n):
    return rng.choice((0, 1, 2, 3, 4, 7, 8, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
                       GW_NONE, GW_NONE - 1, orig + 1, orig - 1, orig + 4, orig - 4, orig * 2,
                       orig ^ (1 << rng.randrange(32)), n, n - 4, n + 4, rng.randrange(64),
                       rng.randrange(1 << 32)))


def _gwb_mutant(rng, valid, kind, ids):
    img = bytearray(valid)
    n = len(img)
    table = _table(img)
    if kind == "flip":               # anywhere, checksum not fixed
        pos = rng.randrange(n)
        img[pos] ^= 1 << rng.randrange(8)
        return img, "flip at %d" % pos
    if kind == "truncate":
        k = rng.randrange(n)
        return img[:k], "truncate to %d" % k
    if kind == "truncate+sha":
        k = rng.randrange(HEADER, n)
        img = img[:k]
        _fix_sha(img)
        return img, "truncate to %d, checksum fixed" % k
    if kind == "table+sha":
        if rng.random() < 0.15:
            v = _interesting(rng, _u32(img, 12), len(table))
            _put(img, 12, v)
            _fix_sha(img)
            return img, "section count := %d, checksum fixed" % (v & 0xFFFFFFFF)
        at, sid, off, size = rng.choice(table)
        field = rng.randrange(3)
        orig = (sid, off, size)[field]
        if field == 0 and rng.random() < 0.5:
            v = rng.choice([t[1] for t in table] + [0, 30, 31, 32, 33])
        else:
            v = _interesting(rng, orig, n)
        _put(img, at + 4 * field, v)
        _fix_sha(img)
        return img, "section %d %s := %d, checksum fixed" % (sid, ("id", "offset", "size")[field], v & 0xFFFFFFFF)
    if kind == "body+sha":           # random bytes after the table
        start = HEADER + 12 * len(table)
        what = []
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(start, n)
            img[pos] = rng.randrange(256)
            what.append(str(pos))
        _fix_sha(img)
        return img, "bytes at %s randomized, checksum fixed" % ",".join(what)
    # "record+sha": one u32 field of one record, set to an edge value
    secs = [t for t in table if t[3] >= 4]
    at, sid, off, size = rng.choice(secs)
    if sid == SEC_BLOB:
        pos = off + rng.randrange(size)
        img[pos] = rng.choice((0x00, 0x22, 0x5C, 0x80, 0xC0, 0xED, 0xFF, ord("x"), ord("-"), ord(".")))
        _fix_sha(img)
        return img, "blob byte %d changed, checksum fixed" % pos
    pos = off + 4 * rng.randrange(size // 4)
    orig = _u32(img, pos)
    if sid == ids["code"] and rng.random() < 0.6:   # a random instruction
        op = rng.randrange(ids["#ops"] + 4)
        a = rng.choice((0, 1, 2, 3, rng.randrange(64), orig >> 8, (orig >> 8) + 1, 0xFFFFFF))
        v = op | a << 8
    else:
        v = _interesting(rng, orig, n)
    _put(img, pos, v)
    _fix_sha(img)
    return img, "section %d word at %d: %d := %d, checksum fixed" % (sid, pos, orig, v & 0xFFFFFFFF)


_ids = {}


def _format_ids(root):
    """Section ids from gw_format.def and the number of opcodes."""
    if not _ids:
        with open(os.path.join(root, "runtime", "gw_format.def")) as f:
            for m in re.finditer(r"S\((\w+),\s*(\d+),", f.read()):
                _ids[m.group(1)] = int(m.group(2))
        with open(os.path.join(root, "runtime", "gw_opcodes.def")) as f:
            _ids["#ops"] = sum(1 for line in f if line.startswith("OP("))
    return _ids


# 300 .gwb mutants in all
GWB_KINDS = [("flip", 40), ("truncate", 25), ("truncate+sha", 15), ("table+sha", 50),
             ("body+sha", 50), ("record+sha", 120)]


def _classify(msg):
    if "checksum mismatch" in msg:
        return "checksum"
    if any(s in msg for s in ("not a gw program", "unsupported format version", "truncated program",
                               "program too large")):
        return "header"
    if any(s in msg for s in ("section id", "outside the file", "whole number of records")):
        return "section table"
    return "verifier"


def gwb_mutants(R):
    gwc = _binary(R, "gwc")
    if not gwc:
        return
    t0 = time.perf_counter()
    ids = _format_ids(R.ROOT)
    rng = random.Random(SEED + 1)
    failures = []
    counts = {"accepted": 0, "checksum": 0, "header": 0, "section table": 0, "verifier": 0}
    npass = 0
    with tempfile.TemporaryDirectory(prefix="gw-gwb-") as tmp:
        valid_path = os.path.join(tmp, "valid.gwb")
        r = R.gwc("build", "-o", valid_path, "endpoints")
        if r.returncode != 0:
            R.bad(".gwb mutants", "gwc build endpoints failed: %s" % r.stderr)
            return
        with open(valid_path, "rb") as f:
            valid = f.read()
        r = subprocess.run([gwc, "dump", "valid.gwb"], cwd=tmp, capture_output=True, timeout=TIMEOUT)
        if r.returncode != 0 or r.stderr or not r.stdout:
            failures.append(("valid", "gwc dump of the valid program: exit %d %r" % (r.returncode, r.stderr[:300])))
        else:
            npass += 1
        jobs = []
        i = 0
        for kind, count in GWB_KINDS:
            for _ in range(count):
                img, what = _gwb_mutant(rng, valid, kind, ids)
                name = "g%d.gwb" % i
                i += 1
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(img)
                jobs.append((name, kind, what, bytes(img)))

        def one(job):
            name = job[0]
            try:
                r = subprocess.run([gwc, "dump", name], cwd=tmp, capture_output=True, timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                return job, None
            return job, r

        with ThreadPoolExecutor(WORKERS) as ex:
            results = list(ex.map(one, jobs))
    for (name, kind, what, img), r in results:
        problem = None
        msg = ""
        if r is None:
            problem = "timed out after %d s" % TIMEOUT
        else:
            err = r.stderr.decode("utf-8", "replace")
            lines = err.split("\n")
            if r.returncode < 0:
                problem = "killed by signal %d" % -r.returncode
            elif _sanitizer(err):
                problem = "sanitizer report:\n" + err[-3000:]
            elif r.returncode == 0:
                if err or not r.stdout:
                    problem = "exit 0 with stderr %r / empty output" % err[:200]
            elif r.returncode == 1:
                if len(lines) != 2 or lines[1] != "" or not lines[0].startswith("gwc: %s: " % name):
                    problem = "exit 1 without a one-line 'gwc: %s: ...' message: %r" % (name, err[:300])
                else:
                    msg = lines[0][len("gwc: %s: " % name):]
                    if not msg.strip():
                        problem = "empty message"
            else:
                problem = "exit %d: %r" % (r.returncode, err[:300])
        if not problem:
            cls = "accepted" if r.returncode == 0 else _classify(msg)
            # self-checks of the mutations: a fixed-up checksum must match,
            # and a damaged body without the fix-up must be caught by it
            if kind.endswith("+sha") and cls == "checksum":
                problem = "the checksum was fixed up, yet: %s" % msg
            elif kind == "flip" and int(what.split()[-1]) >= HEADER and cls != "checksum":
                problem = "a flipped body byte was not caught by the checksum (%s)" % (msg or "accepted")
            elif kind == "truncate" and len(img) >= HEADER + 12 * _u32(valid, 12) and cls != "checksum":
                problem = "a truncated body was not caught by the checksum (%s)" % (msg or "accepted")
            else:
                counts[cls] += 1
                npass += 1
                continue
        kept = _keep(R, name, img, what)
        failures.append(("%s (%s; kept as %s)" % (name, what, kept), problem))
    print(".gwb mutants: %d dumped: %d accepted; refused by the checksum %d, the header checks %d, "
          "the section table checks %d, the verifier %d; %d failed (%.1f s)"
          % (len(jobs), counts["accepted"], counts["checksum"], counts["header"], counts["section table"],
             counts["verifier"], len(failures), time.perf_counter() - t0))
    _report(R, ".gwb mutants", failures, npass)


def run(R):
    for suite in (lexer_chunks, parser_chunks, lexer_golden, program_unit, source_mutants, gwb_mutants):
        t0 = time.perf_counter()
        try:
            suite(R)
        except Exception as e:           # a broken suite is a failure, not a skip
            import traceback
            R.bad(suite.__name__, "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()))
        if os.environ.get("GW_TEST_TIMES"):
            print("  %s: %.1f s" % (suite.__name__, time.perf_counter() - t0), file=sys.stderr)
