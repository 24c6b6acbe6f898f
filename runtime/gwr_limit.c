/*
** gwr_limit.c — rate limits: GCRA in a sharded in-process table, and the
** same algorithm as one Lua script in Redis (hiredis async on libevent).
** The contracts are in gwr_limit.h.
*/
#include "gwr_limit.h"
#include "gw_util.h"
#include "gwr.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/evp.h>

/* ---- shared helpers ---------------------------------------------------------------- */

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
static uint64_t sat_mul(uint64_t a, uint64_t b) { return b && a > UINT64_MAX / b ? UINT64_MAX : a * b; }
static uint64_t div_ceil(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }
static uint32_t clamp32(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void normalize(uint32_t *count, uint32_t *period_ms, uint32_t *burst) {
  if (!*count) *count = 1;
  if (!*period_ms) *period_ms = 1;
  if (!*burst) *burst = *count;
}

/* ---- SipHash-1-3 (seeded: hash flooding with chosen keys does not work) ---------- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do { \
    v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); \
    v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2; \
    v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0; \
    v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32); } while (0)

static uint64_t siphash13(uint64_t k0, uint64_t k1, const unsigned char *p, size_t n) {
  uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
  uint64_t b = (uint64_t)n << 56;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t m = gw_get_u64(p + i);
    v3 ^= m; SIPROUND; v0 ^= m;
  }
  for (size_t j = 0; i + j < n; j++) b |= (uint64_t)p[i + j] << (8 * j);
  v3 ^= b; SIPROUND; v0 ^= b;
  v2 ^= 0xff;
  SIPROUND; SIPROUND; SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the local store ----------------------------------------------------------------- */

typedef struct Ent {
  struct Ent *hnext;          /* hash chain */
  struct Ent *prev, *next;    /* LRU list: head most recent */
  uint64_t hash;
  uint64_t tat;               /* nanoseconds, the caller's clock */
  uint32_t idlen;
  unsigned char id[];         /* u32 name length, name, 0 raw | 1 hashed, key or its SHA-256 */
} Ent;

typedef struct Shard {
  _Alignas(64) pthread_mutex_t mu;
  Ent **tab;
  size_t nb, maxnb;           /* buckets (a power of two), and the most it grows to */
  size_t n, cap;
  Ent *head, *tail;
  uint64_t checks, allowed, refused, expired, evicted;
} Shard;

struct GwrLimiter {
  size_t nshards, max_keys;
  unsigned shift;             /* shard = hash >> shift (nshards > 1) */
  uint64_t k0, k1;
  Shard *sh;
};

#define NSHARDS_MAX 64
#define MIN_PER_SHARD 16
#define SCAN_IDLE 8

GwrLimiter *gwr_limiter_new(size_t max_keys) {
  if (!max_keys) max_keys = 100000;
  size_t ns = NSHARDS_MAX;
  while (ns > 1 && max_keys / ns < MIN_PER_SHARD) ns /= 2;
  GwrLimiter *l = calloc(1, sizeof *l);
  if (!l) return NULL;
  l->sh = aligned_alloc(64, ns * sizeof(Shard));
  if (!l->sh) { free(l); return NULL; }
  memset(l->sh, 0, ns * sizeof(Shard));
  l->nshards = ns;
  unsigned bits = 0;
  while (((size_t)1 << bits) < ns) bits++;
  l->shift = 64 - bits;
  unsigned char seed[16];
  if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
    uint64_t t = mono_us() ^ (uint64_t)(uintptr_t)l;
    memcpy(seed, &t, 8); memcpy(seed + 8, &t, 8);
  }
  l->k0 = gw_get_u64(seed); l->k1 = gw_get_u64(seed + 8);
  for (size_t i = 0; i < ns; i++) {
    Shard *s = &l->sh[i];
    s->cap = max_keys / ns;
    l->max_keys += s->cap;
    s->maxnb = 16;
    while (s->maxnb < s->cap) s->maxnb *= 2;
    s->nb = s->maxnb < 16 ? s->maxnb : 16;
    s->tab = calloc(s->nb, sizeof(Ent *));
    pthread_mutex_init(&s->mu, NULL);
    if (!s->tab) { l->nshards = i + 1; gwr_limiter_free(l); return NULL; }
  }
  return l;
}

void gwr_limiter_free(GwrLimiter *l) {
  if (!l) return;
  for (size_t i = 0; i < l->nshards; i++) {
    Shard *s = &l->sh[i];
    for (Ent *e = s->head, *nx; e; e = nx) { nx = e->next; free(e); }
    free(s->tab);
    pthread_mutex_destroy(&s->mu);
  }
  free(l->sh);
  free(l);
}

static void lru_unlink(Shard *s, Ent *e) {
  if (e->prev) e->prev->next = e->next; else s->head = e->next;
  if (e->next) e->next->prev = e->prev; else s->tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_front(Shard *s, Ent *e) {
  e->prev = NULL;
  e->next = s->head;
  if (s->head) s->head->prev = e; else s->tail = e;
  s->head = e;
}

static void ent_drop(Shard *s, Ent *e) {
  Ent **pp = &s->tab[e->hash & (s->nb - 1)];
  while (*pp != e) pp = &(*pp)->hnext;
  *pp = e->hnext;
  lru_unlink(s, e);
  s->n--;
  free(e);
}

static void grow(Shard *s) {
  size_t nb = s->nb * 2;
  Ent **tab = calloc(nb, sizeof(Ent *));
  if (!tab) return;                     /* keep the longer chains */
  for (size_t i = 0; i < s->nb; i++)
    for (Ent *e = s->tab[i], *nx; e; e = nx) {
      nx = e->hnext;
      e->hnext = tab[e->hash & (nb - 1)];
      tab[e->hash & (nb - 1)] = e;
    }
  free(s->tab);
  s->tab = tab;
  s->nb = nb;
}

/* Build the identity of (limit, key) into buf (or a malloc'd one when large). */
static unsigned char *make_id(const char *limit, size_t limit_len, const char *key, size_t key_len,
                              unsigned char *buf, size_t cap, size_t *len) {
  unsigned char digest[32];
  const void *k = key;
  size_t kn = key_len;
  int hashed = key_len > GWR_LIMIT_MAX_KEY;
  if (hashed) { gw_sha256(key, key_len, digest); k = digest; kn = sizeof digest; }
  size_t need = 4 + limit_len + 1 + kn;
  unsigned char *p = need <= cap ? buf : malloc(need);
  if (!p) return NULL;
  gw_put_u32(p, (uint32_t)limit_len);
  if (limit_len) memcpy(p + 4, limit, limit_len);
  p[4 + limit_len] = (unsigned char)hashed;
  if (kn) memcpy(p + 5 + limit_len, k, kn);
  *len = need;
  return p;
}

void gwr_limiter_check(GwrLimiter *l, const char *limit, size_t limit_len, const char *key, size_t key_len,
                       uint32_t count, uint32_t period_ms, uint32_t burst, uint64_t now_us, GwrLimitResult *r) {
  normalize(&count, &period_ms, &burst);
  uint64_t T = ((uint64_t)period_ms * 1000000u + count / 2) / count;
  if (!T) T = 1;
  uint64_t tau = sat_mul(burst - 1, T);
  uint64_t now = sat_mul(now_us, 1000);

  unsigned char sbuf[320];
  size_t idlen = 0;
  unsigned char *id = make_id(limit, limit_len, key, key_len, sbuf, sizeof sbuf, &idlen);
  memset(r, 0, sizeof *r);
  r->limit = burst;
  if (!id) { r->allowed = 1; r->remaining = burst - 1; return; }   /* no memory: fail open */
  uint64_t h = siphash13(l->k0, l->k1, id, idlen);
  Shard *s = &l->sh[l->nshards > 1 ? h >> l->shift : 0];

  pthread_mutex_lock(&s->mu);
  s->checks++;
  /* Lazy expiry: the two least recently used keys, if idle. */
  for (int i = 0; i < 2 && s->tail && s->tail->tat <= now; i++) { ent_drop(s, s->tail); s->expired++; }
  Ent *e = s->tab[h & (s->nb - 1)];
  while (e && !(e->hash == h && e->idlen == idlen && !memcmp(e->id, id, idlen))) e = e->hnext;
  uint64_t tat = e && e->tat > now ? e->tat : now;
  if (tat - now <= tau) {
    uint64_t nt = sat_add(tat, T), d = nt - now;
    uint64_t used = div_ceil(d, T);
    r->allowed = 1;
    r->remaining = used >= burst ? 0 : (uint32_t)(burst - used);
    r->reset_s = clamp32(div_ceil(d, 1000000000u));
    s->allowed++;
    if (e) {
      e->tat = nt;
      lru_unlink(s, e);
      lru_front(s, e);
    } else {
      if (s->n >= s->cap) {
        /* Make room: an idle key among the least recently used, else the LRU one. */
        Ent *v = s->tail;
        for (int i = 0; i < SCAN_IDLE && v && v->tat > now; i++) v = v->prev;
        if (v && v->tat <= now) s->expired++;
        else { v = s->tail; s->evicted++; }
        if (v) ent_drop(s, v);
      }
      if (s->n < s->cap && (e = malloc(sizeof *e + idlen))) {
        e->hash = h;
        e->tat = nt;
        e->idlen = (uint32_t)idlen;
        memcpy(e->id, id, idlen);
        if (s->n + 1 > s->nb && s->nb < s->maxnb) grow(s);
        e->hnext = s->tab[h & (s->nb - 1)];
        s->tab[h & (s->nb - 1)] = e;
        lru_front(s, e);
        s->n++;
      }
    }
  } else {
    r->allowed = 0;
    r->remaining = 0;
    r->reset_s = clamp32(div_ceil(tat - now, 1000000000u));
    uint64_t ra = div_ceil(tat - tau - now, 1000000000u);
    r->retry_after_s = ra ? clamp32(ra) : 1;
    s->refused++;
    if (e) { lru_unlink(s, e); lru_front(s, e); }   /* it exists: an absent key is a full bucket */
  }
  pthread_mutex_unlock(&s->mu);
  if (id != sbuf) free(id);
}

size_t gwr_limiter_expire(GwrLimiter *l, uint64_t now_us) {
  uint64_t now = sat_mul(now_us, 1000);
  size_t n = 0;
  for (size_t i = 0; i < l->nshards; i++) {
    Shard *s = &l->sh[i];
    pthread_mutex_lock(&s->mu);
    for (Ent *e = s->head, *nx; e; e = nx) {
      nx = e->next;
      if (e->tat <= now) { ent_drop(s, e); s->expired++; n++; }
    }
    pthread_mutex_unlock(&s->mu);
  }
  return n;
}

void gwr_limiter_stats(GwrLimiter *l, GwrLimiterStats *st) {
  memset(st, 0, sizeof *st);
  st->max_keys = l->max_keys;
  for (size_t i = 0; i < l->nshards; i++) {
    Shard *s = &l->sh[i];
    pthread_mutex_lock(&s->mu);
    st->keys += s->n;
    st->checks += s->checks;
    st->allowed += s->allowed;
    st->refused += s->refused;
    st->expired += s->expired;
    st->evicted_active += s->evicted;
    pthread_mutex_unlock(&s->mu);
  }
}

/* ---- the Redis store ------------------------------------------------------------------ */

/* KEYS[1] the bucket; ARGV count, period_ms, burst. Times in microseconds of
** Redis's clock. Returns {allowed, remaining, us until full, us until one
** request passes}. The stored TAT is rounded to a whole microsecond; the 1 us
** slack in "used" absorbs that rounding (and double arithmetic) when T is not
** a whole number of microseconds. */
static const char SCRIPT[] =
  "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
  "local count = tonumber(ARGV[1])\n"
  "local burst = tonumber(ARGV[3])\n"
  "local T = tonumber(ARGV[2]) * 1000 / count\n"
  "local tau = (burst - 1) * T\n"
  "local t = redis.call('TIME')\n"
  "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
  "local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0\n"
  "if tat < now then tat = now end\n"
  "if tat - tau > now then\n"
  "  return {0, 0, math.floor(tat - now + 0.5), math.floor(tat - tau - now + 0.5)}\n"
  "end\n"
  "local new = tat + T\n"
  "local d = new - now\n"
  "redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', string.format('%.0f', math.ceil(d / 1000)))\n"
  "local used = math.ceil((d - 1) / T)\n"
  "if used < 1 then used = 1 end\n"
  "local rem = burst - used\n"
  "if rem < 0 then rem = 0 end\n"
  "return {1, rem, math.floor(d + 0.5), 0}\n";

enum { ST_DOWN, ST_CONNECTING, ST_UP };
enum { HS_AUTH = 1, HS_SELECT, HS_LOAD };
enum { Q_NONE, Q_PENDING, Q_FAILED };

struct GwrRedisReq {
  GwrRedis *r;
  GwrRedisReq *prev, *next;
  int list;                 /* Q_* */
  int done;                 /* cb called or cancelled: only hiredis answers still owed */
  int inflight;             /* hiredis callbacks still to come */
  int retried;              /* NOSCRIPT handled once */
  uint64_t gen;             /* the connection it was sent on */
  uint64_t sent_us, deadline_us, seq;
  GwrRedisCb cb;
  void *ud;
  uint32_t count, period_ms, burst;
  size_t keylen;
  char key[];
};

struct GwrRedis {
  struct event_base *base;
  char host[256];
  int port, db;
  char *user, *pass;
  uint32_t timeout_ms;
  redisAsyncContext *ac;
  int state;
  int freeing;
  int load_pending;         /* a SCRIPT LOAD is on the wire on this connection */
  uint64_t gen;
  uint64_t attempt_us, last_reply_us, last_errlog_us;
  uint32_t backoff_ms;
  int down_logged;          /* "down" logged since the last answer */
  int up_log;               /* log "connected" at the next answer */
  char sha[41];
  size_t inflight;          /* EVALSHA answers owed on the connection */
  GwrRedisReq *ph, *pt;     /* pending, in deadline order */
  GwrRedisReq *fh, *ft;     /* failed at once, delivered on the next loop turn */
  uint64_t fseq;
  struct event *tmo, *failev, *retryev, *connev;
  GwrRedisStats st;
};

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000

static void conn_start(GwrRedis *r);

size_t gwr_redis_key(const char *limit, size_t limit_len, const char *key, size_t key_len, char *buf, size_t cap) {
  char hx[65];
  if (key_len > GWR_LIMIT_MAX_KEY) {
    unsigned char d[32];
    gw_sha256(key, key_len, d);
    gw_hex(hx, d, 32);
    key = hx;
    key_len = 64;
  }
  size_t n = 9 + limit_len + 1 + key_len;
  if (n < cap) {
    memcpy(buf, "gw:limit:", 9);
    if (limit_len) memcpy(buf + 9, limit, limit_len);
    buf[9 + limit_len] = ':';
    if (key_len) memcpy(buf + 10 + limit_len, key, key_len);
    buf[n] = 0;
  } else if (cap) {
    buf[0] = 0;
  }
  return n;
}

/* ---- request lists ---- */

static void q_unlink(GwrRedisReq *q) {
  GwrRedis *r = q->r;
  GwrRedisReq **h = q->list == Q_PENDING ? &r->ph : &r->fh, **t = q->list == Q_PENDING ? &r->pt : &r->ft;
  if (q->list == Q_NONE) return;
  if (q->prev) q->prev->next = q->next; else *h = q->next;
  if (q->next) q->next->prev = q->prev; else *t = q->prev;
  q->prev = q->next = NULL;
  q->list = Q_NONE;
}

static void q_append(GwrRedisReq *q, int list) {
  GwrRedis *r = q->r;
  GwrRedisReq **h = list == Q_PENDING ? &r->ph : &r->fh, **t = list == Q_PENDING ? &r->pt : &r->ft;
  q->prev = *t;
  q->next = NULL;
  if (*t) (*t)->next = q; else *h = q;
  *t = q;
  q->list = list;
}

static void arm_timeout(GwrRedis *r) {
  if (!r->ph) return;
  uint64_t now = mono_us(), d = r->ph->deadline_us > now ? r->ph->deadline_us - now : 0;
  struct timeval tv = { (time_t)(d / 1000000), (suseconds_t)(d % 1000000) };
  evtimer_add(r->tmo, &tv);
}

/* Deliver q's outcome (err: 0, 1 error, 2 timeout) and release it unless
** hiredis still owes it an answer. */
static void q_finish(GwrRedisReq *q, int err, const GwrLimitResult *res) {
  GwrRedis *r = q->r;
  q_unlink(q);
  q->done = 1;
  if (err) r->st.errors++;
  if (err == 2) r->st.timeouts++;
  q->cb(q->ud, err != 0, err ? NULL : res);
  if (!q->inflight) free(q);
}

static void q_fail_soon(GwrRedisReq *q) {
  GwrRedis *r = q->r;
  q->seq = ++r->fseq;
  q_append(q, Q_FAILED);
  struct timeval tv = { 0, 0 };
  evtimer_add(r->failev, &tv);
}

static void on_failev(evutil_socket_t fd, short ev, void *arg) {
  GwrRedis *r = arg;
  uint64_t last = r->fseq;    /* checks failed by these callbacks wait for the next turn */
  while (r->fh && r->fh->seq <= last) q_finish(r->fh, 1, NULL);
}

/* ---- the connection ---- */

static void log_err(GwrRedis *r, const char *what, const char *msg) {
  uint64_t now = mono_us();
  if (r->last_errlog_us && now - r->last_errlog_us < 1000000) return;
  r->last_errlog_us = now;
  gwr_log("warn", "redis %s:%d: %s: %s", r->host, r->port, what, msg);
}

static void schedule_retry(GwrRedis *r) {
  if (r->freeing) return;
  uint64_t since = mono_us() - r->attempt_us;
  uint64_t d = (uint64_t)r->backoff_ms * 1000;
  if (since < BACKOFF_MIN_MS * 1000 && d < BACKOFF_MIN_MS * 1000 - since) d = BACKOFF_MIN_MS * 1000 - since;
  r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
  struct timeval tv = { (time_t)(d / 1000000), (suseconds_t)(d % 1000000) };
  evtimer_add(r->retryev, &tv);
}

/* The connection is gone (or going): forget it and plan the next attempt. */
static void conn_lost(GwrRedis *r, const char *why) {
  if (!r->down_logged) {
    gwr_log("warn", "redis %s:%d: %s; checks fail (on_error) until it is back", r->host, r->port, why);
    r->down_logged = 1;
  }
  r->up_log = 1;
  r->ac = NULL;
  r->state = ST_DOWN;
  r->load_pending = 0;
  evtimer_del(r->connev);
  schedule_retry(r);
}

/* Drop the connection on our initiative: pending checks fail now. */
static void conn_drop(GwrRedis *r, const char *why) {
  redisAsyncContext *ac = r->ac;
  if (!ac) return;
  conn_lost(r, why);
  ac->data = NULL;
  redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status) {
  GwrRedis *r = ac->data;
  if (!r || r->ac != ac) return;
  if (status != REDIS_OK) { conn_lost(r, ac->c.errstr[0] ? ac->c.errstr : "connect failed"); return; }
  r->state = ST_UP;
  evtimer_del(r->connev);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  GwrRedis *r = ac->data;
  if (!r || r->ac != ac) return;
  conn_lost(r, status == REDIS_OK ? "connection closed" : ac->c.errstr[0] ? ac->c.errstr : "connection lost");
}

static void got_answer(GwrRedis *r) {
  r->last_reply_us = mono_us();
  if (r->up_log) gwr_log("info", "redis %s:%d: connected", r->host, r->port);
  r->up_log = 0;
  r->down_logged = 0;
  r->backoff_ms = BACKOFF_MIN_MS;
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *priv) {
  GwrRedis *r = ac->data;
  redisReply *rep = reply;
  int kind = (int)(uintptr_t)priv;
  if (!r || r->ac != ac || !rep) return;
  got_answer(r);
  if (kind == HS_LOAD) r->load_pending = 0;
  if (rep->type == REDIS_REPLY_ERROR) {
    const char *what = kind == HS_AUTH ? "AUTH" : kind == HS_SELECT ? "SELECT" : "SCRIPT LOAD";
    r->last_errlog_us = 0;
    log_err(r, what, rep->str);
    if (kind != HS_LOAD) conn_drop(r, "refused the connection's setup");
  } else if (kind == HS_LOAD && (rep->type != REDIS_REPLY_STRING || rep->len != 40 || memcmp(rep->str, r->sha, 40))) {
    log_err(r, "SCRIPT LOAD", "unexpected digest");
  }
}

static void send_load(GwrRedis *r) {
  if (r->load_pending || !r->ac) return;
  const char *argv[3] = { "SCRIPT", "LOAD", SCRIPT };
  size_t lens[3] = { 6, 4, sizeof SCRIPT - 1 };
  if (redisAsyncCommandArgv(r->ac, on_handshake, (void *)(uintptr_t)HS_LOAD, 3, argv, lens) == REDIS_OK)
    r->load_pending = 1;
}

static void on_retryev(evutil_socket_t fd, short ev, void *arg) { conn_start(arg); }

static void on_connev(evutil_socket_t fd, short ev, void *arg) {
  GwrRedis *r = arg;
  if (r->state == ST_CONNECTING) conn_drop(r, "connect timed out");
}

static void conn_start(GwrRedis *r) {
  r->attempt_us = mono_us();
  redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
  if (!ac || ac->err) {
    char why[160];
    snprintf(why, sizeof why, "%s", ac && ac->c.errstr[0] ? ac->c.errstr : "cannot connect");
    if (ac) redisAsyncFree(ac);
    conn_lost(r, why);
    return;
  }
  ac->data = r;
  if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
    redisAsyncFree(ac);
    conn_lost(r, "cannot attach to the loop");
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  r->ac = ac;
  r->state = ST_CONNECTING;
  r->gen++;
  r->load_pending = 0;
  if (r->pass) {
    if (r->user) redisAsyncCommand(ac, on_handshake, (void *)(uintptr_t)HS_AUTH, "AUTH %s %s", r->user, r->pass);
    else redisAsyncCommand(ac, on_handshake, (void *)(uintptr_t)HS_AUTH, "AUTH %s", r->pass);
  }
  if (r->db) redisAsyncCommand(ac, on_handshake, (void *)(uintptr_t)HS_SELECT, "SELECT %d", r->db);
  send_load(r);
  uint64_t ct = (uint64_t)r->timeout_ms * 4 < 1000 ? 1000 : (uint64_t)r->timeout_ms * 4;
  struct timeval tv = { (time_t)(ct / 1000), (suseconds_t)(ct % 1000 * 1000) };
  evtimer_add(r->connev, &tv);
}

/* ---- checks ---- */

static int q_send(GwrRedisReq *q);

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
  GwrRedisReq *q = priv;
  GwrRedis *r = q->r;
  redisReply *rep = reply;
  q->inflight--;
  r->inflight--;
  if (rep && ac->data == r) got_answer(r);
  if (q->done) { if (!q->inflight) free(q); return; }
  if (!rep) { q_finish(q, 1, NULL); return; }
  if (rep->type == REDIS_REPLY_ERROR) {
    if (!q->retried && !strncmp(rep->str, "NOSCRIPT", 8) && r->ac == ac) {
      q->retried = 1;
      send_load(r);
      q_unlink(q);
      if (q_send(q) == 0) return;
      q_finish(q, 1, NULL);
      return;
    }
    log_err(r, "rate limit script", rep->str);
    q_finish(q, 1, NULL);
    return;
  }
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4) { log_err(r, "rate limit script", "unexpected answer"); q_finish(q, 1, NULL); return; }
  long long v[4];
  for (int i = 0; i < 4; i++) {
    if (rep->element[i]->type != REDIS_REPLY_INTEGER || rep->element[i]->integer < 0) {
      log_err(r, "rate limit script", "unexpected answer");
      q_finish(q, 1, NULL);
      return;
    }
    v[i] = rep->element[i]->integer;
  }
  GwrLimitResult res = {0};
  res.allowed = v[0] != 0;
  res.limit = q->burst;
  res.remaining = clamp32((uint64_t)v[1]);
  res.reset_s = clamp32(div_ceil((uint64_t)v[2], 1000000));
  if (!res.allowed) {
    uint64_t ra = div_ceil((uint64_t)v[3], 1000000);
    res.retry_after_s = ra ? clamp32(ra) : 1;
  }
  q_finish(q, 0, &res);
}

/* Send q's EVALSHA on the current connection and put it on the pending list
** (keeping its first deadline on a retry). 0, or -1 when it cannot be sent. */
static int q_send(GwrRedisReq *q) {
  GwrRedis *r = q->r;
  if (!r->ac || r->inflight >= GWR_REDIS_MAX_INFLIGHT) return -1;
  char c[12], p[12], b[12];
  int cn = snprintf(c, sizeof c, "%u", (unsigned)q->count);
  int pn = snprintf(p, sizeof p, "%u", (unsigned)q->period_ms);
  int bn = snprintf(b, sizeof b, "%u", (unsigned)q->burst);
  const char *argv[7] = { "EVALSHA", r->sha, "1", q->key, c, p, b };
  size_t lens[7] = { 7, 40, 1, q->keylen, (size_t)cn, (size_t)pn, (size_t)bn };
  if (redisAsyncCommandArgv(r->ac, on_reply, q, 7, argv, lens) != REDIS_OK) return -1;
  q->inflight++;
  r->inflight++;
  q->gen = r->gen;
  q->sent_us = mono_us();
  if (!q->deadline_us) q->deadline_us = q->sent_us + (uint64_t)r->timeout_ms * 1000;
  /* Deadlines only grow along the list, except for a retry: insert it in order. */
  GwrRedisReq *at = r->pt;
  while (at && at->deadline_us > q->deadline_us) at = at->prev;
  if (at == r->pt) {
    q_append(q, Q_PENDING);
  } else {
    q->prev = at;
    q->next = at ? at->next : r->ph;
    if (q->next) q->next->prev = q;
    if (at) at->next = q; else r->ph = q;
    q->list = Q_PENDING;
  }
  if (r->ph == q || !evtimer_pending(r->tmo, NULL)) arm_timeout(r);
  return 0;
}

static void on_timeout(evutil_socket_t fd, short ev, void *arg) {
  GwrRedis *r = arg;
  uint64_t now = mono_us();
  int stalled = 0;
  while (r->ph && r->ph->deadline_us <= now + 1000) {
    GwrRedisReq *q = r->ph;
    if (q->gen == r->gen && r->state == ST_UP && r->last_reply_us < q->sent_us) stalled = 1;
    q_finish(q, 2, NULL);
  }
  if (stalled && r->ac) {
    char why[96];
    snprintf(why, sizeof why, "no answer within %u ms, reconnecting", (unsigned)r->timeout_ms);
    conn_drop(r, why);
  }
  arm_timeout(r);
}

GwrRedisReq *gwr_redis_check(GwrRedis *r, const char *limit, size_t limit_len, const char *key, size_t key_len,
                             uint32_t count, uint32_t period_ms, uint32_t burst, GwrRedisCb cb, void *ud) {
  normalize(&count, &period_ms, &burst);
  size_t kl = gwr_redis_key(limit, limit_len, key, key_len, NULL, 0);
  GwrRedisReq *q = calloc(1, sizeof *q + kl + 1);
  if (!q) return NULL;
  gwr_redis_key(limit, limit_len, key, key_len, q->key, kl + 1);
  q->keylen = kl;
  q->r = r;
  q->cb = cb;
  q->ud = ud;
  q->count = count;
  q->period_ms = period_ms;
  q->burst = burst;
  r->st.checks++;
  if (q_send(q)) q_fail_soon(q);
  return q;
}

void gwr_redis_cancel(GwrRedisReq *q) {
  if (!q) return;
  q_unlink(q);
  q->done = 1;
  if (!q->inflight) free(q);
}

void gwr_redis_stats(const GwrRedis *r, GwrRedisStats *s) { *s = r->st; }

int gwr_redis_connected(const GwrRedis *r) { return r->ac && r->state == ST_UP; }

/* redis://[[user]:password@]host[:port][/db] */
static int parse_url(GwrRedis *r, const char *url, char *err, size_t errlen) {
  if (strncmp(url, "redis://", 8)) { snprintf(err, errlen, "redis url must start with redis:// (got \"%.60s\")", url); return -1; }
  const char *s = url + 8, *end = s + strcspn(s, "/");
  const char *at = NULL;
  for (const char *p = s; p < end; p++) if (*p == '@') at = p;
  if (at) {
    const char *colon = memchr(s, ':', (size_t)(at - s));
    if (!colon) { snprintf(err, errlen, "redis url: credentials must be user:password or :password"); return -1; }
    if (colon > s) r->user = strndup(s, (size_t)(colon - s));
    r->pass = strndup(colon + 1, (size_t)(at - colon - 1));
    if (!r->pass || (colon > s && !r->user)) { snprintf(err, errlen, "out of memory"); return -1; }
    s = at + 1;
  }
  const char *hs = s, *he;
  if (*s == '[') {
    hs = s + 1;
    he = memchr(hs, ']', (size_t)(end - hs));
    if (!he) { snprintf(err, errlen, "redis url: unclosed [ in the host"); return -1; }
    s = he + 1;
  } else {
    he = s;
    while (he < end && *he != ':') he++;
    s = he;
  }
  if (he == hs || (size_t)(he - hs) >= sizeof r->host) { snprintf(err, errlen, "redis url: bad host"); return -1; }
  memcpy(r->host, hs, (size_t)(he - hs));
  r->host[he - hs] = 0;
  r->port = 6379;
  if (s < end && *s == ':') {
    long v = 0;
    const char *p = s + 1;
    if (p == end) { snprintf(err, errlen, "redis url: bad port"); return -1; }
    for (; p < end; p++) {
      if (*p < '0' || *p > '9' || (v = v * 10 + (*p - '0')) > 65535) { snprintf(err, errlen, "redis url: bad port"); return -1; }
    }
    if (!v) { snprintf(err, errlen, "redis url: bad port"); return -1; }
    r->port = (int)v;
  } else if (s != end) {
    snprintf(err, errlen, "redis url: bad host"); return -1;
  }
  if (*end == '/' && end[1]) {
    long v = 0;
    for (const char *p = end + 1; *p; p++)
      if (*p < '0' || *p > '9' || (v = v * 10 + (*p - '0')) > 1000000) { snprintf(err, errlen, "redis url: bad database number"); return -1; }
    r->db = (int)v;
  }
  return 0;
}

GwrRedis *gwr_redis_new(struct event_base *base, const char *url, uint32_t timeout_ms, char *err, size_t errlen) {
  GwrRedis *r = calloc(1, sizeof *r);
  if (!r) { snprintf(err, errlen, "out of memory"); return NULL; }
  r->base = base;
  r->timeout_ms = timeout_ms ? timeout_ms : 50;
  r->backoff_ms = BACKOFF_MIN_MS;
  r->up_log = 1;            /* the first connection is logged */
  if (parse_url(r, url, err, errlen)) { free(r->user); free(r->pass); free(r); return NULL; }
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned dn = 0;
  if (!EVP_Digest(SCRIPT, sizeof SCRIPT - 1, d, &dn, EVP_sha1(), NULL) || dn != 20) {
    snprintf(err, errlen, "SHA-1 unavailable");
    free(r->user); free(r->pass); free(r);
    return NULL;
  }
  gw_hex(r->sha, d, 20);
  r->tmo = evtimer_new(base, on_timeout, r);
  r->failev = evtimer_new(base, on_failev, r);
  r->retryev = evtimer_new(base, on_retryev, r);
  r->connev = evtimer_new(base, on_connev, r);
  if (!r->tmo || !r->failev || !r->retryev || !r->connev) {
    snprintf(err, errlen, "out of memory");
    gwr_redis_free(r);
    return NULL;
  }
  conn_start(r);
  return r;
}

void gwr_redis_free(GwrRedis *r) {
  if (!r) return;
  r->freeing = 1;
  while (r->ph) gwr_redis_cancel(r->ph);
  while (r->fh) gwr_redis_cancel(r->fh);
  if (r->ac) {
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);       /* owed answers come back NULL: their requests are freed */
  }
  if (r->tmo) event_free(r->tmo);
  if (r->failev) event_free(r->failev);
  if (r->retryev) event_free(r->retryev);
  if (r->connev) event_free(r->connev);
  free(r->user);
  free(r->pass);
  free(r);
}
