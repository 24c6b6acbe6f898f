/*
** gwc_graph.c — data flow: for each endpoint, which calls each call, guard
** and the response read (the runtime starts a call the moment its
** dependencies have settled), dependency cycles, the set of paths read from
** each call's body (the runtime keeps only those while it parses), the
** request inputs the endpoint reads (the cache key), and unused bindings.
**
** Read paths come from a small abstract interpretation: every expression
** yields the set of body paths its value may come from ("origins"); an
** expression that uses a value as a whole (output, comparison, arithmetic,
** interpolation, a function argument, a URL) records its origins as read.
** Navigation (`.f`, `[0]`, `[*]`, filters, selections) extends origins
** instead of reading them. The result is always a superset of what the
** program touches, never less.
*/
#include <stdlib.h>
#include <string.h>
#include "gwc_graph.h"

typedef struct Origins { RPath *v; int n, cap; } Origins;

typedef struct G {
  GwcCompiler *C;
  Ep          *ep;
  uint8_t     *mark;      /* calls read by the expression being walked */
  int          depth;
} G;

static void push_path(RPath **v, int *n, int *cap, const RPath *p) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 4;
    *v = realloc(*v, sizeof **v * (size_t)*cap);
    if (!*v) abort();
  }
  (*v)[(*n)++] = *p;
}

/* An origin: a path into the body of call `call`. */
static void add_origin(Origins *o, int call, const RPath *p) {
  RPath q = *p;
  q.call = call;
  push_path(&o->v, &o->n, &o->cap, &q);
}

static void free_origins(Origins *o) { free(o->v); memset(o, 0, sizeof *o); }

/* Record origins as read whole. Paths too deep are cut (reading more). */
static void read_whole(G *g, Origins *o) {
  for (int i = 0; i < o->n; i++) {
    ReadSet *rs = &g->ep->reads[o->v[i].call];
    push_path(&rs->v, &rs->n, &rs->cap, &o->v[i]);
  }
  free_origins(o);
}

static void extend(Origins *o, int kind, const char *name, int index) {
  for (int i = 0; i < o->n; i++) {
    RPath *p = &o->v[i];
    if (p->nsteps >= GWC_MAX_STEPS) continue;      /* stays at its prefix: reads more */
    p->steps[p->nsteps].kind = kind;
    p->steps[p->nsteps].name = name;
    p->steps[p->nsteps].index = index;
    p->nsteps++;
  }
}

static void copy_origins(Origins *dst, const Origins *src) {
  for (int i = 0; i < src->n; i++) add_origin(dst, src->v[i].call, &src->v[i]);
}

static void add_input(G *g, int root, const char *name) {
  InputSet *in = g->ep->inputs;
  for (int i = 0; i < in->n; i++)
    if (in->v[i].root == root && ((!name && !in->v[i].name) || (name && in->v[i].name && !strcmp(name, in->v[i].name))))
      return;
  if (in->n == in->cap) {
    in->cap = in->cap ? in->cap * 2 : 8;
    in->v = realloc(in->v, sizeof *in->v * (size_t)in->cap);
    if (!in->v) abort();
  }
  in->v[in->n].root = root;
  in->v[in->n].name = name;
  in->n++;
}

/* The value of e: its origins in *out (the caller owns them). `cur` is the
** origins of '.', inside lambdas. */
static void flow(G *g, Node *e, const Origins *cur, Origins *out);

static void use(G *g, Node *e, const Origins *cur) {
  Origins o = {0};
  flow(g, e, cur, &o);
  read_whole(g, &o);
}

static void use_list(G *g, Node *l, const Origins *cur) { for (; l; l = l->next) use(g, l, cur); }

static void flow(G *g, Node *e, const Origins *cur, Origins *out) {
  if (!e || g->depth > GWC_MAX_DEPTH) return;
  g->depth++;
  RPath empty = { 0, 0, {{0, 0, 0}} };
  switch (e->kind) {
  case E_NAME:
    if (e->op == R_CALL) { g->mark[e->idx] = 1; add_origin(out, e->idx, &empty); }
    else if (e->op == R_ROOT) add_input(g, e->idx, NULL);
    else if (e->op == R_PARAM) add_input(g, GW_ROOT_PARAM, e->s);
    break;
  case E_CUR: if (cur) copy_origins(out, cur); break;
  case E_FIELD:
    if (e->a->kind == E_NAME && e->a->op == R_ROOT) { add_input(g, e->a->idx, e->b->s); break; }
    flow(g, e->a, cur, out);
    extend(out, GW_STEP_FIELD, e->b->s, 0);
    break;
  case E_INDEX:
    if (e->a->kind == E_NAME && e->a->op == R_ROOT && e->b->kind == E_STR) { add_input(g, e->a->idx, e->b->s); break; }
    flow(g, e->a, cur, out);
    if (e->b->kind == E_STR) extend(out, GW_STEP_FIELD, e->b->s, 0);
    else if (e->b->kind == E_NUM && !(e->b->flags & NF_FRACTION) && e->b->ival < 1000000)
      extend(out, GW_STEP_INDEX, NULL, (int)e->b->ival);
    else if (e->b->kind == E_UN && e->b->op == OPR_NEG) extend(out, GW_STEP_EACH, NULL, 0);
    else { use(g, e->b, cur); read_whole(g, out); }   /* any key: keep the whole value */
    break;
  case E_SLICE:
    flow(g, e->a, cur, out);
    use(g, e->b, cur); use(g, e->c, cur);
    extend(out, GW_STEP_EACH, NULL, 0);
    break;
  case E_EACH:
    flow(g, e->a, cur, out);
    extend(out, GW_STEP_EACH, NULL, 0);
    break;
  case E_FILTER: {
    flow(g, e->a, cur, out);
    extend(out, GW_STEP_EACH, NULL, 0);
    use(g, e->b, out);
    break;
  }
  case E_SELECT: {
    /* a selection maps over arrays: field steps on an array reach its elements */
    Origins base = {0};
    flow(g, e->a, cur, &base);
    for (Node *x = e->list; x; x = x->next) {
      if (x->kind == E_SPREAD) use(g, x->a, &base);
      else if (x->a) use(g, x->a, &base);
      else {
        Origins f = {0};
        copy_origins(&f, &base);
        extend(&f, GW_STEP_FIELD, x->s, 0);
        read_whole(g, &f);
      }
    }
    free_origins(&base);
    break;
  }
  case E_OBJ:
    for (Node *x = e->list; x; x = x->next) {
      if (x->a) use(g, x->a, cur);
      else if (x->op == R_CALL) { Origins o = {0}; g->mark[x->idx] = 1; add_origin(&o, x->idx, &empty); read_whole(g, &o); }
      else if (x->op == R_ROOT) add_input(g, x->idx, NULL);
      else if (x->op == R_PARAM) add_input(g, GW_ROOT_PARAM, x->s);
    }
    break;
  case E_ARR: case E_ISTR: use_list(g, e->list, cur); break;
  case E_CALL:
    if (e->idx == GW_FN_sort_by && e->list && e->list->next) {
      flow(g, e->list, cur, out);                 /* the elements flow through */
      Origins el = {0};
      copy_origins(&el, out);
      extend(&el, GW_STEP_EACH, NULL, 0);
      use(g, e->list->next, &el);
      free_origins(&el);
    } else if ((e->idx == GW_FN_first || e->idx == GW_FN_last) && e->list) {
      flow(g, e->list, cur, out);
      extend(out, GW_STEP_EACH, NULL, 0);
    } else if (e->idx != GW_FN_env) {
      use_list(g, e->list, cur);
    }
    break;
  case E_BIN:
    if (e->op == OPR_COALESCE) { flow(g, e->a, cur, out); flow(g, e->b, cur, out); }
    else { use(g, e->a, cur); use(g, e->b, cur); }
    break;
  case E_UN: use(g, e->a, cur); break;
  default: break;
  }
  g->depth--;
}

/* Walk a sink expression: mark the calls it reads into `into` (ncalls). */
static void sink(G *g, Node *e, uint8_t *into) {
  if (!e) return;
  g->mark = into;
  use(g, e, NULL);
}

void gwc_path_text(const RPath *p, GwBuf *out) {
  if (p->nsteps == 0) { gw_buf_adds(out, "(whole value)"); return; }
  for (int i = 0; i < p->nsteps; i++) {
    const Step *s = &p->steps[i];
    if (s->kind == GW_STEP_FIELD) { if (i) gw_buf_addc(out, '.'); gw_buf_adds(out, s->name); }
    else if (s->kind == GW_STEP_INDEX) gw_buf_printf(out, "[%d]", s->index);
    else gw_buf_adds(out, "[*]");
  }
}

static int step_eq(const Step *a, const Step *b) {
  if (a->kind != b->kind) return 0;
  if (a->kind == GW_STEP_FIELD) return !strcmp(a->name, b->name);
  if (a->kind == GW_STEP_INDEX) return a->index == b->index;
  return 1;
}

/* Whether keeping a keeps everything b reaches: a is a prefix of b, where
** an "every element" step also covers a field or index step (an array's
** elements, or an object's values, are kept whole). */
static int is_prefix(const RPath *a, const RPath *b) {
  if (a->nsteps > b->nsteps) return 0;
  for (int i = 0; i < a->nsteps; i++)
    if (!step_eq(&a->steps[i], &b->steps[i]) && a->steps[i].kind != GW_STEP_EACH) return 0;
  return 1;
}

static int cmp_path(const void *x, const void *y) {
  const RPath *a = x, *b = y;
  GwBuf ba = {0}, bb = {0};
  gwc_path_text(a, &ba); gwc_path_text(b, &bb);
  int r = strcmp(gw_buf_cstr(&ba), gw_buf_cstr(&bb));
  gw_buf_free(&ba); gw_buf_free(&bb);
  return r;
}

/* Keep only the paths no other path is a prefix of; sort them. */
static void minimize(ReadSet *rs) {
  int n = 0;
  for (int i = 0; i < rs->n; i++) {
    int drop = 0;
    for (int j = 0; j < rs->n && !drop; j++) {
      if (i == j) continue;
      int jcovers = is_prefix(&rs->v[j], &rs->v[i]), icovers = is_prefix(&rs->v[i], &rs->v[j]);
      if (jcovers && (!icovers || j < i)) drop = 1;
    }
    if (!drop) rs->v[n++] = rs->v[i];
  }
  rs->n = n;
  if (n > 1) qsort(rs->v, (size_t)n, sizeof *rs->v, cmp_path);
}

/* Depth-first search for a cycle through the call graph; prints it once. */
static int cycle_dfs(GwcCompiler *C, Ep *ep, int i, int *color, int *stack, int depth) {
  color[i] = 1;
  stack[depth] = i;
  int n = ep->ncalls;
  for (int j = 0; j < n; j++) {
    if (!ep->deps[i * n + j]) continue;
    if (color[j] == 1) {
      GwBuf b = {0};
      int k = depth;
      while (k > 0 && stack[k] != j) k--;
      for (int m = k; m <= depth; m++) gw_buf_printf(&b, "%s -> ", ep->calls[stack[m]]->s);
      gw_buf_adds(&b, ep->calls[j]->s);
      gwc_diag_node(C, DIAG_ERROR, ep->calls[i], "dependency cycle between calls: %s", gw_buf_cstr(&b));
      gw_buf_free(&b);
      return 1;
    }
    if (color[j] == 0 && cycle_dfs(C, ep, j, color, stack, depth + 1)) return 1;
  }
  color[i] = 2;
  return 0;
}

static Node *call_opt(Node *call, const char *name) {
  for (Node *o = call->list; o; o = o->next) if (!strcmp(o->s, name)) return o;
  return NULL;
}

static int reads_input(const Ep *ep, int root, const char *name) {
  for (int i = 0; i < ep->inputs->n; i++)
    if (ep->inputs->v[i].root == root && (!ep->inputs->v[i].name || !strcmp(ep->inputs->v[i].name, name))) return 1;
  return 0;
}

/* A cached endpoint with auth must hold who is calling in its key (the
** inputs it reads and its `by` values): jwt.sub for a JWT policy,
** client.name for an API-key one. Otherwise one user's answer would be
** another's: it is not cached (codegen writes cache 0) and gwc says so. */
static void cache_identity(GwcCompiler *C, Ep *ep) {
  int need_sub = ep->has_jwt && !reads_input(ep, GW_ROOT_JWT, "sub");
  int need_name = ep->has_apikey && !reads_input(ep, GW_ROOT_CLIENT, "name");
  if (!need_sub && !need_name) return;
  ep->cache_off = 1;
  gwc_diag_node(C, DIAG_WARNING, ep->cache,
                "the cache key of an endpoint with auth holds no identity, so it is not cached (add 'by %s')",
                need_sub && need_name ? "jwt.sub, client.name" : need_sub ? "jwt.sub" : "client.name");
}

static void graph_endpoint(GwcCompiler *C, Ep *ep) {
  int n = ep->ncalls;
  G g = { C, ep, NULL, 0 };
  ep->deps = gw_arena_alloc(&C->arena, (size_t)(n * n) + 1);
  ep->rdeps = gw_arena_alloc(&C->arena, (size_t)n + 1);
  ep->gdeps = gw_arena_alloc(&C->arena, sizeof(uint8_t *) * (size_t)(ep->nfails + 1));
  ep->reads = gw_arena_alloc(&C->arena, sizeof(ReadSet) * (size_t)(n + 1));
  ep->inputs = gw_arena_alloc(&C->arena, sizeof(InputSet));
  uint8_t *used = gw_arena_alloc(&C->arena, (size_t)n + 1);
  for (int i = 0; i < n; i++) {
    Node *c = ep->calls[i];
    uint8_t *row = ep->deps + i * n;
    sink(&g, c->c, row);
    static const char *const opts[] = { "query", "headers", "body", "if", "default" };
    for (int k = 0; k < 5; k++) { Node *o = call_opt(c, opts[k]); if (o) sink(&g, o->a, row); }
    for (int j = 0; j < n; j++) used[j] |= row[j];
  }
  for (int i = 0; i < ep->nfails; i++) {
    ep->gdeps[i] = gw_arena_alloc(&C->arena, (size_t)n + 1);
    sink(&g, ep->fails[i]->b, ep->gdeps[i]);
    sink(&g, ep->fails[i]->c, ep->gdeps[i]);
    for (int j = 0; j < n; j++) used[j] |= ep->gdeps[i][j];
  }
  if (ep->respond) sink(&g, ep->respond->b, ep->rdeps);
  for (int i = 0; i < ep->nheaders; i++) sink(&g, ep->headers[i]->b, ep->rdeps);
  if (ep->proxy && ep->proxy->c) sink(&g, ep->proxy->c, ep->rdeps);
  if (ep->cache) for (Node *x = ep->cache->list; x; x = x->next) sink(&g, x, used);   /* used has n + 1 bytes */
  for (int j = 0; j < n; j++) used[j] |= ep->rdeps[j];
  for (int i = 0; i < n; i++) minimize(&ep->reads[i]);

  int *color = calloc((size_t)n + 1, sizeof(int)), *stack = calloc((size_t)n + 1, sizeof(int));
  if (!color || !stack) abort();
  for (int i = 0; i < n; i++) if (!color[i] && cycle_dfs(C, ep, i, color, stack, 0)) break;
  free(color); free(stack);

  for (int i = 0; i < n; i++)
    if (!used[i] && ep->calls[i]->s[0] != '_')
      gwc_diag_node(C, DIAG_WARNING, ep->calls[i], "unused binding '%s' (the call is still made; name it '_%s' to silence this)",
                    ep->calls[i]->s, ep->calls[i]->s);
  if (ep->cache) cache_identity(C, ep);
}

void gwc_graph(GwcCompiler *C) {
  for (int i = 0; i < C->nendpoints; i++) graph_endpoint(C, C->endpoints[i]->sem);
}

/* The read sets and input sets are malloc'd; gwc_free() releases them. */
void gwc_graph_free(GwcCompiler *C) {
  for (int i = 0; i < C->nendpoints; i++) {
    Ep *ep = C->endpoints[i]->sem;
    if (!ep || !ep->reads) continue;
    for (int k = 0; k < ep->ncalls; k++) { free(ep->reads[k].v); ep->reads[k].v = NULL; }
    free(ep->inputs->v); ep->inputs->v = NULL;
  }
}
