/*
** gwr_metrics.c — the label registry and the Prometheus exposition of
** GET /metrics. The counters themselves are written by the exchange and the
** connection code (gwr_metrics.h has the rules); this file reads them.
**
** Series appear once they have counted something (a route that never
** answered has no gw_requests_total line), like a client library's labelled
** metrics; the unlabelled ones are always there. docs/operations.md lists
** every metric: keep it in step with HELP below.
*/
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gwr.h"
#include "gwr_metrics.h"
#include "gwr_backend.h"
#include "gwr_accesslog.h"
#include "gwr_cache.h"

const char *const gwr_call_result_names[GWR_CR_MAX] = {
  "", "ok", "connect", "timeout", "status", "invalid_body", "too_large", "overloaded", "unavailable",
  "breaker_open", "cancelled", "error", "skipped"
};
static const char *const auth_reasons[GWR_AF_MAX] = { "missing", "invalid", "expired", "unknown_key", "forbidden" };
static const char *const limit_decisions[GWR_LD_MAX] = { "allowed", "limited", "error" };

const uint64_t gwr_bucket_us[GWR_M_NBUCKETS] = {
  5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000
};
static const char *const bucket_le[GWR_M_NBUCKETS + 1] = {
  "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"
};

/* ---- the registry: label string → slot, process-wide, never shrinks ---------------- */

static const uint16_t cap_of[GWR_MK_MAX] = { GWR_M_ROUTES, GWR_M_BACKENDS, GWR_M_POLICIES, GWR_M_LIMITS };
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static char *reg_routes[GWR_M_ROUTES], *reg_backends[GWR_M_BACKENDS], *reg_policies[GWR_M_POLICIES],
            *reg_limits[GWR_M_LIMITS];
static char **const reg_names[GWR_MK_MAX] = { reg_routes, reg_backends, reg_policies, reg_limits };
static uint16_t reg_n[GWR_MK_MAX];            /* slots handed out, "other" and "unmatched" excluded */
static const char *version = "unknown";
static time_t started;

/* The fixed names: "unmatched" (route slot 0) and "other" (every kind's last). */
static void reg_init(void) {
  static char unmatched[] = "unmatched", other[] = "other";
  if (reg_routes[0]) return;
  reg_routes[GWR_SLOT_UNMATCHED] = unmatched;
  reg_n[GWR_MK_ROUTE] = 1;
  for (int k = 0; k < GWR_MK_MAX; k++) reg_names[k][cap_of[k] - 1] = other;
  started = time(NULL);
}

uint16_t gwr_metrics_slot(int kind, const char *name) {
  pthread_mutex_lock(&reg_mu);
  reg_init();
  char **names = reg_names[kind];
  uint16_t other = (uint16_t)(cap_of[kind] - 1), slot = other;
  for (uint16_t i = 0; i < reg_n[kind]; i++)
    if (!strcmp(names[i], name)) { slot = i; goto out; }
  if (reg_n[kind] < other) {
    char *copy = strdup(name);
    if (copy) { slot = reg_n[kind]++; names[slot] = copy; }
  }
out:
  pthread_mutex_unlock(&reg_mu);
  return slot;
}

GwrMetrics *gwr_metrics_new(void) {
  pthread_mutex_lock(&reg_mu);
  reg_init();
  pthread_mutex_unlock(&reg_mu);
  return calloc(1, sizeof(GwrMetrics));
}

void gwr_metrics_set_version(const char *v) { version = v; }

/* ---- exposition ------------------------------------------------------------------------ */

/* A label value: backslash, double quote and newline escaped. */
static void label(GwBuf *b, const char *name, const char *v) {
  gw_buf_adds(b, name);
  gw_buf_adds(b, "=\"");
  for (const char *p = v; *p; p++) {
    if (*p == '\\') gw_buf_adds(b, "\\\\");
    else if (*p == '"') gw_buf_adds(b, "\\\"");
    else if (*p == '\n') gw_buf_adds(b, "\\n");
    else gw_buf_addc(b, *p);
  }
  gw_buf_addc(b, '"');
}

static void family(GwBuf *b, const char *name, const char *type, const char *help) {
  gw_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u64(GwBuf *b, const char *name, const char *l1, const char *v1, const char *l2, const char *v2,
                       uint64_t v) {
  gw_buf_adds(b, name);
  if (l1) {
    gw_buf_addc(b, '{');
    label(b, l1, v1);
    if (l2) { gw_buf_addc(b, ','); label(b, l2, v2); }
    gw_buf_addc(b, '}');
  }
  gw_buf_printf(b, " %" PRIu64 "\n", v);
}

/* A histogram's series for one label value (h: the workers' sum). */
static void hist(GwBuf *b, const char *name, const char *lname, const char *lval, const GwrHist *h) {
  uint64_t cum = 0;
  for (int i = 0; i <= GWR_M_NBUCKETS; i++) {
    cum += h->b[i];
    gw_buf_printf(b, "%s_bucket{", name);
    label(b, lname, lval);
    gw_buf_printf(b, ",le=\"%s\"} %" PRIu64 "\n", bucket_le[i], cum);
  }
  gw_buf_printf(b, "%s_sum{", name);
  label(b, lname, lval);
  gw_buf_printf(b, "} %" PRIu64 ".%06" PRIu64 "\n", h->sum_us / 1000000u, h->sum_us % 1000000u);
  gw_buf_printf(b, "%s_count{", name);
  label(b, lname, lval);
  gw_buf_printf(b, "} %" PRIu64 "\n", cum);
}

static void hist_sum(GwrHist *to, const GwrHist *from) {
  for (int i = 0; i <= GWR_M_NBUCKETS; i++) to->b[i] += GWR_M_GET(from->b[i]);
  to->sum_us += GWR_M_GET(from->sum_us);
}

static uint64_t hist_count(const GwrHist *h) {
  uint64_t n = 0;
  for (int i = 0; i <= GWR_M_NBUCKETS; i++) n += h->b[i];
  return n;
}

/* One sample per url of every backend of g: whether it is in rotation
** (what 0), or its ejections (what 1). */
static void target_samples(GwBuf *b, const GwrProg *g, uint32_t nb, uint64_t now, const char *name, int what) {
  for (uint32_t i = 0; i < nb; i++) {
    const GwrBe *be = g->backends[i].be;
    if (!be) continue;
    const char *bn = gw_const_str(g->p, g->p->backends[i].name, NULL);
    for (int t = 0; t < g->backends[i].nurls; t++) {
      GwrBeTargetState ts;
      char idx[16];
      gwr_be_target_state(be, t, now, &ts);
      snprintf(idx, sizeof idx, "%d", t);
      sample_u64(b, name, "backend", bn, "target", idx, what ? ts.ejections : !(ts.ejected || ts.down));
    }
  }
}

void gwr_metrics_render(GwrServer *s, GwBuf *b) {
  /* the label names as they are now (a load may add some while we read) */
  static const char *const classes[5] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
  const char *names[GWR_MK_MAX][GWR_M_ROUTES];
  pthread_mutex_lock(&reg_mu);
  reg_init();
  for (int k = 0; k < GWR_MK_MAX; k++)
    for (int i = 0; i < cap_of[k]; i++) names[k][i] = reg_names[k][i];   /* never freed */
  pthread_mutex_unlock(&reg_mu);
  GwrMetrics *ws[GWR_MAX_WORKERS];
  static GwrMetrics zero;                      /* a worker without counters reads as zeros */
  int nw = s->nworkers;
  for (int i = 0; i < nw; i++) ws[i] = s->workers[i].metrics ? s->workers[i].metrics : &zero;

  /* requests, by route */
  family(b, "gw_requests_total", "counter",
         "Requests answered on the public listeners, by route (method and pattern; \"unmatched\": no route took it) and status class.");
  GwrRouteM *rsum = calloc(GWR_M_ROUTES, sizeof *rsum);
  if (!rsum) return;
  for (int i = 0; i < GWR_M_ROUTES; i++) {
    if (!names[GWR_MK_ROUTE][i]) continue;
    GwrRouteM *r = &rsum[i];
    for (int w = 0; w < nw; w++) {
      const GwrRouteM *x = &ws[w]->route[i];
      for (int c = 0; c < 5; c++) r->status[c] += GWR_M_GET(x->status[c]);
      hist_sum(&r->dur, &x->dur);
      r->skipped += GWR_M_GET(x->skipped);
      r->partial += GWR_M_GET(x->partial);
    }
    for (int c = 0; c < 5; c++)
      if (r->status[c]) sample_u64(b, "gw_requests_total", "route", names[GWR_MK_ROUTE][i], "status", classes[c], r->status[c]);
  }
  family(b, "gw_request_duration_seconds", "histogram",
         "Time from the first byte of a request to its response handed to the connection, by route.");
  for (int i = 0; i < GWR_M_ROUTES; i++)
    if (names[GWR_MK_ROUTE][i] && hist_count(&rsum[i].dur))
      hist(b, "gw_request_duration_seconds", "route", names[GWR_MK_ROUTE][i], &rsum[i].dur);
  family(b, "gw_calls_skipped_total", "counter",
         "Backend calls not made: their `if` was false, or a value their URL needs was missing.");
  for (int i = 0; i < GWR_M_ROUTES; i++)
    if (names[GWR_MK_ROUTE][i] && rsum[i].skipped)
      sample_u64(b, "gw_calls_skipped_total", "route", names[GWR_MK_ROUTE][i], NULL, NULL, rsum[i].skipped);
  family(b, "gw_partial_responses_total", "counter",
         "Responses sent with X-Gw-Partial: true (an optional or default value stood in for a failed call).");
  for (int i = 0; i < GWR_M_ROUTES; i++)
    if (names[GWR_MK_ROUTE][i] && rsum[i].partial)
      sample_u64(b, "gw_partial_responses_total", "route", names[GWR_MK_ROUTE][i], NULL, NULL, rsum[i].partial);
  free(rsum);

  /* backends */
  family(b, "gw_backend_calls_total", "counter",
         "Backend calls (and proxied requests) by backend and result: ok, connect, timeout, status, invalid_body, too_large, overloaded, unavailable, breaker_open, cancelled, error.");
  GwrBackendM *bsum = calloc(GWR_M_BACKENDS, sizeof *bsum);
  if (!bsum) return;
  for (int i = 0; i < GWR_M_BACKENDS; i++) {
    if (!names[GWR_MK_BACKEND][i]) continue;
    GwrBackendM *x = &bsum[i];
    for (int w = 0; w < nw; w++) {
      for (int r = GWR_CR_OK; r <= GWR_CR_ERROR; r++) x->result[r] += GWR_M_GET(ws[w]->backend[i].result[r]);
      hist_sum(&x->dur, &ws[w]->backend[i].dur);
    }
    for (int r = GWR_CR_OK; r <= GWR_CR_ERROR; r++)
      if (x->result[r])
        sample_u64(b, "gw_backend_calls_total", "backend", names[GWR_MK_BACKEND][i], "result", gwr_call_result_names[r],
                   x->result[r]);
  }
  family(b, "gw_backend_call_duration_seconds", "histogram",
         "Time from sending a backend call to its end (every result but cancelled, and those never sent), by backend.");
  for (int i = 0; i < GWR_M_BACKENDS; i++)
    if (names[GWR_MK_BACKEND][i] && hist_count(&bsum[i].dur))
      hist(b, "gw_backend_call_duration_seconds", "backend", names[GWR_MK_BACKEND][i], &bsum[i].dur);
  free(bsum);

  /* policies */
  family(b, "gw_auth_failures_total", "counter",
         "Requests refused by auth, per policy the endpoint names and its reason: missing, invalid, expired, unknown_key, forbidden.");
  for (int i = 0; i < GWR_M_POLICIES; i++) {
    if (!names[GWR_MK_POLICY][i]) continue;
    for (int r = 0; r < GWR_AF_MAX; r++) {
      uint64_t v = 0;
      for (int w = 0; w < nw; w++) v += GWR_M_GET(ws[w]->auth[i][r]);
      if (v) sample_u64(b, "gw_auth_failures_total", "policy", names[GWR_MK_POLICY][i], "reason", auth_reasons[r], v);
    }
  }
  family(b, "gw_rate_limit_decisions_total", "counter",
         "Rate-limit checks by limit and decision: allowed, limited, error (the store could not answer; on_error applied).");
  for (int i = 0; i < GWR_M_LIMITS; i++) {
    if (!names[GWR_MK_LIMIT][i]) continue;
    for (int d = 0; d < GWR_LD_MAX; d++) {
      uint64_t v = 0;
      for (int w = 0; w < nw; w++) v += GWR_M_GET(ws[w]->limit[i][d]);
      if (v) sample_u64(b, "gw_rate_limit_decisions_total", "limit", names[GWR_MK_LIMIT][i], "decision", limit_decisions[d], v);
    }
  }

  /* connections */
  uint64_t conns = 0, refused = 0, in = 0, out = 0, tls = 0;
  for (int w = 0; w < nw; w++) {
    conns += GWR_M_GET(ws[w]->conns);
    refused += GWR_M_GET(ws[w]->conns_refused);
    in += GWR_M_GET(ws[w]->bytes_in);
    out += GWR_M_GET(ws[w]->bytes_out);
    tls += GWR_M_GET(s->workers[w].tls_handshake_failures);
  }
  int open = __atomic_load_n(&s->nconns, __ATOMIC_RELAXED);
  family(b, "gw_connections_open", "gauge", "Client connections open on the public listeners.");
  sample_u64(b, "gw_connections_open", NULL, NULL, NULL, NULL, open > 0 ? (uint64_t)open : 0);
  family(b, "gw_connections_total", "counter", "Client connections accepted on the public listeners.");
  sample_u64(b, "gw_connections_total", NULL, NULL, NULL, NULL, conns);
  family(b, "gw_connections_refused_total", "counter",
         "Client connections closed at once: max_connections reached, or draining.");
  sample_u64(b, "gw_connections_refused_total", NULL, NULL, NULL, NULL, refused);
  family(b, "gw_bytes_received_total", "counter", "Request bytes (head and body) read from clients on the public listeners.");
  sample_u64(b, "gw_bytes_received_total", NULL, NULL, NULL, NULL, in);
  family(b, "gw_bytes_sent_total", "counter", "Response bytes (head and body) queued to clients on the public listeners.");
  sample_u64(b, "gw_bytes_sent_total", NULL, NULL, NULL, NULL, out);
  family(b, "gw_tls_handshake_failures_total", "counter", "TLS handshakes with clients that failed.");
  sample_u64(b, "gw_tls_handshake_failures_total", NULL, NULL, NULL, NULL, tls);

  /* the access log */
  family(b, "gw_access_log_errors_total", "counter", "Writes of the access log that failed (their lines are dropped).");
  sample_u64(b, "gw_access_log_errors_total", NULL, NULL, NULL, NULL, gwr_alog_errors());
  family(b, "gw_access_log_dropped_lines_total", "counter", "Access-log lines lost to failed writes.");
  sample_u64(b, "gw_access_log_dropped_lines_total", NULL, NULL, NULL, NULL, gwr_alog_dropped());

  /* the response and call cache (gwr_cache.c keeps these counters, under its shards' locks) */
  static const char *const cache_kinds[GWR_CACHE_KINDS] = { "response", "call" };
  GwrCacheStats cs;
  gwr_cache_stats(s->cache, &cs);
  family(b, "gw_cache_hits_total", "counter",
         "Lookups answered from the cache, by kind: response (an endpoint's `cache`), call (a call's `cache`).");
  for (int k = 0; k < GWR_CACHE_KINDS; k++)
    if (cs.hits[k]) sample_u64(b, "gw_cache_hits_total", "kind", cache_kinds[k], NULL, NULL, cs.hits[k]);
  family(b, "gw_cache_misses_total", "counter", "Lookups that went to the backends, by kind (a miss that led coalesced waiters counts once).");
  for (int k = 0; k < GWR_CACHE_KINDS; k++)
    if (cs.misses[k]) sample_u64(b, "gw_cache_misses_total", "kind", cache_kinds[k], NULL, NULL, cs.misses[k]);
  family(b, "gw_cache_stores_total", "counter", "Answers and call values stored, by kind.");
  for (int k = 0; k < GWR_CACHE_KINDS; k++)
    if (cs.stores[k]) sample_u64(b, "gw_cache_stores_total", "kind", cache_kinds[k], NULL, NULL, cs.stores[k]);
  family(b, "gw_cache_coalesced_total", "counter", "Requests that waited for another request's miss of the same key instead of calling the backends.");
  sample_u64(b, "gw_cache_coalesced_total", NULL, NULL, NULL, NULL, cs.coalesced);
  family(b, "gw_cache_evictions_total", "counter", "Live entries dropped to make room (least recently used first).");
  sample_u64(b, "gw_cache_evictions_total", NULL, NULL, NULL, NULL, cs.evictions);
  family(b, "gw_cache_expired_total", "counter", "Entries dropped because their time was up.");
  sample_u64(b, "gw_cache_expired_total", NULL, NULL, NULL, NULL, cs.expired);
  family(b, "gw_cache_too_large_total", "counter", "Answers not stored because they are larger than cache_size / 32.");
  sample_u64(b, "gw_cache_too_large_total", NULL, NULL, NULL, NULL, cs.too_large);
  family(b, "gw_cache_entries", "gauge", "Entries in the cache.");
  sample_u64(b, "gw_cache_entries", NULL, NULL, NULL, NULL, cs.entries);
  family(b, "gw_cache_bytes", "gauge", "Bytes the cache's entries take (data and per-entry overhead); at most gw_cache_capacity_bytes.");
  sample_u64(b, "gw_cache_bytes", NULL, NULL, NULL, NULL, cs.bytes);
  family(b, "gw_cache_capacity_bytes", "gauge", "The cache's bound (server cache_size; 0: off).");
  sample_u64(b, "gw_cache_capacity_bytes", NULL, NULL, NULL, NULL, cs.capacity);

  /* backend resilience (gwr_backend.c): the state of the current program's
  ** backends; it starts fresh with each program, so these counters restart
  ** at a reload (a counter reset, as Prometheus expects them). Targets are
  ** labelled by their position among the backend's urls, never by the url
  ** (it may carry credentials). */
  pthread_mutex_lock(&s->prog_mu);
  GwrProg *g = s->prog;
  if (g) gwr_prog_retain(g);
  pthread_mutex_unlock(&s->prog_mu);
  uint64_t now = gwr_be_now_ms();
  uint32_t nb = g ? g->p->n_backends : 0;
  family(b, "gw_backend_breaker_state", "gauge",
         "The circuit breaker of each backend that declares one: 1 for its state (closed, open, half_open), 0 for the others.");
  for (uint32_t i = 0; i < nb; i++) {
    const GwrBe *be = g->backends[i].be;
    int st = be ? gwr_be_breaker_state(be) : -1;
    if (st < 0) continue;
    const char *bn = gw_const_str(g->p, g->p->backends[i].name, NULL);
    for (int k = 0; k < 3; k++) sample_u64(b, "gw_backend_breaker_state", "backend", bn, "state", gwr_br_state_names[k], st == k);
  }
  family(b, "gw_backend_breaker_opens_total", "counter", "Times each backend's circuit breaker opened (since the program was loaded).");
  for (uint32_t i = 0; i < nb; i++) {
    const GwrBe *be = g->backends[i].be;
    if (!be || gwr_be_breaker_state(be) < 0) continue;
    sample_u64(b, "gw_backend_breaker_opens_total", "backend", gw_const_str(g->p, g->p->backends[i].name, NULL),
               NULL, NULL, gwr_be_breaker_opens(be));
  }
  family(b, "gw_backend_retries_total", "counter", "Retries of backend calls and proxied requests (since the program was loaded).");
  for (uint32_t i = 0; i < nb; i++) {
    const GwrBe *be = g->backends[i].be;
    if (be) sample_u64(b, "gw_backend_retries_total", "backend", gw_const_str(g->p, g->p->backends[i].name, NULL),
                       NULL, NULL, gwr_be_retries(be));
  }
  family(b, "gw_backend_target_up", "gauge",
         "1 while a backend's url (target: its position, from 0, among the backend's urls) is in rotation, 0 while ejected or down.");
  target_samples(b, g, nb, now, "gw_backend_target_up", 0);
  family(b, "gw_backend_target_ejections_total", "counter",
         "Times a backend's url was taken out of rotation, by passive or active health checks (since the program was loaded).");
  target_samples(b, g, nb, now, "gw_backend_target_ejections_total", 1);
  if (g) gwr_prog_release(g);

  /* the program */
  pthread_mutex_lock(&s->prog_mu);
  uint64_t gen = s->generation, rok = s->reloads_ok, rfail = s->reloads_failed;
  pthread_mutex_unlock(&s->prog_mu);
  family(b, "gw_program_generation", "gauge", "The program being served: 1 at start, +1 per successful reload.");
  sample_u64(b, "gw_program_generation", NULL, NULL, NULL, NULL, gen);
  family(b, "gw_reloads_total", "counter", "Reloads (SIGHUP or POST /reload) by result: ok, failed (the old program kept serving).");
  sample_u64(b, "gw_reloads_total", "result", "ok", NULL, NULL, rok);
  sample_u64(b, "gw_reloads_total", "result", "failed", NULL, NULL, rfail);
  family(b, "gw_start_time_seconds", "gauge", "When gwd started, in seconds since the Unix epoch.");
  sample_u64(b, "gw_start_time_seconds", NULL, NULL, NULL, NULL, (uint64_t)started);
  family(b, "gw_build_info", "gauge", "Always 1; the version of gwd as a label.");
  sample_u64(b, "gw_build_info", "version", version, NULL, NULL, 1);
}
