/*
** gwr_value.c — the runtime's JSON values (see gwr_value.h).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "gwr_value.h"

GwValue gwv_null = { .type = GWV_NULL };
GwValue gwv_true = { .type = GWV_TRUE };
GwValue gwv_false = { .type = GWV_FALSE };

static GwValue *alloc(GwArena *a, int type) {
  GwValue *v = gw_arena_alloc(a, sizeof *v);
  v->type = (uint8_t)type;
  return v;
}

/* A value and its text in one allocation. */
static GwValue *alloc_text(GwArena *a, int type, const char *s, size_t n) {
  GwValue *v = gw_arena_alloc_raw(a, sizeof *v + n + 1);
  char *t = (char *)(v + 1);
  memset(v, 0, sizeof *v);
  v->type = (uint8_t)type;
  if (n) memcpy(t, s, n);
  t[n] = 0;
  v->u.s = t;
  v->n = (uint32_t)n;
  return v;
}

GwValue *gwv_string_copy(GwArena *a, const char *s, size_t n) {
  return alloc_text(a, GWV_STRING, s, n);
}

GwValue *gwv_string_ref(GwArena *a, const char *s, size_t n) {
  GwValue *v = alloc(a, GWV_STRING);
  v->u.s = s;
  v->n = (uint32_t)n;
  return v;
}

GwValue *gwv_number_text(GwArena *a, const char *s, size_t n, int copy) {
  if (copy) return alloc_text(a, GWV_NUMBER, s, n);
  GwValue *v = alloc(a, GWV_NUMBER);
  v->u.s = s;
  v->n = (uint32_t)n;
  return v;
}

GwValue *gwv_number(GwArena *a, double d) {
  if (isnan(d) || isinf(d)) return &gwv_null;
  char buf[40];
  if (d == floor(d) && fabs(d) < 9007199254740992.0) {
    snprintf(buf, sizeof buf, "%.0f", d);
    if (!strcmp(buf, "-0")) strcpy(buf, "0");
  } else {
    /* the shortest of %.15g..%.17g that reads back the same double */
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(buf, sizeof buf, "%.*g", prec, d);
      if (strtod(buf, NULL) == d) break;
    }
  }
  return gwv_number_text(a, buf, strlen(buf), 1);
}

GwValue *gwv_array(GwArena *a, uint32_t cap) {
  GwValue *v = alloc(a, GWV_ARRAY);
  v->cap = cap;
  v->u.items = cap ? gw_arena_alloc(a, sizeof(GwValue *) * cap) : NULL;
  return v;
}

GwValue *gwv_object(GwArena *a, uint32_t cap) {
  GwValue *v = alloc(a, GWV_OBJECT);
  v->cap = cap;
  v->u.members = cap ? gw_arena_alloc(a, sizeof(GwMember) * cap) : NULL;
  return v;
}

void gwv_append(GwArena *a, GwValue *arr, GwValue *v) {
  if (arr->n == arr->cap) {
    uint32_t cap = arr->cap ? arr->cap * 2 : 4;
    GwValue **items = gw_arena_alloc(a, sizeof(GwValue *) * cap);
    if (arr->n) memcpy(items, arr->u.items, sizeof(GwValue *) * arr->n);
    arr->u.items = items;
    arr->cap = cap;
  }
  arr->u.items[arr->n++] = v ? v : &gwv_null;
}

/* A keyed hash (seeded per process) so that keys chosen by a backend or a
** client cannot pile into one chain. */
static uint64_t hash_seed;

static uint32_t key_hash(const char *k, size_t n) {
  if (!hash_seed) {
    uint64_t s = (uint64_t)(uintptr_t)&hash_seed ^ (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull;
    __atomic_store_n(&hash_seed, s | 1, __ATOMIC_RELAXED);
  }
  uint64_t h = hash_seed ^ (uint64_t)n * 0xff51afd7ed558ccdull;
  for (size_t i = 0; i < n; i++) { h ^= (unsigned char)k[i]; h *= 0x100000001b3ull; h ^= h >> 29; }
  h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ull; h ^= h >> 33;
  return (uint32_t)h;
}

/* Index slots: 2 x cap, a power of two. */
static uint32_t index_slots(const GwValue *o) {
  uint32_t s = 32;
  while (s < o->cap * 2) s *= 2;
  return s;
}

static void index_put(GwValue *o, uint32_t i) {
  uint32_t mask = index_slots(o) - 1, h = key_hash(o->u.members[i].key, o->u.members[i].klen) & mask;
  while (o->hidx[h]) h = (h + 1) & mask;
  o->hidx[h] = i + 1;
}

/* Build the index of an object from scratch (it lives in the arena a; a NULL
** arena means "no index": lookups stay linear). */
static void index_build(GwArena *a, GwValue *o) {
  if (!a) return;
  o->hidx = gw_arena_alloc(a, sizeof(uint32_t) * index_slots(o));
  for (uint32_t i = 0; i < o->n; i++) index_put(o, i);
}

static int64_t find(const GwValue *o, const char *k, size_t kn) {
  if (o->hidx) {
    uint32_t mask = index_slots(o) - 1, h = key_hash(k, kn) & mask;
    for (uint32_t x; (x = o->hidx[h]); h = (h + 1) & mask) {
      const GwMember *m = &o->u.members[x - 1];
      if (m->klen == kn && !memcmp(m->key, k, kn)) return x - 1;
    }
    return -1;
  }
  for (uint32_t i = 0; i < o->n; i++) {
    const GwMember *m = &o->u.members[i];
    if (m->klen == kn && !memcmp(m->key, k, kn)) return i;
  }
  return -1;
}

GwValue *gwv_get(const GwValue *obj, const char *k, size_t kn) {
  if (!obj || obj->type != GWV_OBJECT) return NULL;
  int64_t i = find(obj, k, kn);
  return i < 0 ? NULL : obj->u.members[i].val;
}

void gwv_set(GwArena *a, GwValue *obj, const char *k, size_t kn, GwValue *v, int copy_key) {
  if (!v) v = &gwv_null;
  if (!obj->hidx && obj->n > GWV_INDEX_MIN) index_build(a, obj);
  int64_t at = find(obj, k, kn);
  if (at >= 0) { obj->u.members[at].val = v; return; }
  int grew = 0;
  if (obj->n == obj->cap) {
    uint32_t cap = obj->cap ? obj->cap * 2 : 4;
    GwMember *ms = gw_arena_alloc(a, sizeof(GwMember) * cap);
    if (obj->n) memcpy(ms, obj->u.members, sizeof(GwMember) * obj->n);
    obj->u.members = ms;
    obj->cap = cap;
    grew = 1;
  }
  GwMember *m = &obj->u.members[obj->n++];
  m->key = copy_key ? gw_arena_strndup(a, k, kn) : k;
  m->klen = (uint32_t)kn;
  m->val = v;
  if (obj->hidx) {
    if (grew) index_build(a, obj);
    else index_put(obj, obj->n - 1);
  }
}

int gwv_truthy(const GwValue *v) {
  return v && v->type != GWV_NULL && v->type != GWV_FALSE;
}

int gwv_to_double(const GwValue *v, double *d, int strings_too) {
  if (!v) return 0;
  if (v->type != GWV_NUMBER && !(strings_too && v->type == GWV_STRING)) return 0;
  char buf[64];
  if (v->n == 0 || v->n >= sizeof buf) return 0;
  memcpy(buf, v->u.s, v->n);
  buf[v->n] = 0;
  char *end;
  double x = strtod(buf, &end);
  while (*end == ' ') end++;
  if (*end || buf[0] == ' ' || isnan(x)) return 0;
  if (v->type == GWV_STRING && (!strncasecmp(buf, "inf", 3) || strchr(buf, 'x') || strchr(buf, 'X'))) return 0;
  *d = x;
  return 1;
}

int gwv_equal(const GwValue *a, const GwValue *b) {
  if (!a) a = &gwv_null;
  if (!b) b = &gwv_null;
  if (a->type != b->type) return 0;
  switch (a->type) {
  case GWV_NULL: case GWV_TRUE: case GWV_FALSE: return 1;
  case GWV_NUMBER: {
    if (a->n == b->n && !memcmp(a->u.s, b->u.s, a->n)) return 1;
    double x, y;
    return gwv_to_double(a, &x, 0) && gwv_to_double(b, &y, 0) && x == y;
  }
  case GWV_STRING: return a->n == b->n && !memcmp(a->u.s, b->u.s, a->n);
  case GWV_ARRAY:
    if (a->n != b->n) return 0;
    for (uint32_t i = 0; i < a->n; i++) if (!gwv_equal(a->u.items[i], b->u.items[i])) return 0;
    return 1;
  case GWV_OBJECT:
    if (a->n != b->n) return 0;
    for (uint32_t i = 0; i < a->n; i++) {
      const GwMember *m = &a->u.members[i];
      const GwValue *o = gwv_get(b, m->key, m->klen);
      if (!o || !gwv_equal(m->val, o)) return 0;
    }
    return 1;
  }
  return 0;
}

int gwv_compare(const GwValue *a, const GwValue *b) {
  if (!a || !b) return 2;
  if (a->type == GWV_NUMBER && b->type == GWV_NUMBER) {
    double x, y;
    if (!gwv_to_double(a, &x, 0) || !gwv_to_double(b, &y, 0)) return 2;
    return x < y ? -1 : x > y;
  }
  if (a->type == GWV_STRING && b->type == GWV_STRING) {
    uint32_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->u.s, b->u.s, n);
    if (c) return c < 0 ? -1 : 1;
    return a->n < b->n ? -1 : a->n > b->n;
  }
  return 2;
}

void gwv_render(const GwValue *v, GwBuf *out) {
  if (!v) return;
  switch (v->type) {
  case GWV_NULL: break;
  case GWV_STRING: case GWV_NUMBER: gw_buf_add(out, v->u.s, v->n); break;
  default: gwv_json(v, out);
  }
}
