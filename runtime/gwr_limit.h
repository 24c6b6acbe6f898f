/*
** gwr_limit.h — rate limits: GCRA (the "generic cell rate algorithm", a
** token bucket kept as one timestamp per key), in process or in Redis.
**
** The algorithm (both stores). A limit "count per period, burst B" has the
** emission interval T = period / count and the tolerance tau = (B - 1) * T.
** Each key keeps TAT, its "theoretical arrival time" (absent = now: a full
** bucket). A request at time now, with tat = max(TAT, now):
**     allowed   when tat - tau <= now; then TAT := tat + T
**     refused   otherwise (TAT unchanged: refused requests cost nothing)
** so a full bucket lets B requests through at once and then one every T.
** Results (GwrLimitResult):
**     limit          B (the bucket's capacity)
**     remaining      requests that would still pass right now:
**                    B - ceil((TAT' - now) / T), in [0, B-1] after an allowed
**                    request (TAT' the new TAT), 0 when refused
**     reset_s        ceil((TAT' - now) / 1 s): seconds until the bucket is
**                    full again (0 only if it is full)
**     retry_after_s  0 when allowed; when refused ceil((tat - tau - now) / 1 s)
**                    and at least 1: seconds until one request passes
** The caller turns these into RateLimit-Limit / RateLimit-Remaining /
** RateLimit-Reset on every response and Retry-After on a 429.
**
** Identity. A bucket is (limit name, key value): the same limit used by two
** endpoints shares its buckets; two limits never do. Key values longer than
** GWR_LIMIT_MAX_KEY (200) bytes are replaced by their SHA-256 (hex in Redis),
** so a client cannot make a bucket larger than ~200 bytes plus the name.
**
** Not here: evaluating `by`, choosing the store, applying on_error, writing
** headers. Those are the exchange's (gwr_exchange.c).
*/
#ifndef GWR_LIMIT_H
#define GWR_LIMIT_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

#define GWR_LIMIT_MAX_KEY 200

typedef struct GwrLimitResult {
  int      allowed;        /* 1: let the request through; 0: answer 429 */
  uint32_t limit;          /* the burst (bucket capacity) */
  uint32_t remaining;      /* requests left now */
  uint32_t reset_s;        /* seconds until the bucket is full again (RateLimit-Reset) */
  uint32_t retry_after_s;  /* when refused: seconds until one request is allowed (>= 1); 0 when allowed */
} GwrLimitResult;

/* ---- the local store ---------------------------------------------------------------
**
** One GwrLimiter per process, shared by every worker thread: exact across
** workers (one bucket per key, no split of the budget), O(1) per check. The
** table is split into up to 64 shards by a seeded SipHash of the identity,
** each with its own mutex, hash chains and LRU list.
**
** Memory is bounded: at most max_keys keys (each shard holds at most
** max_keys / shards, so the total never exceeds max_keys). A key whose bucket
** is full again (TAT <= now) is "idle": it carries no information (an absent
** key is a full bucket), so dropping it changes no decision. Idle keys expire
** lazily: every check looks at up to two least recently used keys of its
** shard and drops the idle ones; gwr_limiter_expire() sweeps them all (call
** it from a timer if traffic stops). When a shard is full and a new key
** arrives, the least recently used idle key among the last 8 is dropped; when
** none of them is idle the least recently used key is evicted anyway
** (counted in evicted_active): that key starts again with a full bucket.
** Refusing new keys instead would let whoever fills the table lock every new
** client out; size max_keys so that evicted_active stays 0.
**
** Thread-safe: every function but gwr_limiter_free may be called from any
** thread at any time. */
typedef struct GwrLimiter GwrLimiter;

/* max_keys 0: the default (100,000). NULL when out of memory. */
GwrLimiter *gwr_limiter_new(size_t max_keys);
void gwr_limiter_free(GwrLimiter *l);

/* One check (and, when allowed, one request counted). rate: count per
** period_ms (0 in either is taken as 1), bucket burst (0: count). limit and
** key are bytes (any bytes; not NUL-terminated). now_us: a monotonic clock in
** microseconds (CLOCK_MONOTONIC in gwd; injectable for tests), the same
** clock for every call. */
void gwr_limiter_check(GwrLimiter *l, const char *limit, size_t limit_len, const char *key, size_t key_len,
                       uint32_t count, uint32_t period_ms, uint32_t burst, uint64_t now_us, GwrLimitResult *r);

/* Drop every idle key (TAT <= now_us). Returns how many were dropped. */
size_t gwr_limiter_expire(GwrLimiter *l, uint64_t now_us);

typedef struct GwrLimiterStats {
  size_t   keys;            /* keys held now */
  size_t   max_keys;        /* the bound (sum of the shards' capacities) */
  uint64_t checks, allowed, refused;
  uint64_t expired;         /* idle keys dropped (lazily, on insert, or by expire) */
  uint64_t evicted_active;  /* non-idle keys evicted because a shard was full */
} GwrLimiterStats;
void gwr_limiter_stats(GwrLimiter *l, GwrLimiterStats *s);

/* ---- the Redis store ---------------------------------------------------------------
**
** One GwrRedis per worker thread, on that worker's libevent loop (hiredis
** async with its libevent adapter); nothing here is thread-safe and nothing
** takes a lock. A check is one EVALSHA of one Lua script that does the whole
** GCRA step atomically with Redis's own clock (redis.call('TIME')), so the
** gateways' clocks do not matter and any number of gateways on one Redis
** enforce one limit. On NOSCRIPT (a restarted or flushed Redis) the script is
** sent again with SCRIPT LOAD and the check retried once. Every key written
** has a TTL: PX to the time its bucket is full again.
**
** Keys: "gw:limit:" NAME ":" KEY, bytes as they are (no escaping); a KEY over
** GWR_LIMIT_MAX_KEY bytes is replaced by the lower-case hex of its SHA-256.
**
** Failure. Each check has a deadline (timeout_ms, 0: 50). The callback gets
** err != 0 (and res NULL) when the deadline passes, when the connection is
** down or drops, or when Redis answers with an error; the caller applies
** on_error. Bounded in time and memory:
**   - while disconnected a check fails at once (on the next loop turn);
**   - at most GWR_REDIS_MAX_INFLIGHT commands are outstanding on a
**     connection (answers owed to timed-out checks included); beyond that a
**     check fails at once;
**   - a connected Redis that answers nothing while a check times out (stopped,
**     network black hole) is dropped; so is a connection not established
**     within max(1 s, 4 x timeout);
**   - reconnects back off from 100 ms, doubling to 1 s, reset by the first
**     answer on a new connection: never more than one attempt per 100 ms.
** Connection changes are logged (gwr_log), one line each; Redis error replies
** at most once a second.
**
** Callback rules (as gwr_fetch.h): cb runs on the loop, exactly once per
** check that is not cancelled, never inside gwr_redis_check(). It may start
** checks and cancel others. After gwr_redis_cancel(q) q's cb never runs;
** after gwr_redis_free(r) no cb of r runs. A check's handle is invalid once
** its cb has returned or it was cancelled. gwr_redis_free() must not be called
** from inside a cb. */
#define GWR_REDIS_MAX_INFLIGHT 4096

typedef struct GwrRedis GwrRedis;
typedef struct GwrRedisReq GwrRedisReq;

/* url: redis://[[user]:password@]host[:port][/db] (port 6379, db 0). The
** host is resolved at each (re)connect and that blocks the loop: prefer an
** address. Returns NULL (message in err) only for a malformed url or no
** memory; an unreachable Redis is not an error here (checks fail, and it
** keeps reconnecting). Connecting starts at once. */
GwrRedis *gwr_redis_new(struct event_base *base, const char *url, uint32_t timeout_ms, char *err, size_t errlen);
/* Cancels pending checks (their callbacks are NOT called), closes the
** connection. */
void gwr_redis_free(GwrRedis *r);

/* err: 0 and res filled, or nonzero and res NULL. */
typedef void (*GwrRedisCb)(void *ud, int err, const GwrLimitResult *res);
/* Parameters as gwr_limiter_check. Never NULL (except when out of memory):
** a check that cannot be sent fails through cb. */
GwrRedisReq *gwr_redis_check(GwrRedis *r, const char *limit, size_t limit_len, const char *key, size_t key_len,
                             uint32_t count, uint32_t period_ms, uint32_t burst, GwrRedisCb cb, void *ud);
void gwr_redis_cancel(GwrRedisReq *q);

typedef struct GwrRedisStats {
  uint64_t checks;    /* gwr_redis_check calls */
  uint64_t errors;    /* callbacks with err != 0 (timeouts included) */
  uint64_t timeouts;  /* of those, the deadline passed */
} GwrRedisStats;
void gwr_redis_stats(const GwrRedis *r, GwrRedisStats *s);

/* 1 when a connection is up (established; it may still be stalled). */
int gwr_redis_connected(const GwrRedis *r);

/* The Redis key of (limit, key): "gw:limit:NAME:KEY" as described above, into
** buf (NUL-terminated). Returns its length, or the length needed when cap is
** too small (as snprintf). */
size_t gwr_redis_key(const char *limit, size_t limit_len, const char *key, size_t key_len, char *buf, size_t cap);

#endif
