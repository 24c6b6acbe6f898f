/*
** test_fetch.c — unit tests of the worker's HTTP client (gwr_fetch.c).
**
**   build/test_fetch
**
** Starts a small HTTP/1.1 server on 127.0.0.1 (an ephemeral port; a thread
** per connection, plain sockets, so it can misbehave on purpose: delay,
** reset mid-body, send huge or chunked bodies, echo the request) and drives
** gwr_fetch on an event_base against it. Every wait is bounded. Ends with
** "N passed, N failed"; exits 1 on any failure.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "gw_util.h"
#include "gwr_fetch.h"

static int passed, failed;

static void check(int cond, const char *name, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static void check(int cond, const char *name, const char *fmt, ...) {
  if (cond) { passed++; printf("ok   %s\n", name); return; }
  failed++;
  printf("FAIL %s: ", name);
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The body byte at offset i of /huge. */
static unsigned char pat(size_t i) { return (unsigned char)(i * 31 + (i >> 9)); }

/* ==== the test server ==================================================== */

#define MAX_CONNS 1024
static struct {
  int lfd, port;
  pthread_t accept_th;
  pthread_mutex_t mu;
  struct { pthread_t th; int fd, used, done; } c[MAX_CONNS];
  atomic_int accepted;
} srv;

typedef struct Conn {
  int slot, fd;
  char buf[65536];
  size_t len, off;
} Conn;

static int conn_fill(Conn *c) {
  if (c->off == c->len) c->off = c->len = 0;
  if (c->off > 0 && c->len == sizeof c->buf) {
    memmove(c->buf, c->buf + c->off, c->len - c->off);
    c->len -= c->off; c->off = 0;
  }
  if (c->len == sizeof c->buf) return -1;
  ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  if (r <= 0) return -1;
  c->len += (size_t)r;
  return 0;
}

/* A line without its CRLF into out (NUL-terminated); -1 at EOF. */
static int conn_line(Conn *c, char *out, size_t cap) {
  for (;;) {
    char *nl = memchr(c->buf + c->off, '\n', c->len - c->off);
    if (nl) {
      size_t n = (size_t)(nl - (c->buf + c->off));
      size_t k = n && nl[-1] == '\r' ? n - 1 : n;
      if (k >= cap) k = cap - 1;
      memcpy(out, c->buf + c->off, k);
      out[k] = '\0';
      c->off += n + 1;
      return 0;
    }
    if (conn_fill(c) != 0) return -1;
  }
}

static int conn_read(Conn *c, GwBuf *out, size_t n) {
  while (n) {
    if (c->off == c->len && conn_fill(c) != 0) return -1;
    size_t k = c->len - c->off < n ? c->len - c->off : n;
    gw_buf_add(out, c->buf + c->off, k);
    c->off += k; n -= k;
  }
  return 0;
}

static int send_all(int fd, const void *p, size_t n) {
  const char *s = p;
  while (n) {
    ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
    if (w <= 0) { if (w < 0 && errno == EINTR) continue; return -1; }
    s += w; n -= (size_t)w;
  }
  return 0;
}

static int send_str(int fd, const char *s) { return send_all(fd, s, strlen(s)); }

/* Sleeps ms, or less if the peer closes; -1 then. */
static int nap(int fd, int ms) {
  double end = now_ms() + ms;
  for (;;) {
    int left = (int)(end - now_ms());
    if (left <= 0) return 0;
    struct pollfd p = { fd, POLLIN, 0 };
    int r = poll(&p, 1, left);
    if (r > 0) {
      char b;
      if (recv(fd, &b, 1, MSG_PEEK) <= 0) return -1;
      usleep(1000);          /* a pipelined request: just keep waiting */
    }
  }
}

static long qint(const char *target, const char *key, long dflt) {
  const char *q = strchr(target, '?');
  size_t kl = strlen(key);
  for (const char *p = q; p; p = strchr(p + 1, '&'))
    if (!strncmp(p + 1, key, kl) && p[1 + kl] == '=') return atol(p + 2 + kl);
  return dflt;
}

static void send_pattern(int fd, size_t n, int chunked) {
  char hdr[200];
  if (chunked) snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  else snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
  if (send_str(fd, hdr)) return;
  static const size_t sizes[] = { 1, 100, 4096, 16384, 3, 70000, 5000, 65536 };
  unsigned char *b = malloc(70000 + 32);
  size_t off = 0;
  for (int i = 0; off < n; i++) {
    size_t k = sizes[i % 8];
    if (k > n - off) k = n - off;
    size_t h = 0;
    if (chunked) h = (size_t)sprintf((char *)b, "%zx\r\n", k);
    for (size_t j = 0; j < k; j++) b[h + j] = pat(off + j);
    if (chunked) { b[h + k] = '\r'; b[h + k + 1] = '\n'; }
    if (send_all(fd, b, h + k + (chunked ? 2 : 0))) break;
    off += k;
  }
  if (chunked && off == n) send_str(fd, "0\r\n\r\n");
  free(b);
}

/* Serves one request; returns 0 to keep the connection, -1 to close it. */
static int serve_one(Conn *c) {
  char line[8192], target[4096] = "", method[32] = "";
  GwBuf head = {0}, body = {0};
  long clen = -1;
  int chunked = 0, close_after = 0, rc = -1;
  if (conn_line(c, line, sizeof line)) goto out;
  if (sscanf(line, "%31s %4095s", method, target) != 2) goto out;
  gw_buf_printf(&head, "%s\r\n", line);
  for (;;) {
    if (conn_line(c, line, sizeof line)) goto out;
    if (!line[0]) break;
    gw_buf_printf(&head, "%s\r\n", line);
    if (!strncasecmp(line, "content-length:", 15)) clen = atol(line + 15);
    if (!strncasecmp(line, "transfer-encoding:", 18) && strstr(line, "chunked")) chunked = 1;
    if (!strncasecmp(line, "connection:", 11) && strstr(line, "close")) close_after = 1;
  }
  if (chunked) {
    for (;;) {
      if (conn_line(c, line, sizeof line)) goto out;
      size_t k = strtoul(line, NULL, 16);
      if (k == 0) {
        do { if (conn_line(c, line, sizeof line)) goto out; } while (line[0]);
        break;
      }
      if (conn_read(c, &body, k) || conn_line(c, line, sizeof line)) goto out;
    }
  } else if (clen > 0 && conn_read(c, &body, (size_t)clen)) {
    goto out;
  }

  int fd = c->fd;
  char hdr[512];
  if (!strncmp(target, "/hello", 6)) {
    send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Test:   yes  \r\n"
                 "X-Multi: a\r\nX-Multi: b\r\nX-Folded: one\r\n two\r\nX-Empty:\r\n\r\nhello world");
  } else if (!strncmp(target, "/interim", 8)) {
    send_str(fd, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                 "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok");
  } else if (!strncmp(target, "/delay", 6)) {
    if (nap(fd, (int)qint(target, "ms", 100))) goto out;
    send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndelayed");
  } else if (!strncmp(target, "/huge", 5)) {
    if (strcmp(method, "HEAD") == 0) {
      snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %ld\r\n\r\n", qint(target, "n", 0));
      send_str(fd, hdr);
    } else {
      send_pattern(fd, (size_t)qint(target, "n", 1000), !qint(target, "cl", 1));
    }
  } else if (!strncmp(target, "/reset", 6)) {
    size_t n = (size_t)qint(target, "n", 1000);
    snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n * 10);
    send_str(fd, hdr);
    char *b = calloc(1, n);
    send_all(fd, b, n);
    free(b);
    usleep(20000);
    struct linger lg = { 1, 0 };       /* close with RST */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    goto out;
  } else if (!strncmp(target, "/echo", 5)) {
    snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", head.n + 2 + body.n);
    if (send_str(fd, hdr) || send_all(fd, head.p, head.n) || send_str(fd, "\r\n") ||
        send_all(fd, body.p, body.n)) goto out;
  } else {
    send_str(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  }
  rc = close_after ? -1 : 0;
out:
  gw_buf_free(&head);
  gw_buf_free(&body);
  return rc;
}

static void *conn_main(void *arg) {
  Conn *c = arg;
  while (serve_one(c) == 0) {}
  pthread_mutex_lock(&srv.mu);
  close(c->fd);
  srv.c[c->slot].fd = -1;
  srv.c[c->slot].done = 1;
  pthread_mutex_unlock(&srv.mu);
  free(c);
  return NULL;
}

static void *accept_main(void *arg) {
  (void)arg;
  for (;;) {
    int fd = accept(srv.lfd, NULL, NULL);
    if (fd < 0) { if (errno == EINTR || errno == ECONNABORTED) continue; return NULL; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    atomic_fetch_add(&srv.accepted, 1);
    pthread_mutex_lock(&srv.mu);
    int slot = -1;
    for (int i = 0; i < MAX_CONNS; i++) {
      if (srv.c[i].used && srv.c[i].done) { pthread_join(srv.c[i].th, NULL); srv.c[i].used = 0; }
      if (!srv.c[i].used && slot < 0) slot = i;
    }
    if (slot < 0) { pthread_mutex_unlock(&srv.mu); close(fd); continue; }
    Conn *c = calloc(1, sizeof *c);
    c->slot = slot; c->fd = fd;
    srv.c[slot].used = 1; srv.c[slot].done = 0; srv.c[slot].fd = fd;
    if (pthread_create(&srv.c[slot].th, NULL, conn_main, c) != 0) {
      srv.c[slot].used = 0; close(fd); free(c);
    }
    pthread_mutex_unlock(&srv.mu);
  }
}

static int server_start(void) {
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t al = sizeof a;
  pthread_mutex_init(&srv.mu, NULL);
  srv.lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(srv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (srv.lfd < 0 || bind(srv.lfd, (struct sockaddr *)&a, sizeof a) ||
      listen(srv.lfd, 512) || getsockname(srv.lfd, (struct sockaddr *)&a, &al)) return -1;
  srv.port = ntohs(a.sin_port);
  return pthread_create(&srv.accept_th, NULL, accept_main, NULL) ? -1 : 0;
}

static void server_stop(void) {
  shutdown(srv.lfd, SHUT_RDWR);
  pthread_join(srv.accept_th, NULL);
  close(srv.lfd);
  pthread_mutex_lock(&srv.mu);
  for (int i = 0; i < MAX_CONNS; i++)
    if (srv.c[i].used && srv.c[i].fd >= 0) shutdown(srv.c[i].fd, SHUT_RDWR);
  pthread_mutex_unlock(&srv.mu);
  for (int i = 0; i < MAX_CONNS; i++)
    if (srv.c[i].used) pthread_join(srv.c[i].th, NULL);
}

/* ==== the client side ==================================================== */

static struct event_base *base;
static GwrFetch *fetch;
static int ndone, want;

static char *url(const char *path) {
  static char buf[8][256];
  static int k;
  char *u = buf[k++ % 8];
  snprintf(u, 256, "http://127.0.0.1:%d%s", srv.port, path);
  return u;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what; (void)arg;
  event_base_loopbreak(base);
}

/* Runs the loop until ndone reaches n or ms pass; returns 1 if it did. */
static int run(int n, int ms) {
  want = n;
  if (ndone >= want) return 1;
  struct event *t = evtimer_new(base, deadline_cb, NULL);
  struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
  evtimer_add(t, &tv);
  event_base_dispatch(base);
  event_free(t);
  return ndone >= want;
}

/* Runs the loop for ms, whatever happens. */
static void spin(int ms) {
  want = 1 << 30;
  run(want, ms);
}

typedef struct Res {
  int done, kind, heads, datas, after_end;
  long status;
  char detail[256];
  GwBuf body;
  GwBuf hdrs;            /* "name=value\n" per field */
  size_t nh;
  GwrFetchXfer *x;
  int cancel_in_data, cancel_in_head, head_rc;
  struct Res *cancel_other;
  GwrFetchXfer *started;  /* by start_in_data */
  int start_in_data;
  int pause_data;        /* on_data always pauses */
} Res;

static Res chained;    /* target of start_in_data */

static int r_head(void *ud, long status, const GwrFetchHeader *h, size_t nh) {
  Res *r = ud;
  if (r->done) r->after_end++;
  r->heads++;
  r->status = status;
  r->nh = nh;
  for (size_t i = 0; i < nh; i++) {
    if (strlen(h[i].name) != h[i].name_len || strlen(h[i].value) != h[i].value_len) r->after_end += 100;
    gw_buf_printf(&r->hdrs, "%s=%s\n", h[i].name, h[i].value);
  }
  if (r->cancel_in_head) { gwr_fetch_cancel(r->x); gwr_fetch_cancel(r->x); }
  return r->head_rc;
}

static void r_done(void *ud, int kind, long status, const char *detail) {
  Res *r = ud;
  if (r->done) r->after_end++;
  r->done++;
  r->kind = kind;
  r->status = status;
  snprintf(r->detail, sizeof r->detail, "%s", detail ? detail : "(null)");
  gwr_fetch_cancel(r->x);     /* a no-op inside on_done */
  ndone++;
  if (ndone >= want) event_base_loopbreak(base);
}

static int r_data(void *ud, const char *p, size_t n) {
  Res *r = ud;
  if (r->done) r->after_end++;
  r->datas++;
  if (r->pause_data) return GWR_FETCH_PAUSE;
  if (r->body.n < (64u << 20)) gw_buf_add(&r->body, p, n);
  if (r->cancel_in_data) {
    gwr_fetch_cancel(r->x);
    if (r->cancel_other) gwr_fetch_cancel(r->cancel_other->x);
  }
  if (r->start_in_data && !r->started) {
    GwrFetchReq q = { .url = url("/hello"), .on_head = r_head, .on_data = r_data,
                      .on_done = r_done, .ud = &chained };
    chained.x = r->started = gwr_fetch_start(fetch, &q);
  }
  return 0;
}

static void res_free(Res *r) { gw_buf_free(&r->body); gw_buf_free(&r->hdrs); }

static GwrFetchXfer *get(Res *r, const char *path, const GwrFetchReq *tmpl) {
  GwrFetchReq q = {0};
  if (tmpl) q = *tmpl;
  q.url = url(path);
  q.on_head = r_head; q.on_data = r_data; q.on_done = r_done; q.ud = r;
  r->x = gwr_fetch_start(fetch, &q);
  return r->x;
}

static const char *body_str(Res *r) { return gw_buf_cstr(&r->body); }

/* ---- tests ---------------------------------------------------------------- */

static void t_get(void) {
  Res r = {0};
  ndone = 0;
  get(&r, "/hello", NULL);
  int fin = run(1, 3000);
  const char *h = gw_buf_cstr(&r.hdrs);
  check(fin && r.kind == GWR_FETCH_OK && r.status == 200 && !strcmp(body_str(&r), "hello world") &&
        !strcmp(r.detail, ""),
        "GET returns status and body", "fin=%d kind=%s status=%ld body='%s' detail='%s'",
        fin, gwr_fetch_kind_name(r.kind), r.status, body_str(&r), r.detail);
  check(r.heads == 1 && r.nh == 6 && strstr(h, "Content-Length=11\n") && strstr(h, "X-Test=yes\n") &&
        strstr(h, "X-Multi=a\nX-Multi=b\n") && strstr(h, "X-Folded=one two\n") &&
        strstr(h, "X-Empty=\n") && !strstr(h, "HTTP/") && r.after_end == 0,
        "response headers parsed (no status line, repeats, fold, empty)", "heads=%d nh=%zu\n%s",
        r.heads, r.nh, h);
  res_free(&r);

  Res i = {0};
  ndone = 0;
  get(&i, "/interim", NULL);
  fin = run(1, 3000);
  h = gw_buf_cstr(&i.hdrs);
  check(fin && i.kind == GWR_FETCH_OK && i.status == 201 && i.heads == 1 && strstr(h, "X-Final=1") &&
        !strstr(h, "Link") && !strcmp(body_str(&i), "ok"),
        "1xx interim response skipped", "kind=%s status=%ld heads=%d\n%s",
        gwr_fetch_kind_name(i.kind), i.status, i.heads, h);
  res_free(&i);
}

static void t_parallel(void) {
  Res a = {0}, b = {0};
  ndone = 0;
  double t0 = now_ms();
  get(&a, "/delay?ms=300", NULL);
  get(&b, "/delay?ms=300", NULL);
  int fin = run(2, 3000);
  double el = now_ms() - t0;
  check(fin && a.kind == GWR_FETCH_OK && b.kind == GWR_FETCH_OK && el < 550 &&
        !strcmp(body_str(&a), "delayed") && !strcmp(body_str(&b), "delayed"),
        "two 300 ms transfers run in parallel", "fin=%d %s/%s in %.0f ms", fin,
        gwr_fetch_kind_name(a.kind), gwr_fetch_kind_name(b.kind), el);
  res_free(&a); res_free(&b);
}

/* Sequential requests chained from on_done: one connection for all. */
static int seq_left, seq_ok;
static GwrFetch *seq_f;
static void seq_done(void *ud, int kind, long status, const char *detail);
static void seq_next(void) {
  GwrFetchReq q = { .url = url("/hello"), .on_done = seq_done };
  if (!gwr_fetch_start(seq_f, &q)) { ndone = want; event_base_loopbreak(base); }
}
static void seq_done(void *ud, int kind, long status, const char *detail) {
  (void)ud; (void)detail;
  if (kind == GWR_FETCH_OK && status == 200) seq_ok++;
  if (--seq_left > 0) seq_next();
  else { ndone++; event_base_loopbreak(base); }
}

static void t_keepalive(void) {
  seq_f = gwr_fetch_new(base, NULL);
  int before = atomic_load(&srv.accepted);
  ndone = 0; seq_left = 10; seq_ok = 0;
  seq_next();
  int fin = run(1, 5000);
  int conns = atomic_load(&srv.accepted) - before;
  GwrFetchStats st;
  gwr_fetch_stats(seq_f, &st);
  check(fin && seq_ok == 10 && conns == 1, "10 sequential requests use 1 connection",
        "fin=%d ok=%d connections=%d", fin, seq_ok, conns);
  check(st.started == 10 && st.ok == 10 && st.running == 0 && st.idle_handles == 1,
        "easy handles reused (one on the free list)", "started=%llu ok=%llu running=%ld idle=%ld",
        (unsigned long long)st.started, (unsigned long long)st.ok, st.running, st.idle_handles);
  gwr_fetch_free(seq_f);
}

static void t_connect(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t al = sizeof a;
  bind(s, (struct sockaddr *)&a, sizeof a);
  getsockname(s, (struct sockaddr *)&a, &al);
  close(s);                               /* nobody listens there now */
  char u[100];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/", ntohs(a.sin_port));
  Res r = {0};
  ndone = 0;
  GwrFetchReq q = { .url = u, .on_head = r_head, .on_data = r_data, .on_done = r_done, .ud = &r };
  r.x = gwr_fetch_start(fetch, &q);
  int fin = run(1, 3000);
  check(fin && r.kind == GWR_FETCH_CONNECT && r.status == 0 && r.heads == 0 && r.detail[0],
        "closed port gives CONNECT", "fin=%d kind=%s detail='%s'", fin,
        gwr_fetch_kind_name(r.kind), r.detail);
  res_free(&r);
}

static void t_timeout(void) {
  Res r = {0};
  ndone = 0;
  double t0 = now_ms();
  GwrFetchReq q = { .timeout_ms = 200 };
  get(&r, "/delay?ms=5000", &q);
  int fin = run(1, 3000);
  double el = now_ms() - t0;
  check(fin && r.kind == GWR_FETCH_TIMEOUT && el >= 190 && el < 1000, "total timeout gives TIMEOUT",
        "fin=%d kind=%s after %.0f ms detail='%s'", fin, gwr_fetch_kind_name(r.kind), el, r.detail);
  res_free(&r);
}

static void t_too_large(void) {
  GwrFetchReq q = { .max_response = 1000 };
  Res a = {0}, b = {0}, c = {0};
  ndone = 0;
  get(&a, "/huge?n=100000&cl=1", &q);
  get(&b, "/huge?n=100000&cl=0", &q);
  get(&c, "/huge?n=1000&cl=0", &q);        /* exactly the limit: fine */
  int fin = run(3, 3000);
  check(fin && a.kind == GWR_FETCH_TOO_LARGE && a.heads == 0 && a.body.n == 0 && a.status == 200,
        "max_response from Content-Length gives TOO_LARGE before on_head",
        "fin=%d kind=%s heads=%d bytes=%zu detail='%s'", fin, gwr_fetch_kind_name(a.kind),
        a.heads, a.body.n, a.detail);
  check(fin && b.kind == GWR_FETCH_TOO_LARGE && b.heads == 1 && b.body.n <= 1000,
        "max_response while receiving (chunked) gives TOO_LARGE",
        "fin=%d kind=%s bytes=%zu detail='%s'", fin, gwr_fetch_kind_name(b.kind), b.body.n, b.detail);
  check(fin && c.kind == GWR_FETCH_OK && c.body.n == 1000, "a body of exactly max_response is OK",
        "kind=%s bytes=%zu", gwr_fetch_kind_name(c.kind), c.body.n);
  res_free(&a); res_free(&b); res_free(&c);

  /* HEAD: a large Content-Length carries no body. */
  Res h = {0};
  ndone = 0;
  GwrFetchReq hq = { .method = "HEAD", .max_response = 10 };
  get(&h, "/huge?n=100000", &hq);
  fin = run(1, 3000);
  check(fin && h.kind == GWR_FETCH_OK && h.status == 200 && h.body.n == 0 &&
        strstr(gw_buf_cstr(&h.hdrs), "Content-Length=100000"),
        "HEAD ignores the Content-Length limit and has no body", "kind=%s status=%ld detail='%s'",
        gwr_fetch_kind_name(h.kind), h.status, h.detail);
  res_free(&h);
}

static void t_reset(void) {
  Res r = {0};
  ndone = 0;
  get(&r, "/reset?n=5000", NULL);
  int fin = run(1, 3000);
  check(fin && r.kind == GWR_FETCH_ERROR && r.status == 200 && r.body.n <= 5000,
        "reset mid-body gives ERROR", "fin=%d kind=%s bytes=%zu detail='%s'", fin,
        gwr_fetch_kind_name(r.kind), r.body.n, r.detail);
  res_free(&r);
}

static void t_cancel(void) {
  Res a = {0}, b = {0}, c = {0}, d = {0};
  ndone = 0;
  a.cancel_in_data = 1;
  a.cancel_other = &b;                     /* and a second transfer too */
  get(&a, "/huge?n=5000000&cl=1", NULL);
  get(&b, "/delay?ms=100", NULL);
  c.cancel_in_head = 1;
  get(&c, "/huge?n=100000&cl=0", NULL);
  get(&d, "/delay?ms=100", NULL);
  gwr_fetch_cancel(d.x);                   /* before it even started */
  spin(400);
  GwrFetchStats st;
  gwr_fetch_stats(fetch, &st);
  check(a.datas == 1 && a.done == 0 && a.after_end == 0 && b.done == 0 && b.heads == 0 && b.datas == 0,
        "cancel inside on_data: no more callbacks (its own and another)",
        "datas=%d done=%d other done=%d heads=%d", a.datas, a.done, b.done, b.heads);
  check(c.heads == 1 && c.datas == 0 && c.done == 0, "cancel inside on_head: no more callbacks",
        "heads=%d datas=%d done=%d", c.heads, c.datas, c.done);
  check(d.heads == 0 && d.done == 0 && st.running == 0, "cancel right after start: no callbacks",
        "heads=%d done=%d running=%ld", d.heads, d.done, st.running);
  res_free(&a); res_free(&b); res_free(&c); res_free(&d);

  /* The client still works afterwards. */
  Res e = {0};
  ndone = 0;
  get(&e, "/hello", NULL);
  int fin = run(1, 3000);
  check(fin && e.kind == GWR_FETCH_OK && !strcmp(body_str(&e), "hello world"),
        "client works after cancellations", "kind=%s", gwr_fetch_kind_name(e.kind));
  res_free(&e);
}

static void t_abort(void) {
  Res a = {0};
  ndone = 0;
  a.head_rc = -1;
  get(&a, "/hello", NULL);
  int fin = run(1, 3000);
  check(fin && a.kind == GWR_FETCH_ABORTED && a.datas == 0 && a.status == 200,
        "on_head returning -1 gives ABORTED", "kind=%s datas=%d detail='%s'",
        gwr_fetch_kind_name(a.kind), a.datas, a.detail);
  res_free(&a);
}

static void t_start_in_callback(void) {
  Res a = {0};
  memset(&chained, 0, sizeof chained);
  ndone = 0;
  a.start_in_data = 1;
  get(&a, "/huge?n=200000&cl=1", NULL);
  int fin = run(2, 3000);
  check(fin && a.kind == GWR_FETCH_OK && a.started && chained.kind == GWR_FETCH_OK &&
        !strcmp(body_str(&chained), "hello world"),
        "a transfer started inside on_data runs", "fin=%d kind=%s chained=%s", fin,
        gwr_fetch_kind_name(a.kind), gwr_fetch_kind_name(chained.kind));
  res_free(&a); res_free(&chained);
}

/* Splits an /echo body into its request head and body. */
static int echo_split(Res *r, char **head, const char **body, size_t *blen) {
  const char *s = body_str(r);
  const char *e = strstr(s, "\r\n\r\n");
  if (!e) return -1;
  *head = strndup(s, (size_t)(e - s) + 2);
  *body = e + 4;
  *blen = r->body.n - (size_t)(e + 4 - s);
  return 0;
}

static void t_post(void) {
  size_t n = 1500000;          /* above libcurl's 1 MiB Expect threshold */
  char *data = malloc(n);
  for (size_t i = 0; i < n; i++) data[i] = (char)pat(i * 7);   /* NULs included */
  const char *hv[] = { "X-A: 1", "X-Empty:", "Content-Type: application/octet-stream", NULL };
  GwrFetchReq q = { .method = "POST", .headers = hv, .body = data, .body_len = n };
  Res r = {0};
  ndone = 0;
  get(&r, "/echo", &q);
  free(data);                               /* copied by start */
  int fin = run(1, 3000);
  char *head = NULL;
  const char *b = NULL;
  size_t bl = 0;
  int ok = fin && r.kind == GWR_FETCH_OK && echo_split(&r, &head, &b, &bl) == 0;
  int same = ok && bl == n;
  for (size_t i = 0; same && i < n; i++) same = (unsigned char)b[i] == pat(i * 7);
  check(same, "POST body echoed byte-exact", "kind=%s len=%zu", gwr_fetch_kind_name(r.kind), bl);
  check(ok && !strncmp(head, "POST /echo HTTP/1.1\r\n", 21) && strstr(head, "\r\nX-A: 1\r\n") &&
        strstr(head, "\r\nX-Empty:") && strstr(head, "\r\nContent-Length: 1500000\r\n") &&
        strstr(head, "\r\nContent-Type: application/octet-stream\r\n") &&
        !strcasestr(head, "expect") && !strcasestr(head, "accept:") && !strcasestr(head, "user-agent"),
        "custom headers sent, no Expect/Accept/User-Agent added", "%s", head ? head : "");
  free(head);
  res_free(&r);

  /* A body without Content-Type gets none (libcurl would add a form type). */
  Res p = {0};
  ndone = 0;
  GwrFetchReq pq = { .method = "PATCH", .body = "{}", .body_len = 2 };
  get(&p, "/echo", &pq);
  fin = run(1, 3000);
  ok = fin && p.kind == GWR_FETCH_OK && echo_split(&p, &head, &b, &bl) == 0;
  check(ok && !strncmp(head, "PATCH /echo ", 12) && !strcasestr(head, "content-type") &&
        bl == 2 && !memcmp(b, "{}", 2),
        "PATCH with a body, no Content-Type added", "%s", ok ? head : "");
  if (ok) free(head);
  res_free(&p);
}

static size_t up_abort(void *ud, char *buf, size_t cap) {
  (void)ud; (void)buf; (void)cap;
  return GWR_FETCH_READ_ABORT;
}

/* A streamed body that never comes: always paused. */
static size_t up_abort_never(void *ud, char *buf, size_t cap) {
  (void)ud; (void)buf; (void)cap;
  return GWR_FETCH_PAUSE;
}

/* Streamed upload: read() hands out a pattern, pausing now and then and
** resuming from a timer, like a proxy waiting for the client's bytes. */
typedef struct Up {
  Res r;
  size_t total, off;
  int calls, pauses;
  struct event *resume;
} Up;

static void up_resume(evutil_socket_t fd, short what, void *arg) {
  Up *u = arg;
  (void)fd; (void)what;
  gwr_fetch_resume_send(u->r.x);
}

static size_t up_read(void *ud, char *buf, size_t cap) {
  Up *u = ud;
  if (++u->calls % 3 == 0 && u->off < u->total) {
    u->pauses++;
    struct timeval tv = { 0, 2000 };
    evtimer_add(u->resume, &tv);
    return GWR_FETCH_PAUSE;
  }
  size_t k = u->total - u->off;
  if (k > cap) k = cap;
  if (k > 7777) k = 7777;
  for (size_t i = 0; i < k; i++) buf[i] = (char)pat(u->off + i);
  u->off += k;
  return k;
}

static void t_upload(void) {
  for (int known = 0; known < 2; known++) {
    Up u = { .total = 300000 };
    u.resume = evtimer_new(base, up_resume, &u);
    const char *hv[] = { "X-Up: yes", NULL };
    GwrFetchReq q = { .url = url("/echo"), .method = known ? "PUT" : "POST", .headers = hv,
                      .read = up_read, .body_size = known ? 300000 : -1,
                      .on_head = r_head, .on_data = r_data, .on_done = r_done, .ud = &u };
    ndone = 0;
    u.r.x = gwr_fetch_start(fetch, &q);      /* Res is Up's first member */
    int fin = run(1, 5000);
    char *head = NULL;
    const char *b = NULL;
    size_t bl = 0;
    int ok = fin && u.r.kind == GWR_FETCH_OK && echo_split(&u.r, &head, &b, &bl) == 0;
    int same = ok && bl == u.total;
    for (size_t i = 0; same && i < bl; i++) same = (unsigned char)b[i] == pat(i);
    const char *framing = known ? "\r\nContent-Length: 300000\r\n" : "\r\nTransfer-Encoding: chunked\r\n";
    char name[100];
    snprintf(name, sizeof name, "streamed upload (%s) with send pauses arrives byte-exact",
             known ? "PUT, known size" : "POST, chunked");
    check(same && u.pauses > 5 && strstr(head, framing) && strstr(head, "X-Up: yes") &&
          !strncmp(head, known ? "PUT " : "POST ", known ? 4 : 5) && !strcasestr(head, "expect"),
          name, "kind=%s detail='%s' len=%zu pauses=%d\n%s", gwr_fetch_kind_name(u.r.kind),
          u.r.detail, bl, u.pauses, head ? head : "");
    free(head);
    event_free(u.resume);
    res_free(&u.r);
  }

  /* read() aborting ends the transfer with ABORTED. */
  Res r = {0};
  ndone = 0;
  GwrFetchReq q = { .url = url("/echo"), .read = up_abort, .body_size = -1,
                    .on_head = r_head, .on_data = r_data, .on_done = r_done, .ud = &r };
  r.x = gwr_fetch_start(fetch, &q);
  int fin = run(1, 3000);
  check(fin && r.kind == GWR_FETCH_ABORTED, "read returning GWR_FETCH_READ_ABORT gives ABORTED",
        "kind=%s detail='%s'", gwr_fetch_kind_name(r.kind), r.detail);
  res_free(&r);
}

/* Receive pause: every other on_data pauses (not consuming its bytes) and a
** timer resumes; the bytes must arrive complete and in order. */
typedef struct Rp {
  Res r;
  size_t got;
  int calls, pauses, bad;
  struct event *resume;
} Rp;

static void rp_resume(evutil_socket_t fd, short what, void *arg) {
  Rp *p = arg;
  (void)fd; (void)what;
  gwr_fetch_resume_recv(p->r.x);
}

static int rp_data(void *ud, const char *s, size_t n) {
  Rp *p = ud;
  if (++p->calls % 2 == 1) {
    p->pauses++;
    struct timeval tv = { 0, 1000 };
    evtimer_add(p->resume, &tv);
    return GWR_FETCH_PAUSE;
  }
  for (size_t i = 0; i < n; i++) if ((unsigned char)s[i] != pat(p->got + i)) p->bad++;
  p->got += n;
  return 0;
}

static void t_recv_pause(void) {
  for (int cl = 0; cl < 2; cl++) {
    Rp p = {0};
    p.resume = evtimer_new(base, rp_resume, &p);
    ndone = 0;
    GwrFetchReq q = { .url = url(cl ? "/huge?n=2000000&cl=1" : "/huge?n=2000000&cl=0"),
                      .on_data = rp_data, .on_done = r_done, .ud = &p };
    p.r.x = gwr_fetch_start(fetch, &q);
    int fin = run(1, 8000);
    char name[100];
    snprintf(name, sizeof name, "receive pause/resume delivers all bytes in order (%s)",
             cl ? "Content-Length" : "chunked");
    check(fin && p.r.kind == GWR_FETCH_OK && p.got == 2000000 && p.bad == 0 && p.pauses > 10,
          name, "fin=%d kind=%s got=%zu bad=%d pauses=%d detail='%s'", fin,
          gwr_fetch_kind_name(p.r.kind), p.got, p.bad, p.pauses, p.r.detail);
    event_free(p.resume);
    res_free(&p.r);
  }
}

static void t_many(void) {
  enum { N = 200 };
  Res *r = calloc(N, sizeof *r);
  ndone = 0;
  double t0 = now_ms();
  int started = 0;
  for (int i = 0; i < N; i++) started += get(&r[i], i % 2 ? "/delay?ms=50" : "/hello", NULL) != NULL;
  int fin = run(N, 8000);
  int ok = 0;
  for (int i = 0; i < N; i++) {
    ok += r[i].kind == GWR_FETCH_OK && r[i].done == 1 &&
          !strcmp(body_str(&r[i]), i % 2 ? "delayed" : "hello world");
    res_free(&r[i]);
  }
  check(fin && started == N && ok == N, "200 concurrent transfers complete",
        "fin=%d started=%d ok=%d in %.0f ms", fin, started, ok, now_ms() - t0);
  free(r);
}

static void t_refused(void) {
  Res r = {0};
  const char *crlf[] = { "X-Bad: a\r\nX-Injected: 1", NULL };
  const char *nocolon[] = { "X-Bad", NULL };
  GwrFetchReq q1 = { .url = "ftp://127.0.0.1/", .on_done = r_done, .ud = &r };
  GwrFetchReq q2 = { .url = "not a url", .on_done = r_done, .ud = &r };
  GwrFetchReq q3 = { .url = url("/hello"), .method = "GET /x", .on_done = r_done, .ud = &r };
  GwrFetchReq q4 = { .url = url("/hello"), .headers = crlf, .on_done = r_done, .ud = &r };
  GwrFetchReq q5 = { .url = url("/hello"), .headers = nocolon, .on_done = r_done, .ud = &r };
  GwrFetchReq q6 = { .url = NULL };
  int nulls = !gwr_fetch_start(fetch, &q1) + !gwr_fetch_start(fetch, &q2) + !gwr_fetch_start(fetch, &q3) +
              !gwr_fetch_start(fetch, &q4) + !gwr_fetch_start(fetch, &q5) + !gwr_fetch_start(fetch, &q6);
  spin(20);
  check(nulls == 6 && r.done == 0, "bad URL, scheme, method or header: NULL and no on_done",
        "nulls=%d done=%d", nulls, r.done);
  check(!strcmp(gwr_fetch_kind_name(GWR_FETCH_CONNECT), "connect") &&
        !strcmp(gwr_fetch_kind_name(GWR_FETCH_TIMEOUT), "timeout") &&
        !strcmp(gwr_fetch_kind_name(GWR_FETCH_TOO_LARGE), "too_large") &&
        !strcmp(gwr_fetch_kind_name(GWR_FETCH_ERROR), "error") &&
        !strcmp(gwr_fetch_kind_name(99), "unknown"), "kind names", "mismatch");
}

/* Freeing the client with transfers in flight: no callbacks, no leaks. */
static void t_free_running(void) {
  GwrFetch *saved = fetch;
  fetch = gwr_fetch_new(base, NULL);
  Res r[4];
  memset(r, 0, sizeof r);
  ndone = 0;
  get(&r[0], "/delay?ms=2000", NULL);
  r[1].pause_data = 1;
  get(&r[1], "/huge?n=5000000&cl=0", NULL);
  GwrFetchReq slow = { .read = up_abort_never, .body_size = -1 };
  get(&r[2], "/echo", &slow);
  get(&r[3], "/hello", NULL);
  gwr_fetch_cancel(r[3].x);
  spin(100);
  gwr_fetch_free(fetch);
  int before = ndone;
  spin(100);
  check(before == 0 && ndone == 0 && r[0].done + r[1].done + r[2].done + r[3].done == 0 &&
        r[1].datas >= 1 && r[3].heads == 0,
        "free with transfers running (waiting, paused, uploading): no callbacks",
        "done=%d paused datas=%d", ndone, r[1].datas);
  for (int i = 0; i < 4; i++) res_free(&r[i]);
  fetch = saved;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (server_start() != 0) { printf("FAIL server start\n0 passed, 1 failed\n"); return 1; }
  base = event_base_new();
  fetch = gwr_fetch_new(base, NULL);
  t_get();
  t_parallel();
  t_keepalive();
  t_connect();
  t_timeout();
  t_too_large();
  t_reset();
  t_cancel();
  t_abort();
  t_start_in_callback();
  t_post();
  t_upload();
  t_recv_pause();
  t_many();
  t_refused();
  t_free_running();
  gwr_fetch_free(fetch);
  event_base_free(base);
  server_stop();
  gwr_fetch_global_cleanup();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
