/*
** gwr_json.c — incremental, path-selective JSON parsing and yajl_gen output
** (see gwr_json.h for the keep-only rules).
**
** The read paths of a call become a trie of PNodes. While yajl parses, the
** extractor knows, for the value about to start, the set of trie nodes that
** reach it (several paths may: `items[*]` and `items[0].id`), and decides:
** skip it (only a depth counter moves), keep it whole, or keep a container
** whose children are decided the same way. Node sets live on one stack of
** pointers that grows and shrinks with the open containers, so deciding
** costs no allocation; only kept values touch the arena.
**
** Not here: limits on body size (the caller's), the value model.
*/
#include "gwr_json.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

/* ---- the path trie -------------------------------------------------------- */

typedef struct PNode PNode;
typedef struct PField { const char *k; uint32_t kn; PNode *n; struct PField *next; } PField;
typedef struct PIndex { int32_t i; PNode *n; struct PIndex *next; } PIndex;

struct PNode {
  int      whole;       /* a path ends here: keep everything below */
  PField  *fields;      /* `.k` children */
  PIndex  *index;       /* `[i]` children */
  int32_t  max_index;   /* largest i among index, -1 if none */
  PNode   *each;        /* the `[*]` child */
  PNode   *elem;        /* how this node meets array elements: its field
                           children only (and elem->elem == elem), NULL if
                           it has no field children */
  PNode   *all_next;    /* every node of the trie, for finishing it */
};

struct GwrPaths {
  PNode *root;          /* NULL: keep nothing */
};

typedef struct Builder { GwArena *a; PNode *root, *all; } Builder;

static PNode *new_node(Builder *b) {
  PNode *n = gw_arena_alloc(b->a, sizeof *n);
  n->max_index = -1;
  n->all_next = b->all;
  b->all = n;
  return n;
}

static PNode *child_field(Builder *b, PNode *n, const char *k, uint32_t kn) {
  for (PField *f = n->fields; f; f = f->next)
    if (f->kn == kn && !memcmp(f->k, k, kn)) return f->n;
  PField *f = gw_arena_alloc(b->a, sizeof *f);
  f->k = k; f->kn = kn; f->n = new_node(b);
  f->next = n->fields; n->fields = f;
  return f->n;
}

static PNode *child_index(Builder *b, PNode *n, int32_t i) {
  for (PIndex *x = n->index; x; x = x->next)
    if (x->i == i) return x->n;
  PIndex *x = gw_arena_alloc(b->a, sizeof *x);
  x->i = i; x->n = new_node(b);
  x->next = n->index; n->index = x;
  if (i > n->max_index) n->max_index = i;
  return x->n;
}

static PNode *child_each(Builder *b, PNode *n) {
  if (!n->each) n->each = new_node(b);
  return n->each;
}

static PNode *builder_root(Builder *b) {
  if (!b->root) b->root = new_node(b);
  return b->root;
}

/* Element views are made once the trie is complete, so each shares its
** node's final field list. */
static GwrPaths *builder_finish(Builder *b) {
  for (PNode *n = b->all; n; n = n->all_next) {
    if (n->whole || !n->fields) continue;
    PNode *v = gw_arena_alloc(b->a, sizeof *v);
    v->fields = n->fields;
    v->max_index = -1;
    v->elem = v;
    n->elem = v;
  }
  GwrPaths *p = gw_arena_alloc(b->a, sizeof *p);
  p->root = b->root;
  return p;
}

GwrPaths *gwr_paths_build(GwArena *a, const GwProgram *p, const GwCall *call) {
  Builder b = { a, NULL, NULL };
  for (uint32_t r = 0; r < call->read_count; r++) {
    const GwRead *rd = &p->reads[call->read_first + r];
    PNode *n = builder_root(&b);
    for (uint32_t s = 0; s < rd->step_count; s++) {
      const GwStep *st = &p->steps[rd->step_first + s];
      if (st->kind == GW_STEP_FIELD) {
        uint32_t kn;
        const char *k = gw_const_str(p, st->arg, &kn);
        n = child_field(&b, n, k, kn);
      } else if (st->kind == GW_STEP_INDEX && (int32_t)st->arg >= 0) {
        n = child_index(&b, n, (int32_t)st->arg);
      } else {
        /* GW_STEP_EACH; a negative index is a from-the-end position, which
        ** needs every element */
        n = child_each(&b, n);
      }
    }
    n->whole = 1;
  }
  return builder_finish(&b);
}

GwrPaths *gwr_paths_whole(GwArena *a) {
  Builder b = { a, NULL, NULL };
  builder_root(&b)->whole = 1;
  return builder_finish(&b);
}

GwrPaths *gwr_paths_from_strings(GwArena *a, const char *const *paths, int n) {
  Builder b = { a, NULL, NULL };
  for (int i = 0; i < n; i++) {
    const char *s = paths[i];
    PNode *nd = builder_root(&b);
    while (*s) {
      if (*s == '[') {
        s++;
        if (s[0] == '*' && s[1] == ']') { nd = child_each(&b, nd); s += 2; continue; }
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || *end != ']' || v > INT32_MAX || v < INT32_MIN) return NULL;
        nd = v < 0 ? child_each(&b, nd) : child_index(&b, nd, (int32_t)v);
        s = end + 1;
        continue;
      }
      if (*s == '.') s++;
      size_t kn = strcspn(s, ".[");
      if (kn == 0) return NULL;
      nd = child_field(&b, nd, gw_arena_strndup(a, s, kn), (uint32_t)kn);
      s += kn;
    }
    nd->whole = 1;
  }
  return builder_finish(&b);
}

/* ---- the extractor ------------------------------------------------------- */

/* What happens to the value about to start. */
enum { M_SKIP, M_NULL, M_KEEP, M_WHOLE };

/* Objects this large index their keys, so duplicate keys (later wins)
** cost O(1) each instead of a scan of the object. */
#define HASH_FROM 16

typedef struct Frame {
  GwValue  *v;          /* the container being filled (already attached) */
  uint32_t  set_off, set_n;   /* the nodes reaching it, on x->set */
  uint32_t  idx;        /* arrays: position of the next element */
  int32_t   max_index;  /* arrays: positions up to here are kept */
  uint8_t   is_arr, whole;
  /* objects: the key just read and what it decided */
  int       pend;
  const char *key;
  size_t    klen;
  uint32_t *ht;         /* objects past HASH_FROM members: index+1 per slot */
  uint32_t  hcap;
} Frame;

struct GwrExtract {
  GwArena  *a;
  yajl_handle h;
  const PNode **set;    /* stack of node sets */
  uint32_t  set_n, set_cap;
  Frame    *fr;
  uint32_t  nfr, fr_cap;
  uint32_t  skip;       /* depth inside a skipped container, 0 if none */
  int       max_depth;
  int       root_pend;  /* M_SKIP / M_KEEP / M_WHOLE for the top value */
  GwValue  *root;
  uint64_t  seed;
  size_t    fed;        /* bytes fed before the current chunk */
  int       failed, finished;
  char      err[96];
};

static void set_error(GwrExtract *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(GwrExtract *x, const char *fmt, ...) {
  if (x->err[0]) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(x->err, sizeof x->err, fmt, ap);
  va_end(ap);
}

static int set_push(GwrExtract *x, const PNode *n) {
  if (x->set_n == x->set_cap) {
    uint32_t cap = x->set_cap ? x->set_cap * 2 : 64;
    const PNode **s = realloc(x->set, sizeof *s * cap);
    if (!s) return -1;
    x->set = s; x->set_cap = cap;
  }
  x->set[x->set_n++] = n;
  return 0;
}

/* Add n to the pending set [base, set_n) unless already there. */
static int pend_add(GwrExtract *x, uint32_t base, const PNode *n) {
  if (!n) return 0;
  for (uint32_t i = base; i < x->set_n; i++)
    if (x->set[i] == n) return 0;
  return set_push(x, n);
}

static uint32_t pend_base(const GwrExtract *x) {
  if (!x->nfr) return 0;
  const Frame *f = &x->fr[x->nfr - 1];
  return f->set_off + f->set_n;
}

static int classify(const GwrExtract *x, uint32_t base) {
  if (x->set_n == base) return M_SKIP;
  for (uint32_t i = base; i < x->set_n; i++)
    if (x->set[i]->whole) return M_WHOLE;
  return M_KEEP;
}

/* Decide the value about to start; for M_KEEP its node set is left at
** [pend_base(x), x->set_n). Returns -1 if out of memory. */
static int decide(GwrExtract *x) {
  if (!x->nfr) return x->root_pend;
  Frame *f = &x->fr[x->nfr - 1];
  if (f->whole) { if (f->is_arr) f->idx++; return M_WHOLE; }
  if (!f->is_arr) return f->pend;
  uint32_t base = f->set_off + f->set_n, i = f->idx++;
  x->set_n = base;
  for (uint32_t k = f->set_off; k < base; k++) {
    const PNode *n = x->set[k];
    if (pend_add(x, base, n->each) || pend_add(x, base, n->elem)) return -1;
    for (const PIndex *ix = n->index; ix; ix = ix->next)
      if ((uint32_t)ix->i == i && pend_add(x, base, ix->n)) return -1;
  }
  int m = classify(x, base);
  if (m == M_SKIP && (int64_t)i <= f->max_index) return M_NULL;
  return m;
}

static uint64_t hash_key(uint64_t seed, const char *k, size_t n) {
  uint64_t h = seed ^ (n * 0x9E3779B97F4A7C15ull);
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 0x100000001B3ull;
  h ^= h >> 33; h *= 0xFF51AFD7ED558CCDull; h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ull; h ^= h >> 33;
  return h;
}

static int ht_grow(GwrExtract *x, Frame *f) {
  uint32_t cap = f->hcap ? f->hcap * 2 : 64;
  while (cap < f->v->n * 2 + 2) cap *= 2;
  uint32_t *t = calloc(cap, sizeof *t);
  if (!t) return -1;
  for (uint32_t m = 0; m < f->v->n; m++) {
    const GwMember *mb = &f->v->u.members[m];
    uint32_t s = (uint32_t)hash_key(x->seed, mb->key, mb->klen) & (cap - 1);
    while (t[s]) s = (s + 1) & (cap - 1);
    t[s] = m + 1;
  }
  free(f->ht);
  f->ht = t; f->hcap = cap;
  return 0;
}

/* gwv_set, with a hash index once the object is large. The key is already
** in the arena. */
static int obj_put(GwrExtract *x, Frame *f, const char *k, size_t kn, GwValue *v) {
  GwValue *o = f->v;
  if (!f->ht && o->n < HASH_FROM) { gwv_set(x->a, o, k, kn, v, 0); return 0; }
  if ((!f->ht || (o->n + 1) * 2 > f->hcap) && ht_grow(x, f)) return -1;
  uint32_t mask = f->hcap - 1, s = (uint32_t)hash_key(x->seed, k, kn) & mask;
  for (; f->ht[s]; s = (s + 1) & mask) {
    GwMember *m = &o->u.members[f->ht[s] - 1];
    if (m->klen == kn && !memcmp(m->key, k, kn)) { m->val = v; return 0; }
  }
  if (o->n == o->cap) {
    uint32_t cap = o->cap ? o->cap * 2 : 4;
    GwMember *ms = gw_arena_alloc(x->a, sizeof *ms * cap);
    memcpy(ms, o->u.members, sizeof *ms * o->n);
    o->u.members = ms;
    o->cap = cap;
  }
  GwMember *m = &o->u.members[o->n];
  m->key = k; m->klen = (uint32_t)kn; m->val = v;
  f->ht[s] = ++o->n;
  return 0;
}

static int attach(GwrExtract *x, GwValue *v) {
  if (!x->nfr) { x->root = v; return 0; }
  Frame *f = &x->fr[x->nfr - 1];
  if (f->is_arr) { gwv_append(x->a, f->v, v); return 0; }
  return obj_put(x, f, f->key, f->klen, v);
}


static int oom(GwrExtract *x) { set_error(x, "out of memory"); return 0; }

static int scalar(GwrExtract *x, GwValue *(*make)(GwrExtract *, const void *, size_t),
                  const void *p, size_t n) {
  if (x->skip) return 1;
  int m = decide(x);
  if (m < 0) return oom(x);
  if (m == M_SKIP) return 1;
  if (attach(x, m == M_NULL ? &gwv_null : make(x, p, n))) return oom(x);
  return 1;
}

static GwValue *mk_null(GwrExtract *x, const void *p, size_t n) { return &gwv_null; }
static GwValue *mk_bool(GwrExtract *x, const void *p, size_t n) { return gwv_bool(n != 0); }
static GwValue *mk_number(GwrExtract *x, const void *p, size_t n) { return gwv_number_text(x->a, p, n, 1); }
static GwValue *mk_string(GwrExtract *x, const void *p, size_t n) { return gwv_string_copy(x->a, p, n); }

static int cb_null(void *ctx) { return scalar(ctx, mk_null, NULL, 0); }
static int cb_boolean(void *ctx, int b) { return scalar(ctx, mk_bool, NULL, (size_t)(b != 0)); }
static int cb_number(void *ctx, const char *s, size_t n) { return scalar(ctx, mk_number, s, n); }

/* yajl checks the shape of UTF-8 in strings, but lets overlong forms,
** surrogates and code points past U+10FFFF through: a kept string or key is
** checked again in full. Skipped ones are not — they go nowhere — which was
** a fifth of the extraction's cost (measured on agg-3). */
static int cb_string(void *ctx, const unsigned char *s, size_t n) {
  GwrExtract *x = ctx;
  if (x->skip) return 1;
  int m = decide(x);
  if (m < 0) return oom(x);
  if (m == M_SKIP) return 1;
  if (m != M_NULL && !gw_utf8_valid(s, n)) { set_error(x, "invalid UTF-8 in a string"); return 0; }
  if (attach(x, m == M_NULL ? &gwv_null : mk_string(x, s, n))) return oom(x);
  return 1;
}

static int cb_key(void *ctx, const unsigned char *s, size_t n) {
  GwrExtract *x = ctx;
  const char *named = NULL;
  if (x->skip) return 1;
  Frame *f = &x->fr[x->nfr - 1];
  if (f->whole) {
    f->pend = M_WHOLE;
  } else {
    uint32_t base = f->set_off + f->set_n;
    x->set_n = base;
    for (uint32_t k = f->set_off; k < base; k++) {
      const PNode *nd = x->set[k];
      if (pend_add(x, base, nd->each)) return oom(x);
      for (const PField *fl = nd->fields; fl; fl = fl->next)
        if (fl->kn == n && !memcmp(fl->k, s, n)) {
          if (pend_add(x, base, fl->n)) return oom(x);
          named = fl->k;
          break;
        }
    }
    f->pend = classify(x, base);
  }
  if (f->pend != M_SKIP) {
    /* a key the read paths name is the program's own text (valid, and it
    ** outlives the request); any other kept key is checked and copied */
    if (named) {
      f->key = named;
    } else {
      if (!gw_utf8_valid(s, n)) { set_error(x, "invalid UTF-8 in a key"); return 0; }
      f->key = gw_arena_strndup(x->a, (const char *)s, n);
    }
    f->klen = n;
  }
  return 1;
}

static int open_container(GwrExtract *x, int is_arr) {
  if ((uint64_t)x->nfr + x->skip + 1 > (uint64_t)x->max_depth) {
    set_error(x, "too deep (more than %d levels)", x->max_depth);
    return 0;
  }
  if (x->skip) { x->skip++; return 1; }
  int m = decide(x);
  if (m < 0) return oom(x);
  if (m == M_SKIP || m == M_NULL) {
    if (m == M_NULL && attach(x, &gwv_null)) return oom(x);
    x->skip = 1;
    return 1;
  }
  GwValue *v = is_arr ? gwv_array(x->a, 0) : gwv_object(x->a, 0);
  if (attach(x, v)) return oom(x);
  if (x->nfr == x->fr_cap) {
    uint32_t cap = x->fr_cap ? x->fr_cap * 2 : 16;
    Frame *fr = realloc(x->fr, sizeof *fr * cap);
    if (!fr) return oom(x);
    x->fr = fr; x->fr_cap = cap;
  }
  /* the pending set [base, set_n) becomes the new frame's own */
  uint32_t base = pend_base(x);
  Frame *f = &x->fr[x->nfr++];
  memset(f, 0, sizeof *f);
  f->v = v;
  f->is_arr = (uint8_t)is_arr;
  f->whole = m == M_WHOLE;
  f->max_index = -1;
  f->set_off = base;
  f->set_n = f->whole ? 0 : x->set_n - base;
  if (f->whole) x->set_n = base;
  for (uint32_t k = base; k < base + f->set_n; k++)
    if (x->set[k]->max_index > f->max_index) f->max_index = x->set[k]->max_index;
  return 1;
}

static int close_container(GwrExtract *x) {
  if (x->skip) { x->skip--; return 1; }
  Frame *f = &x->fr[--x->nfr];
  x->set_n = f->set_off;
  free(f->ht);
  f->ht = NULL;
  return 1;
}

static int cb_start_map(void *ctx) { return open_container(ctx, 0); }
static int cb_start_array(void *ctx) { return open_container(ctx, 1); }
static int cb_end(void *ctx) { return close_container(ctx); }

static const yajl_callbacks callbacks = {
  cb_null, cb_boolean, NULL, NULL, cb_number, cb_string,
  cb_start_map, cb_key, cb_end, cb_start_array, cb_end
};

GwrExtract *gwr_extract_new(GwArena *a, const GwrPaths *paths, const GwrJsonLimits *lim) {
  GwrExtract *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->a = a;
  x->max_depth = lim && lim->max_depth > 0 ? lim->max_depth : GWR_JSON_MAX_DEPTH;
  /* seeded per extractor, so a body cannot be written to make keys collide */
  static _Atomic uint64_t counter;
  x->seed = hash_key((uint64_t)(uintptr_t)x ^ (uint64_t)time(NULL), (const char *)&x, sizeof x) +
            ++counter * 0x9E3779B97F4A7C15ull;
  x->h = yajl_alloc(&callbacks, NULL, x);
  if (!x->h) { free(x); return NULL; }
  /* yajl's defaults are the strict ones: no comments, strings validated,
  ** one value, no trailing garbage; keep them. */
  const PNode *root = paths ? paths->root : NULL;
  if (!root) {
    x->root_pend = M_SKIP;
  } else if (root->whole) {
    x->root_pend = M_WHOLE;
  } else {
    x->root_pend = M_KEEP;
    if (set_push(x, root)) { gwr_extract_free(x); return NULL; }
  }
  return x;
}

static int yajl_failed(GwrExtract *x, yajl_status st, size_t chunk_len) {
  x->failed = 1;
  if (st == yajl_status_client_canceled && x->err[0]) return -1;
  size_t at = x->fed + yajl_get_bytes_consumed(x->h);
  if (at > x->fed + chunk_len) at = x->fed + chunk_len;
  unsigned char *msg = yajl_get_error(x->h, 0, NULL, 0);
  char why[64] = "invalid JSON";
  if (msg) {
    size_t l = strcspn((const char *)msg, "\n");
    if (l >= sizeof why) l = sizeof why - 1;
    memcpy(why, msg, l);
    why[l] = 0;
    yajl_free_error(x->h, msg);
  }
  set_error(x, "invalid JSON near byte %zu: %s", at, why);
  return -1;
}

int gwr_extract_feed(GwrExtract *x, const char *p, size_t n) {
  if (x->failed) return -1;
  if (x->finished) { x->failed = 1; set_error(x, "fed after the end"); return -1; }
  if (!n) return 0;
  yajl_status st = yajl_parse(x->h, (const unsigned char *)p, n);
  if (st != yajl_status_ok) return yajl_failed(x, st, n);
  x->fed += n;
  return 0;
}

int gwr_extract_finish(GwrExtract *x, GwValue **out) {
  *out = &gwv_null;
  if (x->failed) return -1;
  if (x->finished) { x->failed = 1; set_error(x, "finished twice"); return -1; }
  x->finished = 1;
  yajl_status st = yajl_complete_parse(x->h);
  if (st != yajl_status_ok) return yajl_failed(x, st, 0);
  if (x->root) *out = x->root;
  return 0;
}

const char *gwr_extract_error(const GwrExtract *x) { return x->err; }

void gwr_extract_free(GwrExtract *x) {
  if (!x) return;
  if (x->h) yajl_free(x->h);
  for (uint32_t i = 0; i < x->nfr; i++) free(x->fr[i].ht);
  free(x->fr);
  free(x->set);
  free(x);
}

int gwr_json_parse(GwArena *a, const char *p, size_t n, const GwrJsonLimits *lim,
                   GwValue **out, char *err, size_t errlen) {
  static const PNode whole = { 1, NULL, NULL, -1, NULL, NULL, NULL };
  static const GwrPaths whole_paths = { (PNode *)&whole };
  if (errlen) err[0] = 0;
  *out = &gwv_null;
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) i++;
  if (i == n) return 0;
  GwrExtract *x = gwr_extract_new(a, &whole_paths, lim);
  if (!x) { if (errlen) snprintf(err, errlen, "out of memory"); return -1; }
  int rc = gwr_extract_feed(x, p, n);
  if (!rc) rc = gwr_extract_finish(x, out);
  if (rc && errlen) snprintf(err, errlen, "%s", x->err);
  gwr_extract_free(x);
  return rc;
}

/* ---- generation ----------------------------------------------------------- */

static yajl_gen_status gen(yajl_gen g, const GwValue *v) {
  yajl_gen_status s;
  if (!v) v = &gwv_null;
  switch (v->type) {
  case GWV_FALSE: return yajl_gen_bool(g, 0);
  case GWV_TRUE: return yajl_gen_bool(g, 1);
  case GWV_NUMBER:
    if (!v->n) return yajl_gen_null(g);
    return yajl_gen_number(g, v->u.s, v->n);
  case GWV_STRING:
    if (!gw_utf8_valid(v->u.s, v->n)) return yajl_gen_invalid_string;
    return yajl_gen_string(g, (const unsigned char *)v->u.s, v->n);
  case GWV_ARRAY:
    if ((s = yajl_gen_array_open(g)) != yajl_gen_status_ok) return s;
    for (uint32_t i = 0; i < v->n; i++)
      if ((s = gen(g, v->u.items[i])) != yajl_gen_status_ok) return s;
    return yajl_gen_array_close(g);
  case GWV_OBJECT:
    if ((s = yajl_gen_map_open(g)) != yajl_gen_status_ok) return s;
    for (uint32_t i = 0; i < v->n; i++) {
      const GwMember *m = &v->u.members[i];
      if (!gw_utf8_valid(m->key, m->klen)) return yajl_gen_invalid_string;
      if ((s = yajl_gen_string(g, (const unsigned char *)m->key, m->klen)) != yajl_gen_status_ok ||
          (s = gen(g, m->val)) != yajl_gen_status_ok)
        return s;
    }
    return yajl_gen_map_close(g);
  default: return yajl_gen_null(g);
  }
}

/* yajl_gen writes into its own growing buffer and the sink gets the text in
** one piece: a print callback would be called for every quote, comma and
** colon (measured: a third of the cost of writing an agg-3 answer). */
int gwr_json_write(const GwValue *v, GwrJsonSink sink, void *ctx) {
  yajl_gen g = yajl_gen_alloc(NULL);
  if (!g) return -1;
  yajl_gen_status s = gen(g, v);
  if (s == yajl_gen_status_ok) {
    const unsigned char *out;
    size_t n;
    yajl_gen_get_buf(g, &out, &n);
    sink(ctx, (const char *)out, n);
  }
  yajl_gen_free(g);
  return s == yajl_gen_status_ok ? 0 : -1;
}

static void sink_buf(void *ctx, const char *p, size_t n) { gw_buf_add(ctx, p, n); }

void gwv_json(const GwValue *v, GwBuf *out) {
  size_t start = out->n;
  if (gwr_json_write(v, sink_buf, out) != 0) {   /* only invalid UTF-8, which no value holds */
    out->n = start;
    gw_buf_adds(out, "null");
  }
}
