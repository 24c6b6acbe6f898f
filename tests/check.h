/*
** check.h — the small check harness of the unit tests that report with a
** printf-style reason: ok/bad counters, CHECK, and the summary line tests/run.py
** reads ("N passed, N failed").
*/
#ifndef TEST_CHECK_H
#define TEST_CHECK_H
#include <stdarg.h>
#include <stdio.h>

static int passed, failed;

static inline void ok(const char *name) { passed++; printf("ok   %s\n", name); }
static inline void bad(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void bad(const char *name, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  failed++;
  printf("FAIL %s: ", name);
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
}
#define CHECK(cond, name, ...) do { if (cond) ok(name); else bad(name, __VA_ARGS__); } while (0)
static inline int summary(void) { printf("%d passed, %d failed\n", passed, failed); return failed ? 1 : 0; }

#endif
