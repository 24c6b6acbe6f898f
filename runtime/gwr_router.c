/*
** gwr_router.c — the route trie and the lookup (contract in gwr_router.h).
**
** The trie is flat: an array of nodes, each with up to four parameter
** children (int, uuid, string, tail) by index, and one open-addressing hash
** table for every static edge of the trie keyed by (parent node, decoded
** literal). Everything is allocated once by gwr_router_build; gwr_route only
** reads, so any number of threads may share one router.
**
** Not here: normalizing or decoding the request path (the HTTP layer), and
** what a 404/405/OPTIONS response looks like (the server).
*/
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "gwr_router.h"

enum { KID_INT, KID_UUID, KID_STRING, KID_TAIL, KID_MAX };   /* GW_SEG_x - 1 */

typedef struct Node {
  uint32_t kid[KID_MAX];         /* child node per parameter kind; 0 = none (0 is the root) */
  uint32_t ep[GW_METHOD_MAX];    /* endpoint of the route per method; GW_NONE = none */
  uint32_t mask;                 /* bit 1u << method for each route ending here */
  uint32_t nstatic;              /* static children (0: skip hashing the segment) */
} Node;

typedef struct Edge {
  const char *text;              /* the decoded literal (in GwrRouter.text) */
  uint32_t len, hash, parent, child;   /* child 0 = empty slot */
} Edge;

struct GwrRouter {
  Node     *nodes;
  uint32_t  nnodes;
  Edge     *edges;               /* open addressing, linear probing */
  uint32_t  edge_mask;           /* capacity - 1 (capacity a power of two) */
  char     *text;                /* every decoded literal, NUL-separated */
};

/* FNV-1a over the segment, seeded with the parent so one table serves all nodes. */
static uint32_t edge_hash(uint32_t parent, const char *s, uint32_t n) {
  uint32_t h = 2166136261u ^ (parent * 0x9E3779B1u);
  for (uint32_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h ^ (h >> 15);
}

static uint32_t find_static(const GwrRouter *r, uint32_t parent, const char *s, uint32_t n) {
  uint32_t h = edge_hash(parent, s, n);
  for (uint32_t i = h & r->edge_mask;; i = (i + 1) & r->edge_mask) {
    const Edge *e = &r->edges[i];
    if (!e->child) return 0;
    if (e->hash == h && e->parent == parent && e->len == n && !memcmp(e->text, s, n)) return e->child;
  }
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent-decode s[0..n) into out (at most n bytes); a '%' not followed by
** two hex digits is kept as is. Returns the decoded length. */
static uint32_t pct_decode(const char *s, uint32_t n, char *out) {
  uint32_t o = 0;
  for (uint32_t i = 0; i < n; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)s[i + 1])) >= 0 && (lo = hexval((unsigned char)s[i + 2])) >= 0) {
      out[o++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[o++] = s[i];
    }
  }
  return o;
}

void gwr_router_free(GwrRouter *r) {
  if (!r) return;
  free(r->nodes);
  free(r->edges);
  free(r->text);
  free(r);
}

static uint32_t new_node(GwrRouter *r) {
  uint32_t k = r->nnodes++;
  Node *n = &r->nodes[k];
  memset(n->kid, 0, sizeof n->kid);
  for (int m = 0; m < GW_METHOD_MAX; m++) n->ep[m] = GW_NONE;
  n->mask = 0;
  n->nstatic = 0;
  return k;
}

GwrRouter *gwr_router_build(const GwProgram *p) {
  /* Size everything first: a route adds at most one node per segment and
  ** one edge per static segment, so nothing grows after this. */
  uint64_t nsegs = 0, nstatic = 0, ntext = 0;
  for (uint32_t i = 0; i < p->n_routes; i++) {
    const GwRoute *R = &p->routes[i];
    if (R->method >= GW_METHOD_MAX || R->endpoint >= p->n_endpoints ||
        R->seg_first > p->n_segs || R->seg_count > p->n_segs - R->seg_first) return NULL;
    uint32_t nparams = 0;
    for (uint32_t j = 0; j < R->seg_count; j++) {
      const GwSeg *S = &p->segs[R->seg_first + j];
      if (S->kind >= GW_SEG_MAX || S->text >= p->n_consts) return NULL;
      if (S->kind == GW_SEG_TAIL && j + 1 != R->seg_count) return NULL;
      if (S->kind == GW_SEG_STATIC) { nstatic++; ntext += p->consts[S->text].len + 1; }
      else if (++nparams > GWR_MAX_PARAMS) return NULL;
    }
    nsegs += R->seg_count;
  }
  if (nsegs >= 0x7FFFFFFFu) return NULL;
  uint32_t cap = 16;
  while (cap < 2 * nstatic) cap <<= 1;

  GwrRouter *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->nodes = malloc(sizeof *r->nodes * (size_t)(nsegs + 1));
  r->edges = calloc(cap, sizeof *r->edges);
  r->text = malloc((size_t)ntext + 1);
  if (!r->nodes || !r->edges || !r->text) { gwr_router_free(r); return NULL; }
  r->edge_mask = cap - 1;
  new_node(r);
  size_t tpos = 0;

  for (uint32_t i = 0; i < p->n_routes; i++) {
    const GwRoute *R = &p->routes[i];
    uint32_t at = 0;
    for (uint32_t j = 0; j < R->seg_count; j++) {
      const GwSeg *S = &p->segs[R->seg_first + j];
      if (S->kind != GW_SEG_STATIC) {
        uint32_t *kid = &r->nodes[at].kid[S->kind - 1];
        if (!*kid) *kid = new_node(r);
        at = *kid;
        continue;
      }
      uint32_t len;
      const char *lit = gw_const_str(p, S->text, &len);
      char *dec = r->text + tpos;
      uint32_t dlen = pct_decode(lit, len, dec);
      uint32_t child = find_static(r, at, dec, dlen);
      if (!child) {
        dec[dlen] = 0;
        tpos += dlen + 1;
        child = new_node(r);
        uint32_t h = edge_hash(at, dec, dlen), k = h & r->edge_mask;
        while (r->edges[k].child) k = (k + 1) & r->edge_mask;
        r->edges[k] = (Edge){ dec, dlen, h, at, child };
        r->nodes[at].nstatic++;
      }
      at = child;
    }
    Node *n = &r->nodes[at];
    if (n->ep[R->method] == GW_NONE) n->ep[R->method] = R->endpoint;   /* first route wins */
    n->mask |= 1u << R->method;
  }
  return r;
}

/* ---- lookup -------------------------------------------------------------------------- */

static int is_int(const char *s, uint32_t n) {
  uint32_t i = (n && s[0] == '-') ? 1 : 0;
  if (n - i < 1 || n - i > 18) return 0;
  for (; i < n; i++) if (s[i] < '0' || s[i] > '9') return 0;
  return 1;
}

static int is_uuid(const char *s, uint32_t n) {
  if (n != 36) return 0;
  for (uint32_t i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) { if (s[i] != '-') return 0; }
    else if (hexval((unsigned char)s[i]) < 0) return 0;
  }
  return 1;
}

typedef struct Walk {
  const GwrRouter   *r;
  int                method;
  const GwrRouteSeg *segs;
  int                nsegs;
  GwrMatch          *m;
  uint32_t           allow;     /* methods of nodes that matched the path but not the method */
} Walk;

/* The path ends at node n: does a route there take the method? */
static int accept(Walk *w, const Node *n, uint32_t np) {
  uint32_t ep = GW_NONE;
  int mt = w->method;
  if (mt > GW_METHOD_ANY && mt < GW_METHOD_MAX) ep = n->ep[mt];
  if (ep == GW_NONE && mt == GW_METHOD_HEAD) ep = n->ep[GW_METHOD_GET];
  if (ep == GW_NONE) ep = n->ep[GW_METHOD_ANY];
  if (ep == GW_NONE) { w->allow |= n->mask; return 0; }
  w->m->endpoint = ep;
  w->m->nparams = np;
  w->m->is_head = mt == GW_METHOD_HEAD;
  return 1;
}

static int walk(Walk *w, uint32_t at, int depth, uint32_t np) {
  const Node *n = &w->r->nodes[at];
  if (depth == w->nsegs) return accept(w, n, np);
  const GwrRouteSeg *s = &w->segs[depth];
  uint32_t k;
  if (n->nstatic && (k = find_static(w->r, at, s->dec, s->dec_len)) && walk(w, k, depth + 1, np)) return 1;
  if (s->dec_len) {
    w->m->param[np].p = s->dec;
    w->m->param[np].n = s->dec_len;
    if ((k = n->kid[KID_INT]) && is_int(s->dec, s->dec_len) && walk(w, k, depth + 1, np + 1)) return 1;
    if ((k = n->kid[KID_UUID]) && is_uuid(s->dec, s->dec_len) && walk(w, k, depth + 1, np + 1)) return 1;
    if ((k = n->kid[KID_STRING]) && walk(w, k, depth + 1, np + 1)) return 1;
  }
  if ((k = n->kid[KID_TAIL]) && (depth + 1 < w->nsegs || s->dec_len)) {
    /* The value is the span from this segment to the end when the decoded
    ** segments sit in one buffer separated by '/'; else the caller joins. */
    const char *p = s->dec;
    uint64_t len = s->dec_len;
    for (int i = depth + 1; i < w->nsegs; i++) {
      const GwrRouteSeg *t = &w->segs[i];
      if (p && !(t->dec == s->dec + len + 1 && t->dec[-1] == '/')) p = NULL;
      len += 1 + (uint64_t)t->dec_len;
    }
    w->m->param[np].p = p;
    w->m->param[np].n = len > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)len;
    w->m->tail_first = depth;
    if (accept(w, &w->r->nodes[k], np + 1)) return 1;
    w->m->tail_first = -1;
  }
  return 0;
}

int gwr_route(const GwrRouter *r, int method, const GwrRouteSeg *segs, int nsegs, GwrMatch *m, uint32_t *allow) {
  Walk w = { r, method, segs, nsegs < 0 ? 0 : nsegs, m, 0 };
  m->tail_first = -1;
  if (walk(&w, 0, 0, 0)) return 200;
  if (!w.allow) return 404;
  uint32_t a = w.allow & ~(1u << GW_METHOD_ANY);
  if (a & (1u << GW_METHOD_GET)) a |= 1u << GW_METHOD_HEAD;
  a |= 1u << GW_METHOD_OPTIONS;
  if (allow) *allow = a;
  return 405;
}

size_t gwr_tail_join(const GwrRouteSeg *segs, int from, int nsegs, char *buf, size_t cap) {
  size_t o = 0;
  for (int i = from; i < nsegs; i++) {
    if (i > from) { if (o + 1 < cap) buf[o] = '/'; o++; }
    for (uint32_t j = 0; j < segs[i].dec_len; j++, o++)
      if (o + 1 < cap) buf[o] = segs[i].dec[j];
  }
  if (cap) buf[o < cap ? o : cap - 1] = 0;
  return o;
}

size_t gwr_allow_string(uint32_t allow, char *buf, size_t cap) {
  static const int order[] = { GW_METHOD_GET, GW_METHOD_HEAD, GW_METHOD_POST, GW_METHOD_PUT,
                               GW_METHOD_PATCH, GW_METHOD_DELETE, GW_METHOD_OPTIONS };
  size_t o = 0;
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
    if (!(allow & (1u << order[i]))) continue;
    const char *name = gw_method_names[order[i]];
    for (const char *q = o ? ", " : ""; *q; q++, o++) if (o + 1 < cap) buf[o] = *q;
    for (const char *q = name; *q; q++, o++) if (o + 1 < cap) buf[o] = *q;
  }
  if (cap) buf[o < cap ? o : cap - 1] = 0;
  return o;
}
