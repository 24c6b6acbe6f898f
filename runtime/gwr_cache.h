/*
** gwr_cache.h — the response cache (endpoint `cache DUR [by …]`) and the
** call cache (call option `cache D`): the store, its keys, and the
** Cache-Control directives that decide what may be kept.
**
** The store. One GwrCache per process, shared by every worker thread: 16
** shards, each a hash table with its own LRU list and byte count under its
** own mutex (a shard holds at most size / 16 bytes, so the whole never
** holds more than size). An entry is a block of bytes the cache owns — an
** encoded response or a call value's JSON text, never anything of a
** request's arena — under a 32-byte key (a SHA-256), with the monotonic
** times it was stored and expires. Each entry is charged its bytes, its
** record and GWR_CACHE_OVERHEAD (the allocator's header, the hash slot);
** an entry larger than gwr_cache_max_entry() (size / 32) is never stored.
** Expired entries are dropped when met; the least recently used entries of
** a shard make room for new ones.
**
** References. A hit is a counted reference to the entry: it stays valid
** (and its bytes unchanged) until gwr_cache_release(), even if the entry is
** replaced, expires or is evicted meanwhile — a worker can hand the bytes
** to the connection without copying them. Any thread may release.
**
** Coalescing. The first miss of a key that asks for it leads a "flight":
** until the leader stores its answer (gwr_cache_put) or gives up
** (gwr_cache_end), later lookups of the key that pass a waiter are queued
** (at most GWR_CACHE_MAX_WAITERS; beyond, they miss and go their own way).
** When the flight ends each waiter's wake() is called — on the leader's
** thread, under the shard's lock, so wake() must only signal its own thread
** (event_active) and never call into the cache — and the waiter looks the
** key up again (without a waiter: a hit, or a miss it serves itself).
**
** Keys. gwr_cache_request_key and gwr_cache_call_key hash a canonical,
** length-prefixed encoding of everything an answer may depend on (the
** rules are at each function, and docs/caching.md explains them).
**
** Not here: deciding whether an answer may be stored, serving it, the
** exchange's part of coalescing (gwr_exchange.c).
*/
#ifndef GWR_CACHE_H
#define GWR_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include "gw_util.h"

#define GWR_CACHE_SHARDS      16
#define GWR_CACHE_MAX_WAITERS 256
#define GWR_CACHE_OVERHEAD    32      /* bytes charged per entry on top of its record and data
                                         (the allocator's header, the hash slot) */
#define GWR_CACHE_DEFAULT_SIZE (64u << 20)

typedef struct GwrCache GwrCache;
typedef struct GwrCacheEntry GwrCacheEntry;

/* What an entry holds (stats are kept per kind). */
enum { GWR_CACHE_RESPONSE, GWR_CACHE_CALL, GWR_CACHE_KINDS };

/* Counters since the cache was made, and its state now (gwr_cache_stats). */
typedef struct GwrCacheStats {
  uint64_t hits[GWR_CACHE_KINDS];       /* lookups answered from the cache */
  uint64_t misses[GWR_CACHE_KINDS];     /* lookups that went to the backends (leaders included) */
  uint64_t stores[GWR_CACHE_KINDS];     /* entries stored */
  uint64_t coalesced;                   /* lookups that waited for another request's miss */
  uint64_t evictions;                   /* live entries dropped to make room */
  uint64_t expired;                     /* entries dropped because their time was up */
  uint64_t too_large;                   /* answers not stored: larger than max_entry */
  uint64_t entries;                     /* entries held now */
  uint64_t bytes;                       /* bytes charged now (data + overhead) */
  uint64_t capacity;                    /* the bound on bytes */
} GwrCacheStats;

/* A cache of at most max_bytes (owned; gwr_cache_free). NULL when
** max_bytes is 0 (caching off) or out of memory. */
GwrCache *gwr_cache_new(size_t max_bytes);
/* Free c and every entry nobody holds; held entries are freed by their
** last gwr_cache_release. No flight may be open (no exchange alive). */
void      gwr_cache_free(GwrCache *c);
/* The largest entry c stores (data bytes). */
size_t    gwr_cache_max_entry(const GwrCache *c);
/* Whether an entry of len data bytes may be stored; if not it counts as
** too_large (so a caller need not build an entry only to have it refused). */
int       gwr_cache_fits(GwrCache *c, size_t len);
/* Sum the shards' counters into *out (takes each shard's lock in turn). */
void      gwr_cache_stats(GwrCache *c, GwrCacheStats *out);

/* ---- entries ---------------------------------------------------------------------- */

/* A new entry of len data bytes for the caller to fill, then to hand to
** gwr_cache_put (or to gwr_cache_release). NULL when out of memory. */
GwrCacheEntry *gwr_cache_entry_new(size_t len);
/* The entry's data (writable until it is put), its length in *len. */
unsigned char *gwr_cache_entry_data(GwrCacheEntry *e, size_t *len);
/* Milliseconds since the entry was stored, and left until it expires (0
** once expired), at monotonic time now_ms. */
uint64_t gwr_cache_entry_age(const GwrCacheEntry *e, uint64_t now_ms);
uint64_t gwr_cache_entry_left(const GwrCacheEntry *e, uint64_t now_ms);
/* Drop a reference (a hit, or an entry never put). Any thread. */
void     gwr_cache_release(GwrCacheEntry *e);

/* ---- lookups and stores ------------------------------------------------------------ */

/* A request waiting for another's miss. Owned by the caller, who sets wake
** and ud; it stays queued until the flight ends (wake is called, once) or
** gwr_cache_unwait takes it out. */
typedef struct GwrCacheWaiter {
  struct GwrCacheWaiter *next;
  void (*wake)(struct GwrCacheWaiter *w);   /* the leader's thread, under the cache's lock */
  void *ud;
} GwrCacheWaiter;

enum { GWR_CACHE_MISS, GWR_CACHE_HIT, GWR_CACHE_LEAD, GWR_CACHE_WAIT };

/* Look key up at monotonic time now_ms. Returns
**   HIT   *hit is a reference to a fresh entry (release it);
**   LEAD  (only with w) no entry and no flight: the caller leads one, whose
**         id is *flight; it must end it with gwr_cache_put or gwr_cache_end;
**   WAIT  (only with w) another request leads a flight: w is queued;
**   MISS  no entry (without w, or the flight has all the waiters it takes).
** kind is for the stats. */
int  gwr_cache_get(GwrCache *c, int kind, const unsigned char key[32], uint64_t now_ms,
                   GwrCacheWaiter *w, GwrCacheEntry **hit, uint64_t *flight);
/* Store e (taken: the caller's reference goes to the cache) under key for
** ttl_ms from now_ms, replacing any entry of the key, evicting the least
** recently used entries of its shard as needed. The key's flight ends (its
** waiters are woken), whoever leads it: they find the entry. Returns 0, or
** -1 when e is too large (e is released; the flight ends all the same). */
int  gwr_cache_put(GwrCache *c, int kind, const unsigned char key[32], GwrCacheEntry *e,
                   uint64_t ttl_ms, uint64_t now_ms);
/* End flight `flight` of key without an entry (the leader's answer was not
** stored): its waiters are woken. Nothing if that flight has ended. */
void gwr_cache_end(GwrCache *c, const unsigned char key[32], uint64_t flight);
/* Take w out of key's flight if it is still queued. After this returns,
** w->wake is not called any more. */
void gwr_cache_unwait(GwrCache *c, const unsigned char key[32], GwrCacheWaiter *w);

/* ---- keys -------------------------------------------------------------------------- */

struct GwrProg;
struct GwrVm;
struct GwrPath;

/* The key of a request to endpoint e of program g, into key[32]. It hashes:
** a tag; the program (its SHA-256 and the value of every env() reference,
** so a reload that changes anything starts with fresh keys); the endpoint;
** the request's method (HEAD as GET); the decoded path segments; every
** request input the endpoint reads (its `inputs`, from the data flow), as
** the JSON text of the value the endpoint sees (a name it reads and the
** request lacks is null, as the endpoint sees it); the `by` values; and,
** for an endpoint with auth, the policy that admitted the request
** (auth_by: its position in the endpoint's `auth` list), the token's `iss`
** and client.name. vm holds the request's roots and parameters and runs
** the `by` blocks. Returns 0, or -1 when the request is not to be cached:
** a `by` expression fails, or the endpoint has auth and the caller has no
** identity (admitted by a JWT without a `sub`, null or "", or by an API
** key without a client name). */
int  gwr_cache_request_key(const struct GwrProg *g, uint32_t e, struct GwrVm *vm, int method,
                           const struct GwrPath *path, int auth_by, unsigned char key[32]);
/* Whether endpoint e's key holds who is calling, as an endpoint with auth
** needs before it is cached: jwt.sub (or the whole jwt) when a JWT policy
** may admit the request, client.name (or the whole client) when an API-key
** policy may. 1 also for an endpoint without auth. */
int  gwr_cache_keyed_by_identity(const struct GwrProg *g, uint32_t e);
/* The key of backend call `call` (its index in the program) as sent: a
** tag, the program, the call (its read paths decide what its value
** keeps), the method, the URL after the backend's base (so round robin
** over a backend's urls shares entries), every header sent except the
** gateway's per-request ones (X-Request-Id, traceparent, X-Forwarded-For,
** X-Forwarded-Proto), and the body. */
void gwr_cache_call_key(const struct GwrProg *g, uint32_t call, const char *method, const char *url,
                        size_t url_len, const char *const *headers, const char *body, size_t body_len,
                        unsigned char key[32]);

/* ---- Cache-Control ------------------------------------------------------------------ */

enum { GWR_CC_NO_STORE = 1, GWR_CC_NO_CACHE = 2, GWR_CC_PRIVATE = 4, GWR_CC_MAX_AGE = 8 };

/* The directives of one Cache-Control field value that matter to a shared
** cache (names case-insensitive; a qualified `private="…"` or
** `no-cache="…"` counts as unqualified: the cache keeps whole answers).
** max-age's seconds go to *max_age when it is present and valid. */
unsigned gwr_cache_control(const char *v, size_t n, uint64_t *max_age);

/* ---- cached responses -------------------------------------------------------------- */

/* A response as the response cache keeps it: the status, flags of the
** exchange (GWR_CRESP_*), the endpoint's own header lines ("Name: value\r\n"
** each), the body. Views into the entry. */
typedef struct GwrCachedResp {
  int status;
  unsigned flags;
  const char *head; size_t head_len;
  const unsigned char *body; size_t body_len;
} GwrCachedResp;

enum { GWR_CRESP_BODY = 1, GWR_CRESP_OWN_CC = 2 };

/* A new entry for a response, of GWR_CACHE_RESP_LEN(head_len, body_len)
** data bytes; the caller copies body_len bytes of body to *body. NULL when
** out of memory. */
#define GWR_CACHE_RESP_LEN(head_len, body_len) (16 + (size_t)(head_len) + (size_t)(body_len))
GwrCacheEntry *gwr_cache_resp_new(int status, unsigned flags, const char *head, size_t head_len,
                                  size_t body_len, unsigned char **body);
/* Read a response entry. 0, or -1 if e is not one. */
int gwr_cache_resp_read(GwrCacheEntry *e, GwrCachedResp *out);

#endif
