#!/usr/bin/python3
"""The test runner: golden tests of gwc, lexer chunk tests, robustness
tests, examples. Prints one line per failure and a final
"N passed, N failed" line; exits 1 if anything failed.

GW_UPDATE=1 rewrites the expected files from the current output (review
the diff before committing)."""
import os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.join(ROOT, sys.argv[1] if len(sys.argv) > 1 else "build")
GWC = os.path.join(B, "gwc")
UPDATE = os.environ.get("GW_UPDATE") == "1"
passed = failed = 0


def ok(name):
    global passed
    passed += 1


def bad(name, why):
    global failed
    failed += 1
    print("FAIL %s: %s" % (name, why))


def gwc(*args, **kw):
    return subprocess.run([GWC] + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=60, **kw)


def test_examples():
    for d in ["endpoints"] + sorted("examples/" + x for x in os.listdir(os.path.join(ROOT, "examples"))
                                    if os.path.isdir(os.path.join(ROOT, "examples", x))):
        r = gwc("check", d)
        if r.returncode == 0 and r.stderr == "":
            ok(d)
        else:
            bad("compile " + d, "exit %d\n%s" % (r.returncode, r.stderr))


if __name__ == "__main__":
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, tests_dir)
    test_examples()
    try:
        import suites
        suites.run(sys.modules[__name__])
    except ImportError:
        pass
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
