"""The harness shared by the e2e suites reload.py, tls.py, ops.py,
resilience.py and cache.py: Fail, check and eq for the tests, and a Suite
that registers tests, runs them one at a time (timing them; a
"FAIL PREFIX/NAME: why" line per failure, with -v an "ok" line per pass),
guards the whole run with a watchdog timer and ends with "N passed, N failed".

Each suite keeps its own differences as arguments: the prefix (e.g.
"e2e-reload"), the watchdog's length, the column width of the "ok" lines, how
much of a failure's text is printed, and setup/run/teardown hooks for its
fixtures. Standard library only.
"""
import os
import sys
import threading
import time

from gwd import HTTPError, suite_args


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise Fail("%s: expected %r, got %r" % (what, expected, actual))


class Suite:
    """One e2e suite run: the command line (BUILD_DIR [-k SUBSTRING] [-v]), the
    registered tests and the passed/failed counts.

    prefix      the name in the FAIL lines: "FAIL PREFIX/TEST: why"
    watchdog    seconds the whole suite may take; then a FAIL line and exit 1
    width       the column width of the test name in the -v "ok" lines
    limit       how many characters of a failure's text are printed
    http_errors True: an HTTPError fails a test as "HTTP: …" (not "HTTPError: …")
    """

    def __init__(self, prefix, root, argv=None, watchdog=180, width=40, limit=600,
                 http_errors=False):
        self.prefix = prefix
        self.build, self.filter, self.verbose = suite_args(sys.argv[1:] if argv is None else argv, root)
        self.gwd_exe = os.path.join(self.build, "gwd")
        self.watchdog_secs = watchdog
        self.width = width
        self.limit = limit
        self.http_errors = http_errors
        self.passed = 0
        self.failed = 0
        self.tests = []         # (name, fn)

    def test(self, f):
        """Decorator: register test_NAME as NAME."""
        self.tests.append((f.__name__.replace("test_", "", 1), f))
        return f

    def selected(self, name):
        return not self.filter or self.filter in name

    def fail(self, name, why, limit=None):
        """Count a failure outside a test (a fixture that did not start)."""
        self.failed += 1
        print("FAIL %s/%s: %s" % (self.prefix, name, why.replace("\n", " ")[:limit or self.limit]))

    def run_one(self, name, fn, gws=(), after=True):
        """Run one test. gws: the gwd processes it needs (None ones are
        skipped): a dead one before the test fails it unrun, one dead after
        it fails it too (unless after is False: a test that stops gwd)."""
        t0 = time.monotonic()
        why = None
        if [g for g in gws if g is not None and not g.alive()]:
            why = "gwd is not running"
        else:
            try:
                fn()
            except Fail as e:
                why = str(e)
            except HTTPError as e:
                why = ("HTTP: %s" % e) if self.http_errors else "%s: %s" % (type(e).__name__, e)
            except Exception as e:  # a test bug or an unexpected answer
                why = "%s: %s" % (type(e).__name__, e)
        if why is None and after:
            for g in gws:
                if g is not None and not g.alive():
                    why = "gwd died (exit %r): %s" % (g.proc.returncode, g.stderr()[-600:])
        dt = time.monotonic() - t0
        if why is None:
            self.passed += 1
            if self.verbose:
                print("ok   %-*s %6.0f ms" % (self.width, name, dt * 1000))
        else:
            self.failed += 1
            print("FAIL %s/%s: %s" % (self.prefix, name, why.replace("\n", " ")[:self.limit]))
        sys.stdout.flush()
        return why is None

    def run_tests(self, gws=()):
        """Every registered test the -k filter selects, in order."""
        for name, fn in self.tests:
            if self.selected(name):
                self.run_one(name, fn, gws)

    def main(self, setup=None, run=None, teardown=None, on_timeout=None,
             timeout_summary=True, timing=False):
        """The whole suite; returns the exit code.

        setup()       before the tests (outside the try); a non-None return
                      ends the suite at once with that exit code
        run()         runs the tests (default: run_tests())
        teardown()    after them, even when run() raised
        on_timeout()  called by the watchdog before it exits (errors ignored)
        timeout_summary  the watchdog also prints "N passed, N failed"
        timing        with -v, print "PREFIX: N.N s" at the end
        """
        if not os.path.exists(self.gwd_exe):
            print("FAIL %s: %s not found (build it first)" % (self.prefix, self.gwd_exe))
            print("0 passed, 1 failed")
            return 1
        t_start = time.monotonic()

        def watchdog():
            print("FAIL %s: the suite exceeded %d s; stopping" % (self.prefix, self.watchdog_secs))
            if timeout_summary:
                print("%d passed, %d failed" % (self.passed, self.failed + 1))
            sys.stdout.flush()
            try:
                if on_timeout:
                    on_timeout()
            except Exception:
                pass
            finally:
                os._exit(1)
        wd = threading.Timer(self.watchdog_secs, watchdog)
        wd.daemon = True
        wd.start()
        if setup:
            code = setup()
            if code is not None:
                wd.cancel()
                return code
        try:
            (run or self.run_tests)()
        finally:
            try:
                if teardown:
                    teardown()
            finally:
                wd.cancel()
        if timing and self.verbose:
            print("%s: %.1f s" % (self.prefix, time.monotonic() - t_start))
        print("%d passed, %d failed" % (self.passed, self.failed))
        return 1 if self.failed else 0
