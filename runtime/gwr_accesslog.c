/*
** gwr_accesslog.c — the access log's per-worker buffers and their writes,
** and the JSON pieces of a line (gwr_accesslog.h has the rules).
*/
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <event2/event.h>
#include "gwr.h"
#include "gwr_accesslog.h"

#define FLUSH_AT    (16u << 10)     /* bytes buffered before a write */
#define FLUSH_EVERY 200             /* ms between timed writes */
#define KEEP_CAP    (1u << 20)      /* a buffer grown past this is freed after a write */

static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t n_errors, n_dropped;
static int warned;

/* Write the buffer: whole lines, one writer at a time. */
static void flush(GwrAlog *a) {
  if (!a->buf.n) return;
  const char *p = a->buf.p;
  size_t left = a->buf.n;
  int err = 0;
  pthread_mutex_lock(&write_mu);
  while (left) {
    ssize_t n = write(a->fd, p, left);
    if (n > 0) { p += n; left -= (size_t)n; continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {     /* a non-blocking destination */
      struct pollfd pf = { a->fd, POLLOUT, 0 };
      if (poll(&pf, 1, 1000) > 0) continue;
      err = EAGAIN;
      break;
    }
    err = n < 0 ? errno : EIO;
    break;
  }
  /* a line cut short is ended, so that the next ones stay whole */
  if (err && p != a->buf.p && p[-1] != '\n' && write(a->fd, "\n", 1) < 0) { /* nothing more to do */ }
  pthread_mutex_unlock(&write_mu);
  if (err) {
    __atomic_add_fetch(&n_errors, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&n_dropped, a->lines, __ATOMIC_RELAXED);
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
      gwr_log("warn", "access log: write failed: %s (its lines are dropped and counted in "
              "gw_access_log_dropped_lines_total; requests are not affected; said once)", strerror(err));
  }
  a->buf.n = 0;
  a->lines = 0;
  if (a->buf.cap > KEEP_CAP) gw_buf_free(&a->buf);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what;
  flush(arg);
}

GwrAlog *gwr_alog_new(struct event_base *base, int fd) {
  if (fd < 0) return NULL;
  GwrAlog *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->fd = fd;
  a->sec = -1;
  gw_buf_reserve(&a->buf, FLUSH_AT + 4096);
  a->timer = event_new(base, -1, EV_PERSIST, on_timer, a);
  if (!a->timer) { gw_buf_free(&a->buf); free(a); return NULL; }
  struct timeval tv = { 0, FLUSH_EVERY * 1000 };
  event_add(a->timer, &tv);
  return a;
}

void gwr_alog_free(GwrAlog *a) {
  if (!a) return;
  flush(a);
  if (a->timer) event_free(a->timer);
  gw_buf_free(&a->buf);
  free(a);
}

char *gwr_alog_begin(GwrAlog *a, size_t max) {
  gw_buf_reserve(&a->buf, max);
  return a->buf.p + a->buf.n;
}

void gwr_alog_end(GwrAlog *a, char *end) {
  a->buf.n = (size_t)(end - a->buf.p);
  a->lines++;
  if (a->buf.n >= FLUSH_AT) flush(a);
}

uint64_t gwr_alog_errors(void) { return __atomic_load_n(&n_errors, __ATOMIC_RELAXED); }
uint64_t gwr_alog_dropped(void) { return __atomic_load_n(&n_dropped, __ATOMIC_RELAXED); }

/* ---- pieces of a line ------------------------------------------------------------------ */

char *gwr_alog_time(GwrAlog *a, char *o) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (ts.tv_sec != a->sec) {
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    if (strftime(a->stamp, sizeof a->stamp, "%Y-%m-%dT%H:%M:%S.", &tm) != 20) memcpy(a->stamp, "1970-01-01T00:00:00.", 21);
    a->sec = ts.tv_sec;
  }
  unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
  o[0] = '"';
  memcpy(o + 1, a->stamp, 20);
  o[21] = (char)('0' + ms / 100);
  o[22] = (char)('0' + ms / 10 % 10);
  o[23] = (char)('0' + ms % 10);
  o[24] = 'Z';
  o[25] = '"';
  return o + 26;
}

static const char digits2[201] =
  "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
  "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
  "8081828384858687888990919293949596979899";

char *gwr_alog_u64(char *o, uint64_t v) {
  if (v < 10) { *o = (char)('0' + v); return o + 1; }
  char t[20];
  size_t k = sizeof t;
  while (v >= 100) { unsigned r = (unsigned)(v % 100); v /= 100; k -= 2; memcpy(t + k, digits2 + 2 * r, 2); }
  if (v >= 10) { k -= 2; memcpy(t + k, digits2 + 2 * v, 2); }
  else t[--k] = (char)('0' + v);
  memcpy(o, t + k, sizeof t - k);
  return o + sizeof t - k;
}

char *gwr_alog_ms(char *o, uint64_t us) {
  o = gwr_alog_u64(o, us / 1000);
  unsigned r = (unsigned)(us % 1000);
  o[0] = '.';
  o[1] = (char)('0' + r / 100);
  memcpy(o + 2, digits2 + 2 * (r % 100), 2);
  return o + 4;
}

/* Bytes that a JSON string cannot hold as they are: 1 escape, 2 past 0x7F. */
static const unsigned char cls[256] = {
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

/* s[0..n) escaped for the inside of a JSON string. *utf8: -1 not known yet
** (checked on the first byte past 0x7F), 0 no, 1 yes (of the whole text). */
static char *esc(char *o, const char *s, size_t n, const char *all, size_t alln, int *utf8) {
  static const char hex[] = "0123456789abcdef";
  size_t start = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!cls[c]) continue;
    if (cls[c] == 2) {
      if (*utf8 < 0) *utf8 = gw_utf8_valid(all, alln);
      if (*utf8) continue;
    }
    memcpy(o, s + start, i - start);
    o += i - start;
    start = i + 1;
    if (c == '"' || c == '\\') {
      o[0] = '\\'; o[1] = (char)c;
      o += 2;
    } else {
      o[0] = '\\'; o[1] = 'u'; o[2] = '0'; o[3] = '0'; o[4] = hex[c >> 4]; o[5] = hex[c & 15];
      o += 6;
    }
  }
  memcpy(o, s + start, n - start);
  return o + n - start;
}

char *gwr_alog_str(char *o, const char *s, size_t n) {
  int utf8 = -1;
  *o++ = '"';
  o = esc(o, s, n, s, n, &utf8);
  *o++ = '"';
  return o;
}

void gwr_alog_buf_str(GwBuf *b, const char *s, size_t n) {
  gw_buf_reserve(b, GWR_ALOG_STR_MAX(n));
  b->n = (size_t)(gwr_alog_str(b->p + b->n, s, n) - b->p);
}

static int ends_with(const char *s, size_t n, const char *suf) {
  size_t m = strlen(suf);
  return n >= m && !memcmp(s + n - m, suf, m);
}

/* Whether a query parameter named raw[0..n) (form-encoded) may carry a secret. */
static int secret_name(const char *raw, size_t n, const char *const *names, int nnames) {
  char d[3 * 128];
  if (n > sizeof d) return 1;                    /* a name this long: mask it rather than guess */
  size_t k = gw_form_decode(d, raw, n);          /* decoded as the query parser decodes it */
  if (k > 128) return 1;
  for (size_t i = 0; i < k; i++) d[i] = (char)tolower((unsigned char)d[i]);
  for (int i = 0; i < nnames; i++)
    if (strlen(names[i]) == k && !strncasecmp(names[i], d, k)) return 1;
  static const char *const suffixes[] = { "token", "key", "secret", "password", "passwd", "signature", "credential" };
  static const char *const exact[] = { "code", "sig", "auth", "jwt", "session" };
  for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) if (ends_with(d, k, suffixes[i])) return 1;
  for (size_t i = 0; i < sizeof exact / sizeof *exact; i++) if (strlen(exact[i]) == k && !memcmp(exact[i], d, k)) return 1;
  return 0;
}

/* Whether a query value v[0..n) looks like a JWT, whatever its name: a
** base64url JSON header ("eyJ", that is '{"') and a dot after it. */
static int jwt_like(const char *v, size_t n) {
  return n > 4 && !memcmp(v, "eyJ", 3) && memchr(v + 3, '.', n - 3) != NULL;
}

char *gwr_alog_target(char *o, const char *t, size_t n, const char *const *names, int nnames) {
  if (n && t[0] != '/' && !(n == 1 && t[0] == '*')) {       /* absolute-form: keep the path */
    const char *s = memchr(t, ':', n);
    const char *p = s && (size_t)(t + n - s) > 3 && s[1] == '/' && s[2] == '/' ? memchr(s + 3, '/', (size_t)(t + n - s - 3)) : NULL;
    const char *q = s ? memchr(t, '?', n) : NULL;
    if (!p || (q && q < p)) { memcpy(o, "\"/\"", 3); return o + 3; }
    n -= (size_t)(p - t);
    t = p;
  }
  int utf8 = -1;
  *o++ = '"';
  const char *q = memchr(t, '?', n);
  if (!q) { o = esc(o, t, n, t, n, &utf8); *o++ = '"'; return o; }
  o = esc(o, t, (size_t)(q + 1 - t), t, n, &utf8);
  const char *e = t + n;
  for (const char *p = q + 1; p <= e;) {
    const char *amp = memchr(p, '&', (size_t)(e - p));
    if (!amp) amp = e;
    const char *eq = memchr(p, '=', (size_t)(amp - p));
    if (eq && (secret_name(p, (size_t)(eq - p), names, nnames) || jwt_like(eq + 1, (size_t)(amp - eq - 1)))) {
      o = esc(o, p, (size_t)(eq + 1 - p), t, n, &utf8);
      memcpy(o, "***", 3);
      o += 3;
    } else if (!eq && jwt_like(p, (size_t)(amp - p))) {   /* a token as a bare parameter */
      memcpy(o, "***", 3);
      o += 3;
    } else {
      o = esc(o, p, (size_t)(amp - p), t, n, &utf8);
    }
    if (amp == e) break;
    *o++ = '&';
    p = amp + 1;
  }
  *o++ = '"';
  return o;
}
