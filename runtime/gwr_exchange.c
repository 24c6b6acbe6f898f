/*
** gwr_exchange.c — one request from routing to response: the policy hooks
** (auth → limit → cache), the call plan, the failure policy, the response,
** and proxy routes.
**
** The call plan is driven by advance(): it starts every call whose
** dependencies have settled (the compiler recorded them), evaluates each
** guard as soon as the calls it reads have settled, and answers when every
** call has settled — so independent calls run in parallel and a dependent
** call starts the moment its inputs exist. A required call that fails ends
** the request at once (502, or 504 on timeout) and cancels the others.
**
** Re-entrancy: fetch callbacks may finish the exchange; it is freed only
** when the outermost entry (a callback or the start) returns.
*/
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <arpa/inet.h>
#include <openssl/rand.h>
#include "gwr.h"
#include "gwr_metrics.h"
#include "gwr_accesslog.h"
#include "gwr_cache.h"

enum { C_WAIT, C_RUNNING, C_DONE, C_SKIPPED, C_FAILED };

/* A backend request's attempts (a call, or the proxied request): its slot
** among the worker's max_connections to the backend (or its place in the
** queue), the attempt in flight (target, breaker probe) and the retries.
** See gwr_backend.h. */
typedef struct Try {
  GwrBeWait     wait;           /* queued for a slot */
  GwrBeAttempt  att;            /* the attempt in flight */
  int           slot;           /* holds one of the worker's slots of the backend */
  int           n;              /* attempts begun */
  int           last;           /* the last attempt's target (-1: none yet) */
  int           retry;          /* the attempt ending is to be made again (proxy: a 5xx refused) */
  uint32_t      delay_ms;       /* the pause before the next attempt */
  struct event *backoff;        /* ...its timer */
} Try;

typedef struct CallRt {
  GwrExchange  *ex;
  uint32_t      i;              /* index within the endpoint */
  const GwCall *rec;
  int           state;
  GwrFetchXfer *xfer;
  GwrExtract   *x;
  long          status;
  const char   *fail;           /* failure kind, set by a callback before it aborts */
  uint64_t      got;            /* body bytes received */
  Try           t;              /* its attempts */
  const char   *tail;           /* its URL after the target's base: path and query */
  const char  **hv;             /* its request headers */
  int           res;            /* how it ended (GWR_CR_*; 0 while it has not), for metrics and the log */
  uint64_t      t0, t1;         /* sent, ended (gwr_now_us; 0: never sent) */
  GwValue      *value;
  GwBuf         body;
  int           nostore;        /* its answer said Cache-Control private, no-store or no-cache */
  unsigned char *ckey;          /* `cache D`: its key, while its value is to be stored */
} CallRt;

struct GwrExchange {
  GwrConn        *c;
  GwrWorker      *w;
  GwrProg        *g;
  const GwProgram *p;
  GwArena         arena;
  const GwEndpoint *E;
  GwrMatch        m;
  GwrPath         path;
  int             head;
  GwrVm           vm;
  CallRt         *calls;
  uint32_t        ncalls;
  uint8_t        *guard_done;
  int             partial;
  int             finished;     /* a response was queued, or the client left */
  int             depth;        /* nested entries; freed when it returns to 0 */
  struct event   *deadline;
  char            reqid[80];
  char            traceparent[64];
  const char     *client_name;
  int             auth_by;      /* the endpoint's auth policy (its position in the list) that admitted it */
  GwrFetchXfer   *pxfer;        /* proxy */
  int             pchunked, pstarted;
  int             streaming;    /* the request body streams up as it arrives */
  GwBuf           up;           /* its queue */
  size_t          up_off;
  int             up_done, up_waiting;
  /* from the head: the normalized path and the route (begin) */
  int             norm_status, route_status;
  const char     *norm_err;
  uint32_t        allow;
  GwrRouteSeg     segs[GWR_MAX_SEGMENTS];
  /* rate limits: the answer's RateLimit-* come from the tightest limit */
  GwrLimitResult  rl;
  int             has_rl;
  GwrRedisReq   **rreq;         /* pending Redis decisions, per limit of the endpoint */
  uint32_t        rpending;
  int             limited;      /* a limit refused the request */
  /* observability: the request's metrics and access-log line (written once) */
  int             logged;
  int             pres;         /* the proxied transfer: its result (GWR_CR_*) */
  long            pstatus;      /* ...the backend's status */
  uint64_t        pt0, pt1;     /* ...sent, ended */
  Try             pt;           /* ...its attempts */
  const char     *ptail;        /* ...its URL after the target's base */
  const char    **phv;          /* ...its request headers */
  uint64_t        deadline_us;  /* when the endpoint's deadline falls (gwr_now_us); 0: none */
  struct XCache  *xc;           /* a cached endpoint's key and flight (the response cache) */
};

/* Backend b's targets, health, breaker and slots, of the exchange's program
** (a reload does not mix the state of two programs). */
static GwrBe *be_of(GwrExchange *ex, uint32_t b) { return ex->g->backends[b].be; }

/* Stop what a backend request is doing (waiting for a slot, pausing before
** a retry, a transfer) and give back its attempt (abandoned) and its slot.
** Giving a slot back may start a waiting request at once. */
static void try_stop(GwrExchange *ex, uint32_t b, Try *t, GwrFetchXfer **xfer) {
  GwrBe *be = be_of(ex, b);
  gwr_be_unqueue(be, ex->w->id, &t->wait);
  if (t->backoff) evtimer_del(t->backoff);
  if (*xfer) { gwr_fetch_cancel(*xfer); *xfer = NULL; }
  gwr_be_end(be, &t->att, GWR_BE_NONE, gwr_be_now_ms());
  if (t->slot) { t->slot = 0; gwr_be_release(be, ex->w->id); }
}

static void call_stop(GwrExchange *ex, CallRt *k) { try_stop(ex, k->rec->backend, &k->t, &k->xfer); }
static void proxy_stop(GwrExchange *ex) {
  if (ex->E && ex->E->proxy != GW_NONE) try_stop(ex, ex->E->proxy, &ex->pt, &ex->pxfer);
}

/* Take the exchange's calls out of the slot queues first, so that a slot
** one of them gives back does not go to another of them. */
static void unqueue_all(GwrExchange *ex) {
  for (uint32_t i = 0; i < ex->ncalls; i++)
    gwr_be_unqueue(be_of(ex, ex->calls[i].rec->backend), ex->w->id, &ex->calls[i].t.wait);
}

/* A call settled with result res (GWR_CR_*): count it, once. A call never
** sent counts only as skipped or overloaded. */
static void call_end(GwrExchange *ex, CallRt *k, int res) {
  if (k->res) return;
  k->res = res;
  GwrMetrics *m = ex->w->metrics;
  if (res == GWR_CR_SKIPPED) {
    GWR_M_ADD(m->route[ex->g->ep_slot[ex->E - ex->p->endpoints]].skipped, 1);
    return;
  }
  if (!k->t0 && res != GWR_CR_OVERLOADED && res != GWR_CR_UNAVAILABLE && res != GWR_CR_BREAKER_OPEN) return;
  GwrBackendM *bm = &m->backend[ex->g->be_slot[k->rec->backend]];
  GWR_M_ADD(bm->result[res], 1);
  if (!k->t0) return;
  k->t1 = gwr_now_us();
  if (res != GWR_CR_CANCELLED) gwr_hist_add(&bm->dur, k->t1 - k->t0);
}

/* The proxied transfer ended with res. */
static void proxy_end(GwrExchange *ex, int res) {
  if (ex->pres) return;
  ex->pres = res;
  if (res == GWR_CR_SKIPPED) {
    GWR_M_ADD(ex->w->metrics->route[ex->g->ep_slot[ex->E - ex->p->endpoints]].skipped, 1);
    return;
  }
  GwrBackendM *bm = &ex->w->metrics->backend[ex->g->be_slot[ex->E->proxy]];
  GWR_M_ADD(bm->result[res], 1);
  ex->pt1 = gwr_now_us();
  if (res != GWR_CR_CANCELLED) gwr_hist_add(&bm->dur, ex->pt1 - ex->pt0);
}

static void xc_free(GwrExchange *ex);

static void ex_free(GwrExchange *ex) {
  xc_free(ex);
  unqueue_all(ex);
  for (uint32_t i = 0; i < ex->ncalls; i++) {
    CallRt *k = &ex->calls[i];
    call_stop(ex, k);
    if (k->t.backoff) event_free(k->t.backoff);
    if (k->x) { gwr_extract_free(k->x); k->x = NULL; }
    gw_buf_free(&k->body);
  }
  proxy_stop(ex);
  if (ex->pt.backoff) event_free(ex->pt.backoff);
  for (uint32_t i = 0; ex->rreq && ex->E && i < ex->E->limit_count; i++)
    if (ex->rreq[i]) { gwr_redis_cancel(ex->rreq[i]); ex->rreq[i] = NULL; }
  if (ex->deadline) event_free(ex->deadline);
  gw_buf_free(&ex->up);
  gwr_prog_release(ex->g);
  gw_arena_free(&ex->arena);
  free(ex);
}

static void enter(GwrExchange *ex) { ex->depth++; }
static void leave(GwrExchange *ex) {
  if (--ex->depth == 0 && ex->finished) ex_free(ex);
}

static void end_request(GwrExchange *ex, GwrConn *c, int status);

void gwr_exchange_abort(GwrExchange *ex) {
  /* a streamed response cut short (the request failed under it): its line now */
  if (ex->c && !ex->c->admin && ex->pstarted && !ex->logged && !ex->finished) {
    if (ex->pxfer) proxy_end(ex, GWR_CR_CANCELLED);
    end_request(ex, ex->c, ex->c->resp_status);
  }
  ex->finished = 1;
  ex->c = NULL;
  if (ex->depth == 0) ex_free(ex);
}

/* Stop everything still running (no callbacks afterwards). */
static void cancel_all(GwrExchange *ex) {
  unqueue_all(ex);
  for (uint32_t i = 0; i < ex->ncalls; i++) {
    CallRt *k = &ex->calls[i];
    if (k->state == C_RUNNING) call_end(ex, k, GWR_CR_CANCELLED);
    call_stop(ex, k);
  }
  if (ex->deadline) evtimer_del(ex->deadline);
}

static const char *cstr(const GwProgram *p, uint32_t k) { return gw_const_str(p, k, NULL); }

/* ---- responses ------------------------------------------------------------------ */

static void sink_evbuffer(void *ctx, const char *p, size_t n) { evbuffer_add(ctx, p, n); }

/* ---- CORS (the Fetch standard's CORS protocol) ------------------------------------ */

static int list_has(const GwProgram *p, uint32_t first, uint32_t count, const char *s, size_t n, int nocase) {
  for (uint32_t i = 0; i < count; i++) {
    uint32_t len;
    const char *x = gw_const_str(p, p->strlist[first + i].str, &len);
    if (len == n && (nocase ? !strncasecmp(x, s, n) : !memcmp(x, s, n))) return 1;
  }
  return 0;
}

/* The origin to answer with, or NULL when the request's Origin is not allowed. */
static const char *cors_origin(const GwProgram *p, const GwCors *co, const char *origin) {
  if (!origin) return NULL;
  if (list_has(p, co->origins_first, co->origins_count, origin, strlen(origin), 0)) return origin;
  if (list_has(p, co->origins_first, co->origins_count, "*", 1, 0)) return co->credentials ? NULL : "*";
  return NULL;
}

static void cors_common(const GwCors *co, const char *allow_origin, GwBuf *h) {
  gw_buf_adds(h, "Vary: Origin\r\n");
  if (!allow_origin) return;
  gw_buf_printf(h, "Access-Control-Allow-Origin: %s\r\n", allow_origin);
  if (co->credentials) gw_buf_adds(h, "Access-Control-Allow-Credentials: true\r\n");
}

/* Headers of an actual (non-preflight) response of an endpoint with cors. */
static void cors_headers(GwrExchange *ex, GwBuf *h) {
  if (!ex->E || ex->E->cors == GW_NONE || !ex->c) return;
  const GwCors *co = &ex->p->corses[ex->E->cors];
  const char *ao = cors_origin(ex->p, co, gwr_http_header(&ex->c->parser.req, "origin"));
  cors_common(co, ao, h);
  if (ao && co->expose_count) {
    gw_buf_adds(h, "Access-Control-Expose-Headers: ");
    for (uint32_t i = 0; i < co->expose_count; i++)
      gw_buf_printf(h, "%s%s", i ? ", " : "", gw_const_str(ex->p, ex->p->strlist[co->expose_first + i].str, NULL));
    gw_buf_adds(h, "\r\n");
  }
}

/* A preflight: OPTIONS with Origin and Access-Control-Request-Method. The
** policy is that of the endpoint the real request would reach. Anything
** not allowed gets an answer without Access-Control-Allow-* headers. */
static void cors_preflight(GwrExchange *ex, const GwCors *co, const char *method, const char *al, GwBuf *h) {
  const GwProgram *p = ex->p;
  const GwrHttpReq *r = &ex->c->parser.req;
  const char *ao = cors_origin(p, co, gwr_http_header(r, "origin"));
  int ok = ao != NULL;
  if (ok && co->methods_count) ok = list_has(p, co->methods_first, co->methods_count, method, strlen(method), 0);
  const char *req_headers = gwr_http_header(r, "access-control-request-headers");
  for (const char *c = req_headers; ok && c && *c;) {       /* every requested header must be listed */
    while (*c == ' ' || *c == ',' || *c == '\t') c++;
    const char *e = c;
    while (*e && *e != ',' && *e != ' ' && *e != '\t') e++;
    if (e > c && !list_has(p, co->headers_first, co->headers_count, c, (size_t)(e - c), 1)) ok = 0;
    c = e;
  }
  gw_buf_printf(h, "Allow: %s\r\n", al);
  if (!ok) { gw_buf_adds(h, "Vary: Origin\r\n"); return; }
  cors_common(co, ao, h);
  gw_buf_adds(h, "Access-Control-Allow-Methods: ");
  if (co->methods_count)
    for (uint32_t i = 0; i < co->methods_count; i++)
      gw_buf_printf(h, "%s%s", i ? ", " : "", gw_const_str(p, p->strlist[co->methods_first + i].str, NULL));
  else
    gw_buf_adds(h, method);
  gw_buf_adds(h, "\r\n");
  if (req_headers && *req_headers) gw_buf_printf(h, "Access-Control-Allow-Headers: %s\r\n", req_headers);
  gw_buf_printf(h, "Access-Control-Max-Age: %u\r\n", co->max_age_ms / 1000);
}

static void base_headers(GwrExchange *ex, GwBuf *h) {
  gw_buf_adds(h, "X-Request-Id: ");
  gw_buf_adds(h, ex->reqid);
  gw_buf_adds(h, "\r\n");
  cors_headers(ex, h);
  if (ex->has_rl)
    gw_buf_printf(h, "RateLimit-Limit: %u\r\nRateLimit-Remaining: %u\r\nRateLimit-Reset: %u\r\n",
                  ex->rl.limit, ex->rl.remaining, ex->rl.reset_s);
}

static void finish_error(GwrExchange *ex, int status, const char *msg) {
  if (ex->finished) return;
  cancel_all(ex);
  ex->finished = 1;
  if (!ex->c) return;
  GwBuf h = {0};
  base_headers(ex, &h);
  gwr_conn_error(ex->c, status, msg, gw_buf_cstr(&h));
  gw_buf_free(&h);
}

static void backend_error(GwrExchange *ex, int status, const char *kind, uint32_t backend) {
  GwBuf b = {0}, h = {0};
  const char *name = cstr(ex->p, ex->p->backends[backend].name);
  GwValue vk = { .type = GWV_STRING, .n = (uint32_t)strlen(kind), .u = { .s = kind } };
  GwValue vn = { .type = GWV_STRING, .n = (uint32_t)strlen(name), .u = { .s = name } };
  gw_buf_adds(&b, "{\"error\":"); gwv_json(&vk, &b);
  gw_buf_adds(&b, ",\"backend\":"); gwv_json(&vn, &b);
  gw_buf_adds(&b, "}");
  struct evbuffer *eb = evbuffer_new();
  evbuffer_add(eb, b.p, b.n);
  base_headers(ex, &h);
  gw_buf_adds(&h, "Content-Type: application/json\r\n");
  gwr_conn_respond(ex->c, status, gw_buf_cstr(&h), eb, ex->head);
  gw_buf_free(&b); gw_buf_free(&h);
}

/* A required call failed: exactly {"error": kind, "backend": name}. */
static void finish_backend_error(GwrExchange *ex, const char *kind, const CallRt *k) {
  if (ex->finished) return;
  cancel_all(ex);
  ex->finished = 1;
  gwr_log("warn", "request %s: call %s to backend %s failed: %s (status %ld)", ex->reqid,
          cstr(ex->p, k->rec->name), cstr(ex->p, ex->p->backends[k->rec->backend].name), kind, k->status);
  if (ex->c) backend_error(ex, !strcmp(kind, "timeout") ? 504 : 502, kind, k->rec->backend);
}

/* ---- the response cache and the call cache (the store and the keys: gwr_cache.c;
** the rules: docs/caching.md) ---------------------------------------------------------- */

/* A cached endpoint's request: its key, the miss it leads or waits for. */
typedef struct XCache {
  unsigned char   key[32];
  int             off;         /* not cached: no identity in the key, a `by` failed, or no-store asked */
  uint64_t        flight;      /* leading a miss: the flight to end (0: none) */
  GwrCacheWaiter  w;           /* waiting for another request's answer to the same key */
  struct event   *wake;        /* ...woken on this worker's loop (or at the deadline) */
  int             waiting;
  uint64_t        since_us;    /* ...since (gwr_now_us) */
} XCache;

static void proceed(GwrExchange *ex);

static uint64_t now_ms(void) { return gwr_now_us() / 1000; }

/* The statuses a shared cache may store without explicit freshness from the
** origin (RFC 9110 15.1, "heuristically cacheable"); `cache DUR` is the
** freshness. Any other status (201, 302, 403, 5xx, …) is never stored. */
static int cacheable_status(int s) {
  switch (s) {
  case 200: case 203: case 204: case 300: case 301: case 308: case 404: case 405: case 410: case 414: case 501:
    return 1;
  default:
    return 0;
  }
}

/* Whether a backend's answer forbids a shared cache to keep anything built
** from it: Cache-Control private, no-store or no-cache (any case, any of its
** fields; the gateway cannot revalidate, so no-cache is no-store to it). */
static int answer_forbids(const GwrFetchHeader *h, size_t nh) {
  for (size_t i = 0; i < nh; i++)
    if (h[i].name_len == 13 && !strncasecmp(h[i].name, "cache-control", 13) &&
        (gwr_cache_control(h[i].value, h[i].value_len, NULL) & (GWR_CC_NO_STORE | GWR_CC_NO_CACHE | GWR_CC_PRIVATE)))
      return 1;
  return 0;
}

/* The request's Cache-Control (RFC 9111 5.2.1) — or Pragma: no-cache
** without one (5.4) — and its max-age. */
static unsigned request_cc(const GwrHttpReq *r, uint64_t *max_age) {
  unsigned cc = 0;
  int seen = 0;
  for (uint32_t i = 0; i < r->nheaders; i++) {
    const GwrHeader *h = &r->headers[i];
    if (h->name_len == 13 && !memcmp(h->name, "cache-control", 13)) {
      cc |= gwr_cache_control(h->value, h->value_len, max_age);
      seen = 1;
    }
  }
  const char *pragma = seen ? NULL : gwr_http_header(r, "pragma");
  if (pragma && (gwr_cache_control(pragma, strlen(pragma), NULL) & GWR_CC_NO_CACHE)) cc |= GWR_CC_NO_CACHE;
  return cc;
}

/* Add name to a Vary list being built in h (once; *n: names so far). */
static void vary_add(GwBuf *h, size_t at, int *n, const char *name) {
  size_t len = strlen(name);
  for (const char *q = h->p + at + 6; *n && q < h->p + h->n;) {   /* past "Vary: " */
    const char *e = memchr(q, ',', (size_t)(h->p + h->n - q));
    if (!e) e = h->p + h->n;
    if ((size_t)(e - q) == len && !strncasecmp(q, name, len)) return;
    q = e + 2;
  }
  gw_buf_adds(h, (*n)++ ? ", " : "Vary: ");
  gw_buf_adds(h, name);
}

/* The Cache-Control of an answer the cache holds, for the caches after the
** gateway (unless the endpoint set its own): `public` when the key is the
** URL (path and query) and named request headers, `private` when it holds
** anything of the caller (auth, jwt, client, the body, every header) or
** the endpoint is not a GET. max-age is the endpoint's duration: a hit also
** carries Age, and a cache after the gateway counts what is left from the
** two (RFC 9111 4.2). Vary names the request headers the answer depends on
** — those the endpoint reads and, with auth, those that carry the
** credentials (a browser's own cache must not hand one account's answer to
** the next one logged in) —, or is `*` when it reads them all. */
static void downstream(GwrExchange *ex, GwBuf *h, unsigned flags) {
  if (flags & GWR_CRESP_OWN_CC) return;
  const GwProgram *p = ex->p;
  const GwEndpoint *E = ex->E;
  int auth = !E->auth_none && E->auth_count;
  int priv = auth || E->method != GW_METHOD_GET, all = 0, vary = 0;
  for (uint32_t i = 0; i < E->input_count; i++) {
    const GwInput *in = &p->inputs[E->input_first + i];
    if (in->root == GW_ROOT_JWT || in->root == GW_ROOT_CLIENT || in->root == GW_ROOT_BODY) priv = 1;
    if (in->root == GW_ROOT_HEADERS && in->name == GW_NONE) priv = all = 1;
  }
  size_t at = h->n;
  if (all) {
    gw_buf_adds(h, "Vary: *");
    vary = 1;
  } else {
    for (uint32_t i = 0; i < E->input_count; i++) {
      const GwInput *in = &p->inputs[E->input_first + i];
      if (in->root == GW_ROOT_HEADERS) vary_add(h, at, &vary, cstr(p, in->name));
    }
    for (uint32_t i = 0; auth && i < E->auth_count; i++) {
      uint32_t ai = p->authrefs[E->auth_first + i].auth;
      if (p->auths[ai].from == 0 && ex->g->auths[ai].header) vary_add(h, at, &vary, ex->g->auths[ai].header);
      else if (p->auths[ai].from == 1) vary_add(h, at, &vary, "cookie");
    }
  }
  if (vary) gw_buf_adds(h, "\r\n");
  gw_buf_printf(h, "Cache-Control: %s, max-age=%u\r\n", priv ? "private" : "public", E->cache_ms / 1000);
}

static void release_entry(const void *data, size_t len, void *e) {
  (void)data; (void)len;
  gwr_cache_release(e);
}

/* Answer from entry e (a reference, taken): the stored status, the
** endpoint's own headers and body; this request's X-Request-Id, CORS and
** RateLimit-* headers; Age and Cache-Control. The body goes out of the
** entry itself, which is released once written. */
static void xc_serve(GwrExchange *ex, GwrCacheEntry *e) {
  GwrCachedResp r;
  if (gwr_cache_resp_read(e, &r) != 0) { gwr_cache_release(e); finish_error(ex, 500, "bad cache entry"); return; }
  uint64_t now = now_ms();
  GwBuf h = {0};
  base_headers(ex, &h);
  gw_buf_add(&h, r.head, r.head_len);
  gw_buf_printf(&h, "Age: %llu\r\n", (unsigned long long)(gwr_cache_entry_age(e, now) / 1000));
  downstream(ex, &h, r.flags);
  struct evbuffer *eb = NULL;
  if (r.flags & GWR_CRESP_BODY) {
    gw_buf_adds(&h, "Content-Type: application/json\r\n");
    eb = evbuffer_new();
  }
  if (eb && r.body_len && evbuffer_add_reference(eb, r.body, r.body_len, release_entry, e) == 0) e = NULL;
  else if (eb) evbuffer_add(eb, r.body, r.body_len);
  if (e) gwr_cache_release(e);
  ex->finished = 1;
  if (ex->c) gwr_conn_respond(ex->c, r.status, gw_buf_cstr(&h), eb, ex->head);
  else if (eb) evbuffer_free(eb);
  gw_buf_free(&h);
}

/* The leader's answer is in (or it gave up): on the leader's thread, under
** the cache's lock — only signal this request's worker. */
static void xc_wake(GwrCacheWaiter *w) {
  GwrExchange *ex = w->ud;
  event_active(ex->xc->wake, EV_READ, 0);
}

/* On this request's worker: the answer it waited for is stored (a hit), or
** was not (it fetches its own, without waiting again, within what is left
** of the endpoint's deadline), or the deadline passed first (504). */
static void on_xc_wake(evutil_socket_t fd, short what, void *arg) {
  GwrExchange *ex = arg;
  XCache *x = ex->xc;
  GwrCache *cache = ex->w->srv->cache;
  (void)fd;
  enter(ex);
  if (x->waiting) {
    x->waiting = 0;
    gwr_cache_unwait(cache, x->key, &x->w);            /* at the deadline it is still queued */
    GwrCacheEntry *e = NULL;
    uint64_t f = 0;
    if (ex->finished || !ex->c) { /* the client left: nothing to answer */ }
    else if (what & EV_TIMEOUT) finish_error(ex, 504, "timeout");
    else if (gwr_cache_get(cache, GWR_CACHE_RESPONSE, x->key, now_ms(), NULL, &e, &f) == GWR_CACHE_HIT) xc_serve(ex, e);
    else {
      proceed(ex);
      if (!ex->finished && ex->deadline) {            /* the time waited counts */
        uint64_t now = gwr_now_us(), waited = now - x->since_us, full = (uint64_t)ex->E->timeout_ms * 1000;
        uint64_t left = waited < full ? full - waited : 1000;
        struct timeval tv = { (time_t)(left / 1000000), (suseconds_t)(left % 1000000) };
        evtimer_add(ex->deadline, &tv);
        ex->deadline_us = now + left;
      }
    }
  }
  leave(ex);
}

/* After auth and limits, before the call plan of a cached endpoint: answer
** from the cache, or wait for the answer another request is fetching for
** the same key. 1 when the plan is not to run now. A request with
** Cache-Control no-cache (or a max-age its entry is older than) goes to
** the backends, and its answer replaces the entry; with no-store nothing
** of it is stored. */
static int xc_lookup(GwrExchange *ex) {
  GwrCache *cache = ex->w->srv->cache;
  if (ex->xc || !cache || !ex->c) return 0;           /* ex->xc: woken without an entry, the plan runs */
  XCache *x = gw_arena_alloc(&ex->arena, sizeof *x);
  ex->xc = x;
  const GwrHttpReq *r = &ex->c->parser.req;
  uint64_t max_age = 0;
  unsigned cc = request_cc(r, &max_age);
  if ((cc & GWR_CC_NO_STORE) || !gwr_cache_keyed_by_identity(ex->g, ex->m.endpoint) ||
      gwr_cache_request_key(ex->g, ex->m.endpoint, &ex->vm, r->method, &ex->path, ex->auth_by, x->key) != 0) {
    x->off = 1;
    return 0;
  }
  if (cc & GWR_CC_NO_CACHE) return 0;
  GwrCacheEntry *e = NULL;
  int coalesce = !(cc & GWR_CC_MAX_AGE);
  if (coalesce) {
    x->w.wake = xc_wake;
    x->w.ud = ex;
    x->wake = event_new(ex->w->base, -1, 0, on_xc_wake, ex);
    uint32_t ms = ex->E->timeout_ms != GW_NONE ? ex->E->timeout_ms : 10000;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    if (!x->wake || event_add(x->wake, &tv) != 0) coalesce = 0;
  }
  x->waiting = 1;                                     /* before the flight can end */
  x->since_us = gwr_now_us();
  int res = gwr_cache_get(cache, GWR_CACHE_RESPONSE, x->key, now_ms(), coalesce ? &x->w : NULL, &e, &x->flight);
  if (res == GWR_CACHE_WAIT) return 1;
  x->waiting = 0;
  if (x->wake) { event_free(x->wake); x->wake = NULL; }
  if (res != GWR_CACHE_HIT) return 0;
  if ((cc & GWR_CC_MAX_AGE) && gwr_cache_entry_age(e, now_ms()) > max_age * 1000) {
    gwr_cache_release(e);                             /* older than the client accepts */
    return 0;
  }
  xc_serve(ex, e);
  return 1;
}

/* The answer of a cached endpoint is ready (finish_value: h has every
** header line, [own, own_end) the endpoint's own; eb is the body or NULL):
** store it when a shared cache may — a cacheable status, nothing partial,
** no call failed (a guard may have hidden it), no backend answer said
** private, no-store or no-cache, nor the endpoint's own Cache-Control, and
** the endpoint sets no cookie —,
** and then tell the caches after the gateway. The flight this request led
** ends either way. */
static void xc_store(GwrExchange *ex, int status, GwBuf *h, size_t own, size_t own_end, struct evbuffer *eb) {
  XCache *x = ex->xc;
  GwrCache *cache = ex->w->srv->cache;
  if (!x || x->off || !cache) return;
  int ok = cacheable_status(status) && !ex->partial;
  for (uint32_t i = 0; i < ex->ncalls; i++)
    if (ex->calls[i].state == C_FAILED || ex->calls[i].nostore) ok = 0;
  unsigned flags = eb ? GWR_CRESP_BODY : 0;
  for (const char *l = h->p + own; l && l < h->p + own_end;) {
    const char *end = memchr(l, '\n', (size_t)(h->p + own_end - l));
    if (!end) break;
    if (!strncasecmp(l, "cache-control:", 14)) {
      flags |= GWR_CRESP_OWN_CC;
      if (gwr_cache_control(l + 14, (size_t)(end - l - 14), NULL) & (GWR_CC_NO_STORE | GWR_CC_NO_CACHE | GWR_CC_PRIVATE)) ok = 0;
    }
    if (!strncasecmp(l, "set-cookie:", 11)) ok = 0;     /* a cookie (a session) is one client's, never everyone's */
    l = end + 1;
  }
  size_t blen = eb ? evbuffer_get_length(eb) : 0;
  unsigned char *dst = NULL;
  if (ok && !gwr_cache_fits(cache, GWR_CACHE_RESP_LEN(own_end - own, blen))) ok = 0;
  GwrCacheEntry *e = ok ? gwr_cache_resp_new(status, flags, h->p + own, own_end - own, blen, &dst) : NULL;
  if (e) {
    if (blen) evbuffer_copyout(eb, dst, blen);
    if (gwr_cache_put(cache, GWR_CACHE_RESPONSE, x->key, e, ex->E->cache_ms, now_ms()) == 0)
      downstream(ex, h, flags);
    x->flight = 0;                                    /* the put ended it */
  }
  if (x->flight) { gwr_cache_end(cache, x->key, x->flight); x->flight = 0; }
}

/* The exchange is freed: leave the flight it waits for, end the one it leads. */
static void xc_free(GwrExchange *ex) {
  XCache *x = ex->xc;
  GwrCache *cache = ex->w->srv->cache;
  if (!x || !cache) return;
  if (x->waiting) { gwr_cache_unwait(cache, x->key, &x->w); x->waiting = 0; }
  if (x->wake) { event_free(x->wake); x->wake = NULL; }
  if (x->flight) { gwr_cache_end(cache, x->key, x->flight); x->flight = 0; }
}

/* A call with `cache D`, its request built (tail, headers, body): its value
** from the cache, kept as JSON text and parsed again into this request's
** arena. 1 when it settled so; else its key is kept for the store. */
static int xc_call_lookup(GwrExchange *ex, CallRt *k) {
  GwrCache *cache = ex->w->srv->cache;
  if (!cache) return 0;
  const GwCall *R = k->rec;
  k->ckey = gw_arena_alloc(&ex->arena, 32);
  gwr_cache_call_key(ex->g, ex->E->call_first + k->i, gw_method_names[R->method], k->tail, strlen(k->tail), k->hv,
                     R->body != GW_NONE ? (k->body.p ? k->body.p : "") : NULL, k->body.n, k->ckey);
  GwrCacheEntry *e = NULL;
  uint64_t f = 0;
  if (gwr_cache_get(cache, GWR_CACHE_CALL, k->ckey, now_ms(), NULL, &e, &f) != GWR_CACHE_HIT) return 0;
  size_t n;
  const unsigned char *d = gwr_cache_entry_data(e, &n);
  GwrJsonLimits lim = { ex->w->srv->set.max_json_depth };
  GwValue *v = NULL;
  char err[64];
  int rc = gwr_json_parse(&ex->arena, (const char *)d, n, &lim, &v, err, sizeof err);
  gwr_cache_release(e);
  if (rc != 0 || !v) return 0;
  call_end(ex, k, GWR_CR_OK);                         /* not sent: no backend metrics, result ok */
  k->ckey = NULL;
  k->state = C_DONE; k->value = v; ex->vm.results[k->i] = v;
  return 1;
}

/* Call k settled with its value: keep it for `cache D` (unless its answer
** said private, no-store or no-cache). */
static void xc_call_store(GwrExchange *ex, CallRt *k) {
  GwrCache *cache = ex->w->srv->cache;
  if (!cache || !k->ckey || k->nostore) return;
  GwBuf j = {0};
  gwv_json(k->value, &j);
  GwrCacheEntry *e = gwr_cache_fits(cache, j.n) ? gwr_cache_entry_new(j.n) : NULL;
  if (e) {
    memcpy(gwr_cache_entry_data(e, NULL), j.p ? j.p : "", j.n);
    gwr_cache_put(cache, GWR_CACHE_CALL, k->ckey, e, k->rec->cache_ms, now_ms());
  }
  gw_buf_free(&j);
}

static int header_value_ok(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) if (s[i] == '\r' || s[i] == '\n' || s[i] == 0) return 0;
  return 1;
}

static const char *vm_error(GwrExchange *ex) { return ex->vm.error ? ex->vm.error : "expression failed"; }

/* Answer with status and the value of body_block (the response or a guard). */
static void finish_value(GwrExchange *ex, int status, uint32_t body_block, int with_headers) {
  if (ex->finished) return;
  GwValue *body = NULL;
  if (body_block != GW_NONE) {
    body = gwr_vm_run(&ex->vm, body_block, NULL);
    if (!body) { finish_error(ex, 500, vm_error(ex)); return; }
  }
  GwBuf h = {0};
  base_headers(ex, &h);
  if (ex->partial) {
    gw_buf_adds(&h, "X-Gw-Partial: true\r\n");
    GWR_M_ADD(ex->w->metrics->route[ex->g->ep_slot[ex->E - ex->p->endpoints]].partial, 1);
  }
  size_t own = h.n;                    /* the endpoint's own header lines: a cached answer keeps them */
  for (uint32_t i = 0; with_headers && i < ex->E->header_count; i++) {
    const GwRHeader *rh = &ex->p->rheaders[ex->E->header_first + i];
    GwValue *v = gwr_vm_run(&ex->vm, rh->value, NULL);
    if (!v) { gw_buf_free(&h); finish_error(ex, 500, vm_error(ex)); return; }
    if (GWV_IS_NULL(v)) continue;
    GwBuf r = {0};
    gwv_render(v, &r);
    if (header_value_ok(r.p ? r.p : "", r.n)) gw_buf_printf(&h, "%s: %s\r\n", cstr(ex->p, rh->name), gw_buf_cstr(&r));
    gw_buf_free(&r);
  }
  size_t own_end = h.n;
  struct evbuffer *eb = NULL;
  if (body) {
    gw_buf_adds(&h, "Content-Type: application/json\r\n");
    eb = evbuffer_new();
    if (gwr_json_write(body, sink_evbuffer, eb) != 0) {
      evbuffer_free(eb);
      gw_buf_free(&h);
      finish_error(ex, 500, "the response cannot be written as JSON");
      return;
    }
  }
  cancel_all(ex);
  ex->finished = 1;
  if (ex->xc) xc_store(ex, status, &h, own, own_end, eb);
  if (ex->c) gwr_conn_respond(ex->c, status, gw_buf_cstr(&h), eb, ex->head);
  else if (eb) evbuffer_free(eb);
  gw_buf_free(&h);
}

/* ---- the call plan -------------------------------------------------------------- */

static void advance(GwrExchange *ex);

static int settled(const CallRt *k) { return k->state == C_DONE || k->state == C_SKIPPED || k->state == C_FAILED; }

static int deps_settled(GwrExchange *ex, uint32_t first, uint32_t count) {
  for (uint32_t d = 0; d < count; d++)
    if (!settled(&ex->calls[ex->p->deps[first + d].call])) return 0;
  return 1;
}

/* The result of a failure kind (the error the client or the log sees). */
static int result_of(const char *kind) {
  static const struct { const char *kind; int res; } map[] = {
    { "connect", GWR_CR_CONNECT }, { "timeout", GWR_CR_TIMEOUT }, { "status", GWR_CR_STATUS },
    { "invalid_body", GWR_CR_INVALID_BODY }, { "too_large", GWR_CR_TOO_LARGE },
    { "overloaded", GWR_CR_OVERLOADED }, { "missing", GWR_CR_SKIPPED },
    { "unavailable", GWR_CR_UNAVAILABLE }, { "breaker_open", GWR_CR_BREAKER_OPEN },
  };
  for (size_t i = 0; i < sizeof map / sizeof *map; i++) if (!strcmp(kind, map[i].kind)) return map[i].res;
  return GWR_CR_ERROR;                 /* "connection": reset, cut short, malformed */
}

/* A call failed with kind: apply its policy. */
static void call_failed(CallRt *k, const char *kind) {
  GwrExchange *ex = k->ex;
  call_end(ex, k, result_of(kind));
  k->state = C_FAILED;
  call_stop(ex, k);                    /* its transfer, slot, place in the queue, pending retry */
  if (k->rec->mode == 0) { finish_backend_error(ex, kind, k); return; }
  ex->partial = 1;
  if (k->rec->mode == 2) {
    GwValue *v = gwr_vm_run(&ex->vm, k->rec->dflt, NULL);
    if (!v) { finish_error(ex, 500, vm_error(ex)); return; }
    k->value = v;
  } else {
    k->value = &gwv_null;
  }
  ex->vm.results[k->i] = k->value;
  gwr_log("info", "request %s: call %s failed (%s), using its %s", ex->reqid, cstr(ex->p, k->rec->name), kind,
          k->rec->mode == 2 ? "default" : "null");
}

/* ---- retries, health and the breaker (gwr_backend.h) ------------------------------ */

/* How an attempt that failed with kind why (NULL: it did not) counts for
** the target's health and the breaker: transport failures and 5xx answers
** are the backend's failures; any other answer shows it alive. */
static int outcome_of(const char *why, long status) {
  if (!why) return GWR_BE_OK;
  if (!strcmp(why, "connect") || !strcmp(why, "timeout") || !strcmp(why, "connection")) return GWR_BE_FAIL;
  if (!strcmp(why, "status") && status >= 500) return GWR_BE_FAIL;
  return GWR_BE_OK;
}

/* An attempt ended: tell health and the breaker, give its slot back. */
static void attempt_done(GwrExchange *ex, uint32_t b, Try *t, int outcome) {
  GwrBe *be = be_of(ex, b);
  gwr_be_end(be, &t->att, outcome, gwr_be_now_ms());
  if (t->slot) { t->slot = 0; gwr_be_release(be, ex->w->id); }
}

static uint32_t jitter(void) {
  static _Thread_local uint64_t x;
  if (!x) x = gwr_now_us() ^ (uint64_t)(uintptr_t)&x ^ 0x9e3779b97f4a7c15ull;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return (uint32_t)(x >> 32);
}

/* Whether an attempt that failed with kind why may be made again, and after
** what pause (t->delay_ms): attempts left (`retries` of the backend); a
** failure worth it for the method — a connect error, or any failure before
** the request was sent, for every method; a timeout, a cut connection or a
** 502/503/504 only for GET, HEAD, PUT and DELETE; and the pause (20 ms
** doubling to 160 ms at most, a random point in its upper half) over
** before the endpoint's deadline. */
static int may_retry(GwrExchange *ex, uint32_t b, int method, Try *t, const char *why, long status, int sent) {
  if ((uint32_t)t->n > ex->p->backends[b].retries || t->n < 1) return 0;
  int idem = method == GW_METHOD_GET || method == GW_METHOD_HEAD || method == GW_METHOD_PUT || method == GW_METHOD_DELETE;
  int transport = !strcmp(why, "connect") || !strcmp(why, "timeout") || !strcmp(why, "connection");
  if (!(!strcmp(why, "connect") || (transport && !sent) ||
        (idem && (transport || (!strcmp(why, "status") && status >= 502 && status <= 504)))))
    return 0;
  uint32_t base = 20u << (t->n > 4 ? 3 : t->n - 1);
  t->delay_ms = base / 2 + jitter() % (base / 2 + 1);
  if (ex->deadline_us && gwr_now_us() + (uint64_t)t->delay_ms * 1000 + 1000 >= ex->deadline_us) return 0;
  return 1;
}

static void call_attempt(GwrExchange *ex, CallRt *k);

static void call_retry(evutil_socket_t fd, short what, void *arg) {
  CallRt *k = arg;
  GwrExchange *ex = k->ex;
  (void)fd; (void)what;
  enter(ex);
  if (!ex->finished && k->state == C_RUNNING) {
    call_attempt(ex, k);
    if (!ex->finished && k->state != C_RUNNING) advance(ex);
  }
  leave(ex);
}

/* Call k's attempt failed with why: if it may be made again, schedule it
** (a fresh body parser, the same request) and return 1. */
static int retry_call(GwrExchange *ex, CallRt *k, const char *why, int sent) {
  if (!may_retry(ex, k->rec->backend, k->rec->method, &k->t, why, k->status, sent)) return 0;
  if (!k->t.backoff && !(k->t.backoff = evtimer_new(ex->w->base, call_retry, k))) return 0;
  k->fail = NULL;
  k->got = 0;
  if (k->x) gwr_extract_free(k->x);
  GwrJsonLimits lim = { ex->w->srv->set.max_json_depth };
  k->x = gwr_extract_new(&ex->arena, ex->g->paths[ex->E->call_first + k->i], &lim);
  struct timeval tv = { (time_t)(k->t.delay_ms / 1000), (suseconds_t)((k->t.delay_ms % 1000) * 1000) };
  evtimer_add(k->t.backoff, &tv);
  gwr_be_count_retry(be_of(ex, k->rec->backend));
  gwr_log("info", "request %s: call %s to backend %s failed (%s, status %ld), retrying in %u ms", ex->reqid,
          cstr(ex->p, k->rec->name), cstr(ex->p, ex->p->backends[k->rec->backend].name), why, k->status, k->t.delay_ms);
  return 1;
}

static int on_head(void *ud, long status, const GwrFetchHeader *h, size_t nh) {
  CallRt *k = ud;
  k->status = status;
  k->nostore = answer_forbids(h, nh);
  if (status < 200 || status > 299) { k->fail = "status"; return -1; }
  return 0;
}

static int on_data(void *ud, const char *p, size_t n) {
  CallRt *k = ud;
  k->got += n;
  if (gwr_extract_feed(k->x, p, n) != 0) { k->fail = "invalid_body"; return -1; }
  return 0;
}

static const char *kind_of(int kind) {
  switch (kind) {
  case GWR_FETCH_CONNECT: return "connect";
  case GWR_FETCH_TIMEOUT: return "timeout";
  case GWR_FETCH_TOO_LARGE: return "too_large";
  default: return "connection";
  }
}

static void on_done(void *ud, int kind, long status, const char *detail) {
  CallRt *k = ud;
  GwrExchange *ex = k->ex;
  (void)detail;
  enter(ex);
  int sent = gwr_fetch_sent(k->xfer);
  k->xfer = NULL;
  if (status) k->status = status;
  const char *why = k->fail ? k->fail : kind != GWR_FETCH_OK ? kind_of(kind) : NULL;
  attempt_done(ex, k->rec->backend, &k->t, outcome_of(why, k->status));
  if (!ex->finished && why && retry_call(ex, k, why, sent)) { leave(ex); return; }
  if (!ex->finished) {
    if (k->fail) call_failed(k, k->fail);
    else if (kind != GWR_FETCH_OK) call_failed(k, kind_of(kind));
    else {
      GwValue *v = NULL;
      if (k->got == 0) {                   /* 204, empty 200 */
        call_end(ex, k, GWR_CR_OK);
        k->state = C_DONE; k->value = &gwv_null; ex->vm.results[k->i] = &gwv_null;
      } else if (gwr_extract_finish(k->x, &v) != 0 || !v) call_failed(k, "invalid_body");
      else { call_end(ex, k, GWR_CR_OK); k->state = C_DONE; k->value = v; ex->vm.results[k->i] = v; }
      if (k->state == C_DONE && k->ckey) xc_call_store(ex, k);
    }
    if (!ex->finished) advance(ex);
  }
  leave(ex);
}

/* Append an object's members to a URL as a query string: nulls left out,
** arrays repeated, everything percent-encoded. */
static void add_query(GwBuf *url, const GwValue *q) {
  if (!q || q->type != GWV_OBJECT) return;
  int first = strchr(gw_buf_cstr(url), '?') == NULL;
  for (uint32_t i = 0; i < q->n; i++) {
    const GwMember *m = &q->u.members[i];
    const GwValue *v = m->val;
    uint32_t n = v->type == GWV_ARRAY ? v->n : 1;
    for (uint32_t j = 0; j < n; j++) {
      const GwValue *x = v->type == GWV_ARRAY ? v->u.items[j] : v;
      if (GWV_IS_NULL(x)) continue;
      gw_buf_addc(url, first ? '?' : '&');
      first = 0;
      gwr_pct_encode(url, m->key, m->klen);
      gw_buf_addc(url, '=');
      GwBuf r = {0};
      gwv_render(x, &r);
      gwr_pct_encode(url, r.p ? r.p : "", r.n);
      gw_buf_free(&r);
    }
  }
}



/* The gateway's own headers on every backend request: the real peer, never
** a client-supplied chain. */
static int gateway_headers(GwrExchange *ex, const char **hv, int nh) {
  hv[nh++] = gw_arena_printf(&ex->arena, "X-Forwarded-For: %s", ex->c ? ex->c->peer : "");
  hv[nh++] = ex->c && ex->c->tls ? "X-Forwarded-Proto: https" : "X-Forwarded-Proto: http";
  hv[nh++] = gw_arena_printf(&ex->arena, "X-Request-Id: %s", ex->reqid);
  if (ex->traceparent[0]) hv[nh++] = gw_arena_printf(&ex->arena, "traceparent: %s", ex->traceparent);
  return nh;
}

static void start_call(GwrExchange *ex, CallRt *k) {
  const GwCall *R = k->rec;
  if (R->cond != GW_NONE) {
    GwValue *v = gwr_vm_run(&ex->vm, R->cond, NULL);
    if (!v) { finish_error(ex, 500, vm_error(ex)); return; }
    if (!gwv_truthy(v)) {
      call_end(ex, k, GWR_CR_SKIPPED);
      k->state = C_SKIPPED; k->value = &gwv_null; ex->vm.results[k->i] = &gwv_null;
      return;
    }
  }
  ex->vm.missing = 0;
  GwValue *u = gwr_vm_run(&ex->vm, R->url, NULL);
  if (!u) {
    if (ex->vm.missing) { call_failed(k, "missing"); return; }
    finish_error(ex, 500, vm_error(ex));
    return;
  }
  GwBuf url = {0};                     /* after the target's base URL */
  gwv_render(u, &url);
  if (R->query != GW_NONE) {
    GwValue *q = gwr_vm_run(&ex->vm, R->query, NULL);
    if (!q) { gw_buf_free(&url); finish_error(ex, 500, vm_error(ex)); return; }
    add_query(&url, q);
  }
  /* headers: the backend's, the call's, the gateway's */
  GwrBackend *BR = &ex->g->backends[R->backend];
  int nb = 0;
  while (BR->headers[nb]) nb++;
  GwValue *hobj = NULL;
  if (R->headers != GW_NONE) {
    hobj = gwr_vm_run(&ex->vm, R->headers, NULL);
    if (!hobj) { gw_buf_free(&url); finish_error(ex, 500, vm_error(ex)); return; }
  }
  int cap = nb + (hobj && hobj->type == GWV_OBJECT ? (int)hobj->n : 0) + 8;
  const char **hv = gw_arena_alloc(&ex->arena, sizeof *hv * (size_t)cap);
  int nh = 0;
  for (int i = 0; i < nb; i++) hv[nh++] = BR->headers[i];
  if (hobj && hobj->type == GWV_OBJECT)
    for (uint32_t i = 0; i < hobj->n; i++) {
      const GwMember *m = &hobj->u.members[i];
      /* framing, forwarding and the gateway's own headers are the gateway's
      ** (the compiler refuses them; a program built otherwise is held to it) */
      if (GWV_IS_NULL(m->val) || !gw_http_token(m->key, m->klen) || gw_header_class(m->key, m->klen)) continue;
      GwBuf r = {0};
      gwv_render(m->val, &r);
      if (header_value_ok(r.p ? r.p : "", r.n))
        hv[nh++] = gw_arena_printf(&ex->arena, "%.*s: %s", (int)m->klen, m->key, gw_buf_cstr(&r));
      gw_buf_free(&r);
    }
  nh = gateway_headers(ex, hv, nh);
  if (R->body != GW_NONE) {
    GwValue *b = gwr_vm_run(&ex->vm, R->body, NULL);
    if (!b) { gw_buf_free(&url); finish_error(ex, 500, vm_error(ex)); return; }
    gwv_json(b, &k->body);
    hv[nh++] = "Content-Type: application/json";
  }
  hv[nh] = NULL;
  k->hv = hv;
  k->tail = gw_arena_strndup(&ex->arena, gw_buf_cstr(&url), url.n);
  gw_buf_free(&url);
  if (R->cache_ms && xc_call_lookup(ex, k)) return;       /* settled from the call cache */
  GwrJsonLimits lim = { ex->c->w->srv->set.max_json_depth };
  k->x = gwr_extract_new(&ex->arena, ex->g->paths[ex->E->call_first + k->i], &lim);
  k->state = C_RUNNING;
  k->t.last = -1;
  call_attempt(ex, k);
}

/* Call k holds a slot: pick a target, pass the breaker, send. */
static void call_send(GwrExchange *ex, CallRt *k) {
  const GwCall *R = k->rec;
  const GwBackend *B = &ex->p->backends[R->backend];
  GwrBe *be = be_of(ex, R->backend);
  const char *why = gwr_be_begin(be, k->t.last, gwr_be_now_ms(), &k->t.att);
  if (why) { call_failed(k, why); return; }
  k->t.n++;
  k->t.last = k->t.att.target;
  k->status = 0;
  GwBuf url = {0};
  gw_buf_adds(&url, gwr_be_url(be, k->t.att.target));
  gw_buf_adds(&url, k->tail);
  GwrFetchReq fr;
  memset(&fr, 0, sizeof fr);
  fr.url = gw_buf_cstr(&url);
  fr.method = gw_method_names[R->method];
  fr.headers = k->hv;
  if (R->body != GW_NONE) { fr.body = k->body.p ? k->body.p : ""; fr.body_len = k->body.n; }
  fr.body_size = -1;
  fr.connect_timeout_ms = B->connect_timeout_ms;
  fr.timeout_ms = R->timeout_ms != GW_NONE ? R->timeout_ms : B->timeout_ms;   /* per attempt */
  fr.max_response = B->max_response;
  fr.tls = &ex->g->backends[R->backend].tls;
  fr.on_head = on_head;
  fr.on_data = on_data;
  fr.on_done = on_done;
  fr.ud = k;
  if (!k->t0) k->t0 = gwr_now_us();
  k->xfer = gwr_fetch_start(ex->w->fetch, &fr);
  gw_buf_free(&url);
  if (!k->xfer) call_failed(k, "connect");
}

/* A slot came free for call k, queued in call_attempt. */
static void call_slot(GwrBeWait *w) {
  CallRt *k = (CallRt *)(void *)((char *)w - offsetof(CallRt, t.wait));
  GwrExchange *ex = k->ex;
  enter(ex);
  k->t.slot = 1;
  if (ex->finished || k->state != C_RUNNING) call_stop(ex, k);   /* hands the slot on */
  else {
    call_send(ex, k);
    if (!ex->finished && k->state != C_RUNNING) advance(ex);
  }
  leave(ex);
}

/* An attempt of call k: one of this worker's max_connections slots of the
** backend, or a place in its bounded queue; beyond that, fail fast. */
static void call_attempt(GwrExchange *ex, CallRt *k) {
  k->t.wait.ready = call_slot;
  int r = gwr_be_acquire(be_of(ex, k->rec->backend), ex->w->id, &k->t.wait);
  if (r < 0) { call_failed(k, "overloaded"); return; }
  if (r > 0) { k->t.slot = 1; call_send(ex, k); }
}

static void advance(GwrExchange *ex) {
  const GwProgram *p = ex->p;
  for (int progress = 1; progress && !ex->finished;) {
    progress = 0;
    for (uint32_t i = 0; i < ex->ncalls && !ex->finished; i++) {
      CallRt *k = &ex->calls[i];
      if (k->state != C_WAIT || !deps_settled(ex, k->rec->dep_first, k->rec->dep_count)) continue;
      start_call(ex, k);
      if (k->state != C_RUNNING) progress = 1;     /* settled at once: others may be ready */
    }
    /* guards, as soon as what they read has settled */
    for (uint32_t i = 0; i < ex->E->guard_count && !ex->finished; i++) {
      const GwGuard *gd = &p->guards[ex->E->guard_first + i];
      if (ex->guard_done[i] || !deps_settled(ex, gd->dep_first, gd->dep_count)) continue;
      ex->guard_done[i] = 1;
      GwValue *v = gwr_vm_run(&ex->vm, gd->cond, NULL);
      if (!v) { finish_error(ex, 500, vm_error(ex)); return; }
      if (!gwv_truthy(v)) continue;
      ex->partial = 0;
      if (gd->body == GW_NONE) {
        char msg[64];
        snprintf(msg, sizeof msg, "%s", gwr_status_text((int)gd->status));
        for (char *q = msg; *q; q++) *q = (char)tolower((unsigned char)*q);
        finish_error(ex, (int)gd->status, msg);
      } else {
        finish_value(ex, (int)gd->status, gd->body, 0);
      }
      return;
    }
  }
  if (ex->finished) return;
  for (uint32_t i = 0; i < ex->ncalls; i++) if (!settled(&ex->calls[i])) return;
  finish_value(ex, (int)ex->E->status, ex->E->respond, 1);
}

/* The endpoint's deadline: a required call still running answers 504; the
** optional ones take their policy and the response goes out on time. */
static void on_deadline(evutil_socket_t fd, short what, void *arg) {
  GwrExchange *ex = arg;
  (void)fd; (void)what;
  enter(ex);
  unqueue_all(ex);
  for (uint32_t i = 0; i < ex->ncalls && !ex->finished; i++) {
    CallRt *k = &ex->calls[i];
    if ((k->state == C_RUNNING || k->state == C_WAIT) && k->rec->mode == 0) {
      if (k->state == C_RUNNING) call_end(ex, k, GWR_CR_TIMEOUT);
      finish_backend_error(ex, "timeout", k);
    }
  }
  for (uint32_t i = 0; i < ex->ncalls && !ex->finished; i++) {
    CallRt *k = &ex->calls[i];
    if (k->state != C_RUNNING && k->state != C_WAIT) continue;
    call_stop(ex, k);
    call_failed(k, "timeout");
  }
  if (!ex->finished) advance(ex);
  leave(ex);
}

/* ---- request inputs --------------------------------------------------------------- */

/* Decode a form-encoded component (%XX and '+') into the arena. */
static char *form_decode(GwArena *a, const char *s, size_t n, size_t *out) {
  char *d = gw_arena_alloc_raw(a, n + 1);
  *out = gw_form_decode(d, s, n);
  d[*out] = 0;
  return d;
}

/* query: the first value of each parameter, as a string. */
static GwValue *query_object(GwArena *a, const char *q, size_t n, int *bad) {
  GwValue *o = gwv_object(a, 4);
  size_t i = 0;
  while (q && i < n) {
    size_t j = i;
    while (j < n && q[j] != '&') j++;
    if (j > i) {
      size_t eq = i;
      while (eq < j && q[eq] != '=') eq++;
      size_t kn, vn = 0;
      char *k = form_decode(a, q + i, eq - i, &kn);
      char *v = eq < j ? form_decode(a, q + eq + 1, j - eq - 1, &vn) : gw_arena_strndup(a, "", 0);
      if (!gw_utf8_valid(k, kn) || !gw_utf8_valid(v, vn) || memchr(k, 0, kn) || memchr(v, 0, vn)) { *bad = 1; return o; }
      if (!gwv_get(o, k, kn)) gwv_set(a, o, k, kn, gwv_string_ref(a, v, vn), 0);
    }
    i = j + 1;
  }
  return o;
}

/* headers: lower-case names; repeated headers joined with ", " (RFC 9110 5.3). */
static GwValue *headers_object(GwArena *a, const GwrHttpReq *r) {
  GwValue *o = gwv_object(a, r->nheaders + 1);
  for (uint32_t i = 0; i < r->nheaders; i++) {
    const GwrHeader *h = &r->headers[i];
    if (!gw_utf8_valid(h->value, h->value_len)) continue;
    GwValue *prev = gwv_get(o, h->name, h->name_len);
    if (prev) {
      GwBuf b = {0};
      gw_buf_add(&b, prev->u.s, prev->n);
      gw_buf_adds(&b, ", ");
      gw_buf_add(&b, h->value, h->value_len);
      gwv_set(a, o, h->name, h->name_len, gwv_string_copy(a, b.p, b.n), 0);
      gw_buf_free(&b);
    } else {
      gwv_set(a, o, h->name, h->name_len, gwv_string_ref(a, h->value, h->value_len), 0);
    }
  }
  return o;
}

static int reads_root(const GwProgram *p, const GwEndpoint *E, int root) {
  for (uint32_t i = 0; i < E->input_count; i++) if ((int)p->inputs[E->input_first + i].root == root) return 1;
  return 0;
}

/* ---- auth: API keys here; JWT arrives with issue 4 (until then a JWT
** policy never admits a request: fail closed) ---------------------------------------- */

/* -1: admitted; else why not (GWR_AF_MISSING or GWR_AF_INVALID). */
static int apikey_check(GwrExchange *ex, const GwAuth *A, GwValue *query) {
  const char *key = NULL;
  size_t kn = 0;
  const char *name = cstr(ex->p, A->from_name);
  if (A->from == 2) {
    GwValue *v = gwv_get(query, name, strlen(name));
    if (v && v->type == GWV_STRING) { key = v->u.s; kn = v->n; }
  } else {
    key = gwr_http_header(&ex->c->parser.req, ex->g->auths[A - ex->p->auths].header);
    if (key) kn = strlen(key);
  }
  if (!key || !kn) return GWR_AF_MISSING;
  unsigned char h[32];
  gw_sha256(key, kn, h);
  return gwr_apikey_lookup(ex->g, (uint32_t)(A - ex->p->auths), h, &ex->client_name) ? -1 : GWR_AF_INVALID;
}

/* The bounded reason of a JWT verification failure (gwr_jwt_verify's reason). */
static int jwt_reason(const char *why) {
  if (!strcmp(why, "expired")) return GWR_AF_EXPIRED;
  if (!strcmp(why, "unknown kid") || !strcmp(why, "no key for alg") || !strcmp(why, "no keys loaded"))
    return GWR_AF_UNKNOWN_KEY;
  return GWR_AF_INVALID;
}

/* The token of a JWT policy: from a header (with the Bearer scheme,
** case-insensitive, by default) or a cookie. NULL if absent. */
static const char *jwt_token(GwrExchange *ex, const GwAuth *A, size_t *n) {
  const GwrHttpReq *r = &ex->c->parser.req;
  const char *name = cstr(ex->p, A->from_name);
  if (A->from == 1) {
    const char *ck = gwr_http_header(r, "cookie");
    size_t nl = strlen(name);
    for (const char *c = ck; c && *c;) {
      while (*c == ' ' || *c == ';') c++;
      const char *eq = strchr(c, '='), *end = strchr(c, ';');
      if (!end) end = c + strlen(c);
      if (eq && eq < end && (size_t)(eq - c) == nl && !memcmp(c, name, nl)) {
        const char *v = eq + 1;
        while (end > v && end[-1] == ' ') end--;
        *n = (size_t)(end - v);
        return *n ? v : NULL;
      }
      c = end;
    }
    return NULL;
  }
  const char *v = gwr_http_header(r, ex->g->auths[A - ex->p->auths].header);
  if (!v) return NULL;
  if (A->bearer) {
    if (strncasecmp(v, "bearer ", 7)) return NULL;
    v += 7;
    while (*v == ' ') v++;
  }
  *n = strlen(v);
  return *n ? v : NULL;
}

static int send_auth_error(GwrExchange *ex, int status, int jwt) {
  GwBuf h = {0};
  base_headers(ex, &h);
  if (status == 401 && jwt) gw_buf_adds(&h, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n");
  gw_buf_adds(&h, "Content-Type: application/json\r\n");
  ex->finished = 1;
  struct evbuffer *b = evbuffer_new();
  evbuffer_add_printf(b, status == 401 ? "{\"error\":\"unauthorized\"}" : "{\"error\":\"forbidden\"}");
  gwr_conn_respond(ex->c, status, gw_buf_cstr(&h), b, ex->head);
  gw_buf_free(&h);
  return status;
}

/* 0: admitted; else the answer was sent. `auth a or b`: the first policy
** that admits the request wins; a valid token whose `require` fails is 403. */
static int check_auth(GwrExchange *ex, GwValue *query) {
  const GwEndpoint *E = ex->E;
  if (E->auth_none || E->auth_count == 0) return 0;
  int jwt = 0, forbidden = 0;
  uint8_t why_not[16];               /* per policy tried: counted only if the request is refused */
  for (uint32_t i = 0; i < E->auth_count; i++) {
    uint32_t ai = ex->p->authrefs[E->auth_first + i].auth;
    const GwAuth *A = &ex->p->auths[ai];
    int r;
    if (A->type == 1) {
      if ((r = apikey_check(ex, A, query)) < 0) { ex->auth_by = (int)i; return 0; }
      if (i < sizeof why_not) why_not[i] = (uint8_t)r;
      continue;
    }
    jwt = 1;
    size_t n = 0;
    const char *tok = jwt_token(ex, A, &n);
    GwValue *claims = NULL;
    const char *why = "no token";
    if (!tok || gwr_jwt_verify(ex->g->jwts[ai], tok, n, (int64_t)time(NULL), &ex->arena, &claims, &why) != 0) {
      gwr_log("info", "request %s: auth %s: %s", ex->reqid, cstr(ex->p, A->name), why);
      if (i < sizeof why_not) why_not[i] = (uint8_t)(tok ? jwt_reason(why) : GWR_AF_MISSING);
      continue;
    }
    ex->vm.roots[GW_ROOT_JWT] = claims;
    if (A->require != GW_NONE) {
      GwValue *ok = gwr_vm_run(&ex->vm, A->require, NULL);
      if (!ok || !gwv_truthy(ok)) {
        forbidden = 1;
        ex->vm.roots[GW_ROOT_JWT] = &gwv_null;
        if (i < sizeof why_not) why_not[i] = GWR_AF_FORBIDDEN;
        continue;
      }
    }
    ex->auth_by = (int)i;
    return 0;
  }
  for (uint32_t i = 0; i < E->auth_count && i < sizeof why_not; i++)
    GWR_M_ADD(ex->w->metrics->auth[ex->g->auth_slot[ex->p->authrefs[E->auth_first + i].auth]][why_not[i]], 1);
  return send_auth_error(ex, forbidden ? 403 : 401, jwt);
}


/* ---- proxy -------------------------------------------------------------------------- */

static int hop_by_hop(const char *name, size_t n, const char *connection) {
  if (gw_header_class(name, n) & GW_HDR_HOP) return 1;
  for (const char *c = connection; c && *c;) {       /* headers named in Connection */
    while (*c == ' ' || *c == ',' || *c == '\t') c++;
    const char *e = c;
    while (*e && *e != ',' && *e != ' ' && *e != '\t') e++;
    if ((size_t)(e - c) == n && n && !strncasecmp(c, name, n)) return 1;
    c = e;
  }
  return 0;
}

static int proxy_may_retry(GwrExchange *ex, const char *why, long status, int sent) {
  /* nothing went to the client yet, and the request body can be sent again */
  return !ex->streaming && !ex->pstarted && ex->c &&
         may_retry(ex, ex->E->proxy, ex->c->parser.req.method, &ex->pt, why, status, sent);
}

static int p_head(void *ud, long status, const GwrFetchHeader *h, size_t nh) {
  GwrExchange *ex = ud;
  if (!ex->c) return -1;
  if (status >= 502 && status <= 504 && proxy_may_retry(ex, "status", status, 1)) {
    ex->pt.retry = 1;                  /* p_done makes the next attempt */
    ex->pstatus = status;
    return -1;
  }
  gwr_be_end(be_of(ex, ex->E->proxy), &ex->pt.att, outcome_of(status >= 500 ? "status" : NULL, status), gwr_be_now_ms());
  const char *conn = NULL;
  int has_len = 0;
  for (size_t i = 0; i < nh; i++) {
    if (h[i].name_len == 10 && !strncasecmp(h[i].name, "connection", 10))
      conn = gw_arena_strndup(&ex->arena, h[i].value, h[i].value_len);
    if (h[i].name_len == 14 && !strncasecmp(h[i].name, "content-length", 14)) has_len = 1;
  }
  GwBuf hb = {0};
  base_headers(ex, &hb);
  for (size_t i = 0; i < nh; i++) {
    if (hop_by_hop(h[i].name, h[i].name_len, conn)) continue;
    if (gw_header_class(h[i].name, h[i].name_len) & GW_HDR_GATEWAY) continue;
    if (!header_value_ok(h[i].value, h[i].value_len)) continue;
    gw_buf_printf(&hb, "%.*s: %.*s\r\n", (int)h[i].name_len, h[i].name, (int)h[i].value_len, h[i].value);
  }
  int no_body = ex->head || status == 204 || status == 304 || status < 200;
  if (ex->streaming && !ex->up_done) ex->c->keep_alive = 0;   /* the rest of the upload is never read */
  ex->pchunked = !has_len && !no_body && ex->c->parser.req.minor >= 1;
  if (!has_len && !no_body && !ex->pchunked) ex->c->keep_alive = 0;   /* HTTP/1.0: close-delimited */
  ex->pstatus = status;
  gwr_conn_stream_head(ex->c, (int)status, gw_buf_cstr(&hb), ex->pchunked);
  gw_buf_free(&hb);
  ex->pstarted = 1;
  if (ex->deadline) evtimer_del(ex->deadline);   /* from now on progress, not a deadline, bounds it */
  return 0;
}

/* No response head from the proxied backend within the endpoint's timeout. */
static void p_deadline(evutil_socket_t fd, short what, void *arg) {
  GwrExchange *ex = arg;
  (void)fd; (void)what;
  enter(ex);
  if (!ex->finished && !ex->pstarted) {
    proxy_stop(ex);
    ex->finished = 1;
    gwr_log("warn", "request %s: proxy to %s: no answer in time", ex->reqid, cstr(ex->p, ex->p->backends[ex->E->proxy].name));
    proxy_end(ex, GWR_CR_TIMEOUT);
    if (ex->c) backend_error(ex, 504, "timeout", ex->E->proxy);
  }
  leave(ex);
}

static int p_data(void *ud, const char *p, size_t n) {
  GwrExchange *ex = ud;
  if (!ex->c) return -1;
  /* backpressure: a slow client pauses the transfer (the bytes are
  ** delivered again after the resume, so nothing is written now) */
  if (gwr_conn_pending_output(ex->c) > (1u << 20)) { ex->c->paused_by = 1; return GWR_FETCH_PAUSE; }
  if (!ex->head) gwr_conn_stream_data(ex->c, p, n, ex->pchunked);
  return 0;
}

static void proxy_attempt(GwrExchange *ex);

static void p_retry(evutil_socket_t fd, short what, void *arg) {
  GwrExchange *ex = arg;
  (void)fd; (void)what;
  enter(ex);
  if (!ex->finished && ex->c) proxy_attempt(ex);
  leave(ex);
}

static void p_done(void *ud, int kind, long status, const char *detail) {
  GwrExchange *ex = ud;
  (void)detail;
  enter(ex);
  int sent = gwr_fetch_sent(ex->pxfer);
  ex->pxfer = NULL;
  int retry = ex->pt.retry;
  ex->pt.retry = 0;
  attempt_done(ex, ex->E->proxy, &ex->pt, retry ? GWR_BE_FAIL : kind == GWR_FETCH_OK ? GWR_BE_OK :
               kind == GWR_FETCH_ABORTED ? GWR_BE_NONE : outcome_of(kind_of(kind), 0));
  if (!ex->finished && (retry || (kind != GWR_FETCH_OK && kind != GWR_FETCH_ABORTED &&
                                  proxy_may_retry(ex, kind_of(kind), 0, sent))) &&
      (ex->pt.backoff || (ex->pt.backoff = evtimer_new(ex->w->base, p_retry, ex)))) {
    struct timeval tv = { (time_t)(ex->pt.delay_ms / 1000), (suseconds_t)((ex->pt.delay_ms % 1000) * 1000) };
    evtimer_add(ex->pt.backoff, &tv);
    gwr_be_count_retry(be_of(ex, ex->E->proxy));
    gwr_log("info", "request %s: proxy to %s failed (%s), retrying in %u ms", ex->reqid,
            cstr(ex->p, ex->p->backends[ex->E->proxy].name), retry ? "status" : kind_of(kind), ex->pt.delay_ms);
    leave(ex);
    return;
  }
  if (!ex->finished) {
    ex->finished = 1;
    if (status) ex->pstatus = status;
    proxy_end(ex, kind == GWR_FETCH_OK ? GWR_CR_OK : kind == GWR_FETCH_CONNECT ? GWR_CR_CONNECT :
                  kind == GWR_FETCH_TIMEOUT ? GWR_CR_TIMEOUT : kind == GWR_FETCH_TOO_LARGE ? GWR_CR_TOO_LARGE : GWR_CR_ERROR);
    if (ex->pstarted) {
      if (ex->c) gwr_conn_stream_end(ex->c, ex->pchunked, kind == GWR_FETCH_OK);   /* mid-body failure: cut */
    } else if (ex->c) {
      gwr_log("warn", "request %s: proxy to %s failed: %s", ex->reqid, cstr(ex->p, ex->p->backends[ex->E->proxy].name), kind_of(kind));
      backend_error(ex, kind == GWR_FETCH_TIMEOUT ? 504 : 502, kind_of(kind), ex->E->proxy);
    }
  }
  leave(ex);
}

/* The streamed request body, handed to libcurl as it arrives. */
static size_t p_read(void *ud, char *buf, size_t cap) {
  GwrExchange *ex = ud;
  size_t avail = ex->up.n - ex->up_off;
  if (avail) {
    size_t n = avail < cap ? avail : cap;
    int was_full = avail > (256u << 10);
    memcpy(buf, ex->up.p + ex->up_off, n);
    ex->up_off += n;
    if (ex->up_off == ex->up.n) { ex->up.n = 0; ex->up_off = 0; }
    else if (ex->up_off >= (256u << 10)) {        /* drop what was sent: the queue stays small */
      memmove(ex->up.p, ex->up.p + ex->up_off, ex->up.n - ex->up_off);
      ex->up.n -= ex->up_off;
      ex->up_off = 0;
    }
    if (was_full && ex->up.n - ex->up_off <= (256u << 10) && ex->c) gwr_conn_more_body(ex->c);
    return n;
  }
  if (ex->up_done) return 0;
  ex->up_waiting = 1;
  return GWR_FETCH_PAUSE;
}

size_t gwr_exchange_body(GwrExchange *ex, const char *p, size_t n) {
  gw_buf_add(&ex->up, p, n);
  if (ex->up_waiting && ex->pxfer) { ex->up_waiting = 0; gwr_fetch_resume_send(ex->pxfer); }
  return ex->up.n - ex->up_off;
}

static void p_deadline(evutil_socket_t fd, short what, void *arg);

void gwr_exchange_body_end(GwrExchange *ex) {
  ex->up_done = 1;
  if (ex->up_waiting && ex->pxfer) { ex->up_waiting = 0; gwr_fetch_resume_send(ex->pxfer); }
  /* the backend's head is due within the endpoint's timeout from now */
  if (!ex->finished && !ex->pstarted && ex->deadline) {
    uint32_t ms = ex->E->timeout_ms != GW_NONE ? ex->E->timeout_ms : 10000;
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    evtimer_add(ex->deadline, &tv);
    ex->deadline_us = gwr_now_us() + (uint64_t)ms * 1000;
  }
}

void gwr_exchange_drained(GwrExchange *ex) {
  if (ex->c) ex->c->paused_by = 0;
  if (ex->pxfer) gwr_fetch_resume_recv(ex->pxfer);
}

static void start_proxy(GwrExchange *ex) {
  const GwEndpoint *E = ex->E;
  const GwrHttpReq *r = &ex->c->parser.req;
  GwBuf url = {0};                     /* after the target's base URL */
  if (E->proxy_url != GW_NONE) {
    ex->vm.missing = 0;
    GwValue *u = gwr_vm_run(&ex->vm, E->proxy_url, NULL);
    if (!u) {
      gw_buf_free(&url);
      ex->finished = 1;
      proxy_end(ex, GWR_CR_SKIPPED);
      backend_error(ex, 502, "missing", E->proxy);
      return;
    }
    gwv_render(u, &url);
  } else {
    gw_buf_add(&url, ex->path.path, ex->path.path_len);
  }
  if (ex->path.query && ex->path.query_len) {
    gw_buf_addc(&url, strchr(gw_buf_cstr(&url), '?') ? '&' : '?');
    gw_buf_add(&url, ex->path.query, ex->path.query_len);
  }
  const char *conn = gwr_http_header(r, "connection");
  const char **hv = gw_arena_alloc(&ex->arena, sizeof *hv * (r->nheaders + 8));
  int nh = 0;
  for (uint32_t i = 0; i < r->nheaders; i++) {
    const GwrHeader *h = &r->headers[i];
    /* hop-by-hop, framing, a client's forwarding claims and the gateway's own
    ** headers stay behind; the gateway adds its own below */
    if (hop_by_hop(h->name, h->name_len, conn) || gw_header_class(h->name, h->name_len)) continue;
    hv[nh++] = gw_arena_printf(&ex->arena, "%.*s: %.*s", (int)h->name_len, h->name, (int)h->value_len, h->value);
  }
  nh = gateway_headers(ex, hv, nh);
  hv[nh] = NULL;
  ex->phv = hv;
  ex->ptail = gw_arena_strndup(&ex->arena, gw_buf_cstr(&url), url.n);
  gw_buf_free(&url);
  ex->pt0 = gwr_now_us();
  ex->pt.last = -1;
  /* the backend's head is due within the endpoint's timeout, waits and retries included */
  uint32_t ms = E->timeout_ms != GW_NONE ? E->timeout_ms : 10000;
  ex->deadline = evtimer_new(ex->w->base, p_deadline, ex);
  struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
  if (!ex->streaming) {                /* streamed: armed when the upload ends */
    evtimer_add(ex->deadline, &tv);
    ex->deadline_us = gwr_now_us() + (uint64_t)ms * 1000;
  }
  proxy_attempt(ex);
}

/* The proxied request failed before anything was sent (why: overloaded,
** unavailable, breaker_open, connect): 502 now. */
static void proxy_refused(GwrExchange *ex, const char *why) {
  proxy_stop(ex);
  ex->finished = 1;
  proxy_end(ex, result_of(why));
  if (ex->deadline) evtimer_del(ex->deadline);
  gwr_log("warn", "request %s: proxy to %s failed: %s", ex->reqid, cstr(ex->p, ex->p->backends[ex->E->proxy].name), why);
  if (ex->c) backend_error(ex, 502, why, ex->E->proxy);
}

/* The proxied request holds a slot: pick a target, pass the breaker, send. */
static void proxy_send(GwrExchange *ex) {
  const GwEndpoint *E = ex->E;
  const GwrHttpReq *r = &ex->c->parser.req;
  const GwBackend *B = &ex->p->backends[E->proxy];
  GwrBe *be = be_of(ex, E->proxy);
  const char *why = gwr_be_begin(be, ex->pt.last, gwr_be_now_ms(), &ex->pt.att);
  if (why) { proxy_refused(ex, why); return; }
  ex->pt.n++;
  ex->pt.last = ex->pt.att.target;
  GwBuf url = {0};
  gw_buf_adds(&url, gwr_be_url(be, ex->pt.att.target));
  gw_buf_adds(&url, ex->ptail);
  GwrFetchReq fr;
  memset(&fr, 0, sizeof fr);
  fr.url = gw_buf_cstr(&url);
  fr.method = gw_method_names[r->method];
  fr.headers = ex->phv;
  if (ex->streaming) {
    fr.read = p_read;
    fr.body_size = r->chunked ? -1 : r->content_length;
  } else if (ex->c->body.n || r->content_length >= 0 || r->chunked) {
    fr.body = ex->c->body.p ? ex->c->body.p : "";
    fr.body_len = ex->c->body.n;
    fr.body_size = -1;
  }
  fr.connect_timeout_ms = B->connect_timeout_ms;
  fr.timeout_ms = 3600L * 1000;        /* streamed: the head has the endpoint's deadline (p_deadline);
                                          the body may take long, paced by the client */
  fr.max_response = (size_t)-1;        /* any size: it is streamed, not kept */
  fr.tls = &ex->g->backends[E->proxy].tls;
  fr.on_head = p_head;
  fr.on_data = p_data;
  fr.on_done = p_done;
  fr.ud = ex;
  ex->pxfer = gwr_fetch_start(ex->w->fetch, &fr);
  gw_buf_free(&url);
  if (!ex->pxfer) proxy_refused(ex, "connect");
}

static void proxy_slot(GwrBeWait *w) {
  GwrExchange *ex = (GwrExchange *)(void *)((char *)w - offsetof(GwrExchange, pt.wait));
  enter(ex);
  ex->pt.slot = 1;
  if (ex->finished || !ex->c) proxy_stop(ex);   /* hands the slot on */
  else proxy_send(ex);
  leave(ex);
}

/* An attempt of the proxied request: a slot of the backend on this worker,
** or a place in its bounded queue; beyond that, fail fast. */
static void proxy_attempt(GwrExchange *ex) {
  ex->pt.wait.ready = proxy_slot;
  int r = gwr_be_acquire(be_of(ex, ex->E->proxy), ex->w->id, &ex->pt.wait);
  if (r < 0) proxy_refused(ex, "overloaded");
  else if (r > 0) { ex->pt.slot = 1; proxy_send(ex); }
}

/* ---- the end of a request: metrics and the access log ------------------------------ */

/* One JSON line (docs/operations.md): never a header value, a body, a token
** or a key; query values that may be secrets are masked. Written straight
** into the worker's buffer, its room reserved once. */
#define PUTS(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) + sizeof(lit) - 1)
static void access_line(GwrExchange *ex, GwrConn *c, int status, uint64_t us) {
  GwrAlog *a = c->w->alog;
  const GwrHttpReq *r = &c->parser.req;
  const GwrProg *g = ex ? ex->g : c->w->prog;
  /* the request id (a plain token), the peer (an address) and the method
  ** need no escaping; the program's texts come escaped (alog_*) */
  size_t idn = ex ? strlen(ex->reqid) : 0, peern = strlen(c->peer);
  /* client.ip, when trusted_proxies made it another address than the peer */
  const GwValue *cl = ex && ex->p->n_servers && ex->p->servers[0].proxies_count ? ex->vm.roots[GW_ROOT_CLIENT] : NULL;
  const GwValue *ip = cl && cl->type == GWV_OBJECT ? gwv_get(cl, "ip", 2) : NULL;
  if (ip && (ip->type != GWV_STRING || (ip->n == peern && !memcmp(ip->u.s, c->peer, peern)))) ip = NULL;
  const char *method = r->method > 0 && r->method < GW_METHOD_MAX ? gw_method_names[r->method] : NULL;
  const GwrText *route = ex && ex->route_status == 200 ? &g->alog_route[ex->m.endpoint] : NULL;
  const GwrText *proxy = ex && ex->pres ? &g->alog_proxy[ex->E - ex->p->endpoints] : NULL;
  const GwrText *calls = ex && ex->ncalls ? &g->alog_call[ex->E->call_first] : NULL;
  /* the bound of the line */
  size_t max = 256 + idn + peern + (ip ? GWR_ALOG_STR_MAX(ip->n) + 16 : 0) + (route ? route->n : 0) +
               (r->target ? GWR_ALOG_TARGET_MAX(r->target_len) : 0) + (proxy ? proxy->n + 96 : 0);
  for (uint32_t i = 0; calls && i < ex->ncalls; i++) max += calls[i].n + 96;   /* + ,"ms":…,"result":… */

  char *o = gwr_alog_begin(a, max);
  o = PUTS(o, "{\"time\":");
  o = gwr_alog_time(a, o);
  if (ex) {
    o = PUTS(o, ",\"id\":\"");
    memcpy(o, ex->reqid, idn);
    o = PUTS(o + idn, "\",\"client\":\"");
  } else {
    o = PUTS(o, ",\"id\":null,\"client\":\"");
  }
  memcpy(o, c->peer, peern);
  o = PUTS(o + peern, "\"");
  if (ip) {
    o = PUTS(o, ",\"client_ip\":");
    o = gwr_alog_str(o, ip->u.s, ip->n);
  }
  if (method) {
    size_t mn = strlen(method);
    o = PUTS(o, ",\"method\":\"");
    memcpy(o, method, mn);
    o = PUTS(o + mn, "\",\"route\":");
  } else {
    o = PUTS(o, ",\"method\":null,\"route\":");
  }
  if (route) { memcpy(o, route->p, route->n); o += route->n; }
  else o = PUTS(o, "null");
  o = PUTS(o, ",\"path\":");
  o = r->target ? gwr_alog_target(o, r->target, r->target_len, g->mask_names, g->nmask) : PUTS(o, "null");
  o = PUTS(o, ",\"status\":");
  o = gwr_alog_u64(o, (uint64_t)status);
  o = PUTS(o, ",\"bytes\":");
  o = gwr_alog_u64(o, c->resp_bytes);
  o = PUTS(o, ",\"duration_ms\":");
  o = gwr_alog_ms(o, us);
  o = PUTS(o, ",\"calls\":[");
  int n = 0;
  for (uint32_t i = 0; calls && i < ex->ncalls; i++) {
    const CallRt *k = &ex->calls[i];
    if (!k->res) continue;                       /* never reached: the request ended first */
    if (n++) *o++ = ',';
    memcpy(o, calls[i].p, calls[i].n);           /* {"name":…,"backend":…,"status": */
    o += calls[i].n;
    o = k->status > 0 ? gwr_alog_u64(o, (uint64_t)k->status) : PUTS(o, "null");
    o = PUTS(o, ",\"ms\":");
    o = gwr_alog_ms(o, k->t0 && k->t1 > k->t0 ? k->t1 - k->t0 : 0);
    o = PUTS(o, ",\"result\":\"");
    const char *res = gwr_call_result_names[k->res];
    size_t rn = strlen(res);
    memcpy(o, res, rn);
    o = PUTS(o + rn, "\"}");
  }
  if (proxy) {
    if (n) *o++ = ',';
    memcpy(o, proxy->p, proxy->n);
    o += proxy->n;
    o = ex->pstatus > 0 ? gwr_alog_u64(o, (uint64_t)ex->pstatus) : PUTS(o, "null");
    o = PUTS(o, ",\"ms\":");
    o = gwr_alog_ms(o, ex->pt0 && ex->pt1 > ex->pt0 ? ex->pt1 - ex->pt0 : 0);
    o = PUTS(o, ",\"result\":\"");
    const char *res = gwr_call_result_names[ex->pres];
    size_t rn = strlen(res);
    memcpy(o, res, rn);
    o = PUTS(o + rn, "\"}");
  }
  o = PUTS(o, "]}\n");
  gwr_alog_end(a, o);
}

/* A request on a public listener ended with status: count it, log it. ex is
** NULL when the connection layer refused the request itself (400, 408, 413,
** 414, 431…: route "unmatched"). */
static void end_request(GwrExchange *ex, GwrConn *c, int status) {
  GwrWorker *w = c->w;
  uint64_t now = gwr_now_us();
  uint64_t us = c->t0_us && now > c->t0_us ? now - c->t0_us : 0;
  uint16_t slot = ex && ex->route_status == 200 ? ex->g->ep_slot[ex->m.endpoint] : GWR_SLOT_UNMATCHED;
  GwrRouteM *rm = &w->metrics->route[slot];
  int cls = status / 100;
  GWR_M_ADD(rm->status[cls < 1 ? 0 : cls > 5 ? 4 : cls - 1], 1);
  gwr_hist_add(&rm->dur, us);
  GWR_M_ADD(w->metrics->bytes_out, c->resp_bytes);
  if (ex) ex->logged = 1;
  if (w->alog) access_line(ex, c, status, us);
}

void gwr_exchange_answered(GwrConn *c) {
  if (c->admin || (c->ex && c->ex->logged)) return;
  end_request(c->ex, c, c->resp_status);
}

void gwr_exchange_gone(GwrExchange *ex) {
  GwrConn *c = ex->c;
  if (c && !c->admin && !ex->logged && !ex->finished) {
    cancel_all(ex);                    /* the calls still running show as cancelled */
    if (ex->pxfer) proxy_end(ex, GWR_CR_CANCELLED);
    end_request(ex, c, c->resp_started ? c->resp_status : 499);
  }
  gwr_exchange_abort(ex);
}

/* ---- admin ------------------------------------------------------------------------- */

/* GET /routes: the route table of the program being served. */
static void routes_json(GwrServer *s, GwBuf *j) {
  pthread_mutex_lock(&s->prog_mu);
  GwrProg *g = s->prog;
  gwr_prog_retain(g);
  unsigned long long gen = (unsigned long long)s->generation;
  pthread_mutex_unlock(&s->prog_mu);
  const GwProgram *p = g->p;
  gw_buf_printf(j, "{\"generation\":%llu,\"program\":", gen);
  gwr_alog_buf_str(j, g->source, strlen(g->source));
  gw_buf_adds(j, ",\"routes\":[");
  for (uint32_t i = 0; i < p->n_routes; i++) {
    const GwRoute *r = &p->routes[i];
    const GwEndpoint *E = &p->endpoints[r->endpoint];
    const char *pat = cstr(p, E->path);
    gw_buf_adds(j, i ? ",\n{\"method\":" : "\n{\"method\":");
    gwr_alog_buf_str(j, gw_method_names[r->method], strlen(gw_method_names[r->method]));
    gw_buf_adds(j, ",\"pattern\":");
    gwr_alog_buf_str(j, pat, strlen(pat));
    gw_buf_adds(j, E->proxy != GW_NONE ? ",\"kind\":\"proxy\",\"backend\":" : ",\"kind\":\"endpoint\"");
    if (E->proxy != GW_NONE) gwr_alog_buf_str(j, cstr(p, p->backends[E->proxy].name), strlen(cstr(p, p->backends[E->proxy].name)));
    else gw_buf_printf(j, ",\"calls\":%u", E->call_count);
    gw_buf_adds(j, ",\"auth\":[");
    for (uint32_t k = 0; !E->auth_none && k < E->auth_count; k++) {
      const char *a = cstr(p, p->auths[p->authrefs[E->auth_first + k].auth].name);
      if (k) gw_buf_addc(j, ',');
      gwr_alog_buf_str(j, a, strlen(a));
    }
    gw_buf_adds(j, "],\"limits\":[");
    for (uint32_t k = 0; k < E->limit_count; k++) {
      const char *l = cstr(p, p->limits[p->limitrefs[E->limit_first + k].limit].name);
      if (k) gw_buf_addc(j, ',');
      gwr_alog_buf_str(j, l, strlen(l));
    }
    gw_buf_adds(j, "],\"timeout_ms\":");
    if (E->timeout_ms != GW_NONE) gw_buf_printf(j, "%u", E->timeout_ms); else gw_buf_adds(j, "null");
    gw_buf_adds(j, ",\"source\":");
    const char *f = cstr(p, p->files[E->file].path);
    char src[600];
    int sn = snprintf(src, sizeof src, "%s:%u", f, E->line);
    gwr_alog_buf_str(j, src, sn < 0 ? 0 : (size_t)sn < sizeof src ? (size_t)sn : sizeof src - 1);
    gw_buf_addc(j, '}');
  }
  gw_buf_adds(j, "\n]}\n");
  gwr_prog_release(g);
}

static void admin(GwrConn *c, const GwrPath *path) {
  GwrServer *s = c->w->srv;
  struct evbuffer *b = evbuffer_new();
  int hm = c->parser.req.method;
  if ((path->path_len == 7 && !memcmp(path->path, "/health", 7)) ||
      (path->path_len == 6 && !memcmp(path->path, "/ready", 6))) {
    /* load balancers check with GET or HEAD (an answer to HEAD has no body:
    ** on a kept-alive connection one would be read as the next answer) */
    if (hm != GW_METHOD_GET && hm != GW_METHOD_HEAD) {
      evbuffer_free(b);
      gwr_conn_error(c, 405, "method not allowed", "Allow: GET, HEAD\r\n");
      return;
    }
    int ready = path->path_len == 6, code = ready && s->stopping ? 503 : 200;
    evbuffer_add_printf(b, !ready ? "{\"status\":\"ok\"}" : s->stopping ? "{\"status\":\"draining\"}" : "{\"status\":\"ready\"}");
    gwr_conn_respond(c, code, "Content-Type: application/json\r\n", b, hm == GW_METHOD_HEAD);
  } else if ((path->path_len == 8 && !memcmp(path->path, "/metrics", 8)) ||
             (path->path_len == 7 && !memcmp(path->path, "/routes", 7))) {
    int m = c->parser.req.method, metrics = path->path_len == 8;
    if (m != GW_METHOD_GET && m != GW_METHOD_HEAD) {
      evbuffer_free(b);
      gwr_conn_error(c, 405, "method not allowed", "Allow: GET, HEAD\r\n");
      return;
    }
    GwBuf t = {0};
    if (metrics) gwr_metrics_render(s, &t);
    else routes_json(s, &t);
    evbuffer_add(b, t.p, t.n);
    gw_buf_free(&t);
    gwr_conn_respond(c, 200, metrics ? "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                                     : "Content-Type: application/json\r\n", b, m == GW_METHOD_HEAD);
  } else if (path->path_len == 7 && !memcmp(path->path, "/reload", 7)) {
    if (c->parser.req.method != GW_METHOD_POST) {
      evbuffer_free(b);
      gwr_conn_error(c, 405, "method not allowed", "Allow: POST\r\n");
      return;
    }
    /* the same as SIGHUP; the load runs here, on the admin's worker (a few
    ** milliseconds for a .gwb, the compile time for .gw sources). Not while
    ** draining: SIGHUP is ignored then, and so is this (503). */
    char msg[600];
    int draining = s->stopping;
    int rc = draining ? -1 : gwr_server_reload(s, msg, sizeof msg);
    if (draining) snprintf(msg, sizeof msg, "draining: gwd is stopping; the program is not reloaded");
    GwBuf j = {0};
    pthread_mutex_lock(&s->prog_mu);
    unsigned long long gen = (unsigned long long)s->generation;
    pthread_mutex_unlock(&s->prog_mu);
    gw_buf_printf(&j, "{\"status\":\"%s\",\"generation\":%llu,\"message\":",
                  draining ? "draining" : rc ? "refused" : "reloaded", gen);
    gwr_alog_buf_str(&j, msg, strlen(msg));      /* a file name need not be UTF-8: escaped, never lost */
    gw_buf_adds(&j, "}");
    evbuffer_add(b, j.p, j.n);
    gw_buf_free(&j);
    gwr_conn_respond(c, draining ? 503 : rc ? 422 : 200, "Content-Type: application/json\r\n", b, 0);
  } else {
    evbuffer_free(b);
    gwr_conn_error(c, 404, "not found", NULL);
  }
}

/* ---- start ---------------------------------------------------------------------------- */

static void make_reqid(GwrExchange *ex, const GwrHttpReq *r) {
  const char *h = gwr_http_header(r, "x-request-id");
  if (h) {
    size_t n = strlen(h);
    int ok = n > 0 && n < 64;
    for (size_t i = 0; ok && i < n; i++)
      if (!(isalnum((unsigned char)h[i]) || h[i] == '-' || h[i] == '_' || h[i] == '.' || h[i] == ':')) ok = 0;
    if (ok) { memcpy(ex->reqid, h, n + 1); return; }
  }
  /* 8 random bytes, drawn from a per-thread pool filled 512 at a time: a
  ** RAND_bytes call per request cost a getpid() system call (OpenSSL's fork
  ** check) and a DRBG round each */
  static _Thread_local unsigned char pool[512];
  static _Thread_local size_t left;
  if (left < 8) {
    if (RAND_bytes(pool, sizeof pool) != 1) memset(pool, 0, sizeof pool);
    left = sizeof pool;
  }
  const unsigned char *rnd = pool + sizeof pool - left;
  left -= 8;
  gw_hex(ex->reqid, rnd, 8);
}

/* traceparent: version-traceid-parentid-flags in lower-case hex (W3C). */
static void take_traceparent(GwrExchange *ex, const GwrHttpReq *r) {
  const char *t = gwr_http_header(r, "traceparent");
  if (!t || strlen(t) != 55) return;
  for (int i = 0; i < 55; i++) {
    int dash = i == 2 || i == 35 || i == 52;
    if (dash ? t[i] != '-' : !(isdigit((unsigned char)t[i]) || (t[i] >= 'a' && t[i] <= 'f'))) return;
  }
  memcpy(ex->traceparent, t, 56);
}

/* ---- client.ip ------------------------------------------------------------------------ */

/* Whether address text a is inside CIDR text c ("10.0.0.0/8", "::1/128", or an
** address alone). */
static int in_cidr(const char *a, size_t an, const char *c) {
  char as[64], cs[64];
  if (an >= sizeof as) return 0;
  memcpy(as, a, an); as[an] = 0;
  snprintf(cs, sizeof cs, "%s", c);
  char *slash = strchr(cs, '/');
  int bits = -1;
  if (slash) { *slash = 0; bits = atoi(slash + 1); }
  unsigned char x[16], y[16];
  int fam = strchr(cs, ':') ? AF_INET6 : AF_INET;
  if (inet_pton(fam, as, x) != 1 || inet_pton(fam, cs, y) != 1) return 0;
  int len = fam == AF_INET ? 4 : 16;
  if (bits < 0 || bits > len * 8) bits = len * 8;
  for (int i = 0; i < len && bits > 0; i++, bits -= 8) {
    unsigned char m = bits >= 8 ? 0xFF : (unsigned char)(0xFF << (8 - bits));
    if ((x[i] & m) != (y[i] & m)) return 0;
  }
  return 1;
}

static int trusted(const GwProgram *p, const char *a, size_t n) {
  if (!p->n_servers) return 0;
  const GwServer *S = &p->servers[0];
  for (uint32_t i = 0; i < S->proxies_count; i++)
    if (in_cidr(a, n, gw_const_str(p, p->strlist[S->proxies_first + i].str, NULL))) return 1;
  return 0;
}

/* client.ip: the TCP peer, unless server { trusted_proxies } lists it; then
** the right-most address of X-Forwarded-For that is not a trusted proxy
** (a client can prepend anything; only what trusted proxies appended counts). */
static GwValue *client_ip(GwrExchange *ex) {
  const char *peer = ex->c->peer;
  if (!trusted(ex->p, peer, strlen(peer))) return gwv_string_copy(&ex->arena, peer, strlen(peer));
  const char *xff = NULL;
  for (uint32_t i = 0; i < ex->c->parser.req.nheaders; i++) {   /* the last X-Forwarded-For line */
    const GwrHeader *h = &ex->c->parser.req.headers[i];
    if (h->name_len == 15 && !memcmp(h->name, "x-forwarded-for", 15)) xff = h->value;
  }
  const char *end = xff ? xff + strlen(xff) : NULL;
  while (xff && end > xff) {
    const char *e = end;
    while (e > xff && (e[-1] == ' ' || e[-1] == ',')) e--;
    const char *b = e;
    while (b > xff && b[-1] != ',') b--;
    while (b < e && *b == ' ') b++;
    if (b < e && !trusted(ex->p, b, (size_t)(e - b))) {
      char tmp[64];
      unsigned char bin[16];
      size_t n = (size_t)(e - b);
      if (n < sizeof tmp) {
        memcpy(tmp, b, n); tmp[n] = 0;
        if (inet_pton(AF_INET, tmp, bin) == 1 || inet_pton(AF_INET6, tmp, bin) == 1)
          return gwv_string_copy(&ex->arena, tmp, n);
      }
      break;                       /* not an address: fall back to the peer */
    }
    end = b > xff ? b - 1 : xff;
  }
  return gwv_string_copy(&ex->arena, peer, strlen(peer));
}

/* ---- rate limits ---------------------------------------------------------------------- */

/* Past the limits: the proxy, or the call plan with its deadline. */
static void proceed(GwrExchange *ex) {
  if (ex->finished || !ex->c) return;
  if (ex->E->proxy != GW_NONE) { start_proxy(ex); return; }
  if (ex->E->cache_ms && xc_lookup(ex)) return;      /* answered from the cache, or waiting for its answer */
  if (ex->E->timeout_ms != GW_NONE && ex->ncalls) {
    ex->deadline = evtimer_new(ex->c->w->base, on_deadline, ex);
    struct timeval tv = { (time_t)(ex->E->timeout_ms / 1000), (suseconds_t)((ex->E->timeout_ms % 1000) * 1000) };
    evtimer_add(ex->deadline, &tv);
    ex->deadline_us = gwr_now_us() + (uint64_t)ex->E->timeout_ms * 1000;
  }
  advance(ex);
}

static void too_many(GwrExchange *ex) {
  GwBuf h = {0};
  base_headers(ex, &h);
  gw_buf_printf(&h, "Retry-After: %u\r\n", ex->rl.retry_after_s ? ex->rl.retry_after_s : 1);
  gw_buf_adds(&h, "Content-Type: application/json\r\n");
  ex->finished = 1;
  cancel_all(ex);
  if (ex->c) {
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"error\":\"rate limited\",\"status\":429}");
    gwr_conn_respond(ex->c, 429, gw_buf_cstr(&h), b, ex->head);
  }
  gw_buf_free(&h);
}

/* Keep the tightest result for the RateLimit-* headers; a refusal wins. */
static void take_result(GwrExchange *ex, const GwrLimitResult *r) {
  if (!r->allowed) {
    if (!ex->limited || r->retry_after_s > ex->rl.retry_after_s) ex->rl = *r;
    ex->limited = 1;
  } else if (!ex->limited && (!ex->has_rl || r->remaining < ex->rl.remaining)) {
    ex->rl = *r;
  }
  ex->has_rl = 1;
}

static void limits_done(GwrExchange *ex) {
  if (ex->finished) return;
  if (ex->limited) too_many(ex);
  else proceed(ex);
}

typedef struct RedisWait { GwrExchange *ex; uint32_t i; } RedisWait;

static void limit_count(GwrExchange *ex, uint32_t limit, int decision) {
  GWR_M_ADD(ex->w->metrics->limit[ex->g->limit_slot[limit]][decision], 1);
}

static void on_redis(void *ud, int err, const GwrLimitResult *res) {
  RedisWait *w = ud;
  GwrExchange *ex = w->ex;
  enter(ex);
  ex->rreq[w->i] = NULL;
  const GwLimit *L = &ex->p->limits[ex->p->limitrefs[ex->E->limit_first + w->i].limit];
  if (err) {
    static __thread time_t last_log;
    static __thread unsigned suppressed;
    time_t now = time(NULL);
    if (now != last_log) {
      gwr_log("warn", "limit %s: redis unavailable, on_error %s (%u more since the last line)", cstr(ex->p, L->name),
              L->on_error ? "deny" : "allow", suppressed);
      last_log = now;
      suppressed = 0;
    } else {
      suppressed++;
    }
    if (L->on_error) {
      GwrLimitResult deny = { 0, L->burst, 0, 1, 1 };
      take_result(ex, &deny);
    }
  } else {
    take_result(ex, res);
  }
  limit_count(ex, ex->p->limitrefs[ex->E->limit_first + w->i].limit, err ? GWR_LD_ERROR : res->allowed ? GWR_LD_ALLOWED : GWR_LD_LIMITED);
  if (--ex->rpending == 0) limits_done(ex);
  leave(ex);
}

/* The limit key: the `by` expression rendered, or client.ip. */
static void limit_key(GwrExchange *ex, const GwLimit *L, GwBuf *key) {
  if (L->by != GW_NONE) {
    GwValue *v = gwr_vm_run(&ex->vm, L->by, NULL);
    if (v && !GWV_IS_NULL(v)) { gwv_render(v, key); return; }
    gw_buf_adds(key, "\x01null");               /* no key value: one shared bucket */
    return;
  }
  GwValue *ip = gwv_get(ex->vm.roots[GW_ROOT_CLIENT], "ip", 2);
  if (ip && ip->type == GWV_STRING) gw_buf_add(key, ip->u.s, ip->n);
  else gw_buf_adds(key, ex->c->peer);
}

static void run_limits(GwrExchange *ex) {
  const GwEndpoint *E = ex->E;
  GwrServer *s = ex->c->w->srv;
  if (!E->limit_count) { proceed(ex); return; }
  ex->rreq = gw_arena_alloc(&ex->arena, sizeof *ex->rreq * E->limit_count);
  uint64_t now_us = 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
  for (uint32_t i = 0; i < E->limit_count; i++) {
    const GwLimit *L = &ex->p->limits[ex->p->limitrefs[E->limit_first + i].limit];
    uint32_t nl;
    const char *lname = gw_const_str(ex->p, L->name, &nl);
    GwBuf key = {0};
    limit_key(ex, L, &key);
    uint32_t li = ex->p->limitrefs[E->limit_first + i].limit;
    if (L->store == 1) {
      if (!ex->c->w->redis) {
        limit_count(ex, li, GWR_LD_ERROR);
        if (L->on_error) { GwrLimitResult deny = { 0, L->burst, 0, 1, 1 }; take_result(ex, &deny); }
      } else {
        RedisWait *w = gw_arena_alloc(&ex->arena, sizeof *w);
        w->ex = ex; w->i = i;
        ex->rreq[i] = gwr_redis_check(ex->c->w->redis, lname, nl, key.p ? key.p : "", key.n, L->count, L->period_ms,
                                      L->burst, on_redis, w);
        if (ex->rreq[i]) ex->rpending++;
        else {
          limit_count(ex, li, GWR_LD_ERROR);
          if (L->on_error) { GwrLimitResult deny = { 0, L->burst, 0, 1, 1 }; take_result(ex, &deny); }
        }
      }
    } else {
      GwrLimitResult r;
      gwr_limiter_check(s->limiter, lname, nl, key.p ? key.p : "", key.n, L->count, L->period_ms, L->burst, now_us, &r);
      limit_count(ex, li, r.allowed ? GWR_LD_ALLOWED : GWR_LD_LIMITED);
      take_result(ex, &r);
    }
    gw_buf_free(&key);
  }
  if (ex->rpending == 0) limits_done(ex);
}

static void start(GwrConn *c, int streaming);

void gwr_exchange_start(GwrConn *c) { start(c, 0); }

/* The part of a request that needs only its head: the exchange, its id,
** the normalized path and the route. Done once per request: at the head
** when a body follows (to know whether it streams to a proxy), else when
** the request is complete. Nothing is answered here. */
static GwrExchange *begin(GwrConn *c) {
  const GwrHttpReq *r = &c->parser.req;
  GwrExchange *ex = calloc(1, sizeof *ex);
  if (!ex) return NULL;
  ex->c = c;
  ex->w = c->w;
  ex->g = gwr_worker_prog(c->w);
  ex->p = ex->g->p;
  gw_arena_init(&ex->arena);
  ex->head = r->method == GW_METHOD_HEAD;
  make_reqid(ex, r);
  take_traceparent(ex, r);
  if (r->method == GW_METHOD_OPTIONS && r->target_len == 1 && r->target[0] == '*') return ex;
  ex->norm_status = gwr_path_normalize(&ex->arena, r->target, r->target_len, &ex->path, &ex->norm_err);
  if (ex->norm_status || c->admin) return ex;
  for (int i = 0; i < ex->path.nseg; i++) {
    ex->segs[i].raw = ex->path.seg[i].raw; ex->segs[i].raw_len = ex->path.seg[i].raw_len;
    ex->segs[i].dec = ex->path.seg[i].dec; ex->segs[i].dec_len = ex->path.seg[i].dec_len;
  }
  ex->route_status = gwr_route(ex->g->router, r->method, ex->segs, ex->path.nseg, &ex->m, &ex->allow);
  return ex;
}

int gwr_exchange_head(GwrConn *c) {
  const GwrHttpReq *r = &c->parser.req;
  if (!(r->content_length > 0 || r->chunked) || c->ex) return 0;
  GwrExchange *ex = begin(c);
  if (!ex) return 0;                 /* out of memory: answered when the request is complete */
  c->ex = ex;                        /* kept until the body is in (a failure aborts it) */
  if (ex->route_status != 200 || ex->p->endpoints[ex->m.endpoint].proxy == GW_NONE) return 0;
  start(c, 1);
  return 1;
}

static void start(GwrConn *c, int streaming) {
  GwrServer *s = c->w->srv;
  const GwrHttpReq *r = &c->parser.req;
  GwrExchange *ex = c->ex ? c->ex : begin(c);
  if (!ex) { c->keep_alive = 0; gwr_conn_error(c, 503, "out of memory", NULL); return; }
  ex->streaming = streaming;
  c->ex = ex;
  /* a streamed request answered before its body is read must close */
  int keep_alive = c->keep_alive;
  if (streaming) c->keep_alive = 0;
  enter(ex);
  GwrRouteSeg *segs = ex->segs;
  if (r->method == GW_METHOD_OPTIONS && r->target_len == 1 && r->target[0] == '*') {
    GwBuf h = {0};
    base_headers(ex, &h);
    gw_buf_adds(&h, "Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n");
    ex->finished = 1;
    gwr_conn_respond(c, 204, gw_buf_cstr(&h), NULL, 0);
    gw_buf_free(&h);
    goto out;
  }
  if (ex->norm_status) {             /* refused like any malformed request: answer and close */
    c->keep_alive = 0;
    finish_error(ex, ex->norm_status, ex->norm_err ? ex->norm_err : "bad request target");
    goto out;
  }
  if (c->admin) { ex->finished = 1; admin(c, &ex->path); goto out; }
  int st = ex->route_status;
  uint32_t allow = ex->allow;
  if (st == 405) {
    char al[128];
    GwBuf h = {0};
    gwr_allow_string(allow, al, sizeof al);
    base_headers(ex, &h);
    ex->finished = 1;
    if (r->method == GW_METHOD_OPTIONS) {
      /* a CORS preflight takes the policy of the endpoint the real request would reach */
      const char *want = gwr_http_header(r, "access-control-request-method");
      const GwCors *co = NULL;
      int wm = -1;
      for (int i = 1; want && i < GW_METHOD_MAX; i++) if (!strcmp(gw_method_names[i], want)) wm = i;
      GwrMatch pm;
      uint32_t pallow;
      if (wm > 0 && gwr_http_header(r, "origin") &&
          gwr_route(ex->g->router, wm, segs, ex->path.nseg, &pm, &pallow) == 200 &&
          ex->p->endpoints[pm.endpoint].cors != GW_NONE)
        co = &ex->p->corses[ex->p->endpoints[pm.endpoint].cors];
      if (co) cors_preflight(ex, co, want, al, &h);
      else {
        gw_buf_printf(&h, "Allow: %s\r\n", al);
        if (gwr_http_header(r, "origin")) gw_buf_adds(&h, "Vary: Origin\r\n");
      }
      gwr_conn_respond(c, 204, gw_buf_cstr(&h), NULL, 0);
    } else {
      gw_buf_printf(&h, "Allow: %s\r\n", al);
      gwr_conn_error(c, 405, "method not allowed", gw_buf_cstr(&h));
    }
    gw_buf_free(&h);
    goto out;
  }
  if (st != 200) { finish_error(ex, 404, "no route"); goto out; }
  ex->E = &ex->p->endpoints[ex->m.endpoint];
  ex->head = ex->m.is_head || r->method == GW_METHOD_HEAD;

  /* the request's values */
  GwrVm *vm = &ex->vm;
  vm->p = ex->p;
  vm->arena = &ex->arena;
  vm->envs = ex->g->envs;
  vm->consts = ex->g->consts;
  vm->max_steps = GWR_VM_MAX_STEPS;
  vm->now = (double)time(NULL);
  int bad = 0;
  GwValue *query = query_object(&ex->arena, ex->path.query, ex->path.query_len, &bad);
  if (bad) { c->keep_alive = 0; finish_error(ex, 400, "query string is not valid UTF-8"); goto out; }
  vm->roots[GW_ROOT_QUERY] = query;
  /* the headers object only when something can read it: the endpoint (its
  ** inputs say), or an auth `require` or a limit `by` (global blocks) */
  vm->roots[GW_ROOT_HEADERS] = reads_root(ex->p, ex->E, GW_ROOT_HEADERS) || ex->E->auth_count || ex->E->limit_count
                             ? headers_object(&ex->arena, r) : &gwv_null;
  vm->roots[GW_ROOT_JWT] = &gwv_null;
  GwValue *client = gwv_object(&ex->arena, 2);
  gwv_set(&ex->arena, client, "ip", 2, client_ip(ex), 0);
  gwv_set(&ex->arena, client, "name", 4, &gwv_null, 0);
  vm->roots[GW_ROOT_CLIENT] = client;
  /* the pipeline: auth → limit → cache (issue 7) → calls */
  if (check_auth(ex, query)) goto out;
  if (ex->client_name)
    gwv_set(&ex->arena, client, "name", 4, gwv_string_copy(&ex->arena, ex->client_name, strlen(ex->client_name)), 0);
  vm->roots[GW_ROOT_BODY] = &gwv_null;
  if (ex->E->proxy == GW_NONE && reads_root(ex->p, ex->E, GW_ROOT_BODY) && c->body.n) {
    char jerr[128];
    GwrJsonLimits lim = { s->set.max_json_depth };
    GwValue *b = NULL;
    if (gwr_json_parse(&ex->arena, c->body.p, c->body.n, &lim, &b, jerr, sizeof jerr) != 0) {
      finish_error(ex, 400, "request body is not valid JSON");
      goto out;
    }
    vm->roots[GW_ROOT_BODY] = b;
  }
  vm->params = gw_arena_alloc(&ex->arena, sizeof(GwValue *) * (ex->E->param_count + 1));
  for (uint32_t i = 0, k = 0; i < ex->E->seg_count && k < ex->m.nparams; i++) {
    const GwSeg *sg = &ex->p->segs[ex->E->seg_first + i];
    if (sg->kind == GW_SEG_STATIC) continue;
    const char *pv = ex->m.param[k].p;
    uint32_t pn = ex->m.param[k].n;
    if (!pv) {                       /* a tail: join its segments */
      char *tmp = gw_arena_alloc(&ex->arena, (size_t)pn + 1);
      gwr_tail_join(segs, ex->m.tail_first, ex->path.nseg, tmp, (size_t)pn + 1);
      pv = tmp;
    }
    if (sg->kind == GW_SEG_TAIL && ex->m.tail_first >= 0) {
      int n = ex->path.nseg - ex->m.tail_first;
      const char **ts = gw_arena_alloc(&ex->arena, sizeof *ts * (size_t)(n + 1));
      uint32_t *tl = gw_arena_alloc(&ex->arena, sizeof *tl * (size_t)(n + 1));
      for (int j = 0; j < n; j++) { ts[j] = segs[ex->m.tail_first + j].dec; tl[j] = segs[ex->m.tail_first + j].dec_len; }
      vm->tail_seg = ts; vm->tail_len = tl; vm->tail_n = n;
    }
    if (sg->kind == GW_SEG_INT) {
      long long iv = strtoll(gw_arena_strndup(&ex->arena, pv, pn), NULL, 10);
      vm->params[k] = gwv_number(&ex->arena, (double)iv);
    } else {
      vm->params[k] = gwv_string_copy(&ex->arena, pv, pn);
      if (sg->kind == GW_SEG_TAIL) vm->tail_value = vm->params[k];
    }
    k++;
  }
  if (ex->E->proxy == GW_NONE) {
    /* the call plan */
    ex->ncalls = ex->E->call_count;
    ex->calls = gw_arena_alloc(&ex->arena, sizeof(CallRt) * (ex->ncalls + 1));
    vm->results = gw_arena_alloc(&ex->arena, sizeof(GwValue *) * (ex->ncalls + 1));
    ex->guard_done = gw_arena_alloc(&ex->arena, ex->E->guard_count + 1);
    for (uint32_t i = 0; i < ex->ncalls; i++) {
      ex->calls[i].ex = ex;
      ex->calls[i].i = i;
      ex->calls[i].rec = &ex->p->calls[ex->E->call_first + i];
    }
  }
  run_limits(ex);                    /* then proceed(): the proxy or the call plan */
out:
  if (ex->finished && c->ex == ex) c->ex = NULL;
  if (streaming && !ex->finished) c->keep_alive = keep_alive;
  leave(ex);
}
