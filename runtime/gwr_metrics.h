/*
** gwr_metrics.h — gwd's counters, and their Prometheus text exposition
** (format 0.0.4) for GET /metrics on the admin listener.
**
** Every counter belongs to one worker and only that worker's thread writes
** it, with relaxed atomic stores (a plain load, add and store on x86-64 and
** arm64: no lock prefix, no lock, no allocation on the hot path). A scrape
** reads every worker's counters with relaxed atomic loads and sums them, so
** the two threads never race, and a sum is at most a few increments behind.
**
** Label values are bounded. Routes, backends, auth policies and limits get a
** slot from a process-wide registry (label string → slot) when a program is
** loaded; the exchange reaches its slots through the indexes GwrProg keeps
** (ep_slot, be_slot, auth_slot, limit_slot). A reload keeps the counters of
** the names that still exist; past a kind's capacity every new name shares
** the "other" slot. Client-supplied text never becomes a label.
**
** Not here: deciding what happened to a request or a call (the exchange
** does), the access log (gwr_accesslog.c).
*/
#ifndef GWR_METRICS_H
#define GWR_METRICS_H

#include <stdint.h>
#include <time.h>
#include "gw_util.h"

/* Slot capacities. Route slot 0 is "unmatched"; the last slot of each kind
** is "other". */
#define GWR_M_ROUTES    1024
#define GWR_M_BACKENDS  256
#define GWR_M_POLICIES  256
#define GWR_M_LIMITS    256
#define GWR_SLOT_UNMATCHED 0

enum { GWR_MK_ROUTE, GWR_MK_BACKEND, GWR_MK_POLICY, GWR_MK_LIMIT, GWR_MK_MAX };

/* How a backend call ended (gw_backend_calls_total{result}); SKIPPED (an
** `if` that was false, or a URL value that was missing) is not a call made:
** it counts in gw_calls_skipped_total and shows in the access log. */
enum { GWR_CR_NONE, GWR_CR_OK, GWR_CR_CONNECT, GWR_CR_TIMEOUT, GWR_CR_STATUS, GWR_CR_INVALID_BODY,
       GWR_CR_TOO_LARGE, GWR_CR_OVERLOADED, GWR_CR_UNAVAILABLE, GWR_CR_BREAKER_OPEN, GWR_CR_CANCELLED,
       GWR_CR_ERROR, GWR_CR_SKIPPED, GWR_CR_MAX };
extern const char *const gwr_call_result_names[GWR_CR_MAX];

/* Why an auth policy refused a request (gw_auth_failures_total{reason}). */
enum { GWR_AF_MISSING, GWR_AF_INVALID, GWR_AF_EXPIRED, GWR_AF_UNKNOWN_KEY, GWR_AF_FORBIDDEN, GWR_AF_MAX };
/* A limit's decision (gw_rate_limit_decisions_total{decision}). */
enum { GWR_LD_ALLOWED, GWR_LD_LIMITED, GWR_LD_ERROR, GWR_LD_MAX };

/* Histogram buckets (upper bounds, in microseconds); the last is +Inf. */
#define GWR_M_NBUCKETS 11
extern const uint64_t gwr_bucket_us[GWR_M_NBUCKETS];

typedef struct GwrHist { uint64_t b[GWR_M_NBUCKETS + 1]; uint64_t sum_us; } GwrHist;

typedef struct GwrRouteM {
  uint64_t status[5];          /* 1xx .. 5xx */
  GwrHist  dur;
  uint64_t skipped, partial;
} GwrRouteM;

typedef struct GwrBackendM { uint64_t result[GWR_CR_MAX]; GwrHist dur; } GwrBackendM;

/* One worker's counters. */
typedef struct GwrMetrics {
  GwrRouteM   route[GWR_M_ROUTES];
  GwrBackendM backend[GWR_M_BACKENDS];
  uint64_t    auth[GWR_M_POLICIES][GWR_AF_MAX];
  uint64_t    limit[GWR_M_LIMITS][GWR_LD_MAX];
  uint64_t    conns, conns_refused, bytes_in, bytes_out;
} GwrMetrics;

/* The owning worker adds; anyone reads. */
#define GWR_M_ADD(x, v) \
  __atomic_store_n(&(x), __atomic_load_n(&(x), __ATOMIC_RELAXED) + (uint64_t)(v), __ATOMIC_RELAXED)
#define GWR_M_GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static inline void gwr_hist_add(GwrHist *h, uint64_t us) {
  int i = 0;
  while (i < GWR_M_NBUCKETS && us > gwr_bucket_us[i]) i++;
  GWR_M_ADD(h->b[i], 1);
  GWR_M_ADD(h->sum_us, us);
}

/* Monotonic microseconds (vDSO: no system call). */
static inline uint64_t gwr_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The slot of name (a route "GET /users/{id}", a backend, a policy or a
** limit name) in kind's registry: the one it had, a new one, or "other".
** Takes the registry's lock: for program loads, not for requests. name is
** copied. */
uint16_t gwr_metrics_slot(int kind, const char *name);

/* A worker's counters, zeroed (owned; free with free()). NULL: no memory. */
GwrMetrics *gwr_metrics_new(void);

/* gw_build_info{version}; before the server starts. v is borrowed (static). */
void gwr_metrics_set_version(const char *v);

struct GwrServer;
/* Append the exposition of every metric of s to out (a scrape; any thread). */
void gwr_metrics_render(struct GwrServer *s, GwBuf *out);

#endif
