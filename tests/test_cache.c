/*
** test_cache.c — unit tests of the response cache's store and keys
** (gwr_cache.c).
**
**   build/test_cache
**
** With a fixed clock: hits and misses, expiry, replacement, the byte bound
** and LRU order under many keys, entries held across eviction, too-large
** entries, flights (lead, wait, wake on put and on end, a stale end, unwait,
** the waiter bound), the Cache-Control parser, the response codec, call
** keys (the gateway's per-request headers left out, everything else in),
** request keys of a compiled program (query order and unread inputs do not
** matter, read ones do), and 8 threads on a small cache (the bound holds,
** nothing leaks: run it under ASan). Ends with "N passed, N failed".
*/
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gwr.h"
#include "gwr_cache.h"

#include "check.h"

static void key_of(unsigned char key[32], const char *s) { gw_sha256(s, strlen(s), key); }

/* Store text under name for ttl. */
static int put_text(GwrCache *c, const char *name, const char *text, uint64_t ttl, uint64_t now) {
  unsigned char k[32];
  key_of(k, name);
  GwrCacheEntry *e = gwr_cache_entry_new(strlen(text));
  memcpy(gwr_cache_entry_data(e, NULL), text, strlen(text));
  return gwr_cache_put(c, GWR_CACHE_RESPONSE, k, e, ttl, now);
}

/* The text under name, or NULL (a static copy). */
static const char *get_text(GwrCache *c, const char *name, uint64_t now) {
  static char buf[4096];
  unsigned char k[32];
  key_of(k, name);
  GwrCacheEntry *e = NULL;
  uint64_t f = 0;
  if (gwr_cache_get(c, GWR_CACHE_RESPONSE, k, now, NULL, &e, &f) != GWR_CACHE_HIT) return NULL;
  size_t n;
  unsigned char *d = gwr_cache_entry_data(e, &n);
  if (n >= sizeof buf) n = sizeof buf - 1;
  memcpy(buf, d, n);
  buf[n] = 0;
  gwr_cache_release(e);
  return buf;
}

static void test_basic(void) {
  GwrCache *c = gwr_cache_new(1 << 20);
  CHECK(gwr_cache_new(0) == NULL, "size 0 is no cache", "a cache was made");
  CHECK(get_text(c, "a", 1000) == NULL, "miss on an empty cache", "hit");
  put_text(c, "a", "alpha", 5000, 1000);
  const char *t = get_text(c, "a", 1000);
  CHECK(t && !strcmp(t, "alpha"), "hit after put", "got %s", t ? t : "(miss)");
  t = get_text(c, "a", 5999);
  CHECK(t && !strcmp(t, "alpha"), "hit just before expiry", "got %s", t ? t : "(miss)");
  CHECK(get_text(c, "a", 6000) == NULL, "miss at expiry", "hit");
  put_text(c, "b", "one", 5000, 1000);
  put_text(c, "b", "two", 5000, 1000);
  t = get_text(c, "b", 1000);
  CHECK(t && !strcmp(t, "two"), "a put replaces", "got %s", t ? t : "(miss)");
  GwrCacheStats st;
  gwr_cache_stats(c, &st);
  CHECK(st.entries == 1 && st.expired == 1 && st.hits[0] == 3 && st.misses[0] == 2 && st.stores[0] == 3,
        "stats count hits, misses, stores, expiry",
        "entries %llu expired %llu hits %llu misses %llu stores %llu", (unsigned long long)st.entries,
        (unsigned long long)st.expired, (unsigned long long)st.hits[0], (unsigned long long)st.misses[0],
        (unsigned long long)st.stores[0]);
  /* age and time left */
  unsigned char k[32];
  key_of(k, "b");
  GwrCacheEntry *e = NULL;
  uint64_t f;
  gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 3500, NULL, &e, &f);
  CHECK(e && gwr_cache_entry_age(e, 3500) == 2500 && gwr_cache_entry_left(e, 3500) == 2500, "age and time left",
        "age %llu left %llu", e ? (unsigned long long)gwr_cache_entry_age(e, 3500) : 0ull,
        e ? (unsigned long long)gwr_cache_entry_left(e, 3500) : 0ull);
  if (e) gwr_cache_release(e);
  gwr_cache_free(c);
}

static void test_bound(void) {
  size_t size = 256 << 10;
  GwrCache *c = gwr_cache_new(size);
  char name[32], text[1000];
  memset(text, 'x', sizeof text - 1);
  text[sizeof text - 1] = 0;
  size_t max_bytes = 0;
  for (int i = 0; i < 5000; i++) {
    snprintf(name, sizeof name, "k%d", i);
    put_text(c, name, text, 60000, 1000);
    GwrCacheStats st;
    gwr_cache_stats(c, &st);
    if (st.bytes > max_bytes) max_bytes = st.bytes;
  }
  GwrCacheStats st;
  gwr_cache_stats(c, &st);
  CHECK(max_bytes <= size, "bytes never pass the size", "max %zu > %zu", max_bytes, size);
  CHECK(st.evictions >= 4000 && st.entries > 100, "many keys evict old entries",
        "evictions %llu entries %llu", (unsigned long long)st.evictions, (unsigned long long)st.entries);
  CHECK(get_text(c, "k4999", 1000) != NULL && get_text(c, "k0", 1000) == NULL, "the newest stay, the oldest go",
        "k4999 %s, k0 %s", get_text(c, "k4999", 1000) ? "hit" : "miss", get_text(c, "k0", 1000) ? "hit" : "miss");
  gwr_cache_free(c);

  /* LRU: a key read keeps its place */
  c = gwr_cache_new(GWR_CACHE_SHARDS * 8 * (1000 + 256));   /* about 8 entries a shard */
  put_text(c, "keep", text, 60000, 1000);
  for (int i = 0; i < 2000; i++) {
    snprintf(name, sizeof name, "n%d", i);
    put_text(c, name, text, 60000, 1000);
    get_text(c, "keep", 1000);
  }
  CHECK(get_text(c, "keep", 1000) != NULL, "a key read often is not evicted", "evicted");

  /* an entry held survives its eviction */
  unsigned char k[32];
  key_of(k, "n1999");
  GwrCacheEntry *e = NULL;
  uint64_t f;
  gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, NULL, &e, &f);
  for (int i = 0; i < 2000; i++) {
    snprintf(name, sizeof name, "m%d", i);
    put_text(c, name, "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy", 60000, 1000);
  }
  size_t n = 0;
  unsigned char *d = e ? gwr_cache_entry_data(e, &n) : NULL;
  CHECK(d && n == 999 && d[0] == 'x' && d[998] == 'x' && get_text(c, "n1999", 1000) == NULL,
        "a held entry stays readable after eviction", "n %zu", n);
  if (e) gwr_cache_release(e);

  /* too large */
  size_t big = gwr_cache_max_entry(c) + 1;
  char *bt = malloc(big + 1);
  memset(bt, 'z', big);
  bt[big] = 0;
  int rc = put_text(c, "big", bt, 60000, 1000);
  bt[big - 1] = 0;
  int rc2 = put_text(c, "big2", bt, 60000, 1000);
  GwrCacheStats st2;
  gwr_cache_stats(c, &st2);
  CHECK(rc == -1 && get_text(c, "big", 1000) == NULL && st2.too_large == 1 && rc2 == 0 && get_text(c, "big2", 1000),
        "an entry past max_entry is not stored, one at it is", "rc %d rc2 %d too_large %llu", rc, rc2,
        (unsigned long long)st2.too_large);
  free(bt);
  gwr_cache_free(c);

  /* a cache too small for any record still holds its bound */
  c = gwr_cache_new(1024);
  int tiny = put_text(c, "t", "tiny", 60000, 1000);
  gwr_cache_stats(c, &st2);
  CHECK(tiny == -1 && st2.bytes == 0 && !gwr_cache_fits(c, 4), "a tiny cache_size stores nothing past its bound",
        "rc %d bytes %llu", tiny, (unsigned long long)st2.bytes);
  gwr_cache_free(c);
}

typedef struct TW { GwrCacheWaiter w; int woken; } TW;
static void tw_wake(GwrCacheWaiter *w) { ((TW *)w->ud)->woken++; }

static void test_flights(void) {
  GwrCache *c = gwr_cache_new(1 << 20);
  unsigned char k[32];
  key_of(k, "f");
  TW a = {{0}, 0}, b = {{0}, 0}, d = {{0}, 0};
  a.w.wake = b.w.wake = d.w.wake = tw_wake;
  a.w.ud = &a; b.w.ud = &b; d.w.ud = &d;
  GwrCacheEntry *e = NULL;
  uint64_t f1 = 0, fx = 0;
  int r1 = gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, &a.w, &e, &f1);
  int r2 = gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, &b.w, &e, &fx);
  int r3 = gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, NULL, &e, &fx);
  CHECK(r1 == GWR_CACHE_LEAD && f1 && r2 == GWR_CACHE_WAIT && r3 == GWR_CACHE_MISS,
        "the first miss leads, the next waits, one without a waiter misses", "%d %d %d", r1, r2, r3);
  int r4 = gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, &d.w, &e, &fx);
  gwr_cache_unwait(c, k, &d.w);
  CHECK(r4 == GWR_CACHE_WAIT, "a third waits", "%d", r4);
  gwr_cache_end(c, k, f1 + 1000);
  CHECK(b.woken == 0, "ending another flight id does nothing", "woken");
  put_text(c, "f", "value", 5000, 1000);
  CHECK(b.woken == 1 && d.woken == 0 && a.woken == 0, "a put wakes the waiters (not one taken out)",
        "b %d d %d a %d", b.woken, d.woken, a.woken);
  const char *t = get_text(c, "f", 1000);
  CHECK(t && !strcmp(t, "value"), "woken waiters find the entry", "got %s", t ? t : "(miss)");
  gwr_cache_end(c, k, f1);
  CHECK(get_text(c, "f", 1000) != NULL, "the leader's late end leaves the entry", "gone");

  /* end without an entry */
  key_of(k, "g");
  b.woken = 0;
  uint64_t f2 = 0;
  gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, &a.w, &e, &f2);
  gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, &b.w, &e, &fx);
  gwr_cache_end(c, k, f2);
  int r5 = gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, NULL, &e, &fx);
  CHECK(b.woken == 1 && r5 == GWR_CACHE_MISS, "the leader giving up wakes the waiters; they miss", "woken %d r %d",
        b.woken, r5);
  uint64_t f3 = 0;
  int r6 = gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, &a.w, &e, &f3);
  CHECK(r6 == GWR_CACHE_LEAD && f3 != f2, "after it a new flight can start", "%d", r6);

  /* the waiter bound */
  static TW many[GWR_CACHE_MAX_WAITERS + 5];
  int waits = 0, misses = 0;
  for (int i = 0; i < GWR_CACHE_MAX_WAITERS + 5; i++) {
    many[i].w.wake = tw_wake;
    many[i].w.ud = &many[i];
    int r = gwr_cache_get(c, GWR_CACHE_RESPONSE, k, 1000, &many[i].w, &e, &fx);
    if (r == GWR_CACHE_WAIT) waits++; else if (r == GWR_CACHE_MISS) misses++;
  }
  CHECK(waits == GWR_CACHE_MAX_WAITERS && misses == 5, "waiters per key are bounded", "waits %d misses %d", waits, misses);
  gwr_cache_end(c, k, f3);
  int woken = 0;
  for (int i = 0; i < GWR_CACHE_MAX_WAITERS + 5; i++) woken += many[i].woken;
  CHECK(woken == GWR_CACHE_MAX_WAITERS, "every queued waiter is woken once", "%d", woken);
  GwrCacheStats st;
  gwr_cache_stats(c, &st);
  CHECK(st.coalesced == GWR_CACHE_MAX_WAITERS + 3, "coalesced lookups are counted", "%llu",
        (unsigned long long)st.coalesced);
  gwr_cache_free(c);
}

static void test_cache_control(void) {
  static const struct { const char *v; unsigned want; uint64_t age; } cases[] = {
    { "private", GWR_CC_PRIVATE, 0 },
    { "PRIVATE", GWR_CC_PRIVATE, 0 },
    { "public, max-age=60", GWR_CC_MAX_AGE, 60 },
    { "No-Store", GWR_CC_NO_STORE, 0 },
    { "max-age=0, no-cache", GWR_CC_MAX_AGE | GWR_CC_NO_CACHE, 0 },
    { "private=\"set-cookie, x-a\", max-age=5", GWR_CC_PRIVATE | GWR_CC_MAX_AGE, 5 },
    { "x-ext=\"no-store, private\"", 0, 0 },
    { "no-storex, privately", 0, 0 },
    { "  no-cache ,,private", GWR_CC_NO_CACHE | GWR_CC_PRIVATE, 0 },
    { "max-age=abc", 0, 0 },
    { "max-age=\"30\"", GWR_CC_MAX_AGE, 30 },
    { "", 0, 0 },
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    uint64_t age = 0;
    unsigned r = gwr_cache_control(cases[i].v, strlen(cases[i].v), &age);
    char name[96];
    snprintf(name, sizeof name, "Cache-Control: %s", cases[i].v);
    CHECK(r == cases[i].want && (!(r & GWR_CC_MAX_AGE) || age == cases[i].age), name, "got %u age %llu", r,
          (unsigned long long)age);
  }
}

static void test_resp_codec(void) {
  unsigned char *body;
  GwrCacheEntry *e = gwr_cache_resp_new(404, GWR_CRESP_BODY, "X-A: 1\r\n", 8, 5, &body);
  memcpy(body, "{\"a\"}", 5);
  GwrCachedResp r;
  int rc = gwr_cache_resp_read(e, &r);
  CHECK(rc == 0 && r.status == 404 && r.flags == GWR_CRESP_BODY && r.head_len == 8 && !memcmp(r.head, "X-A: 1\r\n", 8) &&
        r.body_len == 5 && !memcmp(r.body, "{\"a\"}", 5), "a response entry reads back", "rc %d", rc);
  gwr_cache_release(e);
}

/* ---- keys -------------------------------------------------------------------------- */

static GwrProg *load(const char *text) {
  char dir[256];
  const char *base = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/gw-test-cache-XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(dir)) return NULL;
  char path[300];
  snprintf(path, sizeof path, "%s/p.gw", dir);
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
  char err[256];
  FILE *quiet = fopen("/dev/null", "w");         /* the warning of the auth program is expected */
  GwrProg *g = gwr_prog_load(path, quiet ? quiet : stderr, err, sizeof err);
  if (quiet) fclose(quiet);
  if (!g) printf("load: %s\n", err);
  unlink(path);
  rmdir(dir);
  return g;
}

/* The key of a GET of endpoint 0 with this query and these headers
** ("name: value" pairs, lower-case names), as the exchange would build it. */
static void req_key(GwrProg *g, const char *seg, const char *const *query, const char *const *headers,
                    unsigned char key[32]) {
  GwArena a;
  gw_arena_init(&a);
  GwrVm vm;
  memset(&vm, 0, sizeof vm);
  vm.p = g->p; vm.arena = &a; vm.envs = g->envs; vm.consts = g->consts; vm.max_steps = GWR_VM_MAX_STEPS;
  GwValue *q = gwv_object(&a, 4), *h = gwv_object(&a, 4), *cl = gwv_object(&a, 2);
  for (int i = 0; query && query[i]; i += 2) gwv_set(&a, q, query[i], strlen(query[i]), gwv_string_copy(&a, query[i + 1], strlen(query[i + 1])), 1);
  for (int i = 0; headers && headers[i]; i += 2) gwv_set(&a, h, headers[i], strlen(headers[i]), gwv_string_copy(&a, headers[i + 1], strlen(headers[i + 1])), 1);
  gwv_set(&a, cl, "ip", 2, gwv_string_copy(&a, "10.0.0.1", 8), 0);
  vm.roots[GW_ROOT_QUERY] = q; vm.roots[GW_ROOT_HEADERS] = h; vm.roots[GW_ROOT_BODY] = &gwv_null;
  vm.roots[GW_ROOT_JWT] = &gwv_null; vm.roots[GW_ROOT_CLIENT] = cl;
  GwValue *params[2] = { gwv_string_copy(&a, seg, strlen(seg)), NULL };
  vm.params = params;
  GwrPath path;
  memset(&path, 0, sizeof path);
  path.nseg = 2;
  path.seg[0].dec = "p"; path.seg[0].dec_len = 1;
  path.seg[1].dec = seg; path.seg[1].dec_len = (uint32_t)strlen(seg);
  if (gwr_cache_request_key(g, 0, &vm, GW_METHOD_GET, &path, -1, key) != 0) memset(key, 0, 32);
  gw_arena_free(&a);
}

static void test_keys(void) {
  GwrProg *g = load("backend b { url \"http://127.0.0.1:1\" }\n"
                    "endpoint GET /p/{id} {\n  cache 10s by headers[\"x-tenant\"]\n"
                    "  x = b GET \"/x/{id}\" query { a: query.a, b: query.b } headers { \"Accept-Language\": headers[\"accept-language\"] }\n"
                    "  respond x\n}\n");
  if (!g) { bad("keys: load a program", "failed"); return; }
  unsigned char k1[32], k2[32], k3[32], k4[32], k5[32], k6[32], k7[32];
  const char *q1[] = { "a", "1", "b", "2", NULL }, *q2[] = { "b", "2", "a", "1", NULL };
  const char *q3[] = { "a", "1", "b", "2", "utm", "x", NULL }, *q4[] = { "a", "1", "b", "3", NULL };
  const char *h1[] = { "accept-language", "en", "x-tenant", "t1", NULL };
  const char *h2[] = { "accept-language", "en", "x-tenant", "t1", "user-agent", "curl", NULL };
  const char *h3[] = { "accept-language", "fr", "x-tenant", "t1", NULL };
  const char *h4[] = { "accept-language", "en", "x-tenant", "t2", NULL };
  req_key(g, "7", q1, h1, k1);
  req_key(g, "7", q2, h1, k2);
  req_key(g, "7", q3, h2, k3);
  req_key(g, "7", q4, h1, k4);
  req_key(g, "7", q1, h3, k5);
  req_key(g, "7", q1, h4, k6);
  req_key(g, "8", q1, h1, k7);
  CHECK(!memcmp(k1, k2, 32), "query order does not change the key", "differs");
  CHECK(!memcmp(k1, k3, 32), "a query parameter or header not read does not change the key", "differs");
  CHECK(memcmp(k1, k4, 32) && memcmp(k1, k5, 32) && memcmp(k1, k6, 32) && memcmp(k1, k7, 32),
        "a query value, header, by value or path read changes the key", "same key");
  CHECK(gwr_cache_keyed_by_identity(g, 0), "an endpoint without auth needs no identity", "refused");

  /* call keys: the gateway's per-request headers are not part of it */
  const char *ha[] = { "X-Api: k", "X-Forwarded-For: 10.0.0.1", "X-Request-Id: aaa", "traceparent: 00-1", NULL };
  const char *hb[] = { "X-Api: k", "X-Forwarded-For: 10.9.9.9", "X-Request-Id: bbb", "X-Forwarded-Proto: https", NULL };
  const char *hc[] = { "X-Api: other", "X-Request-Id: aaa", NULL };
  unsigned char c1[32], c2[32], c3[32], c4[32], c5[32], c6[32];
  gwr_cache_call_key(g, 0, "GET", "/x/7?a=1", 8, ha, NULL, 0, c1);
  gwr_cache_call_key(g, 0, "GET", "/x/7?a=1", 8, hb, NULL, 0, c2);
  gwr_cache_call_key(g, 0, "GET", "/x/7?a=1", 8, hc, NULL, 0, c3);
  gwr_cache_call_key(g, 0, "GET", "/x/7?a=2", 8, ha, NULL, 0, c4);
  gwr_cache_call_key(g, 0, "POST", "/x/7?a=1", 8, ha, "", 0, c5);
  gwr_cache_call_key(g, 0, "POST", "/x/7?a=1", 8, ha, "{}", 2, c6);
  CHECK(!memcmp(c1, c2, 32), "call key: request id, trace and forwarding headers left out", "differs");
  CHECK(memcmp(c1, c3, 32) && memcmp(c1, c4, 32) && memcmp(c5, c6, 32) && memcmp(c1, c5, 32),
        "call key: headers, URL, method and body sent are in", "same key");
  gwr_prog_release(g);

  g = load("auth k apikey { keys file \"/dev/null\" }\n"
           "endpoint GET /a { auth k\n cache 5s\n respond { a: 1 } }\n"
           "endpoint GET /b { auth k\n cache 5s by client.name\n respond { a: 1 } }\n");
  if (!g) { bad("keys: load an auth program", "failed"); return; }
  CHECK(g->p->endpoints[0].cache_ms == 0, "gwc leaves an auth endpoint keyed without identity uncached",
        "cache_ms %u", g->p->endpoints[0].cache_ms);
  CHECK(gwr_cache_keyed_by_identity(g, 1) && !gwr_cache_keyed_by_identity(g, 0),
        "keyed by identity: client.name for an API key", "wrong");
  gwr_prog_release(g);
}

/* ---- threads ------------------------------------------------------------------------ */

static GwrCache *shared;
static volatile int stop;

static void *hammer(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  char name[32];
  static const char text[] = "0123456789012345678901234567890123456789012345678901234567890123456789";
  uint64_t now = 1000;
  for (int i = 0; i < 40000; i++) {
    seed = seed * 1103515245u + 12345u;
    snprintf(name, sizeof name, "t%u", (seed >> 8) % 3000);
    now++;
    if (!get_text(shared, name, now)) put_text(shared, name, text + (seed % 40), 1 + (seed >> 4) % 2000, now);
  }
  return NULL;
}

static void test_threads(void) {
  size_t size = 64 << 10;
  shared = gwr_cache_new(size);
  pthread_t t[8];
  for (uintptr_t i = 0; i < 8; i++) pthread_create(&t[i], NULL, hammer, (void *)(i + 1));
  for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
  GwrCacheStats st;
  gwr_cache_stats(shared, &st);
  CHECK(st.bytes <= size && st.hits[0] > 0 && st.stores[0] > 0, "8 threads: the bound holds",
        "bytes %llu hits %llu", (unsigned long long)st.bytes, (unsigned long long)st.hits[0]);
  gwr_cache_free(shared);
}

int main(void) {
  test_basic();
  test_bound();
  test_flights();
  test_cache_control();
  test_resp_codec();
  test_keys();
  test_threads();
  return summary();
}
