/*
** gwr_backend.c — target selection, passive and active health, the circuit
** breaker, and the per-worker connection slots of a backend (see
** gwr_backend.h for the sharing rules).
**
** Passive health: a target's live calls that fail (connect error, timeout,
** cut connection, 5xx) GWR_BE_PASSIVE_FAILURES times in a row take it out of
** rotation for the cooldown, unless it is the last target in rotation. When
** the cooldown has passed it is picked again like any other; its count of
** failures is not reset by the ejection, so one more failure takes it out
** again and one success clears it.
**
** Breaker: the times of the last `failures` failed attempts are kept in a
** ring; when the oldest of them is within `window` of the newest, the
** breaker opens. After `cooldown` the first attempt to come through
** half-opens it and is the probe; every other attempt is refused until the
** probe ends: a success closes the breaker (the ring is cleared), a failure
** re-opens it, an abandoned probe lets the next attempt probe.
**
** Active health (GwrHealth): one thread with its own event_base and libcurl
** multi checks `path` on every target of every backend with health { },
** every `every`, each check timing out within min(every, 1 s).
*/
#include "gwr_backend.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/event.h>
#include "gwr.h"

const char *const gwr_br_state_names[3] = { "closed", "open", "half_open" };

#define LOAD(x)     __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define ADD(x, v)   __atomic_add_fetch(&(x), (v), __ATOMIC_RELAXED)

typedef struct Target {
  const char *url;
  char        show[96];    /* for logs: scheme://host:port, never userinfo or path (credentials) */
  uint32_t inflight;        /* least_requests: calls in flight, all workers */
  uint32_t fails;           /* failed calls in a row */
  uint64_t ejected_until;   /* passive: out of rotation until then (ms) */
  uint32_t down;            /* active: out of rotation (health thread writes) */
  uint32_t check_fails;     /* failed checks in a row (health thread) */
  uint32_t to_log;          /* an ejection whose end is still to be logged */
  uint64_t ejections;
} __attribute__((aligned(64))) Target;

/* One worker's slots: only that worker's thread touches its row. */
typedef struct Slots {
  uint32_t running, queued;
  GwrBeWait *head, *tail;
} __attribute__((aligned(64))) Slots;

struct GwrBe {
  GwrBeConfig c;
  int         n;
  Target     *t;
  unsigned    rr;           /* round-robin position */
  uint32_t    cap;          /* max_connections, at least 1 */
  uint64_t    retries;
  /* breaker */
  pthread_mutex_t mu;       /* transitions: ejections, the breaker */
  int         br_state;     /* GWR_BR_* (atomic) */
  int         br_probe;     /* a half-open probe is out (atomic) */
  uint64_t    br_opened;    /* when it opened (atomic) */
  uint64_t    br_opens;
  uint64_t   *ring;         /* failure times (under mu) */
  uint32_t    rn, rhead, rcount;
  Slots       w[GWR_MAX_WORKERS];
};

uint64_t gwr_be_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void gwr_be_config(GwrBeConfig *c, const GwProgram *p, uint32_t b) {
  const GwBackend *B = &p->backends[b];
  memset(c, 0, sizeof *c);
  c->name = gw_const_str(p, B->name, NULL);
  c->least_requests = B->balance == 1;
  c->max_connections = B->max_connections;
  c->passive_failures = B->health_failures;      /* health { failures }: calls in a row (passive) */
  c->passive_cooldown_ms = B->health_cooldown_ms;
  c->breaker = B->breaker != 0;
  c->br_failures = B->br_failures;
  c->br_window_ms = B->br_window_ms;
  c->br_cooldown_ms = B->br_cooldown_ms;
  c->health_path = B->health_path != GW_NONE ? gw_const_str(p, B->health_path, NULL) : NULL;
  c->health_every_ms = B->health_every_ms;
  c->health_failures = GWR_BE_CHECK_FAILURES;
}

/* A url as logs may show it: scheme://host:port, without the userinfo (it may
** hold a password, or come from env()) and without the path. */
static void show_url(char *out, size_t cap, const char *url) {
  const char *p = strstr(url, "://");
  const char *host = p ? p + 3 : url;
  size_t hl = strcspn(host, "/?#");
  const char *at = memchr(host, '@', hl);
  if (at) { hl -= (size_t)(at + 1 - host); host = at + 1; }
  snprintf(out, cap, "%.*s%.*s", p ? (int)(p + 3 - url) : 0, url, (int)hl, host);
}

GwrBe *gwr_be_new(const GwrBeConfig *c, const char *const *urls, int nurls) {
  GwrBe *be = NULL;
  if (posix_memalign((void **)&be, 64, sizeof *be) != 0) abort();
  memset(be, 0, sizeof *be);
  be->c = *c;
  if (!be->c.name) be->c.name = "?";
  if (!be->c.passive_failures) be->c.passive_failures = GWR_BE_PASSIVE_FAILURES;
  if (!be->c.passive_cooldown_ms) be->c.passive_cooldown_ms = 10000;
  if (!be->c.health_failures) be->c.health_failures = 1;
  if (be->c.health_every_ms < GWR_BE_MIN_EVERY_MS) be->c.health_every_ms = GWR_BE_MIN_EVERY_MS;
  be->cap = c->max_connections ? c->max_connections : 1;
  be->n = nurls > 0 ? nurls : 0;
  if (posix_memalign((void **)&be->t, 64, sizeof *be->t * (size_t)(be->n + 1)) != 0) abort();
  memset(be->t, 0, sizeof *be->t * (size_t)(be->n + 1));
  for (int i = 0; i < be->n; i++) {
    be->t[i].url = urls[i];
    show_url(be->t[i].show, sizeof be->t[i].show, urls[i]);
  }
  pthread_mutex_init(&be->mu, NULL);
  if (be->c.breaker) {
    be->rn = be->c.br_failures ? be->c.br_failures : 1;
    if (be->rn > GWR_BE_MAX_BREAKER_FAILURES) be->rn = GWR_BE_MAX_BREAKER_FAILURES;
    be->ring = calloc(be->rn, sizeof *be->ring);
    if (!be->ring) abort();
  }
  return be;
}

void gwr_be_free(GwrBe *be) {
  if (!be) return;
  pthread_mutex_destroy(&be->mu);
  free(be->ring);
  free(be->t);
  free(be);
}

const char *gwr_be_url(const GwrBe *be, int i) { return be->t[i].url; }
int gwr_be_ntargets(const GwrBe *be) { return be->n; }
void gwr_be_count_retry(GwrBe *be) { ADD(be->retries, 1); }

const char *gwr_be_health_path(const GwrBe *be, uint32_t *every_ms) {
  if (every_ms) *every_ms = be->c.health_every_ms;
  return be->c.health_path;
}

/* ---- selection ---------------------------------------------------------------------- */

static int in_rotation(const GwrBe *be, int i, uint64_t now) {
  const Target *t = &be->t[i];
  return !LOAD(t->down) && now >= LOAD(t->ejected_until);
}

/* Round robin takes the r-th of the targets in rotation (so the share of one
** out of rotation spreads evenly over the others); least_requests scans from
** the r-th target, so ties go round robin. */
static int pick(GwrBe *be, int avoid, uint64_t now) {
  int n = be->n, best = -1;
  if (n <= 0) return -1;
  unsigned r = __atomic_fetch_add(&be->rr, 1, __ATOMIC_RELAXED);
  if (!be->c.least_requests) {
    int in = 0;
    for (int i = 0; i < n; i++) if (i != avoid && in_rotation(be, i, now)) in++;
    int k = in ? (int)(r % (unsigned)in) : -1;
    for (int i = 0; i < n && k >= 0; i++)     /* (a target may have left meanwhile: then below) */
      if (i != avoid && in_rotation(be, i, now) && k-- == 0) return i;
  } else {
    unsigned start = r % (unsigned)n;
    for (int j = 0; j < n; j++) {
      int i = (int)((start + (unsigned)j) % (unsigned)n);
      if (i == avoid || !in_rotation(be, i, now)) continue;
      if (best < 0 || LOAD(be->t[i].inflight) < LOAD(be->t[best].inflight)) best = i;
    }
    if (best >= 0) return best;
  }
  if (avoid >= 0 && avoid < n && in_rotation(be, avoid, now)) return avoid;
  /* none in rotation: a passively ejected target (never the last by design;
  ** a race with the active checks can get here) rather than none */
  for (int j = 0; j < n; j++) {
    int i = (int)((r + (unsigned)j) % (unsigned)n);
    if (!LOAD(be->t[i].down)) return i;
  }
  return -1;
}

/* The breaker lets an attempt through: 1 (and *probe), or 0. */
static int admit(GwrBe *be, uint64_t now, int *probe) {
  *probe = 0;
  if (!be->c.breaker) return 1;
  int st = __atomic_load_n(&be->br_state, __ATOMIC_ACQUIRE);
  if (st == GWR_BR_CLOSED) return 1;
  if (st == GWR_BR_OPEN && now < LOAD(be->br_opened) + be->c.br_cooldown_ms) return 0;
  if (st == GWR_BR_HALF_OPEN && LOAD(be->br_probe)) return 0;
  int ok = 0;
  pthread_mutex_lock(&be->mu);
  st = be->br_state;
  if (st == GWR_BR_CLOSED) {
    ok = 1;
  } else if (st == GWR_BR_OPEN ? now >= be->br_opened + be->c.br_cooldown_ms : !be->br_probe) {
    if (st == GWR_BR_OPEN) gwr_log("info", "backend %s: breaker half-open: one trial call", be->c.name);
    __atomic_store_n(&be->br_state, GWR_BR_HALF_OPEN, __ATOMIC_RELEASE);
    STORE(be->br_probe, 1);
    *probe = ok = 1;
  }
  pthread_mutex_unlock(&be->mu);
  return ok;
}

const char *gwr_be_begin(GwrBe *be, int avoid, uint64_t now, GwrBeAttempt *a) {
  a->live = 0;
  a->probe = 0;
  a->target = pick(be, avoid, now);
  if (a->target < 0) return "unavailable";
  if (!admit(be, now, &a->probe)) return "breaker_open";
  if (be->c.least_requests) ADD(be->t[a->target].inflight, 1);
  a->live = 1;
  return NULL;
}

/* ---- outcomes ----------------------------------------------------------------------- */

static void eject(GwrBe *be, int i, uint64_t now) {
  Target *t = &be->t[i];
  pthread_mutex_lock(&be->mu);
  if (LOAD(t->fails) >= be->c.passive_failures && in_rotation(be, i, now)) {
    int others = 0;
    for (int j = 0; j < be->n; j++) if (j != i && in_rotation(be, j, now)) others++;
    if (others) {
      STORE(t->ejected_until, now + be->c.passive_cooldown_ms);
      ADD(t->ejections, 1);
      STORE(t->to_log, 1);
      gwr_log("warn", "backend %s: %s out of rotation for %u ms after %u failed calls in a row",
              be->c.name, t->show, be->c.passive_cooldown_ms, LOAD(t->fails));
    }
  }
  pthread_mutex_unlock(&be->mu);
}

static void breaker_failed(GwrBe *be, uint64_t now) {
  pthread_mutex_lock(&be->mu);
  be->ring[be->rhead] = now;
  be->rhead = (be->rhead + 1) % be->rn;
  if (be->rcount < be->rn) be->rcount++;
  /* full: rhead is the oldest of the last rn failures */
  if (be->br_state == GWR_BR_CLOSED && be->rcount == be->rn && now - be->ring[be->rhead] <= be->c.br_window_ms) {
    STORE(be->br_opened, now);
    __atomic_store_n(&be->br_state, GWR_BR_OPEN, __ATOMIC_RELEASE);
    ADD(be->br_opens, 1);
    gwr_log("warn", "backend %s: breaker open for %u ms: %u failed calls within %u ms", be->c.name,
            be->c.br_cooldown_ms, be->rn, be->c.br_window_ms);
  }
  pthread_mutex_unlock(&be->mu);
}

static void probe_ended(GwrBe *be, int outcome, uint64_t now) {
  pthread_mutex_lock(&be->mu);
  if (outcome == GWR_BE_OK) {
    be->rcount = be->rhead = 0;
    __atomic_store_n(&be->br_state, GWR_BR_CLOSED, __ATOMIC_RELEASE);
    gwr_log("info", "backend %s: breaker closed: the trial call succeeded", be->c.name);
  } else if (outcome == GWR_BE_FAIL) {
    STORE(be->br_opened, now);
    __atomic_store_n(&be->br_state, GWR_BR_OPEN, __ATOMIC_RELEASE);
    ADD(be->br_opens, 1);
    gwr_log("warn", "backend %s: breaker open again for %u ms: the trial call failed", be->c.name, be->c.br_cooldown_ms);
  }
  STORE(be->br_probe, 0);    /* abandoned: the next attempt probes */
  pthread_mutex_unlock(&be->mu);
}

void gwr_be_end(GwrBe *be, GwrBeAttempt *a, int outcome, uint64_t now) {
  if (!a->live) return;
  a->live = 0;
  Target *t = &be->t[a->target];
  if (be->c.least_requests) __atomic_sub_fetch(&t->inflight, 1, __ATOMIC_RELAXED);
  if (outcome == GWR_BE_FAIL) {
    if (ADD(t->fails, 1) >= be->c.passive_failures && be->n > 1) eject(be, a->target, now);
  } else if (outcome == GWR_BE_OK) {
    if (LOAD(t->fails)) STORE(t->fails, 0);
    if (LOAD(t->to_log) && __atomic_exchange_n(&t->to_log, 0, __ATOMIC_RELAXED))
      gwr_log("info", "backend %s: %s answers again, back in rotation", be->c.name, t->show);
  }
  if (!be->c.breaker) return;
  if (a->probe) probe_ended(be, outcome, now);
  else if (outcome == GWR_BE_FAIL) breaker_failed(be, now);
}

/* ---- slots ----------------------------------------------------------------------------- */

int gwr_be_acquire(GwrBe *be, int worker, GwrBeWait *w) {
  Slots *s = &be->w[worker];
  if (s->running < be->cap && !s->head) { s->running++; return 1; }
  if (s->queued >= be->cap) return -1;
  w->next = NULL;
  w->prev = s->tail;
  if (s->tail) s->tail->next = w; else s->head = w;
  s->tail = w;
  w->queued = 1;
  s->queued++;
  return 0;
}

void gwr_be_unqueue(GwrBe *be, int worker, GwrBeWait *w) {
  Slots *s = &be->w[worker];
  if (!w->queued) return;
  if (w->prev) w->prev->next = w->next; else s->head = w->next;
  if (w->next) w->next->prev = w->prev; else s->tail = w->prev;
  w->prev = w->next = NULL;
  w->queued = 0;
  s->queued--;
}

void gwr_be_release(GwrBe *be, int worker) {
  Slots *s = &be->w[worker];
  if (s->running) s->running--;
  /* ready may release again (its call failed at once): that nested call
  ** hands the slot on, and this loop sees the state it left */
  while (s->head && s->running < be->cap) {
    GwrBeWait *w = s->head;
    gwr_be_unqueue(be, worker, w);
    s->running++;
    w->ready(w);
  }
}

/* ---- active health ------------------------------------------------------------------- */

void gwr_be_check_result(GwrBe *be, int i, int ok, uint64_t now) {
  Target *t = &be->t[i];
  (void)now;
  if (ok) {
    STORE(t->check_fails, 0);
    if (LOAD(t->down)) {
      STORE(t->down, 0);
      STORE(t->fails, 0);
      gwr_log("info", "backend %s: %s passes its health check, back in rotation", be->c.name, t->show);
    }
    return;
  }
  if (ADD(t->check_fails, 1) >= be->c.health_failures && !LOAD(t->down)) {
    STORE(t->down, 1);
    ADD(t->ejections, 1);
    gwr_log("warn", "backend %s: %s out of rotation: %u failed health checks in a row", be->c.name, t->show,
            LOAD(t->check_fails));
  }
}

/* ---- state -------------------------------------------------------------------------------- */

int gwr_be_breaker_state(const GwrBe *be) {
  if (!be->c.breaker) return -1;
  /* still "open" after its cooldown until a call comes to probe */
  return __atomic_load_n(&be->br_state, __ATOMIC_RELAXED);
}

uint64_t gwr_be_breaker_opens(const GwrBe *be) { return __atomic_load_n(&be->br_opens, __ATOMIC_RELAXED); }
uint64_t gwr_be_retries(const GwrBe *be) { return __atomic_load_n(&be->retries, __ATOMIC_RELAXED); }

void gwr_be_target_state(const GwrBe *be, int i, uint64_t now, GwrBeTargetState *out) {
  const Target *t = &be->t[i];
  out->url = t->url;
  out->down = __atomic_load_n(&t->down, __ATOMIC_RELAXED) != 0;
  out->ejected = now < __atomic_load_n(&t->ejected_until, __ATOMIC_RELAXED);
  out->inflight = __atomic_load_n(&t->inflight, __ATOMIC_RELAXED);
  out->fails = __atomic_load_n(&t->fails, __ATOMIC_RELAXED);
  out->ejections = __atomic_load_n(&t->ejections, __ATOMIC_RELAXED);
}

/* ---- the health-check thread ------------------------------------------------------------ */

typedef struct Check {
  struct GwrHealth *h;
  GwrBe        *be;
  uint32_t      b;            /* the backend's index in the program */
  int           target;
  struct event *timer;
  GwrFetchXfer *xfer;
} Check;

struct GwrHealth {
  GwrServer         *s;
  pthread_t          thread;
  struct event_base *base;
  GwrFetch          *fetch;
  struct event      *tick, *stop_ev;
  GwrProg           *g;         /* the program checked (a reference) */
  Check             *checks;
  int                nchecks;
};

static void c_done(void *ud, int kind, long status, const char *detail) {
  Check *c = ud;
  (void)detail;
  c->xfer = NULL;
  gwr_be_check_result(c->be, c->target, kind == GWR_FETCH_OK && status >= 200 && status <= 299, gwr_be_now_ms());
}

static int c_data(void *ud, const char *p, size_t n) { (void)ud; (void)p; (void)n; return 0; }

static void c_fire(evutil_socket_t fd, short what, void *arg) {
  Check *c = arg;
  GwrHealth *h = c->h;
  (void)fd; (void)what;
  if (c->xfer) return;                    /* the last one is still running */
  uint32_t every;
  const char *path = gwr_be_health_path(c->be, &every);
  const GwrBackend *R = &h->g->backends[c->b];
  GwBuf url = {0};
  gw_buf_adds(&url, gwr_be_url(c->be, c->target));
  if (path[0] != '/') gw_buf_addc(&url, '/');
  gw_buf_adds(&url, path);
  long ms = every < GWR_BE_CHECK_TIMEOUT_MS ? (long)every : GWR_BE_CHECK_TIMEOUT_MS;
  GwrFetchReq fr;
  memset(&fr, 0, sizeof fr);
  fr.url = gw_buf_cstr(&url);
  fr.method = "GET";
  fr.headers = R->headers;
  fr.connect_timeout_ms = ms;
  fr.timeout_ms = ms;
  fr.max_response = 1u << 20;
  fr.tls = &R->tls;
  fr.on_data = c_data;
  fr.on_done = c_done;
  fr.ud = c;
  c->xfer = gwr_fetch_start(h->fetch, &fr);
  gw_buf_free(&url);
  if (!c->xfer) gwr_be_check_result(c->be, c->target, 0, gwr_be_now_ms());
}

static void drop_checks(GwrHealth *h) {
  for (int i = 0; i < h->nchecks; i++) {
    Check *c = &h->checks[i];
    if (c->xfer) gwr_fetch_cancel(c->xfer);
    if (c->timer) event_free(c->timer);
  }
  free(h->checks);
  h->checks = NULL;
  h->nchecks = 0;
  gwr_prog_release(h->g);
  h->g = NULL;
}

/* Check g's backends from now on (g: a reference, taken). */
static void take_program(GwrHealth *h, GwrProg *g) {
  drop_checks(h);
  h->g = g;
  int n = 0;
  for (uint32_t b = 0; b < g->p->n_backends; b++)
    if (gwr_be_health_path(g->backends[b].be, NULL)) n += gwr_be_ntargets(g->backends[b].be);
  if (!n) return;
  h->checks = calloc((size_t)n, sizeof *h->checks);
  if (!h->checks) { gwr_log("error", "health checks: out of memory"); return; }
  for (uint32_t b = 0; b < g->p->n_backends; b++) {
    GwrBe *be = g->backends[b].be;
    uint32_t every;
    if (!gwr_be_health_path(be, &every)) continue;
    for (int t = 0; t < gwr_be_ntargets(be); t++) {
      Check *c = &h->checks[h->nchecks++];
      c->h = h; c->be = be; c->b = b; c->target = t;
      c->timer = event_new(h->base, -1, EV_PERSIST, c_fire, c);
      if (!c->timer) continue;
      struct timeval tv = { (time_t)(every / 1000), (suseconds_t)((every % 1000) * 1000) };
      evtimer_add(c->timer, &tv);
      event_active(c->timer, EV_TIMEOUT, 0);     /* the first check now */
    }
  }
}

/* Every 100 ms: follow the server's current program. */
static void on_tick(evutil_socket_t fd, short what, void *arg) {
  GwrHealth *h = arg;
  (void)fd; (void)what;
  pthread_mutex_lock(&h->s->prog_mu);
  GwrProg *g = h->s->prog;
  if (g == h->g) g = NULL;
  else gwr_prog_retain(g);
  pthread_mutex_unlock(&h->s->prog_mu);
  if (g) take_program(h, g);
}

static void on_stop(evutil_socket_t fd, short what, void *arg) {
  GwrHealth *h = arg;
  (void)fd; (void)what;
  event_base_loopbreak(h->base);
}

static void *health_main(void *arg) {
  GwrHealth *h = arg;
  on_tick(-1, 0, h);
  event_base_dispatch(h->base);
  gw_arena_drop_spares();     /* a program it released last may have left chunks here */
  return NULL;
}

static void health_free(GwrHealth *h) {
  drop_checks(h);
  gwr_fetch_free(h->fetch);
  if (h->tick) event_free(h->tick);
  if (h->stop_ev) event_free(h->stop_ev);
  if (h->base) event_base_free(h->base);
  free(h);
}

GwrHealth *gwr_health_start(GwrServer *s) {
  GwrHealth *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->s = s;
  h->base = event_base_new();
  h->fetch = h->base ? gwr_fetch_new(h->base, NULL) : NULL;
  h->tick = h->base ? event_new(h->base, -1, EV_PERSIST, on_tick, h) : NULL;
  h->stop_ev = h->base ? event_new(h->base, -1, 0, on_stop, h) : NULL;
  struct timeval tv = { 0, 100000 };
  if (!h->fetch || !h->tick || !h->stop_ev || evtimer_add(h->tick, &tv) != 0 ||
      pthread_create(&h->thread, NULL, health_main, h) != 0) {
    gwr_log("error", "health checks: cannot start their thread");
    health_free(h);
    return NULL;
  }
  return h;
}

void gwr_health_stop(GwrHealth *h) {
  if (!h) return;
  /* an event, not event_base_loopbreak: a break asked for before the loop
  ** runs would be forgotten when it starts */
  event_active(h->stop_ev, EV_READ, 0);
  pthread_join(h->thread, NULL);
  health_free(h);
}
