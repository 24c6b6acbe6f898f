/*
** gwr_fetch.c — the worker's HTTP client (see gwr_fetch.h).
**
** The shape is curl's docs/examples/hiperfifo.c: libcurl tells us which
** sockets to watch (sock_cb) and when to wake it (timer_set); libevent tells
** libcurl what happened (event_cb, timer_cb) through curl_multi_socket_action;
** after each action, check_done() collects finished transfers with
** curl_multi_info_read.
**
** What hiperfifo does not need and we do: libcurl forbids removing or adding
** easy handles from inside its callbacks, and our callers cancel and start
** transfers from inside theirs. So everything that touches the multi handle
** while libcurl is on the stack (in_curl > 0) is queued and done by one
** deferred event (defer_cb) on the next turn of the loop; a cancelled
** transfer is only flagged, and every curl callback checks the flag first, so
** no caller callback runs after cancel even while libcurl still holds the
** handle. Transfers end the transfer on every failure, never the process.
**
** Not here: URL building, header policy, body parsing.
*/
#include "gwr_fetch.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A socket libcurl asked us to watch; its event reports to event_cb. */
typedef struct Sock {
  struct event *ev;
  struct Sock *prev, *next;      /* f->socks */
} Sock;

struct GwrFetchXfer {
  GwrFetch *f;
  CURL *easy;
  struct curl_slist *hdrs;
  GwrFetchXfer *prev, *next;     /* f->live */
  GwrFetchXfer *qnext;           /* f->q_head: work for defer_cb */
  size_t (*read)(void *ud, char *buf, size_t cap);
  int  (*on_head)(void *ud, long status, const GwrFetchHeader *h, size_t nh);
  int  (*on_data)(void *ud, const char *p, size_t n);
  void (*on_done)(void *ud, int kind, long status, const char *detail);
  void *ud;
  size_t max_response, received;
  char  *hbuf;                   /* the response head: NUL-terminated lines */
  size_t hlen, hcap, nlines;
  long status;
  int fail_kind;                 /* set by our callbacks when they abort */
  unsigned in_multi : 1, queued : 1, cancelled : 1, finished : 1, in_done : 1,
           head_done : 1, no_body : 1, recv_paused : 1, send_paused : 1,
           want_recv : 1, want_send : 1, sent : 1;
  char detail[160];
  char errbuf[CURL_ERROR_SIZE];
};

struct GwrFetch {
  struct event_base *base;
  CURLM *multi;
  struct event *timer, *defer;
  GwrFetchConfig cfg;
  int in_curl;                   /* depth of calls into libcurl */
  int still_running;
  Sock *socks;
  GwrFetchXfer *live;            /* every transfer not yet freed */
  GwrFetchXfer *q_head, *q_tail;
  CURL **idle;                   /* reset easy handles for reuse */
  long nidle;
  GwrFetchStats st;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static void global_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void gwr_fetch_global_init(void) { pthread_once(&global_once, global_init_once); }
void gwr_fetch_global_cleanup(void) { curl_global_cleanup(); }

const char *gwr_fetch_kind_name(int kind) {
  static const char *const names[] = {
    "ok", "connect", "timeout", "too_large", "aborted", "cancelled", "error"
  };
  if (kind < 0 || kind >= (int)(sizeof names / sizeof names[0])) return "unknown";
  return names[kind];
}

/* ---- the hiperfifo part: libcurl <-> libevent ---------------------------- */

static void check_done(GwrFetch *f);

/* libcurl may leave OpenSSL errors in this thread's queue after a failed
** TLS transfer; the client connections' SSL bufferevents on the same loop
** would read them as their own failure (SSL_get_error looks at the queue
** first). So nothing leaves libcurl's hands with the queue not empty. */
static void curl_done(GwrFetch *f) {
  f->in_curl--;
  if (ERR_peek_error()) ERR_clear_error();
}

/* libevent: a watched socket is ready. */
static void event_cb(evutil_socket_t fd, short what, void *arg) {
  GwrFetch *f = arg;
  int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
               ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
  f->in_curl++;
  curl_multi_socket_action(f->multi, fd, action, &f->still_running);
  curl_done(f);
  check_done(f);
  /* hiperfifo deletes the timer here when nothing runs; we must not: an
  ** on_done above may have started a transfer and armed it. */
}

/* libevent: libcurl's timeout expired. */
static void timer_cb(evutil_socket_t fd, short what, void *arg) {
  GwrFetch *f = arg;
  (void)fd; (void)what;
  f->in_curl++;
  curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &f->still_running);
  curl_done(f);
  check_done(f);
}

/* libcurl: wake me in ms milliseconds (-1: never). Calling back into libcurl
** from here is not allowed, so a 0 ms timeout also goes through the loop. */
static int timer_set(CURLM *multi, long ms, void *arg) {
  GwrFetch *f = arg;
  (void)multi;
  if (ms < 0) {
    evtimer_del(f->timer);
  } else {
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(f->timer, &tv);
  }
  return 0;
}

static void sock_free(GwrFetch *f, Sock *sk) {
  if (sk->prev) sk->prev->next = sk->next; else f->socks = sk->next;
  if (sk->next) sk->next->prev = sk->prev;
  if (sk->ev) event_free(sk->ev);
  free(sk);
}

/* libcurl: watch socket s for what (or stop watching it). */
static int sock_cb(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp) {
  GwrFetch *f = arg;
  Sock *sk = sockp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (sk) sock_free(f, sk);
    return 0;
  }
  if (!sk) {
    sk = calloc(1, sizeof *sk);
    if (!sk) return -1;              /* libcurl fails the transfers on it */
    sk->next = f->socks;
    if (f->socks) f->socks->prev = sk;
    f->socks = sk;
    curl_multi_assign(f->multi, s, sk);
  }
  short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                       ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
  if (sk->ev) {
    event_del(sk->ev);
    event_assign(sk->ev, f->base, s, kind, event_cb, f);
  } else {
    sk->ev = event_new(f->base, s, kind, event_cb, f);
    if (!sk->ev) return -1;
  }
  if (what != CURL_POLL_NONE) event_add(sk->ev, NULL);
  return 0;
}

/* ---- transfer life cycle ------------------------------------------------- */

static void enqueue(GwrFetchXfer *x) {
  GwrFetch *f = x->f;
  if (!x->queued) {
    x->queued = 1;
    x->qnext = NULL;
    if (f->q_tail) f->q_tail->qnext = x; else f->q_head = x;
    f->q_tail = x;
  }
  event_active(f->defer, EV_TIMEOUT, 0);
}

static void recycle_easy(GwrFetch *f, CURL *easy) {
  if (!easy) return;
  if (f->nidle < f->cfg.max_idle_handles) {
    curl_easy_reset(easy);
    f->idle[f->nidle++] = easy;
  } else {
    curl_easy_cleanup(easy);
  }
}

/* Frees x; never while libcurl is on the stack or x is queued. */
static void destroy(GwrFetchXfer *x) {
  GwrFetch *f = x->f;
  if (x->in_multi) curl_multi_remove_handle(f->multi, x->easy);
  if (x->prev) x->prev->next = x->next; else f->live = x->next;
  if (x->next) x->next->prev = x->prev;
  curl_slist_free_all(x->hdrs);
  recycle_easy(f, x->easy);
  free(x->hbuf);
  free(x);
}

static void fail(GwrFetchXfer *x, int kind, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static void fail(GwrFetchXfer *x, int kind, const char *fmt, ...) {
  va_list ap;
  if (x->fail_kind) return;
  x->fail_kind = kind;
  va_start(ap, fmt);
  vsnprintf(x->detail, sizeof x->detail, fmt, ap);
  va_end(ap);
}

static int classify(GwrFetchXfer *x, CURLcode rc, const char **detail) {
  *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
  if (x->fail_kind) { *detail = x->detail; return x->fail_kind; }
  switch (rc) {
  case CURLE_OK:
    if (!x->head_done) { *detail = "no response head"; return GWR_FETCH_ERROR; }
    *detail = "";
    return GWR_FETCH_OK;
  case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT: case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
    return GWR_FETCH_CONNECT;
  case CURLE_OPERATION_TIMEDOUT:
    return GWR_FETCH_TIMEOUT;
  case CURLE_FILESIZE_EXCEEDED:
    return GWR_FETCH_TOO_LARGE;
  default:
    return GWR_FETCH_ERROR;
  }
}

/* A transfer libcurl has finished (and we removed from the multi). */
static void finish(GwrFetchXfer *x, CURLcode rc) {
  GwrFetch *f = x->f;
  const char *detail;
  int kind = classify(x, rc, &detail);
  f->st.running--;
  if (kind == GWR_FETCH_OK) f->st.ok++; else f->st.failed++;
  /* whether the request may have left: a connection was made and the
  ** request was about to be sent, or some of it was (gwr_fetch_sent) */
  curl_off_t pre = 0;
  long reqsize = 0;
  if (kind == GWR_FETCH_OK) reqsize = 1;        /* an answer came: it was sent (only failures ask) */
  else if (x->easy) {
    curl_easy_getinfo(x->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
    curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &reqsize);
  }
  x->sent = pre > 0 || reqsize > 0;
  /* Recycle the easy handle first, so a transfer started from on_done reuses
  ** it (detail lives in x, not in the handle). */
  recycle_easy(f, x->easy);
  x->easy = NULL;
  x->in_done = 1;
  if (x->on_done) x->on_done(x->ud, kind, x->head_done ? x->status : 0, detail);
  x->in_done = 0;
  x->finished = 1;
  if (!x->queued) destroy(x);
}

static void check_done(GwrFetch *f) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(f->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle;
    CURLcode rc = msg->data.result;
    GwrFetchXfer *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    if (!x || x->cancelled || x->finished) continue;   /* defer_cb frees it */
    curl_multi_remove_handle(f->multi, easy);
    x->in_multi = 0;
    finish(x, rc);
  }
}

static void add_to_multi(GwrFetchXfer *x) {
  GwrFetch *f = x->f;
  if (curl_multi_add_handle(f->multi, x->easy) != CURLM_OK) {
    fail(x, GWR_FETCH_ERROR, "cannot add the transfer");
    finish(x, CURLE_FAILED_INIT);
    return;
  }
  x->in_multi = 1;
}

static void unpause(GwrFetchXfer *x) {
  GwrFetch *f = x->f;
  int changed = 0;
  if (x->want_recv && x->recv_paused) { x->recv_paused = 0; changed = 1; }
  if (x->want_send && x->send_paused) { x->send_paused = 0; changed = 1; }
  x->want_recv = x->want_send = 0;
  if (!changed) return;
  int mask = (x->recv_paused ? CURLPAUSE_RECV : 0) | (x->send_paused ? CURLPAUSE_SEND : 0);
  /* Unpausing delivers held data at once: our callbacks run from here. */
  f->in_curl++;
  curl_easy_pause(x->easy, mask);
  curl_done(f);
}

/* The deferred work: frees, adds and unpauses asked for while libcurl was on
** the stack. Items queued while this runs are handled on the next pass. */
static void defer_cb(evutil_socket_t fd, short what, void *arg) {
  GwrFetch *f = arg;
  GwrFetchXfer *x = f->q_head;
  (void)fd; (void)what;
  f->q_head = f->q_tail = NULL;
  while (x) {
    GwrFetchXfer *next = x->qnext;
    x->queued = 0;
    if (x->cancelled || x->finished) destroy(x);
    else if (!x->in_multi) add_to_multi(x);
    else unpause(x);
    x = next;
  }
}

/* ---- libcurl callbacks of one transfer ----------------------------------- */

static int head_add(GwrFetchXfer *x, const char *line, size_t n) {
  GwrFetch *f = x->f;
  int fold = n > 0 && (line[0] == ' ' || line[0] == '\t');
  if (fold) {                                   /* obs-fold: join with a space */
    if (!x->nlines) return 0;
    while (n && (*line == ' ' || *line == '\t')) { line++; n--; }
    x->hlen--;                                  /* reopen the previous line */
  } else if (++x->nlines > f->cfg.max_headers) {
    fail(x, GWR_FETCH_TOO_LARGE, "more than %zu response header fields",
         f->cfg.max_headers);
    return -1;
  }
  size_t need = x->hlen + n + 2;
  if (need > f->cfg.max_header_bytes) {
    fail(x, GWR_FETCH_TOO_LARGE, "response head exceeds %zu bytes",
         f->cfg.max_header_bytes);
    return -1;
  }
  if (need > x->hcap) {
    size_t cap = x->hcap ? x->hcap * 2 : 1024;
    while (cap < need) cap *= 2;
    char *p = realloc(x->hbuf, cap);
    if (!p) { fail(x, GWR_FETCH_ERROR, "out of memory"); return -1; }
    x->hbuf = p; x->hcap = cap;
  }
  if (fold) x->hbuf[x->hlen++] = ' ';
  memcpy(x->hbuf + x->hlen, line, n);
  x->hlen += n;
  x->hbuf[x->hlen++] = '\0';
  return 0;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Splits the stored lines into fields (in place) and hands them to on_head.
** Returns 0 to go on, -1 to abort. */
static int head_done(GwrFetchXfer *x) {
  GwrFetchHeader *h = NULL;
  size_t nh = 0;
  int64_t clen = -1;
  if (x->nlines) {
    h = malloc(x->nlines * sizeof *h);
    if (!h) { fail(x, GWR_FETCH_ERROR, "out of memory"); return -1; }
  }
  for (size_t off = 0; off < x->hlen; ) {
    char *line = x->hbuf + off;
    size_t len = strlen(line);
    off += len + 1;
    char *colon = memchr(line, ':', len);
    if (!colon || colon == line || is_ows(colon[-1])) continue;   /* not a field */
    char *v = colon + 1, *end = line + len;
    while (v < end && is_ows(*v)) v++;
    while (end > v && is_ows(end[-1])) end--;
    *colon = '\0';
    *end = '\0';
    GwrFetchHeader *e = &h[nh++];
    e->name = line; e->name_len = (size_t)(colon - line);
    e->value = v; e->value_len = (size_t)(end - v);
    if (clen < 0 && e->name_len == 14 && !strcasecmp(e->name, "content-length")) {
      int64_t n = 0;
      const char *p = v;
      for (; *p >= '0' && *p <= '9' && n < INT64_MAX / 10 - 10; p++) n = n * 10 + (*p - '0');
      if (p > v && !*p) clen = n;
    }
  }
  int rc = 0;
  int bodyless = x->no_body || x->status == 204 || x->status == 304;
  if (!bodyless && clen >= 0 && (uint64_t)clen > x->max_response) {
    fail(x, GWR_FETCH_TOO_LARGE, "response body of %zu bytes exceeds the limit of %zu",
         (size_t)clen, x->max_response);
    rc = -1;
  } else if (x->on_head) {
    if (x->on_head(x->ud, x->status, h, nh) != 0) {
      fail(x, GWR_FETCH_ABORTED, "aborted by on_head");
      rc = -1;
    }
  }
  free(h);
  free(x->hbuf);
  x->hbuf = NULL;
  x->hlen = x->hcap = x->nlines = 0;
  return rc;
}

/* libcurl: one line of a response head (status line, field, blank line), or
** of a trailer. Returning anything but n aborts the transfer. */
static size_t header_cb(char *buf, size_t size, size_t nitems, void *arg) {
  GwrFetchXfer *x = arg;
  size_t n = size * nitems, len = n;
  if (x->cancelled || x->fail_kind) return 0;
  if (x->head_done) return n;                   /* trailers: not passed on */
  while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) len--;
  if (len >= 5 && !memcmp(buf, "HTTP/", 5)) {   /* a status line starts a head */
    x->hlen = x->nlines = 0;
    return n;
  }
  if (len) return head_add(x, buf, len) == 0 ? n : 0;
  long status = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  if (status >= 100 && status < 200) {          /* interim; the real one follows */
    x->hlen = x->nlines = 0;
    return n;
  }
  x->status = status;
  x->head_done = 1;
  if (head_done(x) != 0 || x->cancelled) return 0;
  return n;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *arg) {
  GwrFetchXfer *x = arg;
  size_t n = size * nmemb;
  if (x->cancelled || x->fail_kind) return n ? 0 : 1;
  if (x->received + n > x->max_response || x->received + n < n) {
    fail(x, GWR_FETCH_TOO_LARGE, "response body exceeds the limit of %zu bytes",
         x->max_response);
    return 0;
  }
  if (x->on_data && n) {
    int rc = x->on_data(x->ud, p, n);
    if (x->cancelled) return 0;
    if (rc == GWR_FETCH_PAUSE) { x->recv_paused = 1; return CURL_WRITEFUNC_PAUSE; }
    if (rc != 0) { fail(x, GWR_FETCH_ABORTED, "aborted by on_data"); return 0; }
  }
  x->received += n;
  return n;
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *arg) {
  GwrFetchXfer *x = arg;
  size_t cap = size * nitems;
  if (x->cancelled || x->fail_kind) return CURL_READFUNC_ABORT;
  size_t r = x->read(x->ud, buf, cap);
  if (x->cancelled) return CURL_READFUNC_ABORT;
  if (r == GWR_FETCH_PAUSE) { x->send_paused = 1; return CURL_READFUNC_PAUSE; }
  if (r == GWR_FETCH_READ_ABORT) {
    fail(x, GWR_FETCH_ABORTED, "aborted by read");
    return CURL_READFUNC_ABORT;
  }
  if (r > cap) {
    fail(x, GWR_FETCH_ERROR, "read returned %zu for a buffer of %zu", r, cap);
    return CURL_READFUNC_ABORT;
  }
  return r;
}

/* ---- public API ---------------------------------------------------------- */

GwrFetch *gwr_fetch_new(struct event_base *base, const GwrFetchConfig *cfg) {
  gwr_fetch_global_init();
  GwrFetch *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  f->base = base;
  if (cfg) f->cfg = *cfg;
  GwrFetchConfig *c = &f->cfg;
  if (c->max_idle_connections <= 0) c->max_idle_connections = 256;
  if (c->idle_timeout_s <= 0) c->idle_timeout_s = 30;
  if (c->dns_cache_timeout_s == 0) c->dns_cache_timeout_s = 60;
  if (c->connect_timeout_ms <= 0) c->connect_timeout_ms = 5000;
  if (c->timeout_ms <= 0) c->timeout_ms = 30000;
  if (c->max_response == 0) c->max_response = (size_t)16 << 20;
  if (c->max_header_bytes == 0) c->max_header_bytes = 64 << 10;
  if (c->max_headers == 0) c->max_headers = 200;
  if (c->max_idle_handles <= 0) c->max_idle_handles = 256;
  f->multi = curl_multi_init();
  f->timer = evtimer_new(base, timer_cb, f);
  f->defer = event_new(base, -1, 0, defer_cb, f);
  f->idle = calloc((size_t)c->max_idle_handles, sizeof *f->idle);
  if (!f->multi || !f->timer || !f->defer || !f->idle) { gwr_fetch_free(f); return NULL; }
  curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
  curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
  curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, timer_set);
  curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
  curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, c->max_idle_connections);
  curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, c->max_connections > 0 ? c->max_connections : 0L);
  curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, c->max_host_connections > 0 ? c->max_host_connections : 0L);
  curl_multi_setopt(f->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
  return f;
}

void gwr_fetch_free(GwrFetch *f) {
  if (!f) return;
  /* Every transfer goes, with no callbacks: running, queued, cancelled. */
  while (f->live) {
    GwrFetchXfer *x = f->live;
    x->queued = 0;
    x->cancelled = 1;
    destroy(x);
  }
  f->q_head = f->q_tail = NULL;
  if (f->multi) curl_multi_cleanup(f->multi);   /* closes pooled connections */
  for (long i = 0; i < f->nidle; i++) curl_easy_cleanup(f->idle[i]);
  while (f->socks) sock_free(f, f->socks);
  if (f->timer) event_free(f->timer);
  if (f->defer) event_free(f->defer);
  free(f->idle);
  free(f);
}

static int valid_method(const char *m) {
  if (!*m) return 0;
  for (; *m; m++)
    if (!strchr("!#$%&'*+-.^_`|~", *m) &&
        !((*m >= '0' && *m <= '9') || (*m >= 'a' && *m <= 'z') || (*m >= 'A' && *m <= 'Z')))
      return 0;
  return 1;
}

static int valid_url(const char *url) {
  CURLU *u = curl_url();
  char *scheme = NULL;
  int ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
           curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
           (!strcmp(scheme, "http") || !strcmp(scheme, "https"));
  curl_free(scheme);
  curl_url_cleanup(u);
  return ok;
}

static int has_name(const char *h, const char *name) {
  size_t n = strlen(name);
  return !strncasecmp(h, name, n) && h[n] == ':';
}

/* The request headers as libcurl wants them; NULL on a malformed header or
** no memory. "Name:" alone would make libcurl drop the header, so an empty
** value is sent with libcurl's "Name;" spelling. */
static struct curl_slist *build_headers(const char *const *hv, int has_body) {
  struct curl_slist *l = NULL, *t;
  int expect = 0, accept = 0, ctype = 0;
  char tmp[256];
  for (; hv && *hv; hv++) {
    const char *h = *hv, *colon = strchr(h, ':');
    if (!colon || colon == h || strpbrk(h, "\r\n")) goto bad;
    for (const char *p = h; p < colon; p++) if (*p == ' ' || *p == '\t' || *p == ';') goto bad;
    expect |= has_name(h, "expect");
    accept |= has_name(h, "accept");
    ctype |= has_name(h, "content-type");
    const char *v = colon + 1;
    while (is_ows(*v)) v++;
    if (*v) {
      t = curl_slist_append(l, h);
    } else {
      size_t n = (size_t)(colon - h);
      char *s = malloc(n + 2);
      if (!s) goto bad;
      memcpy(s, h, n); s[n] = ';'; s[n + 1] = '\0';
      t = curl_slist_append(l, s);
      free(s);
    }
    if (!t) goto bad;
    l = t;
  }
  /* Remove what libcurl would add on its own. */
  const char *extra[3] = { expect ? NULL : "Expect:", accept ? NULL : "Accept:",
                           ctype || !has_body ? NULL : "Content-Type:" };
  for (int i = 0; i < 3; i++) {
    if (!extra[i]) continue;
    snprintf(tmp, sizeof tmp, "%s", extra[i]);
    if (!(t = curl_slist_append(l, tmp))) goto bad;
    l = t;
  }
  return l;
bad:
  curl_slist_free_all(l);
  return NULL;
}

#define SET(opt, val) ok &= curl_easy_setopt(e, opt, val) == CURLE_OK

GwrFetchXfer *gwr_fetch_start(GwrFetch *f, const GwrFetchReq *r) {
  if (!f || !r || !r->url || !valid_url(r->url)) return NULL;
  int has_body = r->body != NULL || r->read != NULL;
  const char *m = r->method ? r->method : has_body ? "POST" : "GET";
  if (!valid_method(m)) return NULL;
  GwrFetchXfer *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->f = f;
  x->easy = f->nidle ? f->idle[--f->nidle] : curl_easy_init();
  x->hdrs = build_headers(r->headers, has_body);
  if (!x->easy || !x->hdrs) goto fail;
  x->read = r->read;
  x->on_head = r->on_head; x->on_data = r->on_data; x->on_done = r->on_done;
  x->ud = r->ud;
  x->max_response = r->max_response ? r->max_response : f->cfg.max_response;
  x->no_body = !strcmp(m, "HEAD");

  CURL *e = x->easy;
  int ok = 1;
  SET(CURLOPT_PRIVATE, x);
  SET(CURLOPT_URL, r->url);
#if LIBCURL_VERSION_NUM >= 0x075500
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SET(CURLOPT_PROXY, "");                       /* never *_proxy from the environment */
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_FOLLOWLOCATION, 0L);
  SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  SET(CURLOPT_TCP_NODELAY, 1L);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_HTTP_CONTENT_DECODING, 0L);       /* bytes pass as they came */
  SET(CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms > 0 ? r->connect_timeout_ms : f->cfg.connect_timeout_ms);
  SET(CURLOPT_TIMEOUT_MS, r->timeout_ms > 0 ? r->timeout_ms : f->cfg.timeout_ms);
  SET(CURLOPT_DNS_CACHE_TIMEOUT, f->cfg.dns_cache_timeout_s);
  SET(CURLOPT_MAXAGE_CONN, f->cfg.idle_timeout_s);
  SET(CURLOPT_ERRORBUFFER, x->errbuf);
  SET(CURLOPT_HEADERFUNCTION, header_cb);
  SET(CURLOPT_HEADERDATA, x);
  SET(CURLOPT_WRITEFUNCTION, write_cb);
  SET(CURLOPT_WRITEDATA, x);
  SET(CURLOPT_HTTPHEADER, x->hdrs);
  /* TLS 1.2 at least; the backend's CA, client certificate and checks
  ** (libcurl reuses a pooled connection only for the same settings) */
  SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
  const GwrFetchTls *tls = r->tls;
  if (tls && tls->ca) SET(CURLOPT_CAINFO, tls->ca);
  else if (f->cfg.ca_file) SET(CURLOPT_CAINFO, f->cfg.ca_file);
  if (tls && tls->cert) SET(CURLOPT_SSLCERT, tls->cert);
  if (tls && tls->key) SET(CURLOPT_SSLKEY, tls->key);
  if (f->cfg.insecure || (tls && tls->no_verify)) { SET(CURLOPT_SSL_VERIFYPEER, 0L); SET(CURLOPT_SSL_VERIFYHOST, 0L); }
  if (x->no_body) {
    SET(CURLOPT_NOBODY, 1L);
  } else if (has_body) {
    SET(CURLOPT_POST, 1L);
    if (r->body) {
      SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
      SET(CURLOPT_COPYPOSTFIELDS, r->body);
    } else {
      SET(CURLOPT_READFUNCTION, read_cb);
      SET(CURLOPT_READDATA, x);
      SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body_size >= 0 ? r->body_size : -1));
    }
    if (strcmp(m, "POST")) SET(CURLOPT_CUSTOMREQUEST, m);
  } else if (!strcmp(m, "GET")) {
    SET(CURLOPT_HTTPGET, 1L);
  } else {
    SET(CURLOPT_CUSTOMREQUEST, m);
  }
  if (!ok) goto fail;

  x->next = f->live;
  if (f->live) f->live->prev = x;
  f->live = x;
  f->st.started++;
  f->st.running++;
  /* Adding from inside a libcurl callback is not allowed: defer it. */
  if (f->in_curl) enqueue(x);
  else if (curl_multi_add_handle(f->multi, e) == CURLM_OK) x->in_multi = 1;
  else { f->st.started--; f->st.running--; destroy(x); return NULL; }
  return x;
fail:
  curl_slist_free_all(x->hdrs);
  recycle_easy(f, x->easy);
  free(x);
  return NULL;
}

void gwr_fetch_cancel(GwrFetchXfer *x) {
  if (!x || x->cancelled || x->finished || x->in_done) return;
  x->cancelled = 1;
  x->f->st.running--;
  x->f->st.cancelled++;
  enqueue(x);                                   /* defer_cb frees it */
}

void gwr_fetch_resume_recv(GwrFetchXfer *x) {
  if (!x || x->cancelled || x->finished || x->in_done) return;
  x->want_recv = 1;
  enqueue(x);
}

void gwr_fetch_resume_send(GwrFetchXfer *x) {
  if (!x || x->cancelled || x->finished || x->in_done) return;
  x->want_send = 1;
  enqueue(x);
}

int gwr_fetch_sent(const GwrFetchXfer *x) { return x ? x->sent : 1; }

void gwr_fetch_stats(const GwrFetch *f, GwrFetchStats *out) {
  *out = f->st;
  out->idle_handles = f->nidle;
}
