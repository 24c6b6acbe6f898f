/*
** test_limit.c — unit tests of the rate limiter (gwr_limit.c).
**
**   build/test_limit
**
** Local store, with a fixed clock: exact counts (5 per minute, burst 5: 5 of
** 8), refill after T, burst semantics, the remaining / reset / retry_after
** values, distinct keys and limits, long keys, the memory bound (10x max_keys
** distinct keys), idle expiry, and exactness with 4 threads on one key.
**
** Redis store, against a real redis-server started here on a free loopback
** port (skipped, with a "skipped: no redis-server" line, only when the binary
** is missing): the same exact counts, two connections sharing a limit,
** concurrent pipelined checks, NOSCRIPT after SCRIPT FLUSH, a TTL on every
** key, the key names, /db in the url, cancel and free, Redis stopped
** (SIGSTOP: errors within about the timeout), killed (errors at once) and
** restarted (recovers). Ends with "N passed, N failed".
*/
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <arpa/inet.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "gwr_limit.h"

#include "check.h"

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#define SEC 1000000ull
#define T0 (1000 * SEC)

static GwrLimitResult lc(GwrLimiter *l, const char *limit, const char *key, uint32_t count, uint32_t period_ms,
                         uint32_t burst, uint64_t now) {
  GwrLimitResult r;
  gwr_limiter_check(l, limit, strlen(limit), key, strlen(key), count, period_ms, burst, now, &r);
  return r;
}

/* ---- local: exact counts ----------------------------------------------------------- */

static void test_local_counts(void) {
  GwrLimiter *l = gwr_limiter_new(1000);
  int allowed = 0, ok_vals = 1;
  char why[256] = "";
  for (int i = 0; i < 8; i++) {
    GwrLimitResult r = lc(l, "per_min", "1.2.3.4", 5, 60000, 5, T0);
    allowed += r.allowed;
    if (i < 5) {
      /* after the (i+1)-th request: 4-i left, full again in (i+1)*12 s */
      if (!r.allowed || r.limit != 5 || r.remaining != (uint32_t)(4 - i) || r.reset_s != (uint32_t)(12 * (i + 1)) || r.retry_after_s) {
        ok_vals = 0;
        snprintf(why, sizeof why, "request %d: allowed %d limit %u remaining %u reset %u retry %u", i + 1, r.allowed,
                 r.limit, r.remaining, r.reset_s, r.retry_after_s);
      }
    } else if (r.allowed || r.remaining || r.reset_s != 60 || r.retry_after_s != 12 || r.limit != 5) {
      ok_vals = 0;
      snprintf(why, sizeof why, "request %d: allowed %d remaining %u reset %u retry %u", i + 1, r.allowed, r.remaining,
               r.reset_s, r.retry_after_s);
    }
  }
  CHECK(allowed == 5, "local: 5 per minute, 8 requests at once: exactly 5 pass", "%d passed", allowed);
  CHECK(ok_vals, "local: remaining 4..0, reset 12..60, refused: retry_after 12, reset 60", "%s", why);

  /* Half a second later: retry_after rounds up (11.5 s -> 12). */
  GwrLimitResult r = lc(l, "per_min", "1.2.3.4", 5, 60000, 5, T0 + SEC / 2);
  CHECK(!r.allowed && r.retry_after_s == 12 && r.reset_s == 60, "local: retry_after and reset round up",
        "allowed %d retry %u reset %u", r.allowed, r.retry_after_s, r.reset_s);
  r = lc(l, "per_min", "1.2.3.4", 5, 60000, 5, T0 + 12 * SEC - 1);
  CHECK(!r.allowed && r.retry_after_s == 1, "local: 1 us before T: still refused, retry_after 1", "allowed %d retry %u",
        r.allowed, r.retry_after_s);
  r = lc(l, "per_min", "1.2.3.4", 5, 60000, 5, T0 + 12 * SEC);
  GwrLimitResult r2 = lc(l, "per_min", "1.2.3.4", 5, 60000, 5, T0 + 12 * SEC);
  CHECK(r.allowed && r.remaining == 0 && r.reset_s == 60 && !r2.allowed && r2.retry_after_s == 12,
        "local: after T exactly one more passes", "first %d (rem %u reset %u), second %d retry %u", r.allowed,
        r.remaining, r.reset_s, r2.allowed, r2.retry_after_s);
  /* Idle for a full period: the whole burst again. */
  int n = 0;
  for (int i = 0; i < 10; i++) n += lc(l, "per_min", "1.2.3.4", 5, 60000, 5, T0 + 200 * SEC).allowed;
  CHECK(n == 5, "local: after the bucket refills, a full burst again", "%d", n);
  /* Steady state at exactly the rate: every request passes. */
  n = 0;
  for (int i = 0; i < 100; i++) n += lc(l, "steady", "k", 10, 1000, 1, T0 + (uint64_t)i * 100000).allowed;
  CHECK(n == 100, "local: requests exactly T apart all pass (burst 1)", "%d", n);
  n = 0;
  for (int i = 0; i < 100; i++) n += lc(l, "steady2", "k", 10, 1000, 1, T0 + (uint64_t)i * 50000).allowed;
  CHECK(n == 50, "local: requests T/2 apart: half pass (burst 1)", "%d", n);
  gwr_limiter_free(l);
}

static void test_local_burst(void) {
  GwrLimiter *l = gwr_limiter_new(1000);
  /* 10/s, burst 3: 3 at once, then one per 100 ms. */
  int n = 0;
  for (int i = 0; i < 10; i++) n += lc(l, "b", "k", 10, 1000, 3, T0).allowed;
  int n2 = 0;
  for (int i = 0; i < 10; i++) n2 += lc(l, "b", "k", 10, 1000, 3, T0 + 100000).allowed;
  int n3 = 0;
  for (int i = 0; i < 10; i++) n3 += lc(l, "b", "k", 10, 1000, 3, T0 + 250000).allowed;
  CHECK(n == 3 && n2 == 1 && n3 == 1, "local: burst 3 at 10/s: 3 at once, 1 after 100 ms, 1 after 250 ms",
        "%d %d %d", n, n2, n3);
  /* burst above the count: 1 per second, burst 5. */
  n = 0;
  for (int i = 0; i < 10; i++) n += lc(l, "b2", "k", 1, 1000, 5, T0).allowed;
  GwrLimitResult r = lc(l, "b2", "k", 1, 1000, 5, T0);
  CHECK(n == 5 && r.limit == 5 && r.retry_after_s == 1 && r.reset_s == 5, "local: 1/s burst 5: 5 at once, reset 5 s",
        "%d limit %u retry %u reset %u", n, r.limit, r.retry_after_s, r.reset_s);
  /* burst 0 means the count. */
  n = 0;
  for (int i = 0; i < 20; i++) n += lc(l, "b3", "k", 7, 1000, 0, T0).allowed;
  r = lc(l, "b3", "k", 7, 1000, 0, T0);
  CHECK(n == 7 && r.limit == 7, "local: burst 0 is the count", "%d limit %u", n, r.limit);
  /* A rate whose T is not a whole number of ns: 3 per 1 ms -> 7 at once at burst 7, remaining exact. */
  n = 0;
  uint32_t rem[7];
  for (int i = 0; i < 7; i++) { r = lc(l, "frac", "k", 3, 1, 7, T0); n += r.allowed; rem[i] = r.remaining; }
  int good = n == 7;
  for (int i = 0; i < 7; i++) good &= rem[i] == (uint32_t)(6 - i);
  CHECK(good && !lc(l, "frac", "k", 3, 1, 7, T0).allowed, "local: fractional T: burst and remaining exact", "%d", n);
  /* 3 per ms, burst 3, polled every 10 us for 1 s: request k passes when
  ** k*T - tau <= now, so 3 + floor((999990 us) / T) = 3002 pass (the burst
  ** absorbs the polling grid; with burst 1 GCRA loses the fraction each time). */
  n = 0;
  for (uint64_t t = 0; t < 1000000; t += 10) n += lc(l, "frac2", "k", 3, 1, 3, T0 + t).allowed;
  CHECK(n == 3002, "local: 3 per ms (burst 3) polled every 10 us for 1 s: 3002 pass", "%d", n);
  gwr_limiter_free(l);
}

static void test_local_identity(void) {
  GwrLimiter *l = gwr_limiter_new(1000);
  int a = 0, b = 0, c = 0;
  for (int i = 0; i < 5; i++) {
    a += lc(l, "lim", "alice", 2, 60000, 2, T0).allowed;
    b += lc(l, "lim", "bob", 2, 60000, 2, T0).allowed;
    c += lc(l, "other", "alice", 2, 60000, 2, T0).allowed;
  }
  CHECK(a == 2 && b == 2 && c == 2, "local: distinct keys and distinct limits have their own buckets", "%d %d %d", a, b, c);
  /* (limit "a", key "b:c") and (limit "a:b", key "c") are not the same bucket. */
  int x = 0, y = 0;
  for (int i = 0; i < 3; i++) { x += lc(l, "a", "b:c", 1, 60000, 1, T0).allowed; y += lc(l, "a:b", "c", 1, 60000, 1, T0).allowed; }
  CHECK(x == 1 && y == 1, "local: the limit/key boundary is part of the identity", "%d %d", x, y);
  /* Keys with NUL bytes, and empty keys. */
  GwrLimitResult r;
  int z = 0;
  for (int i = 0; i < 3; i++) { gwr_limiter_check(l, "n", 1, "a\0b", 3, 1, 60000, 1, T0, &r); z += r.allowed; }
  gwr_limiter_check(l, "n", 1, "a\0c", 3, 1, 60000, 1, T0, &r);
  int e = 0;
  for (int i = 0; i < 3; i++) { gwr_limiter_check(l, "n", 1, "", 0, 1, 60000, 1, T0, &r); e += r.allowed; }
  CHECK(z == 1 && r.allowed == 0 && e == 1, "local: keys are bytes (NUL inside, empty)", "%d %d", z, e);
  gwr_limiter_check(l, "n", 1, "a\0c", 3, 1, 60000, 1, T0, &r);
  CHECK(!r.allowed, "local: a\\0c has its own (now empty) bucket", "allowed");
  /* Long keys (hashed) stay distinct. */
  char k1[1000], k2[1000];
  memset(k1, 'x', sizeof k1); memset(k2, 'x', sizeof k2);
  k2[999] = 'y';
  int p = 0, q = 0;
  for (int i = 0; i < 3; i++) {
    gwr_limiter_check(l, "long", 4, k1, sizeof k1, 1, 60000, 1, T0, &r); p += r.allowed;
    gwr_limiter_check(l, "long", 4, k2, sizeof k2, 1, 60000, 1, T0, &r); q += r.allowed;
  }
  CHECK(p == 1 && q == 1, "local: long keys (hashed) keep their own buckets", "%d %d", p, q);
  gwr_limiter_free(l);
}

static void test_local_memory(void) {
  const size_t max = 1000;
  GwrLimiter *l = gwr_limiter_new(max);
  GwrLimiterStats st;
  gwr_limiter_stats(l, &st);
  CHECK(st.max_keys <= max && st.max_keys >= max * 9 / 10, "local: capacity within max_keys", "%zu", st.max_keys);
  /* 10x max_keys distinct active keys (1 per minute: none idle). */
  size_t peak = 0;
  char key[32];
  for (size_t i = 0; i < 10 * max; i++) {
    snprintf(key, sizeof key, "k%zu", i);
    lc(l, "mem", key, 1, 60000, 1, T0 + i);
    if (i % 97 == 0) { gwr_limiter_stats(l, &st); if (st.keys > peak) peak = st.keys; }
  }
  gwr_limiter_stats(l, &st);
  if (st.keys > peak) peak = st.keys;
  CHECK(peak <= max, "local: 10x max_keys distinct keys: never more than max_keys", "peak %zu", peak);
  CHECK(st.evicted_active > 0 && st.keys >= st.max_keys * 9 / 10, "local: full of active keys: LRU eviction counted",
        "evicted %llu keys %zu", (unsigned long long)st.evicted_active, st.keys);
  /* The most recent key keeps its state. */
  snprintf(key, sizeof key, "k%zu", 10 * max - 1);
  CHECK(!lc(l, "mem", key, 1, 60000, 1, T0 + 10 * max).allowed, "local: recent keys keep their state under eviction", "allowed");
  gwr_limiter_free(l);

  /* Idle keys go first: max keys at t0, all idle after 2 s; a new wave evicts only idle ones. */
  l = gwr_limiter_new(max);
  for (size_t i = 0; i < max; i++) { snprintf(key, sizeof key, "old%zu", i); lc(l, "idle", key, 1, 1000, 1, T0); }
  GwrLimiterStats st0;
  gwr_limiter_stats(l, &st0);
  size_t hot = 0;
  for (size_t i = 0; i < 10 * max; i++) {
    snprintf(key, sizeof key, "new%zu", i);
    lc(l, "idle", key, 1, 1000, 1, T0 + 2 * SEC + i);
    /* a long-lived key kept busy: 1 per hour, touched often */
    if (i % 50 == 0) hot += lc(l, "hour", "hot", 1, 3600000, 1, T0 + 2 * SEC + i).allowed;
  }
  gwr_limiter_stats(l, &st);
  CHECK(st.keys <= max && st.expired - st0.expired == st0.keys, "local: old idle keys expire first (each dropped as idle)",
        "keys %zu, %zu old keys, %llu expired", st.keys, st0.keys, (unsigned long long)(st.expired - st0.expired));
  CHECK(hot == 1, "local: a busy key survives a flood of new ones while idle keys exist", "hot passed %zu times", hot);
  size_t dropped = gwr_limiter_expire(l, T0 + 100 * SEC);
  gwr_limiter_stats(l, &st);
  CHECK(st.keys == 1 && dropped > 0, "local: gwr_limiter_expire drops every idle key", "keys %zu dropped %zu", st.keys, dropped);
  /* Lazy expiry: checks on one key sweep idle keys of its shard. */
  gwr_limiter_free(l);
  l = gwr_limiter_new(16);   /* one shard */
  for (int i = 0; i < 16; i++) { snprintf(key, sizeof key, "x%d", i); lc(l, "lazy", key, 10, 1000, 1, T0); }
  for (int i = 0; i < 20; i++) lc(l, "lazy", "y", 10, 1000, 1, T0 + SEC + (uint64_t)i * 100000);
  gwr_limiter_stats(l, &st);
  CHECK(st.keys <= 2, "local: idle keys expire lazily on later checks", "keys %zu", st.keys);
  gwr_limiter_free(l);
  l = gwr_limiter_new(1);
  int a = lc(l, "one", "a", 1, 60000, 1, T0).allowed, b = lc(l, "one", "b", 1, 60000, 1, T0).allowed;
  gwr_limiter_stats(l, &st);
  CHECK(a && b && st.keys == 1, "local: max_keys 1 holds one key", "keys %zu", st.keys);
  gwr_limiter_free(l);
}

/* ---- local: threads ----------------------------------------------------------------- */

typedef struct { GwrLimiter *l; int iters; int keys; long allowed; } Th;

static void *hammer(void *arg) {
  Th *t = arg;
  char key[16];
  for (int i = 0; i < t->iters; i++) {
    GwrLimitResult r;
    int k = t->keys > 1 ? i % t->keys : 0;
    int n = snprintf(key, sizeof key, "h%d", k);
    gwr_limiter_check(t->l, "hammer", 6, key, (size_t)n, 1000, 60000, 1000, T0, &r);
    t->allowed += r.allowed;
  }
  return NULL;
}

static void test_local_threads(void) {
  for (int variant = 0; variant < 2; variant++) {
    GwrLimiter *l = gwr_limiter_new(100000);
    Th th[4];
    pthread_t tid[4];
    int keys = variant ? 64 : 1;
    for (int i = 0; i < 4; i++) { th[i] = (Th){ l, 20000, keys, 0 }; pthread_create(&tid[i], NULL, hammer, &th[i]); }
    long total = 0;
    for (int i = 0; i < 4; i++) { pthread_join(tid[i], NULL); total += th[i].allowed; }
    GwrLimiterStats st;
    gwr_limiter_stats(l, &st);
    char name[96];
    snprintf(name, sizeof name, "local: 4 threads on %d key(s), burst 1000: exactly %d pass", keys, 1000 * keys);
    CHECK(total == 1000L * keys && st.checks == 80000, name, "%ld passed, %llu checks", total, (unsigned long long)st.checks);
    gwr_limiter_free(l);
  }
  /* Speed, printed: one thread, 1e6 checks over 10,000 keys. */
  GwrLimiter *l = gwr_limiter_new(100000);
  char key[16];
  uint64_t t = mono_us();
  for (int i = 0; i < 1000000; i++) {
    GwrLimitResult r;
    int n = snprintf(key, sizeof key, "s%d", i % 10000);
    gwr_limiter_check(l, "speed", 5, key, (size_t)n, 100, 1000, 100, T0 + (uint64_t)i, &r);
  }
  printf("     (1e6 local checks: %.0f ns each)\n", (double)(mono_us() - t) * 1000.0 / 1e6);
  gwr_limiter_free(l);
}

/* ---- Redis -------------------------------------------------------------------------- */

static pid_t redis_pid;
static int redis_port;
static char redis_url[64];

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t n = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &n)) { if (fd >= 0) close(fd); return -1; }
  close(fd);
  return ntohs(a.sin_port);
}

static const char *redis_bin(void) {
  static const char *c[] = { "/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server" };
  for (size_t i = 0; i < sizeof c / sizeof *c; i++) if (access(c[i], X_OK) == 0) return c[i];
  return NULL;
}

static redisContext *sync_conn(void) {
  struct timeval tv = { 0, 500000 };
  redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
  if (c && c->err) { redisFree(c); return NULL; }
  if (c) redisSetTimeout(c, tv);
  return c;
}

static int redis_start(void) {
  const char *bin = redis_bin();
  char port[16];
  snprintf(port, sizeof port, "%d", redis_port);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int dn = open("/dev/null", O_RDWR);
    if (dn >= 0) { dup2(dn, 0); dup2(dn, 1); dup2(dn, 2); }
    execl(bin, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
          (char *)NULL);
    _exit(127);
  }
  redis_pid = pid;
  for (int i = 0; i < 500; i++) {
    redisContext *c = sync_conn();
    if (c) {
      redisReply *rep = redisCommand(c, "PING");
      int up = rep && rep->type == REDIS_REPLY_STATUS;
      if (rep) freeReplyObject(rep);
      redisFree(c);
      if (up) return 0;
    }
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) { redis_pid = 0; return -1; }
    usleep(10000);
  }
  return -1;
}

static void redis_stop(int sig) {
  if (!redis_pid) return;
  kill(redis_pid, SIGCONT);
  kill(redis_pid, sig);
  int st;
  waitpid(redis_pid, &st, 0);
  redis_pid = 0;
}

static redisReply *cmd(const char *fmt, ...) {
  redisContext *c = sync_conn();
  if (!c) return NULL;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  redisFree(c);
  return r;
}

typedef struct Done {
  int called, calls, err;
  GwrLimitResult res;
  uint64_t at_us;
} Done;

static void on_done(void *ud, int err, const GwrLimitResult *res) {
  Done *d = ud;
  d->called = 1;
  d->calls++;
  d->err = err;
  d->at_us = mono_us();
  if (res) d->res = *res;
  else memset(&d->res, 0, sizeof d->res);
}

static struct event_base *base;
static struct event *wake;

static void on_wake(evutil_socket_t fd, short ev, void *arg) {}

/* One turn of the loop, waiting at most 5 ms. */
static void turn(void) {
  struct timeval tv = { 0, 5000 };
  evtimer_add(wake, &tv);
  event_base_loop(base, EVLOOP_ONCE);
}

/* Run the loop until every d[i].called, or ms pass. */
static int wait_all(Done *d, int n, int ms) {
  uint64_t end = mono_us() + (uint64_t)ms * 1000;
  for (;;) {
    int all = 1;
    for (int i = 0; i < n; i++) all &= d[i].called;
    if (all) return 1;
    if (mono_us() > end) return 0;
    turn();
  }
}

/* Run the loop for ms. */
static void spin(int ms) {
  uint64_t end = mono_us() + (uint64_t)ms * 1000;
  while (mono_us() < end) turn();
}

static Done rcheck(GwrRedis *r, const char *limit, const char *key, uint32_t count, uint32_t period_ms, uint32_t burst) {
  Done d = {0};
  gwr_redis_check(r, limit, strlen(limit), key, strlen(key), count, period_ms, burst, on_done, &d);
  if (!wait_all(&d, 1, 2000)) d.err = -1;
  return d;
}

/* Wait until a check succeeds (after a start or restart), up to ms. */
static int wait_up(GwrRedis *r, int ms) {
  uint64_t end = mono_us() + (uint64_t)ms * 1000;
  while (mono_us() < end) {
    Done d = rcheck(r, "probe", "p", 1000000, 1000, 1000000);
    if (d.called && !d.err) return 1;
    spin(20);
  }
  return 0;
}

static void test_redis_counts(GwrRedis *r) {
  int allowed = 0, vals = 1, errs = 0;
  char why[256] = "";
  for (int i = 0; i < 8; i++) {
    Done d = rcheck(r, "per_min", "1.2.3.4", 5, 60000, 5);
    if (d.err) { errs++; continue; }
    allowed += d.res.allowed;
    GwrLimitResult x = d.res;
    if (i < 5 ? (!x.allowed || x.limit != 5 || x.remaining != (uint32_t)(4 - i) || x.reset_s != (uint32_t)(12 * (i + 1)) || x.retry_after_s)
              : (x.allowed || x.remaining || x.reset_s != 60 || x.retry_after_s != 12)) {
      vals = 0;
      snprintf(why, sizeof why, "request %d: allowed %d limit %u remaining %u reset %u retry %u", i + 1, x.allowed,
               x.limit, x.remaining, x.reset_s, x.retry_after_s);
    }
  }
  CHECK(errs == 0 && allowed == 5, "redis: 5 per minute, 8 requests: exactly 5 pass", "%d passed, %d errors", allowed, errs);
  CHECK(vals, "redis: remaining 4..0, reset 12..60, refused: retry_after 12, reset 60", "%s", why);
  int a = 0, b = 0, c = 0;
  for (int i = 0; i < 4; i++) {
    a += rcheck(r, "lim", "alice", 2, 60000, 2).res.allowed;
    b += rcheck(r, "lim", "bob", 2, 60000, 2).res.allowed;
    c += rcheck(r, "other", "alice", 2, 60000, 2).res.allowed;
  }
  CHECK(a == 2 && b == 2 && c == 2, "redis: distinct keys and limits have their own buckets", "%d %d %d", a, b, c);
  /* burst 1 at 20/s: after 50 ms one more passes (Redis's clock). */
  Done d1 = rcheck(r, "fast", "k", 20, 1000, 1), d2 = rcheck(r, "fast", "k", 20, 1000, 1);
  spin(60);
  Done d3 = rcheck(r, "fast", "k", 20, 1000, 1);
  CHECK(d1.res.allowed && !d2.res.allowed && d2.res.retry_after_s == 1 && d3.res.allowed, "redis: refill after T (50 ms)",
        "%d %d %d", d1.res.allowed, d2.res.allowed, d3.res.allowed);
}

static void test_redis_shared(GwrRedis *r1, GwrRedis *r2) {
  int allowed = 0, errs = 0;
  for (int i = 0; i < 8; i++) {
    Done d = rcheck(i % 2 ? r2 : r1, "shared", "u", 5, 60000, 5);
    allowed += d.res.allowed;
    errs += d.err != 0;
  }
  CHECK(errs == 0 && allowed == 5, "redis: two connections (two gateways) share one limit", "%d passed, %d errors", allowed, errs);
  /* Many checks in flight at once on both connections: still exact. */
  enum { N = 200 };
  static Done d[N];
  memset(d, 0, sizeof d);
  for (int i = 0; i < N; i++) gwr_redis_check(i % 2 ? r2 : r1, "burst", 5, "u", 1, 50, 60000, 50, on_done, &d[i]);
  int before = 0;
  for (int i = 0; i < N; i++) before += d[i].called;
  wait_all(d, N, 3000);
  allowed = errs = 0;
  int calls = 0;
  for (int i = 0; i < N; i++) { allowed += d[i].res.allowed; errs += d[i].err != 0; calls += d[i].calls; }
  CHECK(before == 0, "redis: callbacks never run inside gwr_redis_check", "%d ran inside", before);
  CHECK(calls == N && errs == 0 && allowed == 50, "redis: 200 concurrent checks over two connections, burst 50: exactly 50 pass",
        "%d calls, %d passed, %d errors", calls, allowed, errs);
}

static void test_redis_script_ttl(GwrRedis *r) {
  GwrRedisStats s0, s1;
  gwr_redis_stats(r, &s0);
  redisReply *rep = cmd("SCRIPT FLUSH");
  int flushed = rep && rep->type == REDIS_REPLY_STATUS;
  if (rep) freeReplyObject(rep);
  Done d = rcheck(r, "noscript", "k", 5, 60000, 5);
  Done d2 = rcheck(r, "noscript", "k", 5, 60000, 5);
  gwr_redis_stats(r, &s1);
  CHECK(flushed && !d.err && d.res.allowed && d.res.remaining == 4 && !d2.err && d2.res.remaining == 3 && s1.errors == s0.errors,
        "redis: NOSCRIPT after SCRIPT FLUSH: reloaded, the check succeeds", "flushed %d err %d allowed %d remaining %u",
        flushed, d.err, d.res.allowed, d.res.remaining);
  /* Twenty in flight after a flush. */
  rep = cmd("SCRIPT FLUSH");
  if (rep) freeReplyObject(rep);
  Done m[20];
  memset(m, 0, sizeof m);
  for (int i = 0; i < 20; i++) gwr_redis_check(r, "noscript2", 9, "k", 1, 10, 60000, 10, on_done, &m[i]);
  wait_all(m, 20, 2000);
  int okc = 0, al = 0;
  for (int i = 0; i < 20; i++) { okc += m[i].called && !m[i].err; al += m[i].res.allowed; }
  CHECK(okc == 20 && al == 10, "redis: 20 checks in flight across a SCRIPT FLUSH: all answered, exactly 10 pass", "%d ok, %d passed", okc, al);

  /* Key names and TTLs. */
  char key[400];
  gwr_redis_key("per_min", 7, "1.2.3.4", 7, key, sizeof key);
  CHECK(!strcmp(key, "gw:limit:per_min:1.2.3.4"), "redis: key name gw:limit:NAME:KEY", "%s", key);
  char longk[300];
  memset(longk, 'z', sizeof longk);
  Done dl = {0};
  gwr_redis_check(r, "long", 4, longk, sizeof longk, 1, 60000, 1, on_done, &dl);
  wait_all(&dl, 1, 2000);
  size_t kn = gwr_redis_key("long", 4, longk, sizeof longk, key, sizeof key);
  rep = cmd("EXISTS %s", key);
  CHECK(!dl.err && kn == 9 + 4 + 1 + 64 && rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1,
        "redis: a key over 200 bytes is stored as its SHA-256 hex", "%s", key);
  if (rep) freeReplyObject(rep);
  rep = cmd("KEYS gw:limit:*");
  int nkeys = 0, with_ttl = 0;
  long long worst = 0;
  if (rep && rep->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; i < rep->elements; i++) {
      redisReply *t = cmd("PTTL %b", rep->element[i]->str, rep->element[i]->len);
      nkeys++;
      if (t && t->type == REDIS_REPLY_INTEGER && t->integer > 0 && t->integer <= 60000) with_ttl++;
      else if (t && t->type == REDIS_REPLY_INTEGER) worst = t->integer;
      if (t) freeReplyObject(t);
    }
  }
  if (rep) freeReplyObject(rep);
  CHECK(nkeys >= 8 && with_ttl == nkeys, "redis: every key has a TTL (0 < PTTL <= period)", "%d keys, %d with a TTL (bad: %lld)",
        nkeys, with_ttl, worst);
  rep = cmd("PTTL gw:limit:per_min:1.2.3.4");
  CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer > 55000 && rep->integer <= 60000,
        "redis: the TTL is the time until the bucket is full again (~60 s after 5 of 5)", "%lld", rep ? rep->integer : -9);
  if (rep) freeReplyObject(rep);
}

static void test_redis_db(void) {
  char url[80], err[200];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d/3", redis_port);
  GwrRedis *r = gwr_redis_new(base, url, 200, err, sizeof err);
  int up = r && wait_up(r, 2000);
  Done d = r ? rcheck(r, "dbtest", "k", 1, 60000, 1) : (Done){0};
  redisContext *c = sync_conn();
  redisReply *a = c ? redisCommand(c, "EXISTS gw:limit:dbtest:k") : NULL;
  redisReply *s = c ? redisCommand(c, "SELECT 3") : NULL;
  redisReply *b = c ? redisCommand(c, "EXISTS gw:limit:dbtest:k") : NULL;
  CHECK(up && !d.err && a && a->integer == 0 && b && b->integer == 1, "redis: /3 in the url selects database 3",
        "up %d err %d", up, d.err);
  if (a) freeReplyObject(a);
  if (s) freeReplyObject(s);
  if (b) freeReplyObject(b);
  if (c) redisFree(c);
  gwr_redis_free(r);
  static const char *badurls[] = { "http://x", "redis://", "redis://host:0", "redis://host:99999", "redis://host:12a",
                                   "redis://[::1", "redis://host/x", "redis://user@host" };
  int refused = 0;
  for (size_t i = 0; i < sizeof badurls / sizeof *badurls; i++) {
    err[0] = 0;
    GwrRedis *x = gwr_redis_new(base, badurls[i], 50, err, sizeof err);
    if (!x && err[0]) refused++;
    else { printf("     accepted %s\n", badurls[i]); gwr_redis_free(x); }
  }
  CHECK(refused == (int)(sizeof badurls / sizeof *badurls), "redis: malformed urls are refused with a message", "%d refused", refused);
}

static void test_redis_cancel_free(GwrRedis *r) {
  Done a = {0}, b = {0};
  GwrRedisReq *q = gwr_redis_check(r, "cancel", 6, "k", 1, 1, 60000, 1, on_done, &a);
  gwr_redis_check(r, "cancel", 6, "k2", 2, 1, 60000, 1, on_done, &b);
  gwr_redis_cancel(q);
  wait_all(&b, 1, 1000);
  spin(50);
  CHECK(!a.called && b.called && b.calls == 1, "redis: a cancelled check's callback never runs", "a %d b %d", a.called, b.calls);
  /* free with checks in flight: no callback (and nothing leaks under ASan) */
  char err[200];
  GwrRedis *x = gwr_redis_new(base, redis_url, 50, err, sizeof err);
  wait_up(x, 2000);
  Done c[10];
  memset(c, 0, sizeof c);
  for (int i = 0; i < 10; i++) gwr_redis_check(x, "free", 4, "k", 1, 1, 60000, 1, on_done, &c[i]);
  gwr_redis_free(x);
  spin(50);
  int any = 0;
  for (int i = 0; i < 10; i++) any += c[i].called;
  CHECK(any == 0, "redis: gwr_redis_free cancels pending checks without calling them", "%d called", any);
}

/* A long timeout and a stopped Redis: at most GWR_REDIS_MAX_INFLIGHT wait, the rest fail at once. */
static void test_redis_bounded(void) {
  char err[200];
  GwrRedis *r = gwr_redis_new(base, redis_url, 3000, err, sizeof err);
  if (!r || !wait_up(r, 2000)) { bad("redis: bounded queue", "no connection"); gwr_redis_free(r); return; }
  enum { N = GWR_REDIS_MAX_INFLIGHT + 904 };
  Done *d = calloc(N, sizeof *d);
  kill(redis_pid, SIGSTOP);
  for (int i = 0; i < N; i++) gwr_redis_check(r, "bound", 5, "k", 1, 100000, 1000, 100000, on_done, &d[i]);
  spin(30);
  int early = 0, early_err = 0;
  for (int i = 0; i < N; i++) { early += d[i].called; early_err += d[i].called && d[i].err; }
  CHECK(early == 904 && early_err == 904, "redis: stopped, long timeout: beyond GWR_REDIS_MAX_INFLIGHT checks fail at once",
        "%d answered early, %d with err", early, early_err);
  kill(redis_pid, SIGCONT);
  int all = wait_all(d, N, 3000), good = 0;
  for (int i = 0; i < N; i++) good += d[i].called && !d[i].err && d[i].calls == 1;
  CHECK(all && good == GWR_REDIS_MAX_INFLIGHT, "redis: resumed: the waiting checks are answered", "%d answered without err", good);
  free(d);
  gwr_redis_free(r);
}

static void test_redis_stop_kill(GwrRedis *r, uint32_t timeout_ms) {
  GwrRedisStats s0, s1;
  gwr_redis_stats(r, &s0);
  kill(redis_pid, SIGSTOP);
  uint64_t worst = 0;
  int errs = 0, n = 0;
  uint64_t t_end = mono_us() + 1500000;
  while (mono_us() < t_end) {    /* sequential checks for 1.5 s: each answered with err in bounded time */
    uint64_t t = mono_us();
    Done d = rcheck(r, "stop", "k", 5, 60000, 5);
    uint64_t el = mono_us() - t;
    if (el > worst) worst = el;
    errs += d.called && d.err;
    n++;
    spin(2);
  }
  /* and a burst of concurrent ones */
  Done m[50];
  memset(m, 0, sizeof m);
  uint64_t t = mono_us();
  for (int i = 0; i < 50; i++) gwr_redis_check(r, "stop", 4, "k", 1, 5, 60000, 5, on_done, &m[i]);
  int all = wait_all(m, 50, 2000);
  uint64_t last = 0;
  int merr = 0;
  for (int i = 0; i < 50; i++) { merr += m[i].err != 0; if (m[i].at_us > last) last = m[i].at_us; }
  gwr_redis_stats(r, &s1);
  printf("     (Redis stopped: %d checks, slowest answer %.1f ms, %llu timeouts)\n", n, worst / 1000.0,
         (unsigned long long)(s1.timeouts - s0.timeouts));
  CHECK(errs == n && worst <= (uint64_t)timeout_ms * 1000 + 60000, "redis: stopped (SIGSTOP): every check fails within the timeout",
        "%d of %d failed, slowest %.1f ms", errs, n, worst / 1000.0);
  CHECK(all && merr == 50 && last - t <= (uint64_t)timeout_ms * 1000 + 60000, "redis: stopped: 50 concurrent checks all fail in time",
        "%d failed, last after %.1f ms", merr, (last - t) / 1000.0);
  CHECK(s1.timeouts > s0.timeouts && s1.errors - s0.errors >= (uint64_t)(n + 50), "redis: timeouts and errors are counted",
        "timeouts %llu errors %llu", (unsigned long long)(s1.timeouts - s0.timeouts), (unsigned long long)(s1.errors - s0.errors));
  kill(redis_pid, SIGCONT);
  int up = wait_up(r, 5000);
  Done d = rcheck(r, "stop2", "k", 5, 60000, 5);
  CHECK(up && !d.err && d.res.allowed, "redis: resumed (SIGCONT): checks succeed again", "up %d err %d", up, d.err);

  /* Killed: errors at once. */
  redis_stop(SIGKILL);
  spin(30);
  worst = 0;
  errs = n = 0;
  for (int i = 0; i < 30; i++) {
    t = mono_us();
    Done e = rcheck(r, "dead", "k", 5, 60000, 5);
    uint64_t el = mono_us() - t;
    if (el > worst) worst = el;
    errs += e.called && e.err;
    n++;
    spin(10);
  }
  CHECK(errs == n && worst < 30000, "redis: killed: checks fail at once (well before the timeout)", "%d of %d failed, slowest %.1f ms", errs, n, worst / 1000.0);
  CHECK(!gwr_redis_connected(r), "redis: killed: not connected", "connected");
  if (redis_start()) { bad("redis: restart", "redis-server did not come back"); return; }
  t = mono_us();
  up = wait_up(r, 5000);
  printf("     (recovered %.0f ms after the restart)\n", (mono_us() - t) / 1000.0);
  int al = 0, er = 0;
  for (int i = 0; i < 8; i++) { Done e = rcheck(r, "after", "k", 5, 60000, 5); al += e.res.allowed; er += e.err != 0; }
  CHECK(up && al == 5 && er == 0, "redis: restarted: reconnects and counts exactly again", "up %d, %d passed, %d errors", up, al, er);
}

static void test_redis(void) {
  if (!redis_bin()) {
    printf("skipped: no redis-server (install redis-server to run the Redis tests)\n");
    return;
  }
  redis_port = free_port();
  if (redis_port <= 0 || redis_start()) { bad("redis: start redis-server", "port %d", redis_port); return; }
  snprintf(redis_url, sizeof redis_url, "redis://127.0.0.1:%d", redis_port);
  base = event_base_new();
  wake = evtimer_new(base, on_wake, NULL);
  char err[200];
  const uint32_t timeout_ms = 50;
  GwrRedis *r1 = gwr_redis_new(base, redis_url, timeout_ms, err, sizeof err);
  GwrRedis *r2 = gwr_redis_new(base, redis_url, timeout_ms, err, sizeof err);
  if (!r1 || !r2 || !wait_up(r1, 3000) || !wait_up(r2, 3000)) {
    bad("redis: connect", "%s", r1 && r2 ? "no answer" : err);
  } else {
    ok("redis: connect");
    test_redis_counts(r1);
    test_redis_shared(r1, r2);
    test_redis_script_ttl(r1);
    test_redis_db();
    test_redis_cancel_free(r1);
    test_redis_bounded();
    test_redis_stop_kill(r1, timeout_ms);
  }
  gwr_redis_free(r1);
  gwr_redis_free(r2);
  event_free(wake);
  event_base_free(base);
  redis_stop(SIGTERM);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  test_local_counts();
  test_local_burst();
  test_local_identity();
  test_local_memory();
  test_local_threads();
  test_redis();
  return summary();
}
