/*
** gw_program.c — reading, verifying and writing .gwb programs.
**
** The reader trusts nothing: sizes are checked before every access, every
** index is range-checked by its field kind (gw_format.def), every code block
** is simulated once to bound its stack and keep its jumps inside it, and the
** call graph of every endpoint is checked to be acyclic. A file that passes
** can be run by gwd without further checks. Errors are one line, naming the
** section and record where it makes sense.
*/
#include "gw_bytecode.h"
#include "gw_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const GwOpInfo gw_ops[GW_OP_MAX] = {
#define OP(name, fmt, pops, pushes, doc) { #name, GW_FMT_##fmt, pops, pushes, doc },
#include "gw_opcodes.def"
#undef OP
};

const GwFnInfo gw_fns[GW_FN_MAX] = {
#define FN(name, mn, mx, doc) { #name, mn, mx, doc },
#include "gw_builtins.def"
#undef FN
};

const char *const gw_fmt_names[] = {
  "-", "const", "env", "param", "root", "call", "block", "count", "jump", "func"
};
const char *const gw_root_names[GW_ROOT_MAX] = {
  "query", "headers", "body", "jwt", "client", "param"
};
const char *const gw_method_names[GW_METHOD_MAX] = {
  "*", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"
};
const char *const gw_seg_names[GW_SEG_MAX] = { "static", "int", "uuid", "string", "tail" };
const char *const gw_jwt_algs[] = {
  "HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
  "ES256", "ES384", "PS256", "PS384", "PS512", "EdDSA", NULL
};

/* Field kinds, as named in gw_format.def. */
enum { K_U, K_ENUM, K_STR, K_STRO, K_CONSTO, K_ENVO, K_BLOCK, K_BLOCKO, K_BACKEND,
       K_BACKENDO, K_AUTH, K_LIMIT, K_CORSO, K_FILE, K_FIRST, K_COUNT, K_LOCAL };

typedef struct FieldInfo { const char *name; int kind; uint32_t arg; } FieldInfo;
typedef struct SectionInfo {
  const char *name; uint32_t id; int nfields; const FieldInfo *fields; size_t size;
} SectionInfo;

#define F(f, kind, arg) { #f, K_##kind, (uint32_t)(arg) },
#define S(name, id, T, FIELDS) static const FieldInfo fields_##name[] = { FIELDS(F) };
GW_SECTIONS(S)
#undef S
#undef F

static const SectionInfo sections[] = {
#define S(name, id, T, FIELDS) { #name, id, GW_NF_##name, fields_##name, sizeof(T) },
  GW_SECTIONS(S)
#undef S
};
#define NSECTIONS (int)(sizeof sections / sizeof sections[0])

/* Access a section's records as u32 arrays, by position in sections[]. */
static uint32_t **sec_ptr(GwProgram *p, int i) {
  int k = 0;
#define S(name, id, T, FIELDS) if (k++ == i) return (uint32_t **)(void *)&p->name;
  GW_SECTIONS(S)
#undef S
  return NULL;
}
static uint32_t *sec_count(GwProgram *p, int i) {
  int k = 0;
#define S(name, id, T, FIELDS) if (k++ == i) return &p->n_##name;
  GW_SECTIONS(S)
#undef S
  return NULL;
}
static int sec_index(uint32_t id) {
  for (int i = 0; i < NSECTIONS; i++) if (sections[i].id == id) return i;
  return -1;
}

void gw_program_free(GwProgram *p) {
  if (!p) return;
  for (int i = 0; i < NSECTIONS; i++) free(*sec_ptr(p, i));
  free(p->blob);
  free(p);
}

const char *gw_const_str(const GwProgram *p, uint32_t k, uint32_t *len) {
  if (k >= p->n_consts) { if (len) *len = 0; return ""; }
  if (len) *len = p->consts[k].len;
  return (const char *)p->blob + p->consts[k].off;
}
int gw_const_is_number(const GwProgram *p, uint32_t k) {
  return k < p->n_consts && p->consts[k].kind == 1;
}

/* ---- writing ------------------------------------------------------------- */

int gw_program_write(const GwProgram *cp, GwBuf *out) {
  GwProgram *p = (GwProgram *)cp;   /* only read */
  uint32_t nsec = (uint32_t)NSECTIONS + 1;
  size_t start = out->n;
  uint32_t off = GW_HEADER_SIZE + 12 * nsec;
  GwBuf body = {0};
  GwBuf table = {0};
  for (int i = 0; i < NSECTIONS; i++) {
    uint32_t n = *sec_count(p, i), *rec = *sec_ptr(p, i);
    uint32_t size = n * (uint32_t)sections[i].nfields * 4;
    gw_buf_add_u32(&table, sections[i].id);
    gw_buf_add_u32(&table, off + (uint32_t)body.n);
    gw_buf_add_u32(&table, size);
    for (uint32_t r = 0; r < n * (uint32_t)sections[i].nfields; r++) gw_buf_add_u32(&body, rec[r]);
  }
  gw_buf_add_u32(&table, GW_SEC_BLOB);
  gw_buf_add_u32(&table, off + (uint32_t)body.n);
  gw_buf_add_u32(&table, p->n_blob);
  gw_buf_add(&body, p->blob, p->n_blob);
  while (body.n % 4) gw_buf_addc(&body, 0);

  gw_buf_add(out, GW_MAGIC, 8);
  gw_buf_add_u32(out, GW_FORMAT_VERSION);
  gw_buf_add_u32(out, nsec);
  size_t sha_at = out->n;
  unsigned char zero[32] = {0};
  gw_buf_add(out, zero, 32);
  gw_buf_add(out, table.p, table.n);
  gw_buf_add(out, body.p, body.n);
  gw_sha256(out->p + start + GW_HEADER_SIZE, out->n - start - GW_HEADER_SIZE,
            (unsigned char *)out->p + sha_at);
  gw_buf_free(&body);
  gw_buf_free(&table);
  return 0;
}

/* ---- reading and verifying ------------------------------------------------ */

typedef struct V {
  GwProgram *p;
  char *err; size_t errlen;
  /* scratch for block_reads: a DFS stack and a visit stamp per block, so
  ** each block is scanned once per query however often lambdas share it */
  uint32_t *rd_stack, *rd_stamp, rd_gen;
} V;

static int fail(V *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(V *v, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (v->errlen) vsnprintf(v->err, v->errlen, fmt, ap);
  va_end(ap);
  return -1;
}


/* JSON number grammar (RFC 8259). */
static int valid_number(const unsigned char *s, uint32_t n) {
  uint32_t i = 0;
  if (i < n && s[i] == '-') i++;
  if (i >= n) return 0;
  if (s[i] == '0') i++;
  else if (s[i] >= '1' && s[i] <= '9') { while (i < n && s[i] >= '0' && s[i] <= '9') i++; }
  else return 0;
  if (i < n && s[i] == '.') {
    i++;
    if (i >= n || s[i] < '0' || s[i] > '9') return 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    if (i >= n || s[i] < '0' || s[i] > '9') return 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
  }
  return i == n;
}

static int is_str(GwProgram *p, uint32_t k) { return k < p->n_consts && p->consts[k].kind == 0; }

/* Generic field checks from gw_format.def. */
static int check_fields(V *v, int si) {
  GwProgram *p = v->p;
  const SectionInfo *S = &sections[si];
  uint32_t n = *sec_count(p, si), *rec = *sec_ptr(p, si);
  for (uint32_t r = 0; r < n; r++) {
    uint32_t *f = rec + (size_t)r * (uint32_t)S->nfields;
    for (int j = 0; j < S->nfields; j++) {
      const FieldInfo *fi = &S->fields[j];
      uint32_t x = f[j];
      int ok = 1;
      switch (fi->kind) {
      case K_U: case K_LOCAL: case K_COUNT: break;
      case K_ENUM:    ok = x < fi->arg; break;
      case K_STR:     ok = is_str(p, x); break;
      case K_STRO:    ok = x == GW_NONE || is_str(p, x); break;
      case K_CONSTO:  ok = x == GW_NONE || x < p->n_consts; break;
      case K_ENVO:    ok = x == GW_NONE || x < p->n_envs; break;
      case K_BLOCK:   ok = x < p->n_blocks; break;
      case K_BLOCKO:  ok = x == GW_NONE || x < p->n_blocks; break;
      case K_BACKEND: ok = x < p->n_backends; break;
      case K_BACKENDO: ok = x == GW_NONE || x < p->n_backends; break;
      case K_AUTH:    ok = x < p->n_auths; break;
      case K_LIMIT:   ok = x < p->n_limits; break;
      case K_CORSO:   ok = x == GW_NONE || x < p->n_corses; break;
      case K_FILE:    ok = x < p->n_files; break;
      case K_FIRST: {
        uint32_t cnt = f[j + 1];
        int ti = sec_index(fi->arg);
        uint32_t tn = ti < 0 ? 0 : *sec_count(p, ti);
        ok = j + 1 < S->nfields && x <= tn && cnt <= tn - x;
        break;
      }
      }
      if (!ok)
        return fail(v, "section %s, record %u: field %s out of range (%u)", S->name, r, fi->name, x);
    }
  }
  return 0;
}

/* Simulate block b once: operands in range, stack bounded, jumps forward
** and inside the block, every path ends with RETURN at depth 1. Also
*/
static int check_block(V *v, uint32_t b, int *depthbuf) {
  GwProgram *p = v->p;
  GwBlock *B = &p->blocks[b];
  uint32_t ep = B->endpoint;
  if (ep != GW_NONE && ep >= p->n_endpoints)
    return fail(v, "block %u: endpoint %u out of range", b, ep);
  if (B->code_count == 0) return fail(v, "block %u: empty", b);
  if (B->max_stack == 0 || B->max_stack > GW_MAX_STACK)
    return fail(v, "block %u: max_stack %u out of range", b, B->max_stack);
  const GwEndpoint *E = ep == GW_NONE ? NULL : &p->endpoints[ep];
  int *depth = depthbuf;
  for (uint32_t i = 0; i < B->code_count; i++) depth[i] = -1;
  depth[0] = 0;
  int maxd = 0;
  for (uint32_t pc = 0; pc < B->code_count; pc++) {
    int d = depth[pc];
    if (d < 0) continue;                     /* unreachable */
    uint32_t ins = p->code[B->code_first + pc].ins;
    uint32_t op = GW_INS_OP(ins), a = GW_INS_A(ins);
    if (op >= GW_OP_MAX) return fail(v, "block %u, pc %u: unknown opcode %u", b, pc, op);
    const GwOpInfo *O = &gw_ops[op];
    int pops = O->pops, pushes = O->pushes;
    switch (O->fmt) {
    case GW_FMT_NONE: if (a) return fail(v, "block %u, pc %u: %s takes no operand", b, pc, O->name); break;
    case GW_FMT_CONST:
      if (a >= p->n_consts || ((op == GW_OP_FIELD || op == GW_OP_SETKEY) && !is_str(p, a)))
        return fail(v, "block %u, pc %u: %s: constant %u out of range", b, pc, O->name, a);
      break;
    case GW_FMT_ENV: if (a >= p->n_envs) return fail(v, "block %u, pc %u: env %u out of range", b, pc, a); break;
    case GW_FMT_PARAM: if (!E || a >= E->param_count) return fail(v, "block %u, pc %u: parameter %u out of range", b, pc, a); break;
    case GW_FMT_ROOT: if (a >= GW_ROOT_PARAM) return fail(v, "block %u, pc %u: root %u out of range", b, pc, a); break;
    case GW_FMT_CALL:
      if (!E || a >= E->call_count) return fail(v, "block %u, pc %u: call %u out of range", b, pc, a);
      break;
    case GW_FMT_BLOCK:
      if (a <= b || a >= p->n_blocks || !p->blocks[a].lambda || p->blocks[a].endpoint != ep)
        return fail(v, "block %u, pc %u: %s: block %u is not a later lambda of the same endpoint", b, pc, O->name, a);
      break;
    case GW_FMT_COUNT: if (a > GW_MAX_STACK) return fail(v, "block %u, pc %u: count %u too large", b, pc, a); pops = (int)a; break;
    case GW_FMT_JUMP:
      if (a == 0 || a >= B->code_count || pc + 1 + a >= B->code_count)
        return fail(v, "block %u, pc %u: jump outside the block", b, pc);
      break;
    case GW_FMT_FUNC: {
      uint32_t fn = a & 0xFFFF, n = a >> 16;
      if (fn >= GW_FN_MAX || fn == GW_FN_sort_by || fn == GW_FN_env || (int)n < gw_fns[fn].min || (int)n > gw_fns[fn].max)
        return fail(v, "block %u, pc %u: bad builtin call %u/%u", b, pc, fn, n);
      pops = (int)n;
      break;
    }
    }
    if (op == GW_OP_CUR && !B->lambda) return fail(v, "block %u, pc %u: '.' outside a lambda block", b, pc);
    if (d < pops) return fail(v, "block %u, pc %u: %s: stack underflow", b, pc, O->name);
    if (op == GW_OP_RETURN) {
      if (d != 1) return fail(v, "block %u, pc %u: RETURN with %d values on the stack", b, pc, d);
      continue;
    }
    int nd = d - pops + pushes;
    if (nd > maxd) maxd = nd;
    if (maxd > (int)B->max_stack) return fail(v, "block %u: stack exceeds its max_stack %u", b, B->max_stack);
    if (O->fmt == GW_FMT_JUMP) {
      uint32_t t = pc + 1 + a;
      int td = d;                            /* taken: the value stays */
      if (depth[t] >= 0 && depth[t] != td) return fail(v, "block %u, pc %u: inconsistent stack at jump target", b, pc);
      depth[t] = td;
      if (op == GW_OP_JMP) continue;
      nd = d - 1;                            /* not taken: popped */
    }
    if (pc + 1 >= B->code_count) return fail(v, "block %u: falls off its end", b);
    if (depth[pc + 1] >= 0 && depth[pc + 1] != nd) return fail(v, "block %u, pc %u: inconsistent stack", b, pc + 1);
    depth[pc + 1] = nd;
  }
  return 0;
}

/* Calls read by block b, following its lambdas (which come later). */
static void block_reads(V *v, uint32_t b, uint8_t *reads, uint32_t ncalls) {
  GwProgram *p = v->p;
  uint32_t sp = 0, *rd_stack = v->rd_stack, *rd_stamp = v->rd_stamp, rd_gen = ++v->rd_gen;
  rd_stack[sp++] = b;
  rd_stamp[b] = rd_gen;
  while (sp) {
    const GwBlock *B = &p->blocks[rd_stack[--sp]];
    for (uint32_t pc = 0; pc < B->code_count; pc++) {
      uint32_t ins = p->code[B->code_first + pc].ins;
      uint32_t op = GW_INS_OP(ins), a = GW_INS_A(ins);
      if (op == GW_OP_RESULT && a < ncalls) reads[a] = 1;
      else if (gw_ops[op].fmt == GW_FMT_BLOCK && rd_stamp[a] != rd_gen) { rd_stamp[a] = rd_gen; rd_stack[sp++] = a; }
    }
  }
}

static int block_ok_for(V *v, uint32_t b, uint32_t ep, const char *what) {
  if (b == GW_NONE) return 0;
  const GwBlock *B = &v->p->blocks[b];
  if (B->endpoint != ep || B->lambda)
    return fail(v, "%s: block %u belongs elsewhere", what, b);
  return 0;
}

/* Every call read by block b must be among deps[first, +count). */
static int reads_within(V *v, uint32_t b, uint32_t ncalls, uint32_t first, uint32_t count, uint8_t *tmp, const char *what) {
  if (b == GW_NONE) return 0;
  memset(tmp, 0, ncalls);
  block_reads(v, b, tmp, ncalls);
  for (uint32_t i = 0; i < count; i++) { uint32_t c = v->p->deps[first + i].call; if (c < ncalls) tmp[c] = 0; }
  for (uint32_t c = 0; c < ncalls; c++)
    if (tmp[c]) return fail(v, "%s reads call %u without depending on it", what, c);
  return 0;
}

static int check_endpoint(V *v, uint32_t e, uint8_t *tmp, uint8_t *color) {
  GwProgram *p = v->p;
  const GwEndpoint *E = &p->endpoints[e];
  char what[64];
  uint32_t params = 0;
  for (uint32_t i = 0; i < E->seg_count; i++) {
    const GwSeg *s = &p->segs[E->seg_first + i];
    if (s->kind != GW_SEG_STATIC) params++;
    if (s->kind == GW_SEG_TAIL && i + 1 != E->seg_count) return fail(v, "endpoint %u: tail segment not last", e);
  }
  if (params != E->param_count) return fail(v, "endpoint %u: %u parameters declared, %u in the path", e, E->param_count, params);
  for (uint32_t i = 0; i < E->cacheby_count; i++)
    if (block_ok_for(v, p->blockrefs[E->cacheby_first + i].block, e, "cache key")) return -1;
  uint32_t nc = E->call_count;
  for (uint32_t i = 0; i < nc; i++) {
    const GwCall *c = &p->calls[E->call_first + i];
    snprintf(what, sizeof what, "endpoint %u call %u", e, i);
    for (uint32_t k = 0; k < c->dep_count; k++)
      if (p->deps[c->dep_first + k].call >= nc) return fail(v, "%s: dependency out of range", what);
    if (block_ok_for(v, c->url, e, what) || block_ok_for(v, c->query, e, what) ||
        block_ok_for(v, c->headers, e, what) || block_ok_for(v, c->body, e, what) ||
        block_ok_for(v, c->dflt, e, what) || block_ok_for(v, c->cond, e, what)) return -1;
    if ((c->mode == 2) != (c->dflt != GW_NONE)) return fail(v, "%s: default mode without default", what);
    uint32_t bl[5] = { c->url, c->query, c->headers, c->body, c->cond };
    for (int k = 0; k < 5; k++)
      if (reads_within(v, bl[k], nc, c->dep_first, c->dep_count, tmp, what)) return -1;
    for (uint32_t k = 0; k < c->read_count; k++) {
      const GwRead *r = &p->reads[c->read_first + k];
      for (uint32_t s = 0; s < r->step_count; s++) {
        const GwStep *st = &p->steps[r->step_first + s];
        if ((st->kind == GW_STEP_FIELD && !is_str(p, st->arg)) || (st->kind == GW_STEP_EACH && st->arg))
          return fail(v, "%s: bad read path step", what);
      }
    }
  }
  /* The call graph is acyclic: repeatedly settle the calls whose
  ** dependencies are all settled; a round without progress is a cycle. */
  memset(color, 0, nc);
  for (uint32_t done = 0; done < nc;) {
    uint32_t progress = 0;
    for (uint32_t i = 0; i < nc; i++) {
      if (color[i]) continue;
      const GwCall *c = &p->calls[E->call_first + i];
      int ready = 1;
      for (uint32_t k = 0; k < c->dep_count && ready; k++) if (!color[p->deps[c->dep_first + k].call]) ready = 0;
      if (ready) { color[i] = 2; done++; progress++; }
    }
    if (!progress) return fail(v, "endpoint %u: the calls depend on each other in a cycle", e);
  }
  for (uint32_t i = 0; i < E->guard_count; i++) {
    const GwGuard *g = &p->guards[E->guard_first + i];
    snprintf(what, sizeof what, "endpoint %u guard %u", e, i);
    if (g->status < 100 || g->status > 599) return fail(v, "%s: bad status %u", what, g->status);
    for (uint32_t k = 0; k < g->dep_count; k++)
      if (p->deps[g->dep_first + k].call >= nc) return fail(v, "%s: dependency out of range", what);
    if (block_ok_for(v, g->cond, e, what) || block_ok_for(v, g->body, e, what)) return -1;
    if (reads_within(v, g->cond, nc, g->dep_first, g->dep_count, tmp, what) ||
        reads_within(v, g->body, nc, g->dep_first, g->dep_count, tmp, what)) return -1;
  }
  snprintf(what, sizeof what, "endpoint %u response", e);
  for (uint32_t k = 0; k < E->rdep_count; k++)
    if (p->deps[E->rdep_first + k].call >= nc) return fail(v, "%s: dependency out of range", what);
  if (block_ok_for(v, E->respond, e, what) || block_ok_for(v, E->proxy_url, e, what)) return -1;
  if (reads_within(v, E->respond, nc, E->rdep_first, E->rdep_count, tmp, what)) return -1;
  for (uint32_t i = 0; i < E->header_count; i++) {
    uint32_t b = p->rheaders[E->header_first + i].value;
    if (block_ok_for(v, b, e, what) || reads_within(v, b, nc, E->rdep_first, E->rdep_count, tmp, what)) return -1;
  }
  if ((E->proxy == GW_NONE) == (E->respond == GW_NONE && E->status == GW_NONE))
    return fail(v, "endpoint %u: needs exactly one of respond and proxy", e);
  if (E->proxy == GW_NONE && (E->status < 100 || E->status > 599)) return fail(v, "endpoint %u: bad status %u", e, E->status);
  return 0;
}

static int verify(V *v) {
  GwProgram *p = v->p;
  for (int i = 0; i < NSECTIONS; i++) if (check_fields(v, i)) return -1;
  for (uint32_t k = 0; k < p->n_consts; k++) {
    const GwConst *c = &p->consts[k];
    if (c->off >= p->n_blob || c->len >= p->n_blob - c->off) return fail(v, "constant %u outside the blob", k);
    if (p->blob[c->off + c->len] != 0) return fail(v, "constant %u is not NUL-terminated", k);
    const unsigned char *s = p->blob + c->off;
    if (c->kind == 0 && (!gw_utf8_valid(s, c->len) || memchr(s, 0, c->len))) return fail(v, "constant %u is not valid UTF-8", k);
    if (c->kind == 1 && !valid_number(s, c->len)) return fail(v, "constant %u is not a JSON number", k);
  }
  if (p->n_servers > 1) return fail(v, "more than one server record");
  if (p->n_lines != p->n_code) return fail(v, "line table has %u entries for %u instructions", p->n_lines, p->n_code);
  for (uint32_t i = 0; i < p->n_urls; i++)
    if ((p->urls[i].str == GW_NONE) == (p->urls[i].env == GW_NONE)) return fail(v, "url %u: needs a string or an env reference", i);
  for (uint32_t i = 0; i < p->n_routes; i++) {
    if (p->routes[i].endpoint >= p->n_endpoints) return fail(v, "route %u: endpoint out of range", i);
  }
  int *depth = malloc(sizeof(int) * (p->n_code + 1));
  uint8_t *tmp = malloc((size_t)p->n_calls + 1), *color = malloc((size_t)p->n_calls + 1);
  if (!depth || !tmp || !color) { free(depth); free(tmp); free(color); return fail(v, "out of memory"); }
  int rc = 0;
  for (uint32_t b = 0; b < p->n_blocks && !rc; b++) rc = check_block(v, b, depth);
  /* Lambdas nest at most GW_MAX_NEST deep (later blocks first, since a
  ** block only runs blocks with a higher index). */
  uint8_t *nest = rc ? NULL : calloc((size_t)p->n_blocks + 1, 1);
  for (uint32_t b = p->n_blocks; b-- > 0 && !rc && nest;) {
    const GwBlock *B = &p->blocks[b];
    for (uint32_t pc = 0; pc < B->code_count; pc++) {
      uint32_t ins = p->code[B->code_first + pc].ins;
      if (gw_ops[GW_INS_OP(ins)].fmt == GW_FMT_BLOCK && nest[GW_INS_A(ins)] + 1 > nest[b])
        nest[b] = (uint8_t)(nest[GW_INS_A(ins)] + 1);
    }
    if (nest[b] > GW_MAX_NEST) rc = fail(v, "block %u: lambdas nested too deeply", b);
  }
  free(nest);
  for (uint32_t i = 0; i < p->n_backends && !rc; i++)
    if (p->backends[i].url_count == 0) rc = fail(v, "backend %u has no url", i);
    else if (p->backends[i].headers != GW_NONE && (p->blocks[p->backends[i].headers].endpoint != GW_NONE || p->blocks[p->backends[i].headers].lambda))
      rc = fail(v, "backend %u: headers block is not global", i);
  for (uint32_t i = 0; i < p->n_auths && !rc; i++)
    if (p->auths[i].require != GW_NONE && p->blocks[p->auths[i].require].endpoint != GW_NONE)
      rc = fail(v, "auth %u: require block is not global", i);
  for (uint32_t i = 0; i < p->n_limits && !rc; i++) {
    if (p->limits[i].by != GW_NONE && p->blocks[p->limits[i].by].endpoint != GW_NONE)
      rc = fail(v, "limit %u: key block is not global", i);
    if (!rc && (p->limits[i].count == 0 || p->limits[i].period_ms == 0)) rc = fail(v, "limit %u: zero rate", i);
  }
  v->rd_stack = calloc((size_t)p->n_blocks + 1, sizeof *v->rd_stack);
  v->rd_stamp = calloc((size_t)p->n_blocks + 1, sizeof *v->rd_stamp);
  v->rd_gen = 0;
  if (!v->rd_stack || !v->rd_stamp) rc = rc ? rc : fail(v, "out of memory");
  for (uint32_t e = 0; e < p->n_endpoints && !rc; e++) rc = check_endpoint(v, e, tmp, color);
  free(v->rd_stack); free(v->rd_stamp);
  v->rd_stack = v->rd_stamp = NULL;
  free(depth); free(tmp); free(color);
  return rc;
}

GwProgram *gw_program_load(const void *image, size_t size, char *err, size_t errlen) {
  const unsigned char *img = image;
  V v = { NULL, err, errlen, NULL, NULL, 0 };
  if (errlen) err[0] = 0;
  if (size < 8 || memcmp(img, GW_MAGIC, 8) != 0) {
    fail(&v, size < 8 ? "not a gw program (file too short)" : "not a gw program (bad magic)");
    return NULL;
  }
  if (size < GW_HEADER_SIZE) { fail(&v, "truncated program (header)"); return NULL; }
  if (size > GW_MAX_FILE_SIZE) { fail(&v, "program too large (%zu bytes)", size); return NULL; }
  uint32_t version = gw_get_u32(img + 8), nsec = gw_get_u32(img + 12);
  if (version != GW_FORMAT_VERSION) {
    fail(&v, "unsupported format version %u (this build reads %u)", version, GW_FORMAT_VERSION);
    return NULL;
  }
  if (nsec > GW_MAX_SECTIONS || GW_HEADER_SIZE + 12 * (size_t)nsec > size) {
    fail(&v, "truncated program (section table)");
    return NULL;
  }
  unsigned char sha[32];
  gw_sha256(img + GW_HEADER_SIZE, size - GW_HEADER_SIZE, sha);
  if (memcmp(sha, img + 16, 32) != 0) { fail(&v, "checksum mismatch: the program is corrupted or truncated"); return NULL; }

  GwProgram *p = calloc(1, sizeof *p);
  if (!p) { fail(&v, "out of memory"); return NULL; }
  v.p = p;
  memcpy(p->sha256, sha, 32);
  uint32_t seen = 0;
  size_t table_end = GW_HEADER_SIZE + 12 * (size_t)nsec;
  for (uint32_t s = 0; s < nsec; s++) {
    const unsigned char *t = img + GW_HEADER_SIZE + 12 * s;
    uint32_t id = gw_get_u32(t), off = gw_get_u32(t + 4), sz = gw_get_u32(t + 8);
    if (id == 0 || id > 31 || (seen & (1u << id))) { fail(&v, "bad or repeated section id %u", id); goto bad; }
    seen |= 1u << id;
    if (off % 4 || off < table_end || off > size || sz > size - off) { fail(&v, "section %u outside the file", id); goto bad; }
    if (id == GW_SEC_BLOB) {
      p->blob = malloc(sz ? sz : 1);
      if (!p->blob) { fail(&v, "out of memory"); goto bad; }
      memcpy(p->blob, img + off, sz);
      p->n_blob = sz;
      continue;
    }
    int si = sec_index(id);
    if (si < 0) { fail(&v, "unknown section id %u", id); goto bad; }
    size_t rs = (size_t)sections[si].nfields * 4;
    if (sz % rs) { fail(&v, "section %s: size %u is not a whole number of records", sections[si].name, sz); goto bad; }
    uint32_t n = (uint32_t)(sz / rs);
    uint32_t *rec = calloc(n ? n : 1, rs);
    if (!rec) { fail(&v, "out of memory"); goto bad; }
    for (size_t k = 0; k < (size_t)n * (size_t)sections[si].nfields; k++) rec[k] = gw_get_u32(img + off + 4 * k);
    *sec_ptr(p, si) = rec;
    *sec_count(p, si) = n;
  }
  if (!p->blob) { p->blob = malloc(1); if (!p->blob) goto bad; }
  if (verify(&v)) goto bad;
  return p;
bad:
  gw_program_free(p);
  return NULL;
}
