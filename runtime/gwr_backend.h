/*
** gwr_backend.h — the runtime state of a backend: target selection
** (round_robin, least_requests), passive and active health, the circuit
** breaker, and each worker's share of max_connections with its bounded
** queue.
**
** Sharing. Health and breaker state is per process: every worker reads and
** updates the same GwrBe. Reads on the hot path are relaxed atomic loads; a
** successful call on a healthy backend takes no lock. Transitions (a target
** ejected, the breaker opening, half-opening or closing) take the backend's
** small mutex for a few instructions. The connection slots are per worker:
** worker w's row is touched only by worker w's thread, so they take no lock
** and no atomic.
**
** Ownership and lifetime. A GwrBe belongs to one loaded program (GwrProg
** creates one per backend at load and frees it with the program), so a
** reload starts with every target in rotation and every breaker closed. The
** active health checks run on one thread of their own (GwrHealth), which
** checks the backends of the server's current program and follows reloads.
**
** Time is CLOCK_MONOTONIC milliseconds, passed in (gwr_be_now_ms), so the
** unit tests drive it by hand.
**
** Not here: building requests, the failure policy of a call, deciding
** whether an attempt may be retried (gwr_exchange.c does), the HTTP client
** (gwr_fetch.c).
*/
#ifndef GWR_BACKEND_H
#define GWR_BACKEND_H

#include <stdint.h>
#include "gw_bytecode.h"

typedef struct GwrBe GwrBe;

/* Failed calls in a row that take a target out of rotation (passive health). */
#define GWR_BE_PASSIVE_FAILURES 5
/* Failed active checks in a row that take a target down (one passing check brings it back). */
#define GWR_BE_CHECK_FAILURES 2
/* The breaker's `failures` is capped (it sizes a ring of failure times). */
#define GWR_BE_MAX_BREAKER_FAILURES 10000
/* Active checks: `every` is at least this, a check times out within min(every, this). */
#define GWR_BE_MIN_EVERY_MS 50
#define GWR_BE_CHECK_TIMEOUT_MS 1000

/* What a GwrBe is made from: a backend record of the program (gwr_be_config),
** or set by hand (tests). Zero means the default where one is named. */
typedef struct GwrBeConfig {
  const char *name;                 /* for log lines (borrowed) */
  int         least_requests;       /* balance: 0 round_robin, 1 least_requests */
  uint32_t    max_connections;      /* per worker; 0 is taken as 1 */
  uint32_t    passive_failures;     /* default GWR_BE_PASSIVE_FAILURES */
  uint32_t    passive_cooldown_ms;  /* ejection time (health `cooldown`, default 10 s) */
  int         breaker;              /* a breaker { } is declared */
  uint32_t    br_failures, br_window_ms, br_cooldown_ms;
  const char *health_path;          /* health { path }, NULL: no active checks (borrowed) */
  uint32_t    health_every_ms;
  uint32_t    health_failures;      /* failed checks in a row that take a target down */
} GwrBeConfig;

/* The configuration of backend b of p (its defaults applied by gwc). */
void   gwr_be_config(GwrBeConfig *c, const GwProgram *p, uint32_t b);
/* A backend's state over its nurls base URLs (borrowed: they must outlive
** it), every target in rotation, the breaker closed. Aborts on no memory
** (it is made at load). */
GwrBe *gwr_be_new(const GwrBeConfig *c, const char *const *urls, int nurls);
/* Frees be; no worker or health thread may use it any more. NULL is allowed. */
void   gwr_be_free(GwrBe *be);

uint64_t gwr_be_now_ms(void);

/* ---- attempts ----------------------------------------------------------------- */

/* How an attempt went, for health and the breaker. FAIL: a connect error, a
** timeout, the connection cut, or a 5xx answer. OK: any other answer (the
** backend is alive, whatever it said). NONE: abandoned before the end
** (cancelled: the client left, the endpoint's deadline): counts for nothing,
** but frees a half-open probe. */
enum { GWR_BE_OK, GWR_BE_FAIL, GWR_BE_NONE };

/* One attempt's ticket: its target and whether it is the breaker's probe. */
typedef struct GwrBeAttempt {
  int target;
  int probe;        /* the half-open breaker's single trial call */
  int live;         /* begun and not yet ended */
} GwrBeAttempt;

/* Begin an attempt at now: pick a target in rotation (round robin, or the
** fewest calls in flight with ties taken round robin), avoiding target
** `avoid` (a retry's previous target, or -1) when another one is in
** rotation; then pass the breaker. Returns NULL with *a filled (a->live 1),
** or the failure kind, a static string: "unavailable" (every target is
** down by active checks) or "breaker_open" (open, or half-open with its
** probe out); a refused attempt needs no gwr_be_end. When only passive
** ejections leave no target in rotation, an ejected one is used rather than
** failing (they never take the last target out; the breaker governs it). */
const char *gwr_be_begin(GwrBe *be, int avoid, uint64_t now, GwrBeAttempt *a);
/* End attempt a with outcome GWR_BE_*: the target's failures in a row
** (ejecting it after `passive_failures` when another target is still in
** rotation), the breaker's window, the probe's verdict. A no-op when a is
** not live; a->live is 0 afterwards. */
void gwr_be_end(GwrBe *be, GwrBeAttempt *a, int outcome, uint64_t now);
/* The base URL of target i (borrowed). */
const char *gwr_be_url(const GwrBe *be, int i);
int  gwr_be_ntargets(const GwrBe *be);
/* Count a retry (for metrics). */
void gwr_be_count_retry(GwrBe *be);

/* ---- connection slots (per worker) ---------------------------------------------- */

/* A request waiting for a slot. ready runs (on the worker's thread, from
** inside gwr_be_release) once the slot is its own; it must take the slot
** (and later release it) or release it at once. */
typedef struct GwrBeWait {
  struct GwrBeWait *prev, *next;
  void (*ready)(struct GwrBeWait *w);
  int queued;
} GwrBeWait;

/* Worker `worker` wants a slot: 1, it has one; 0, w is queued (ready runs
** later); -1, max_connections are in use and as many wait: fail fast
** ("overloaded"). Slots bound the requests in flight to the backend per
** worker (each uses one connection: HTTP/1.1, no pipelining). */
int  gwr_be_acquire(GwrBe *be, int worker, GwrBeWait *w);
/* Give a slot back; the first waiter, if any, gets it (its ready runs now). */
void gwr_be_release(GwrBe *be, int worker);
/* Leave the queue (a request cancelled while waiting). No-op if not queued. */
void gwr_be_unqueue(GwrBe *be, int worker, GwrBeWait *w);

/* ---- active health --------------------------------------------------------------- */

/* A check of target i ended at now: `health_failures` failures in a row
** take it down (out of rotation, even the last one), one success brings it
** back. Called by the health thread (and tests). */
void gwr_be_check_result(GwrBe *be, int i, int ok, uint64_t now);
/* The active check of be: its path (NULL: none) and interval. */
const char *gwr_be_health_path(const GwrBe *be, uint32_t *every_ms);

struct GwrServer;
typedef struct GwrHealth GwrHealth;
/* Start the health-check thread of s: it checks every target of every
** backend with health { } of s's current program (s->prog, read under
** prog_mu), and switches to a new program within 100 ms of a reload,
** cancelling the checks of the old one. Its own event_base and libcurl
** multi. Returns an owned handle, or NULL (logged) if it cannot start. */
GwrHealth *gwr_health_start(struct GwrServer *s);
/* Stop the checks and join the thread. NULL is allowed. */
void gwr_health_stop(GwrHealth *h);

/* ---- state, for metrics and the admin ------------------------------------------- */

enum { GWR_BR_CLOSED, GWR_BR_OPEN, GWR_BR_HALF_OPEN };
extern const char *const gwr_br_state_names[3];   /* "closed", "open", "half_open" */

typedef struct GwrBeTargetState {
  const char *url;          /* borrowed from the program */
  int         ejected;      /* out of rotation now: passive ejection */
  int         down;         /* out of rotation now: active checks */
  uint32_t    inflight;     /* least_requests only: calls in flight, every worker */
  uint32_t    fails;        /* failed calls in a row */
  uint64_t    ejections;    /* times taken out of rotation (passive or active) */
} GwrBeTargetState;

/* A snapshot, from any thread (relaxed loads: each field is current, the
** set may be a moment apart). */
int      gwr_be_breaker_state(const GwrBe *be);     /* GWR_BR_*, or -1: no breaker declared */
uint64_t gwr_be_breaker_opens(const GwrBe *be);     /* times it opened */
uint64_t gwr_be_retries(const GwrBe *be);           /* retries made */
void     gwr_be_target_state(const GwrBe *be, int i, uint64_t now, GwrBeTargetState *out);

#endif
