/*
** gwr_cache.c — the response and call cache's store (sharded hash tables
** with LRU lists, byte-bounded, with expiry and coalesced misses), its keys
** and the Cache-Control directives it obeys. The contract is in
** gwr_cache.h; docs/caching.md is the user's view.
**
** Not here: whether an answer may be stored and how a hit is answered
** (gwr_exchange.c).
*/
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "gwr.h"
#include "gwr_cache.h"

struct GwrCacheEntry {
  GwrCacheEntry  *hnext;           /* hash chain */
  GwrCacheEntry  *lprev, *lnext;   /* the shard's LRU list, most recent first (stored entries) */
  unsigned char   key[32];
  uint8_t         kind;            /* GWR_CACHE_RESPONSE / _CALL */
  uint8_t         flight;          /* a miss in flight: no data, not in the LRU, not charged */
  int             refs;            /* atomic: the cache's (while linked) and each hit's */
  uint64_t        id;              /* a flight's id */
  GwrCacheWaiter *waiters;         /* a flight's queue */
  uint32_t        nwaiters;
  uint64_t        stored_ms, expires_ms;
  size_t          len, charge;
  unsigned char   data[];
};

typedef struct Shard {
  pthread_mutex_t mu;
  GwrCacheEntry **buckets;         /* power of two */
  size_t          nbuckets, nodes; /* nodes: entries and flights */
  GwrCacheEntry  *head, *tail;     /* LRU */
  size_t          bytes, cap;
  uint64_t        entries;
  uint64_t        hits[GWR_CACHE_KINDS], misses[GWR_CACHE_KINDS], stores[GWR_CACHE_KINDS];
  uint64_t        coalesced, evictions, expired, too_large;
  char            pad[64];         /* keep shards' locks on separate cache lines */
} Shard;

struct GwrCache {
  Shard    shards[GWR_CACHE_SHARDS];
  size_t   max_bytes, max_entry;
  uint64_t next_flight;            /* atomic */
};

/* ---- the store -------------------------------------------------------------------- */

GwrCache *gwr_cache_new(size_t max_bytes) {
  if (!max_bytes) return NULL;
  GwrCache *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->max_bytes = max_bytes;
  c->max_entry = max_bytes / 32;
  for (int i = 0; i < GWR_CACHE_SHARDS; i++) {
    Shard *s = &c->shards[i];
    pthread_mutex_init(&s->mu, NULL);
    s->cap = max_bytes / GWR_CACHE_SHARDS;
    s->nbuckets = 64;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    if (!s->buckets) { gwr_cache_free(c); return NULL; }
  }
  return c;
}

void gwr_cache_release(GwrCacheEntry *e) {
  if (e && __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0) free(e);
}

void gwr_cache_free(GwrCache *c) {
  if (!c) return;
  for (int i = 0; i < GWR_CACHE_SHARDS; i++) {
    Shard *s = &c->shards[i];
    for (size_t b = 0; s->buckets && b < s->nbuckets; b++)
      for (GwrCacheEntry *e = s->buckets[b], *next; e; e = next) {
        next = e->hnext;
        if (e->flight) free(e);
        else gwr_cache_release(e);
      }
    free(s->buckets);
    pthread_mutex_destroy(&s->mu);
  }
  free(c);
}

size_t gwr_cache_max_entry(const GwrCache *c) { return c ? c->max_entry : 0; }

int gwr_cache_fits(GwrCache *c, size_t len) {
  if (len <= c->max_entry && sizeof(GwrCacheEntry) + len + GWR_CACHE_OVERHEAD <= c->shards[0].cap) return 1;
  Shard *s = &c->shards[0];
  pthread_mutex_lock(&s->mu);
  s->too_large++;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

void gwr_cache_stats(GwrCache *c, GwrCacheStats *out) {
  memset(out, 0, sizeof *out);
  if (!c) return;
  out->capacity = c->max_bytes;
  for (int i = 0; i < GWR_CACHE_SHARDS; i++) {
    Shard *s = &c->shards[i];
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < GWR_CACHE_KINDS; k++) {
      out->hits[k] += s->hits[k];
      out->misses[k] += s->misses[k];
      out->stores[k] += s->stores[k];
    }
    out->coalesced += s->coalesced;
    out->evictions += s->evictions;
    out->expired += s->expired;
    out->too_large += s->too_large;
    out->entries += s->entries;
    out->bytes += s->bytes;
    pthread_mutex_unlock(&s->mu);
  }
}

GwrCacheEntry *gwr_cache_entry_new(size_t len) {
  GwrCacheEntry *e = malloc(sizeof *e + len + 1);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  e->refs = 1;
  e->len = len;
  e->data[len] = 0;
  return e;
}

unsigned char *gwr_cache_entry_data(GwrCacheEntry *e, size_t *len) {
  if (len) *len = e->len;
  return e->data;
}

uint64_t gwr_cache_entry_age(const GwrCacheEntry *e, uint64_t now_ms) {
  return now_ms > e->stored_ms ? now_ms - e->stored_ms : 0;
}

uint64_t gwr_cache_entry_left(const GwrCacheEntry *e, uint64_t now_ms) {
  return e->expires_ms > now_ms ? e->expires_ms - now_ms : 0;
}

/* The key is a SHA-256: its bytes are already uniform. */
static Shard *shard_of(GwrCache *c, const unsigned char key[32]) { return &c->shards[key[31] % GWR_CACHE_SHARDS]; }
static size_t bucket_of(const Shard *s, const unsigned char key[32]) {
  return (size_t)gw_get_u64(key) & (s->nbuckets - 1);
}

/* The link that points at key's node (or at the NULL ending its chain). */
static GwrCacheEntry **find(Shard *s, const unsigned char key[32]) {
  GwrCacheEntry **pp = &s->buckets[bucket_of(s, key)];
  while (*pp && memcmp((*pp)->key, key, 32)) pp = &(*pp)->hnext;
  return pp;
}

static void lru_unlink(Shard *s, GwrCacheEntry *e) {
  if (e->lprev) e->lprev->lnext = e->lnext; else s->head = e->lnext;
  if (e->lnext) e->lnext->lprev = e->lprev; else s->tail = e->lprev;
  e->lprev = e->lnext = NULL;
}

static void lru_front(Shard *s, GwrCacheEntry *e) {
  e->lprev = NULL;
  e->lnext = s->head;
  if (s->head) s->head->lprev = e; else s->tail = e;
  s->head = e;
}

/* Double the buckets when there are more nodes than buckets (allocation
** failure: keep the longer chains). */
static void grow(Shard *s) {
  if (s->nodes <= s->nbuckets) return;
  size_t n = s->nbuckets * 2;
  GwrCacheEntry **b = calloc(n, sizeof *b);
  if (!b) return;
  for (size_t i = 0; i < s->nbuckets; i++)
    for (GwrCacheEntry *e = s->buckets[i], *next; e; e = next) {
      next = e->hnext;
      size_t k = (size_t)gw_get_u64(e->key) & (n - 1);
      e->hnext = b[k];
      b[k] = e;
    }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = n;
}

/* Wake a flight's waiters and free it (it is unlinked). */
static void end_flight(GwrCacheEntry *f) {
  GwrCacheWaiter *w = f->waiters;
  f->waiters = NULL;
  while (w) {
    GwrCacheWaiter *next = w->next;
    w->next = NULL;
    w->wake(w);
    w = next;
  }
  free(f);
}

/* Unlink the node *pp points at: a flight ends, an entry leaves the LRU and
** the byte count, and the cache's reference goes. */
static void drop(Shard *s, GwrCacheEntry **pp) {
  GwrCacheEntry *e = *pp;
  *pp = e->hnext;
  e->hnext = NULL;
  s->nodes--;
  if (e->flight) { end_flight(e); return; }
  lru_unlink(s, e);
  s->bytes -= e->charge;
  s->entries--;
  gwr_cache_release(e);
}

int gwr_cache_get(GwrCache *c, int kind, const unsigned char key[32], uint64_t now_ms,
                  GwrCacheWaiter *w, GwrCacheEntry **hit, uint64_t *flight) {
  Shard *s = shard_of(c, key);
  int r = GWR_CACHE_MISS;
  pthread_mutex_lock(&s->mu);
  GwrCacheEntry **pp = find(s, key), *e = *pp;
  if (e && !e->flight && e->expires_ms <= now_ms) {
    drop(s, pp);
    s->expired++;
    e = NULL;
  }
  if (e && !e->flight) {
    if (s->head != e) { lru_unlink(s, e); lru_front(s, e); }
    __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
    *hit = e;
    s->hits[kind]++;
    r = GWR_CACHE_HIT;
  } else if (e) {                                   /* another request's miss is in flight */
    if (w && e->nwaiters < GWR_CACHE_MAX_WAITERS) {
      w->next = e->waiters;
      e->waiters = w;
      e->nwaiters++;
      s->coalesced++;
      r = GWR_CACHE_WAIT;
    } else {
      s->misses[kind]++;
    }
  } else {
    s->misses[kind]++;
    GwrCacheEntry *f = w ? calloc(1, sizeof *f) : NULL;
    if (f) {
      memcpy(f->key, key, 32);
      f->kind = (uint8_t)kind;
      f->flight = 1;
      f->id = __atomic_add_fetch(&c->next_flight, 1, __ATOMIC_RELAXED);
      f->hnext = *pp;
      *pp = f;
      s->nodes++;
      grow(s);
      *flight = f->id;
      r = GWR_CACHE_LEAD;
    }
  }
  pthread_mutex_unlock(&s->mu);
  return r;
}

int gwr_cache_put(GwrCache *c, int kind, const unsigned char key[32], GwrCacheEntry *e,
                  uint64_t ttl_ms, uint64_t now_ms) {
  Shard *s = shard_of(c, key);
  memcpy(e->key, key, 32);
  e->kind = (uint8_t)kind;
  e->stored_ms = now_ms;
  e->expires_ms = now_ms + ttl_ms;
  e->charge = sizeof *e + e->len + GWR_CACHE_OVERHEAD;
  int too_large = e->len > c->max_entry || e->charge > s->cap;     /* the latter: a tiny cache_size */
  pthread_mutex_lock(&s->mu);
  GwrCacheEntry **pp = find(s, key);
  if (*pp) drop(s, pp);                             /* the old entry, or the flight (its waiters wake) */
  if (too_large) {
    s->too_large++;
  } else {
    while (s->bytes + e->charge > s->cap && s->tail) {
      GwrCacheEntry *old = s->tail;
      if (old->expires_ms <= now_ms) s->expired++; else s->evictions++;
      drop(s, find(s, old->key));
    }
    pp = find(s, key);                              /* the chain may have changed */
    e->hnext = *pp;
    *pp = e;
    s->nodes++;
    lru_front(s, e);
    s->bytes += e->charge;
    s->entries++;
    s->stores[kind]++;
    grow(s);
  }
  pthread_mutex_unlock(&s->mu);
  if (too_large) { gwr_cache_release(e); return -1; }
  return 0;
}

void gwr_cache_end(GwrCache *c, const unsigned char key[32], uint64_t flight) {
  Shard *s = shard_of(c, key);
  pthread_mutex_lock(&s->mu);
  GwrCacheEntry **pp = find(s, key);
  if (*pp && (*pp)->flight && (*pp)->id == flight) drop(s, pp);
  pthread_mutex_unlock(&s->mu);
}

void gwr_cache_unwait(GwrCache *c, const unsigned char key[32], GwrCacheWaiter *w) {
  Shard *s = shard_of(c, key);
  pthread_mutex_lock(&s->mu);
  GwrCacheEntry *f = *find(s, key);
  if (f && f->flight)
    for (GwrCacheWaiter **pw = &f->waiters; *pw; pw = &(*pw)->next)
      if (*pw == w) { *pw = w->next; w->next = NULL; f->nwaiters--; break; }
  pthread_mutex_unlock(&s->mu);
}

/* ---- keys ---------------------------------------------------------------------------- */

/* The encoding is a run of length-prefixed parts (u32 little-endian, then
** the bytes), so no two different sequences of parts encode alike. */
static void kput(GwBuf *k, const void *p, size_t n) {
  gw_buf_add_u32(k, (uint32_t)n);
  gw_buf_add(k, p, n);
}

static void kput_u32(GwBuf *k, uint32_t v) { gw_buf_add_u32(k, 4); gw_buf_add_u32(k, v); }

/* A value as its compact JSON text (NULL: null). */
static void kput_value(GwBuf *k, const GwValue *v) {
  size_t at = k->n;
  gw_buf_add_u32(k, 0);
  gwv_json(v ? v : &gwv_null, k);
  gw_put_u32((unsigned char *)k->p + at, (uint32_t)(k->n - at - 4));
}

/* The program as loaded: its bytes (their SHA-256) and what env() gave. */
static void kput_program(GwBuf *k, const GwrProg *g) {
  kput(k, g->p->sha256, 32);
  kput_u32(k, g->p->n_envs);
  for (uint32_t i = 0; i < g->p->n_envs; i++) kput_value(k, g->envs[i]);
}

static int reads(const GwProgram *p, const GwEndpoint *E, int root, const char *name) {
  for (uint32_t i = 0; i < E->input_count; i++) {
    const GwInput *in = &p->inputs[E->input_first + i];
    if ((int)in->root != root) continue;
    if (in->name == GW_NONE || !strcmp(gw_const_str(p, in->name, NULL), name)) return 1;
  }
  return 0;
}

int gwr_cache_keyed_by_identity(const GwrProg *g, uint32_t e) {
  const GwProgram *p = g->p;
  const GwEndpoint *E = &p->endpoints[e];
  if (E->auth_none || !E->auth_count) return 1;
  int jwt = 0, apikey = 0;
  for (uint32_t i = 0; i < E->auth_count; i++) {
    if (p->auths[p->authrefs[E->auth_first + i].auth].type == 0) jwt = 1;
    else apikey = 1;
  }
  return (!jwt || reads(p, E, GW_ROOT_JWT, "sub")) && (!apikey || reads(p, E, GW_ROOT_CLIENT, "name"));
}

/* Whether v names somebody: not null (missing) and not "". */
static int names_someone(const GwValue *v) {
  return v && !GWV_IS_NULL(v) && !(v->type == GWV_STRING && v->n == 0);
}

int gwr_cache_request_key(const GwrProg *g, uint32_t e, GwrVm *vm, int method, const GwrPath *path, int auth_by,
                          unsigned char key[32]) {
  const GwProgram *p = g->p;
  const GwEndpoint *E = &p->endpoints[e];
  int auth = !E->auth_none && E->auth_count;
  if (auth) {
    /* the caller must be somebody: a token without `sub` (or an API key
    ** without a client name) would share one entry with every other such
    ** caller of the policy */
    if (auth_by < 0 || (uint32_t)auth_by >= E->auth_count) return -1;
    int jwt = p->auths[p->authrefs[E->auth_first + (uint32_t)auth_by].auth].type == 0;
    if (!names_someone(jwt ? gwv_get(vm->roots[GW_ROOT_JWT], "sub", 3) : gwv_get(vm->roots[GW_ROOT_CLIENT], "name", 4)))
      return -1;
  }
  GwBuf k = {0};
  kput(&k, "gw-cache/1 response", 19);
  kput_program(&k, g);
  kput_u32(&k, e);
  kput_u32(&k, (uint32_t)(method == GW_METHOD_HEAD ? GW_METHOD_GET : method));
  kput_u32(&k, (uint32_t)path->nseg);
  for (int i = 0; i < path->nseg; i++) kput(&k, path->seg[i].dec, path->seg[i].dec_len);
  kput_u32(&k, E->input_count);
  for (uint32_t i = 0; i < E->input_count; i++) {
    const GwInput *in = &p->inputs[E->input_first + i];
    kput_u32(&k, in->root);
    uint32_t nl = 0;
    const char *name = in->name == GW_NONE ? NULL : gw_const_str(p, in->name, &nl);
    if (name) kput(&k, name, nl); else kput_u32(&k, 0xFFFFFFFFu);   /* the whole root */
    if (in->root == GW_ROOT_PARAM) continue;        /* the path segments above hold it */
    const GwValue *r = vm->roots[in->root];
    kput_value(&k, name ? gwv_get(r, name, nl) : r);
  }
  kput_u32(&k, E->cacheby_count);
  for (uint32_t i = 0; i < E->cacheby_count; i++) {
    GwValue *v = gwr_vm_run(vm, p->blockrefs[E->cacheby_first + i].block, NULL);
    if (!v) { gw_buf_free(&k); return -1; }
    kput_value(&k, v);
  }
  if (auth) {                                        /* who admitted it: never two issuers' or policies' users alike */
    kput_u32(&k, (uint32_t)auth_by);
    kput_value(&k, gwv_get(vm->roots[GW_ROOT_JWT], "iss", 3));
    kput_value(&k, gwv_get(vm->roots[GW_ROOT_CLIENT], "name", 4));
  }
  gw_sha256(k.p, k.n, key);
  gw_buf_free(&k);
  return 0;
}

/* The gateway's own per-request headers and the forwarding ones: not part of
** a call's key (gw_header_class is the one list of them). */
static int per_request_header(const char *h) {
  const char *c = strchr(h, ':');
  return c && (gw_header_class(h, (size_t)(c - h)) & (GW_HDR_GATEWAY | GW_HDR_FORWARDING)) != 0;
}

void gwr_cache_call_key(const GwrProg *g, uint32_t call, const char *method, const char *url, size_t url_len,
                        const char *const *headers, const char *body, size_t body_len, unsigned char key[32]) {
  GwBuf k = {0};
  kput(&k, "gw-cache/1 call", 15);
  kput_program(&k, g);
  kput_u32(&k, call);
  kput(&k, method, strlen(method));
  kput(&k, url, url_len);
  for (int i = 0; headers && headers[i]; i++)
    if (!per_request_header(headers[i])) kput(&k, headers[i], strlen(headers[i]));
  kput_u32(&k, body ? 1 : 0);                       /* ends the headers; a body follows or not */
  if (body) kput(&k, body, body_len);
  gw_sha256(k.p, k.n, key);
  gw_buf_free(&k);
}

/* ---- Cache-Control -------------------------------------------------------------------- */

static int tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

unsigned gwr_cache_control(const char *v, size_t n, uint64_t *max_age) {
  unsigned r = 0;
  size_t i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t a = i;
    while (i < n && tchar(v[i])) i++;
    size_t nl = i - a;
    const char *val = NULL;
    size_t vl = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    if (i < n && v[i] == '=') {
      i++;
      while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
      if (i < n && v[i] == '"') {                   /* a quoted string: commas inside do not split */
        val = v + ++i;
        while (i < n && v[i] != '"') { if (v[i] == '\\' && i + 1 < n) i++; i++; }
        vl = (size_t)(v + i - val);
        if (i < n) i++;
      } else {
        val = v + i;
        while (i < n && tchar(v[i])) i++;
        vl = (size_t)(v + i - val);
      }
    }
    if (nl == 8 && !strncasecmp(v + a, "no-store", 8)) r |= GWR_CC_NO_STORE;
    else if (nl == 8 && !strncasecmp(v + a, "no-cache", 8)) r |= GWR_CC_NO_CACHE;
    else if (nl == 7 && !strncasecmp(v + a, "private", 7)) r |= GWR_CC_PRIVATE;
    else if (nl == 7 && !strncasecmp(v + a, "max-age", 7) && val && vl) {
      uint64_t s = 0;
      size_t k = 0;
      while (k < vl && val[k] >= '0' && val[k] <= '9') { if (s < 1000000000000ull) s = s * 10 + (uint64_t)(val[k] - '0'); k++; }
      if (k == vl) { r |= GWR_CC_MAX_AGE; if (max_age) *max_age = s; }
    }
    while (i < n && v[i] != ',') {                  /* anything else up to the next directive */
      if (v[i] == '"') { i++; while (i < n && v[i] != '"') { if (v[i] == '\\' && i + 1 < n) i++; i++; } }
      if (i < n) i++;
    }
  }
  return r;
}

/* ---- cached responses ------------------------------------------------------------------ */

/* Layout: status, flags, head_len, body_len (u32 each), the head, the body. */
GwrCacheEntry *gwr_cache_resp_new(int status, unsigned flags, const char *head, size_t head_len, size_t body_len,
                                  unsigned char **body) {
  GwrCacheEntry *e = gwr_cache_entry_new(GWR_CACHE_RESP_LEN(head_len, body_len));
  if (!e) return NULL;
  gw_put_u32(e->data, (uint32_t)status);
  gw_put_u32(e->data + 4, flags);
  gw_put_u32(e->data + 8, (uint32_t)head_len);
  gw_put_u32(e->data + 12, (uint32_t)body_len);
  if (head_len) memcpy(e->data + 16, head, head_len);
  *body = e->data + 16 + head_len;
  return e;
}

int gwr_cache_resp_read(GwrCacheEntry *e, GwrCachedResp *out) {
  if (e->len < 16) return -1;
  size_t hl = gw_get_u32(e->data + 8), bl = gw_get_u32(e->data + 12);
  if (16 + hl + bl != e->len) return -1;
  out->status = (int)gw_get_u32(e->data);
  out->flags = gw_get_u32(e->data + 4);
  out->head = (const char *)e->data + 16;
  out->head_len = hl;
  out->body = e->data + 16 + hl;
  out->body_len = bl;
  return 0;
}
