/*
** gwc_codegen.c — code generation: the checked AST and its call graph
** become a GwProgram (records per gw_format.def, instructions per
** gw_opcodes.def), which gw_program_write() serializes. Every image is
** loaded back through the verifier before it is handed out, so gwc never
** writes a program gwd would refuse.
**
** Expressions compile to small stack-machine blocks. A postfix chain with
** a projection (`a[*].b`, `a[? c].b`) compiles the rest of the chain into a
** lambda block run per element; selections and filters are lambdas too.
** Lambdas always get a higher block index than the block that runs them.
*/
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "gwc_graph.h"

typedef struct CgBlock {
  GwBuf    code, lines;
  int      depth, maxdepth;
  uint32_t index;
  int      file;
} CgBlock;

typedef struct Cg {
  GwcCompiler *C;
  GwProgram   *p;
  uint32_t     cap[32];         /* capacities of the program's arrays, by section id */
  GwBuf        blob;
  uint32_t    *hash; uint32_t hcap;   /* constant dedup: open addressing, GW_NONE = empty */
  CgBlock    **done;            /* finished blocks, by index */
  uint32_t     ndone, capdone;
  CgBlock     *cur;
  uint32_t     ep;              /* endpoint being compiled, or GW_NONE */
  Ep          *epi;
  int          file;
  uint32_t    *file_const;      /* per source file: its GwFile index */
} Cg;

/* ---- records ------------------------------------------------------------------- */

static uint32_t add_rec(Cg *g, void **arr, uint32_t *n, int sec, size_t size) {
  if (*n == g->cap[sec]) {
    g->cap[sec] = g->cap[sec] ? g->cap[sec] * 2 : 16;
    *arr = realloc(*arr, size * g->cap[sec]);
    if (!*arr) abort();
  }
  memset((char *)*arr + size * *n, 0xFF, size);   /* every field GW_NONE until set */
  return (*n)++;
}
#define ADD(sec) add_rec(g, (void **)&g->p->sec, &g->p->n_##sec, GW_SEC_##sec, sizeof *g->p->sec)

/* ---- constants --------------------------------------------------------------- */

static uint32_t hash_bytes(int kind, const char *s, size_t n) {
  uint32_t h = 2166136261u ^ (uint32_t)kind;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static void rehash(Cg *g) {
  uint32_t cap = g->hcap ? g->hcap * 2 : 1024;
  uint32_t *h = malloc(sizeof *h * cap);
  if (!h) abort();
  memset(h, 0xFF, sizeof *h * cap);
  for (uint32_t k = 0; k < g->p->n_consts; k++) {
    const GwConst *c = &g->p->consts[k];
    uint32_t i = hash_bytes((int)c->kind, g->blob.p + c->off, c->len) & (cap - 1);
    while (h[i] != GW_NONE) i = (i + 1) & (cap - 1);
    h[i] = k;
  }
  free(g->hash);
  g->hash = h; g->hcap = cap;
}

static uint32_t konst(Cg *g, int kind, const char *s, size_t n) {
  if (g->p->n_consts * 2 >= g->hcap) rehash(g);
  uint32_t i = hash_bytes(kind, s, n) & (g->hcap - 1);
  for (; g->hash[i] != GW_NONE; i = (i + 1) & (g->hcap - 1)) {
    const GwConst *c = &g->p->consts[g->hash[i]];
    if ((int)c->kind == kind && c->len == n && !memcmp(g->blob.p + c->off, s, n)) return g->hash[i];
  }
  uint32_t k = ADD(consts);
  GwConst *c = &g->p->consts[k];
  c->kind = (uint32_t)kind; c->off = (uint32_t)g->blob.n; c->len = (uint32_t)n;
  gw_buf_add(&g->blob, s, n);
  gw_buf_addc(&g->blob, 0);          /* every constant is also a C string */
  g->hash[i] = k;
  return k;
}
static uint32_t kstr(Cg *g, const char *s) { return konst(g, 0, s, strlen(s)); }
static uint32_t kstro(Cg *g, const Node *v) { return v && v->kind == V_STR ? kstr(g, v->s) : GW_NONE; }

static uint32_t env_ref(Cg *g, const char *name, const char *dflt) {
  uint32_t kn = kstr(g, name), kd = dflt ? kstr(g, dflt) : GW_NONE;
  for (uint32_t i = 0; i < g->p->n_envs; i++)
    if (g->p->envs[i].name == kn && g->p->envs[i].dflt == kd) return i;
  uint32_t i = ADD(envs);
  g->p->envs[i].name = kn; g->p->envs[i].dflt = kd;
  return i;
}

static uint32_t line_of(Cg *g, const Node *n) {
  if (!n) return 0;
  int line, col;
  gwc_line_col(g->C, n->file, n->start < n->off ? n->start : n->off, &line, &col);
  return (uint32_t)line;
}

/* ---- blocks ------------------------------------------------------------------------ */

static CgBlock *begin_block(Cg *g, int lambda, uint32_t endpoint, int file) {
  uint32_t b = ADD(blocks);
  GwBlock *B = &g->p->blocks[b];
  B->endpoint = endpoint;
  B->lambda = (uint32_t)lambda;
  B->file = g->file_const[file];
  CgBlock *cb = calloc(1, sizeof *cb);
  if (!cb) abort();
  cb->index = b;
  cb->file = file;
  return cb;
}

static void emit(Cg *g, int op, uint32_t a, const Node *at) {
  CgBlock *cb = g->cur;
  if (a > GW_MAX_A) {
    gwc_diag_node(g->C, DIAG_ERROR, at, "program too large (operand out of range)");
    a = 0;
  }
  gw_buf_add_u32(&cb->code, GW_INS(op, a));
  gw_buf_add_u32(&cb->lines, line_of(g, at));
  const GwOpInfo *O = &gw_ops[op];
  int pops = O->pops;
  if (O->fmt == GW_FMT_COUNT) pops = (int)a;
  if (O->fmt == GW_FMT_FUNC) pops = (int)(a >> 16);
  cb->depth += O->pushes - pops;
  if (op == GW_OP_JNOTNULL || op == GW_OP_JTRUE || op == GW_OP_JFALSE) cb->depth--;   /* fall-through pops */
  if (cb->depth > cb->maxdepth) cb->maxdepth = cb->depth;
}

static uint32_t here(Cg *g) { return (uint32_t)(g->cur->code.n / 4); }

static void patch(Cg *g, uint32_t at) {
  unsigned char *p = (unsigned char *)g->cur->code.p + 4 * at;
  uint32_t ins = gw_get_u32(p);
  gw_put_u32(p, GW_INS(GW_INS_OP(ins), here(g) - at - 1));
}

static uint32_t end_block(Cg *g, CgBlock *cb) {
  GwBlock *B = &g->p->blocks[cb->index];
  B->max_stack = (uint32_t)(cb->maxdepth > 0 ? cb->maxdepth : 1);
  if (cb->maxdepth > (int)GW_MAX_STACK)
    gwc_error_plain(g->C, "an expression needs more than %u stack slots", GW_MAX_STACK);
  if (cb->index >= g->capdone) {
    uint32_t cap = g->capdone ? g->capdone * 2 : 256;
    while (cap <= cb->index) cap *= 2;
    g->done = realloc(g->done, sizeof *g->done * cap);
    if (!g->done) abort();
    memset(g->done + g->capdone, 0, sizeof *g->done * (cap - g->capdone));
    g->capdone = cap;
  }
  g->done[cb->index] = cb;
  return cb->index;
}

static void cg_expr(Cg *g, Node *e);

/* Compile e into a new block; returns its index (GW_NONE for no e). */
static uint32_t cg_block(Cg *g, Node *e, int lambda, void (*fn)(Cg *, Node *)) {
  if (!e) return GW_NONE;
  CgBlock *saved = g->cur;
  CgBlock *cb = begin_block(g, lambda, g->ep, e->file);
  g->cur = cb;
  fn ? fn(g, e) : cg_expr(g, e);
  emit(g, GW_OP_RETURN, 0, e);
  g->cur = saved;
  return end_block(g, cb);
}

/* ---- expressions ---------------------------------------------------------------- */

static int is_postfix(const Node *e) {
  return e && (e->kind == E_FIELD || e->kind == E_INDEX || e->kind == E_SLICE ||
               e->kind == E_EACH || e->kind == E_FILTER || e->kind == E_SELECT);
}

static void cg_name(Cg *g, Node *e) {
  switch (e->op) {
  case R_PARAM: emit(g, GW_OP_PARAM, (uint32_t)e->idx, e); break;
  case R_CALL:  emit(g, GW_OP_RESULT, (uint32_t)e->idx, e); break;
  case R_ROOT:  emit(g, GW_OP_ROOT, (uint32_t)e->idx, e); break;
  default:      emit(g, GW_OP_NULL, 0, e); break;
  }
}

/* Selection body: `.` is the element. */
static void cg_selection(Cg *g, Node *sel) {
  emit(g, GW_OP_OBJECT, 0, sel);
  for (Node *x = sel->list; x; x = x->next) {
    if (x->kind == E_SPREAD) { cg_expr(g, x->a); emit(g, GW_OP_SPREAD, 0, x); continue; }
    if (x->a) cg_expr(g, x->a);
    else { emit(g, GW_OP_CUR, 0, x); emit(g, GW_OP_FIELD, kstr(g, x->s), x); }
    emit(g, GW_OP_SETKEY, kstr(g, x->s), x);
  }
}

typedef struct Chain { Node **ops; int n; } Chain;
static Chain *g_chain;   /* the chain a projection lambda continues (set around cg_block) */
static int g_chain_from;

static void cg_ops(Cg *g, Node **ops, int from);

static void cg_chain_rest(Cg *g, Node *at) {
  Node **ops = g_chain->ops;
  int from = g_chain_from;
  emit(g, GW_OP_CUR, 0, at);
  cg_ops(g, ops, from);
}

static void cg_filter_cond(Cg *g, Node *f) { cg_expr(g, f->b); }

/* Apply ops[from], ops[from-1], … ops[0] to the value on the stack. */
static void cg_ops(Cg *g, Node **ops, int from) {
  for (int i = from; i >= 0; i--) {
    Node *op = ops[i];
    switch (op->kind) {
    case E_FIELD: emit(g, GW_OP_FIELD, kstr(g, op->b->s), op); break;
    case E_INDEX:
      if (op->b->kind == E_STR) emit(g, GW_OP_FIELD, kstr(g, op->b->s), op);
      else { cg_expr(g, op->b); emit(g, GW_OP_INDEX, 0, op); }
      break;
    case E_SLICE:
      if (op->b) cg_expr(g, op->b); else emit(g, GW_OP_NULL, 0, op);
      if (op->c) cg_expr(g, op->c); else emit(g, GW_OP_NULL, 0, op);
      emit(g, GW_OP_SLICE, 0, op);
      break;
    case E_SELECT: emit(g, GW_OP_MAP, cg_block(g, op, 1, cg_selection), op); break;
    case E_FILTER:
      emit(g, GW_OP_FILTER, cg_block(g, op, 1, cg_filter_cond), op);
      if (i == 0) return;
      /* fall through: the rest projects over the kept elements */
      /* FALLTHROUGH */
    case E_EACH: {
      Chain ch = { ops, i };
      Chain *saved = g_chain; int savedfrom = g_chain_from;
      g_chain = &ch; g_chain_from = i - 1;
      uint32_t b = i > 0 ? cg_block(g, op, 1, cg_chain_rest) : GW_NONE;
      g_chain = saved; g_chain_from = savedfrom;
      if (b == GW_NONE) {           /* a[*] alone: the elements (values of an object) */
        CgBlock *s = g->cur;
        CgBlock *cb = begin_block(g, 1, g->ep, op->file);
        g->cur = cb;
        emit(g, GW_OP_CUR, 0, op);
        emit(g, GW_OP_RETURN, 0, op);
        g->cur = s;
        b = end_block(g, cb);
      }
      if (op->kind == E_EACH || i > 0) emit(g, GW_OP_EACH, b, op);
      return;
    }
    default: break;
    }
  }
}

static void cg_chain(Cg *g, Node *e) {
  Node *stack[512];
  int n = 0;
  Node *x = e;
  do { stack[n++] = x; x = x->a; } while (n < 512 && is_postfix(x) && !(x->flags & NF_PAREN));
  cg_expr(g, x);
  cg_ops(g, stack, n - 1);
}

static void cg_sortkey(Cg *g, Node *k) { cg_expr(g, k); }

static void cg_expr(Cg *g, Node *e) {
  if (!e) { emit(g, GW_OP_NULL, 0, NULL); return; }
  switch (e->kind) {
  case E_NULL: emit(g, GW_OP_NULL, 0, e); break;
  case E_TRUE: emit(g, GW_OP_TRUE, 0, e); break;
  case E_FALSE: emit(g, GW_OP_FALSE, 0, e); break;
  case E_NUM: emit(g, GW_OP_CONST, konst(g, 1, e->s, e->n), e); break;
  case E_STR: emit(g, GW_OP_CONST, konst(g, 0, e->s, e->n), e); break;
  case E_ISTR: {
    uint32_t n = 0;
    for (Node *x = e->list; x; x = x->next) {
      if (x->kind == E_STR && x->n == 0) continue;
      cg_expr(g, x);
      n++;
    }
    if (n == 0) { emit(g, GW_OP_CONST, kstr(g, ""), e); break; }
    emit(g, GW_OP_CONCAT, n, e);
    break;
  }
  case E_NAME: cg_name(g, e); break;
  case E_CUR: emit(g, GW_OP_CUR, 0, e); break;
  case E_FIELD: case E_INDEX: case E_SLICE: case E_EACH: case E_FILTER: case E_SELECT:
    cg_chain(g, e);
    break;
  case E_OBJ:
    emit(g, GW_OP_OBJECT, 0, e);
    for (Node *x = e->list; x; x = x->next) {
      if (x->kind == E_SPREAD) { cg_expr(g, x->a); emit(g, GW_OP_SPREAD, 0, x); continue; }
      if (x->a) cg_expr(g, x->a); else cg_name(g, x);
      emit(g, GW_OP_SETKEY, kstr(g, x->s), x);
    }
    break;
  case E_ARR:
    emit(g, GW_OP_ARRAY, 0, e);
    for (Node *x = e->list; x; x = x->next) { cg_expr(g, x); emit(g, GW_OP_APPEND, 0, x); }
    break;
  case E_CALL: {
    if (e->idx == GW_FN_env) {
      emit(g, GW_OP_ENV, env_ref(g, e->list->s, e->list->next ? e->list->next->s : NULL), e);
      break;
    }
    if (e->idx == GW_FN_sort_by) {
      cg_expr(g, e->list);
      emit(g, GW_OP_SORTBY, cg_block(g, e->list->next, 1, cg_sortkey), e);
      break;
    }
    uint32_t n = 0;
    for (Node *x = e->list; x; x = x->next) { cg_expr(g, x); n++; }
    emit(g, GW_OP_FUNC, GW_FUNC_A(e->idx < 0 ? 0 : e->idx, n), e);
    break;
  }
  case E_BIN: {
    if (e->op == OPR_COALESCE || e->op == OPR_OR || e->op == OPR_AND) {
      cg_expr(g, e->a);
      uint32_t j = here(g);
      emit(g, e->op == OPR_COALESCE ? GW_OP_JNOTNULL : e->op == OPR_OR ? GW_OP_JTRUE : GW_OP_JFALSE, 1, e);
      cg_expr(g, e->b);
      if (e->op != OPR_COALESCE) emit(g, GW_OP_TRUTHY, 0, e);
      patch(g, j);
      break;
    }
    static const int ops[] = {
      [OPR_EQ] = GW_OP_EQ, [OPR_NE] = GW_OP_NE, [OPR_LT] = GW_OP_LT, [OPR_LE] = GW_OP_LE,
      [OPR_GT] = GW_OP_GT, [OPR_GE] = GW_OP_GE, [OPR_IN] = GW_OP_IN, [OPR_ADD] = GW_OP_ADD,
      [OPR_SUB] = GW_OP_SUB, [OPR_MUL] = GW_OP_MUL, [OPR_DIV] = GW_OP_DIV, [OPR_MOD] = GW_OP_MOD };
    cg_expr(g, e->a);
    cg_expr(g, e->b);
    emit(g, ops[e->op], 0, e);
    break;
  }
  case E_UN:
    cg_expr(g, e->a);
    emit(g, e->op == OPR_NOT ? GW_OP_NOT : GW_OP_NEG, 0, e);
    break;
  default:
    emit(g, GW_OP_NULL, 0, e);
  }
}

/* A URL template: interpolated values are encoded for their position. */
static void cg_url(Cg *g, Node *e) {
  if (e->kind != E_ISTR) { cg_expr(g, e); return; }
  int in_query = 0;
  uint32_t n = 0;
  for (Node *x = e->list; x; x = x->next) {
    if (x->kind == E_STR) {
      if (strchr(x->s, '?')) in_query = 1;
      if (x->n == 0) continue;
      cg_expr(g, x);
    } else {
      cg_expr(g, x);
      int tail = x->kind == E_NAME && x->op == R_PARAM && g->epi->params[x->idx].seg == GW_SEG_TAIL;
      emit(g, in_query ? GW_OP_ENCQUERY : tail ? GW_OP_ENCTAIL : GW_OP_ENCSEG, 0, x);
    }
    n++;
  }
  emit(g, GW_OP_CONCAT, n, e);
}

/* ---- declarations ------------------------------------------------------------------ */

static uint32_t u32v(const Node *o, uint32_t dflt) {
  if (!o || !o->list) return dflt;
  const Node *v = o->list;
  uint64_t x = v->kind == V_NUM || v->kind == V_DUR || v->kind == V_SIZE ? v->ival : dflt;
  if (v->kind == V_BOOL) x = (uint64_t)v->op;
  return x >= GW_NONE ? GW_NONE - 1 : (uint32_t)x;
}

static uint32_t optv(Node *list, const char *name, uint32_t dflt) { return u32v(gwc_opt(list, name), dflt); }

/* A file named in the program: resolved against the naming file's directory. */
static uint32_t file_path(Cg *g, const Node *v) {
  if (!v || v->kind != V_STR) return GW_NONE;
  if (v->s[0] == '/') return kstr(g, v->s);
  GwcFile *f = g->C->files[v->file];
  char real[PATH_MAX];
  const char *dir = realpath(f->dir, real) ? real : f->dir;
  char *p = gw_arena_printf(&g->C->arena, "%s/%s", dir, v->s);
  return kstr(g, p);
}

static Node *first_val(Node *list, const char *name) {
  Node *o = gwc_opt(list, name);
  return o ? o->list : NULL;
}

static uint32_t strlist(Cg *g, Node *list, const char *name, uint32_t *count) {
  uint32_t first = g->p->n_strlist;
  *count = 0;
  Node *o = gwc_opt(list, name);
  Node *v = o ? (o->a ? o->a : o->list) : NULL;
  if (v && (v->kind == V_LIST || v->kind == E_ARR))
    for (Node *x = v->list; x; x = x->next) {
      uint32_t i = ADD(strlist);
      g->p->strlist[i].str = kstr(g, x->s);
      (*count)++;
    }
  return first;
}

static void cg_server(Cg *g, Node *d) {
  Node *l = d->list;
  uint32_t s = ADD(servers);
  g->p->servers[s].listen_first = g->p->n_listens;
  uint32_t nl = 0;
  for (Node *o = l; o; o = o->next) {
    if (strcmp(o->s, "listen") || !o->list) continue;
    uint32_t li = ADD(listens);
    GwListen *L = &g->p->listens[li];
    L->addr = kstr(g, o->list->s);
    L->tls = 0;
    L->cert_first = g->p->n_certs;
    L->cert_count = 0;
    if (o->list->next) {
      const char *cert = NULL;
      g->p->listens[li].tls = 1;
      for (Node *x = o->list->next->list; x; x = x->next) {
        if (!strcmp(x->s, "cert")) cert = x->list ? x->list->s : NULL;
        else if (!strcmp(x->s, "key") && cert && x->list) {
          uint32_t c = ADD(certs);
          /* both names are resolved against the .gw file's directory */
          Node tmp = *x->list; tmp.s = cert;
          g->p->certs[c].cert = file_path(g, &tmp);
          g->p->certs[c].key = file_path(g, x->list);
          g->p->listens[li].cert_count++;
          cert = NULL;
        }
      }
    }
    nl++;
  }
  GwServer S;
  Node *admin = first_val(l, "admin"), *rv = first_val(l, "redis");
  S.listen_first = g->p->servers[s].listen_first;
  S.listen_count = nl;
  S.admin = admin ? kstr(g, admin->s) : GW_NONE;      /* "host:port" or a port number */
  S.drain_ms = optv(l, "drain", GW_NONE);
  S.workers = optv(l, "workers", GW_NONE);
  S.max_body = optv(l, "max_body", GW_NONE);
  S.max_header = optv(l, "max_header", GW_NONE);
  S.max_headers = optv(l, "max_headers", GW_NONE);
  S.max_request_line = optv(l, "max_request_line", GW_NONE);
  S.header_timeout_ms = optv(l, "header_timeout", GW_NONE);
  S.body_timeout_ms = optv(l, "body_timeout", GW_NONE);
  S.idle_timeout_ms = optv(l, "idle_timeout", GW_NONE);
  S.max_connections = optv(l, "max_connections", GW_NONE);
  S.cache_size = optv(l, "cache_size", GW_NONE);
  S.proxies_first = strlist(g, l, "trusted_proxies", &S.proxies_count);
  S.redis = kstro(g, rv);
  S.redis_env = rv && rv->kind == V_ENV && rv->list
              ? env_ref(g, rv->list->s, rv->list->next ? rv->list->next->s : NULL) : GW_NONE;
  S.redis_timeout_ms = optv(l, "redis_timeout", GW_NONE);
  S.max_json_depth = optv(l, "max_json_depth", GW_NONE);
  S.limit_keys = optv(l, "limit_keys", GW_NONE);
  g->p->servers[s] = S;
}

static void cg_backend(Cg *g, Node *d) {
  Node *l = d->list;
  uint32_t uf = g->p->n_urls, nu = 0;
  for (Node *o = l; o; o = o->next) {
    if (strcmp(o->s, "url") || !o->list) continue;
    uint32_t u = ADD(urls);
    if (o->list->kind == V_ENV) {
      Node *a = o->list->list;
      uint32_t e = env_ref(g, a ? a->s : "", a && a->next ? a->next->s : NULL);
      g->p->urls[u].env = e;
    } else {
      g->p->urls[u].str = kstr(g, o->list->s);
    }
    nu++;
  }
  Node *br = first_val(l, "breaker"), *he = first_val(l, "health"), *tls = first_val(l, "tls");
  Node *hd = gwc_opt(l, "headers");
  uint32_t hb = GW_NONE;
  if (hd && hd->a) { uint32_t saved = g->ep; g->ep = GW_NONE; hb = cg_block(g, hd->a, 0, NULL); g->ep = saved; }
  /* the record is filled locally and stored once: adding constants may move
  ** other arrays, never this one, but one store keeps that out of mind */
  GwBackend B;
  Node *bal = first_val(l, "balance"), *hp = he ? first_val(he->list, "path") : NULL;
  B.name = kstr(g, d->s);
  B.url_first = uf; B.url_count = nu;
  B.balance = bal && !strcmp(bal->s, "least_requests") ? 1 : 0;
  B.timeout_ms = optv(l, "timeout", 5000);
  B.connect_timeout_ms = optv(l, "connect_timeout", 1000);
  B.retries = optv(l, "retries", 0);
  B.max_connections = optv(l, "max_connections", 256);
  B.max_response = optv(l, "max_response", 8u << 20);
  B.breaker = br ? 1 : 0;
  B.br_failures = br ? optv(br->list, "failures", 5) : 5;
  B.br_window_ms = br ? optv(br->list, "window", 10000) : 10000;
  B.br_cooldown_ms = br ? optv(br->list, "cooldown", 10000) : 10000;
  B.health_path = he ? kstr(g, hp ? hp->s : "/health") : GW_NONE;
  B.health_every_ms = he ? optv(he->list, "every", 5000) : 5000;
  B.health_failures = he ? optv(he->list, "failures", 5) : 5;   /* passive health: failed calls in a row */
  B.health_cooldown_ms = he ? optv(he->list, "cooldown", 10000) : 10000;
  B.headers = hb;
  B.tls_ca = tls ? file_path(g, first_val(tls->list, "ca")) : GW_NONE;
  B.tls_cert = tls ? file_path(g, first_val(tls->list, "cert")) : GW_NONE;
  B.tls_key = tls ? file_path(g, first_val(tls->list, "key")) : GW_NONE;
  B.tls_verify = tls ? optv(tls->list, "verify", 1) : 1;
  B.file = g->file_const[d->file];
  B.line = line_of(g, d);
  uint32_t b = ADD(backends);     /* ADD may move the array: index after it */
  g->p->backends[b] = B;
}

static void cg_auth(Cg *g, Node *d) {
  Node *l = d->list;
  uint32_t req = GW_NONE;
  Node *r = gwc_opt(l, "require");
  if (r && r->a) { uint32_t saved = g->ep; g->ep = GW_NONE; req = cg_block(g, r->a, 0, NULL); g->ep = saved; }
  uint32_t algs = 0;
  Node *al = gwc_opt(l, "algorithms");
  for (Node *v = al ? al->list : NULL; v; v = v->next)
    for (int i = 0; gw_jwt_algs[i]; i++) if (!strcmp(gw_jwt_algs[i], v->s)) algs |= 1u << i;
  uint32_t name = kstr(g, d->s);
  uint32_t kf = file_path(g, first_val(l, "key file"));
  uint32_t jf = file_path(g, first_val(l, "jwks file"));
  uint32_t ju = kstro(g, first_val(l, "jwks url"));
  Node *jo = gwc_opt(l, "jwks url");
  uint32_t iss = kstro(g, first_val(l, "issuer")), aud = kstro(g, first_val(l, "audience"));
  uint32_t keys = file_path(g, first_val(l, "keys file"));
  uint32_t from = 0, from_name, bearer = 0;
  Node *fh = gwc_opt(l, "from header"), *fc = gwc_opt(l, "from cookie"), *fq = gwc_opt(l, "from query");
  if (d->op == 0) {
    if (fc) { from = 1; from_name = kstr(g, fc->list->s); }
    else if (fh) { from_name = kstr(g, fh->list->s); bearer = fh->list->next ? 1 : 0; }
    else { from_name = kstr(g, "Authorization"); bearer = 1; }
  } else {
    if (fq) { from = 2; from_name = kstr(g, fq->list->s); }
    else from_name = kstr(g, fh ? fh->list->s : "X-Api-Key");
  }
  uint32_t a = ADD(auths);
  GwAuth *A = &g->p->auths[a];
  A->name = name; A->type = (uint32_t)d->op; A->algs = algs; A->key_file = kf; A->jwks_file = jf;
  A->jwks_url = ju;
  A->jwks_refresh_ms = jo && jo->list && jo->list->next ? (uint32_t)jo->list->next->ival : 600000;
  A->issuer = iss; A->audience = aud; A->leeway_ms = optv(l, "leeway", 0);
  A->from = from; A->from_name = from_name; A->bearer = bearer; A->require = req;
  A->keys_file = keys; A->file = g->file_const[d->file]; A->line = line_of(g, d);
}

static void cg_limit(Cg *g, Node *d) {
  Node *by = NULL, *burst = NULL, *store = NULL, *onerr = NULL;
  for (Node *o = d->list; o; o = o->next) {
    if (!strcmp(o->s, "by")) by = o;
    else if (!strcmp(o->s, "burst")) burst = o;
    else if (!strcmp(o->s, "store")) store = o;
    else if (!strcmp(o->s, "on_error")) onerr = o;
  }
  uint32_t bb = GW_NONE;
  if (by && by->a) { uint32_t saved = g->ep; g->ep = GW_NONE; bb = cg_block(g, by->a, 0, NULL); g->ep = saved; }
  uint32_t name = kstr(g, d->s);
  uint32_t i = ADD(limits);
  GwLimit *L = &g->p->limits[i];
  L->name = name;
  L->count = (uint32_t)(d->a->ival ? d->a->ival : 1);
  L->period_ms = (uint32_t)(d->a->ival2 ? d->a->ival2 : 1000);
  L->burst = burst ? u32v(burst, L->count) : L->count;
  L->by = bb;
  L->store = store && store->list && !strcmp(store->list->s, "redis") ? 1 : 0;
  L->on_error = onerr && onerr->list && !strcmp(onerr->list->s, "deny") ? 1 : 0;
}

static void cg_cors(Cg *g, Node *d) {
  Node *l = d->list;
  uint32_t name = kstr(g, d->s), oc, mc, hc, ec;
  uint32_t of = strlist(g, l, "origins", &oc), mf = strlist(g, l, "methods", &mc);
  uint32_t hf = strlist(g, l, "headers", &hc), ef = strlist(g, l, "expose_headers", &ec);
  uint32_t i = ADD(corses);
  GwCors *c = &g->p->corses[i];
  c->name = name;
  c->origins_first = of; c->origins_count = oc; c->methods_first = mf; c->methods_count = mc;
  c->headers_first = hf; c->headers_count = hc; c->expose_first = ef; c->expose_count = ec;
  c->credentials = optv(l, "credentials", 0);
  c->max_age_ms = optv(l, "max_age", 600000);
}

static int method_index(const char *m) {
  for (int i = 0; i < GW_METHOD_MAX; i++) if (!strcmp(gw_method_names[i], m)) return i;
  return GW_METHOD_GET;
}

static Node *call_opt(Node *call, const char *name) {
  for (Node *o = call->list; o; o = o->next) if (!strcmp(o->s, name)) return o;
  return NULL;
}

static uint32_t deps_of(Cg *g, const uint8_t *row, int n, uint32_t *count) {
  uint32_t first = g->p->n_deps;
  *count = 0;
  for (int j = 0; j < n; j++)
    if (row[j]) { uint32_t d = ADD(deps); g->p->deps[d].call = (uint32_t)j; (*count)++; }
  return first;
}

static uint32_t optblock(Cg *g, Node *o, void (*fn)(Cg *, Node *)) {
  return o && o->a ? cg_block(g, o->a, 0, fn) : GW_NONE;
}

static void cg_endpoint(Cg *g, Node *d) {
  Ep *ep = d->sem;
  uint32_t e = ADD(endpoints);
  g->ep = e;
  g->epi = ep;
  GwEndpoint E;
  memset(&E, 0xFF, sizeof E);
  E.method = (uint32_t)(ep->method < 0 ? 0 : ep->method);
  E.path = kstr(g, d->s);
  E.seg_first = g->p->n_segs;
  for (int i = 0; i < ep->nsegs; i++) {
    uint32_t s = ADD(segs);
    g->p->segs[s].kind = (uint32_t)ep->segs[i].kind;
    g->p->segs[s].text = kstr(g, ep->segs[i].text ? ep->segs[i].text : "");
  }
  E.seg_count = (uint32_t)ep->nsegs;
  E.param_count = (uint32_t)ep->nparams;
  E.auth_first = g->p->n_authrefs; E.auth_count = 0; E.auth_none = 0;
  if (ep->auth && ep->auth->op == 1) E.auth_none = 1;
  else if (ep->auth)
    for (Node *x = ep->auth->list; x; x = x->next) {
      uint32_t r = ADD(authrefs);
      g->p->authrefs[r].auth = (uint32_t)(x->idx < 0 ? 0 : x->idx);
      E.auth_count++;
    }
  E.limit_first = g->p->n_limitrefs; E.limit_count = 0;
  for (int i = 0; i < ep->nlimits; i++) {
    uint32_t r = ADD(limitrefs);
    g->p->limitrefs[r].limit = (uint32_t)(ep->limits[i]->idx < 0 ? 0 : ep->limits[i]->idx);
    E.limit_count++;
  }
  E.cors = ep->cors ? (uint32_t)ep->cors->a->idx : GW_NONE;
  E.cache_ms = ep->cache && !ep->cache_off ? (uint32_t)ep->cache->a->ival : 0;
  /* the cache key blocks first (they are compiled before the refs are added) */
  uint32_t cb[64]; uint32_t ncb = 0;
  if (ep->cache) for (Node *x = ep->cache->list; x && ncb < 64; x = x->next) cb[ncb++] = cg_block(g, x, 0, NULL);
  E.cacheby_first = g->p->n_blockrefs; E.cacheby_count = ncb;
  for (uint32_t i = 0; i < ncb; i++) { uint32_t r = ADD(blockrefs); g->p->blockrefs[r].block = cb[i]; }
  E.timeout_ms = ep->timeout ? (uint32_t)ep->timeout->a->ival : 10000;

  /* calls: compile their blocks, then lay their records out contiguously */
  int n = ep->ncalls;
  GwCall *calls = calloc((size_t)n + 1, sizeof *calls);
  if (!calls) abort();
  for (int i = 0; i < n; i++) {
    Node *c = ep->calls[i];
    GwCall *R = &calls[i];
    memset(R, 0xFF, sizeof *R);
    R->name = kstr(g, c->s);
    R->backend = (uint32_t)(c->a->idx < 0 ? 0 : c->a->idx);
    R->method = (uint32_t)method_index(c->b->s);
    R->url = cg_block(g, c->c, 0, cg_url);
    R->query = optblock(g, call_opt(c, "query"), NULL);
    R->headers = optblock(g, call_opt(c, "headers"), NULL);
    R->body = optblock(g, call_opt(c, "body"), NULL);
    Node *t = call_opt(c, "timeout"), *ca = call_opt(c, "cache");
    R->timeout_ms = t && t->list ? (uint32_t)t->list->ival : GW_NONE;
    R->cache_ms = ca && ca->list ? (uint32_t)ca->list->ival : 0;
    R->mode = (uint32_t)c->op;
    R->dflt = optblock(g, call_opt(c, "default"), NULL);
    R->cond = optblock(g, call_opt(c, "if"), NULL);
    R->line = line_of(g, c);
  }
  E.call_first = g->p->n_calls; E.call_count = (uint32_t)n;
  for (int i = 0; i < n; i++) {
    uint32_t k = ADD(calls);
    calls[i].dep_first = deps_of(g, ep->deps + i * n, n, &calls[i].dep_count);
    calls[i].read_first = g->p->n_reads;
    calls[i].read_count = (uint32_t)ep->reads[i].n;
    for (int r = 0; r < ep->reads[i].n; r++) {
      uint32_t ri = ADD(reads);
      const RPath *rp = &ep->reads[i].v[r];
      uint32_t sf = g->p->n_steps;
      for (int s = 0; s < rp->nsteps; s++) {
        uint32_t si = ADD(steps);
        g->p->steps[si].kind = (uint32_t)rp->steps[s].kind;
        g->p->steps[si].arg = rp->steps[s].kind == GW_STEP_FIELD ? kstr(g, rp->steps[s].name)
                            : rp->steps[s].kind == GW_STEP_INDEX ? (uint32_t)rp->steps[s].index : 0;
      }
      g->p->reads[ri].step_first = sf;
      g->p->reads[ri].step_count = (uint32_t)rp->nsteps;
    }
    g->p->calls[k] = calls[i];
  }
  free(calls);

  /* guards */
  GwGuard *gs = calloc((size_t)ep->nfails + 1, sizeof *gs);
  if (!gs) abort();
  for (int i = 0; i < ep->nfails; i++) {
    Node *f = ep->fails[i];
    gs[i].status = (uint32_t)f->a->ival;
    gs[i].cond = cg_block(g, f->c, 0, NULL);
    gs[i].body = f->b ? cg_block(g, f->b, 0, NULL) : GW_NONE;
    gs[i].line = line_of(g, f);
  }
  E.guard_first = g->p->n_guards; E.guard_count = (uint32_t)ep->nfails;
  for (int i = 0; i < ep->nfails; i++) {
    uint32_t k = ADD(guards);
    gs[i].dep_first = deps_of(g, ep->gdeps[i], n, &gs[i].dep_count);
    g->p->guards[k] = gs[i];
  }
  free(gs);

  /* the response */
  if (ep->respond) {
    E.status = ep->respond->a ? (uint32_t)ep->respond->a->ival : 200;
    E.respond = ep->respond->b ? cg_block(g, ep->respond->b, 0, NULL) : GW_NONE;
  } else {
    E.status = GW_NONE;
    E.respond = GW_NONE;
  }
  uint32_t hv[256]; int nh = ep->nheaders < 256 ? ep->nheaders : 256;
  for (int i = 0; i < nh; i++) hv[i] = cg_block(g, ep->headers[i]->b, 0, NULL);
  E.header_first = g->p->n_rheaders; E.header_count = (uint32_t)nh;
  for (int i = 0; i < nh; i++) {
    uint32_t k = ADD(rheaders);
    g->p->rheaders[k].name = kstr(g, ep->headers[i]->a->s);
    g->p->rheaders[k].value = hv[i];
  }
  if (ep->proxy) {
    E.proxy = (uint32_t)(ep->proxy->a->idx < 0 ? 0 : ep->proxy->a->idx);
    E.proxy_url = ep->proxy->c ? cg_block(g, ep->proxy->c, 0, cg_url) : GW_NONE;
  } else {
    E.proxy = GW_NONE; E.proxy_url = GW_NONE;
  }
  E.rdep_first = deps_of(g, ep->rdeps, n, &E.rdep_count);
  E.input_first = g->p->n_inputs; E.input_count = (uint32_t)ep->inputs->n;
  for (int i = 0; i < ep->inputs->n; i++) {
    uint32_t k = ADD(inputs);
    g->p->inputs[k].root = (uint32_t)ep->inputs->v[i].root;
    g->p->inputs[k].name = ep->inputs->v[i].name ? kstr(g, ep->inputs->v[i].name) : GW_NONE;
  }
  E.file = g->file_const[d->file];
  E.line = line_of(g, d);
  g->p->endpoints[e] = E;
  /* the route */
  uint32_t r = ADD(routes);
  g->p->routes[r].method = E.method;
  g->p->routes[r].seg_first = E.seg_first;
  g->p->routes[r].seg_count = E.seg_count;
  g->p->routes[r].endpoint = e;
  g->ep = GW_NONE;
  g->epi = NULL;
}

/* Lay the finished blocks' code out in index order. */
static void link_blocks(Cg *g) {
  for (uint32_t b = 0; b < g->p->n_blocks; b++) {
    CgBlock *cb = b < g->capdone ? g->done[b] : NULL;
    GwBlock *B = &g->p->blocks[b];
    B->code_first = g->p->n_code;
    B->code_count = 0;
    if (!cb) continue;
    uint32_t n = (uint32_t)(cb->code.n / 4);
    for (uint32_t i = 0; i < n; i++) {
      uint32_t k = ADD(code);
      g->p->code[k].ins = gw_get_u32((unsigned char *)cb->code.p + 4 * i);
      k = ADD(lines);
      g->p->lines[k].line = gw_get_u32((unsigned char *)cb->lines.p + 4 * i);
    }
    B = &g->p->blocks[b];
    B->code_count = n;
    gw_buf_free(&cb->code); gw_buf_free(&cb->lines);
    free(cb);
    g->done[b] = NULL;
  }
}

int gwc_codegen(GwcCompiler *C, GwBuf *out) {
  Cg cg, *g = &cg;
  memset(g, 0, sizeof cg);
  g->C = C;
  g->p = calloc(1, sizeof *g->p);
  if (!g->p) abort();
  g->ep = GW_NONE;
  g->file_const = gw_arena_alloc(&C->arena, sizeof(uint32_t) * (size_t)(C->nfiles + 1));
  for (int f = 0; f < C->nfiles; f++) {
    char real[PATH_MAX];
    const char *dir = realpath(C->files[f]->dir, real) ? real : C->files[f]->dir;
    uint32_t path = kstr(g, C->files[f]->path), kd = kstr(g, dir);
    uint32_t i = ADD(files);
    g->p->files[i].path = path;
    g->p->files[i].dir = kd;
    g->file_const[f] = i;
  }
  if (C->server) cg_server(g, C->server);
  for (int i = 0; i < C->nbackends; i++) cg_backend(g, C->backends[i]);
  for (int i = 0; i < C->nauths; i++) cg_auth(g, C->auths[i]);
  for (int i = 0; i < C->nlimits; i++) cg_limit(g, C->limits[i]);
  for (int i = 0; i < C->ncorses; i++) cg_cors(g, C->corses[i]);
  for (int i = 0; i < C->nendpoints; i++) cg_endpoint(g, C->endpoints[i]);
  link_blocks(g);
  g->p->blob = (unsigned char *)g->blob.p;
  g->p->n_blob = (uint32_t)g->blob.n;
  g->blob.p = NULL;
  int rc = 0;
  if (C->nerrors == 0) {
    size_t start = out->n;
    gw_program_write(g->p, out);
    char err[256];
    GwProgram *check = gw_program_load(out->p + start, out->n - start, err, sizeof err);
    if (!check) {
      gwc_error_plain(C, "internal error: the generated program does not verify: %s", err);
      rc = 1;
    }
    gw_program_free(check);
  } else {
    rc = 1;
  }
  free(g->done);
  free(g->hash);
  gw_program_free(g->p);
  return rc;
}
