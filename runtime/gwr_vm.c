/*
** gwr_vm.c — the expression VM (see gwr_vm.h and docs/bytecode.md for the
** semantics of every opcode and builtin; they are defined in
** gw_opcodes.def and gw_builtins.def).
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "gwr_vm.h"


static GwValue *str_of(GwrVm *vm, GwBuf *b) {
  GwValue *v = gwv_string_copy(vm->arena, b->p ? b->p : "", b->n);
  gw_buf_free(b);
  return v;
}

void gwr_pct_encode(GwBuf *out, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
        c == '-' || c == '.' || c == '_' || c == '~') {
      gw_buf_addc(out, (char)c);
    } else {
      char e[3] = { '%', hex[c >> 4], hex[c & 15] };
      gw_buf_add(out, e, 3);
    }
  }
}

/* One path segment: a whole "." or ".." is encoded too. */
static void enc_segment(GwBuf *out, const char *s, size_t n) {
  if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) {
    for (size_t i = 0; i < n; i++) gw_buf_adds(out, "%2E");
    return;
  }
  gwr_pct_encode(out, s, n);
}

static size_t utf8_len(const char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) if (((unsigned char)s[i] & 0xC0) != 0x80) k++;
  return k;
}

/* Byte offset of character index ci in s (clamped to n). */
static size_t utf8_off(const char *s, size_t n, size_t ci) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80) { if (k == ci) return i; k++; }
  return n;
}

static int to_int(const GwValue *v, int64_t *out) {
  double d;
  if (!gwv_to_double(v, &d, 0) || d != floor(d) || fabs(d) > 9e15) return 0;
  *out = (int64_t)d;
  return 1;
}

static GwValue *index_of(GwrVm *vm, GwValue *v, GwValue *k) {
  (void)vm;
  if (k->type == GWV_STRING) { GwValue *r = gwv_get(v, k->u.s, k->n); return r ? r : &gwv_null; }
  int64_t i;
  if (k->type != GWV_NUMBER || !to_int(k, &i) || v->type != GWV_ARRAY) return &gwv_null;
  if (i < 0) i += v->n;
  if (i < 0 || i >= (int64_t)v->n) return &gwv_null;
  return v->u.items[i];
}

/* Python-style bounds: null open, negative from the end, clamped. */
static void bounds(GwValue *lo, GwValue *hi, int64_t len, int64_t *a, int64_t *b) {
  int64_t x = 0, y = len;
  if (!GWV_IS_NULL(lo) && to_int(lo, &x)) { if (x < 0) x += len; } else x = 0;
  if (!GWV_IS_NULL(hi) && to_int(hi, &y)) { if (y < 0) y += len; } else y = len;
  if (x < 0) x = 0;
  if (y > len) y = len;
  if (y < x) y = x;
  *a = x; *b = y;
}

static GwValue *slice(GwrVm *vm, GwValue *v, GwValue *lo, GwValue *hi) {
  int64_t a, b;
  if (v->type == GWV_ARRAY) {
    bounds(lo, hi, v->n, &a, &b);
    GwValue *r = gwv_array(vm->arena, (uint32_t)(b - a));
    for (int64_t i = a; i < b; i++) gwv_append(vm->arena, r, v->u.items[i]);
    return r;
  }
  if (v->type == GWV_STRING) {
    bounds(lo, hi, (int64_t)utf8_len(v->u.s, v->n), &a, &b);
    size_t s = utf8_off(v->u.s, v->n, (size_t)a), e = utf8_off(v->u.s, v->n, (size_t)b);
    return gwv_string_copy(vm->arena, v->u.s + s, e - s);
  }
  return &gwv_null;
}

static int type_rank(const GwValue *v) {
  switch (v->type) {
  case GWV_NULL: return 0;
  case GWV_FALSE: return 1;
  case GWV_TRUE: return 2;
  case GWV_NUMBER: return 3;
  case GWV_STRING: return 4;
  case GWV_ARRAY: return 5;
  default: return 6;
  }
}

static int order(const GwValue *a, const GwValue *b) {
  int c = gwv_compare(a, b);
  if (c != 2) return c;
  int ra = type_rank(a), rb = type_rank(b);
  return ra < rb ? -1 : ra > rb;
}

typedef struct SortItem { GwValue *key, *val; uint32_t pos; } SortItem;
static int cmp_item(const void *x, const void *y) {
  const SortItem *a = x, *b = y;
  int c = order(a->key, b->key);
  if (c) return c;
  return a->pos < b->pos ? -1 : a->pos > b->pos;     /* stable */
}

static GwValue *num(GwrVm *vm, double d) { return gwv_number(vm->arena, d); }

static GwValue *builtin(GwrVm *vm, int fn, GwValue **args, int n) {
  GwArena *a = vm->arena;
  GwValue *x = n > 0 ? args[0] : &gwv_null;
  double d;
  switch (fn) {
  case GW_FN_len:
    if (x->type == GWV_STRING) return num(vm, (double)utf8_len(x->u.s, x->n));
    if (x->type == GWV_ARRAY || x->type == GWV_OBJECT) return num(vm, x->n);
    if (x->type == GWV_NULL) return num(vm, 0);
    return &gwv_null;
  case GW_FN_lower: case GW_FN_upper: {
    if (x->type != GWV_STRING) return &gwv_null;
    GwValue *r = gwv_string_copy(a, x->u.s, x->n);
    char *s = (char *)r->u.s;
    for (uint32_t i = 0; i < r->n; i++)
      if (fn == GW_FN_lower && s[i] >= 'A' && s[i] <= 'Z') s[i] = (char)(s[i] + 32);
      else if (fn == GW_FN_upper && s[i] >= 'a' && s[i] <= 'z') s[i] = (char)(s[i] - 32);
    return r;
  }
  case GW_FN_string: { GwBuf b = {0}; gwv_render(x, &b); return str_of(vm, &b); }
  case GW_FN_int:
    if (!gwv_to_double(x, &d, 1)) return &gwv_null;
    return num(vm, trunc(d));
  case GW_FN_float:
    if (x->type == GWV_NUMBER) return x;
    if (!gwv_to_double(x, &d, 1)) return &gwv_null;
    return num(vm, d);
  case GW_FN_first: return x->type == GWV_ARRAY && x->n ? x->u.items[0] : &gwv_null;
  case GW_FN_last: return x->type == GWV_ARRAY && x->n ? x->u.items[x->n - 1] : &gwv_null;
  case GW_FN_sum: {
    if (x->type != GWV_ARRAY) return &gwv_null;
    double s = 0;
    for (uint32_t i = 0; i < x->n; i++) if (gwv_to_double(x->u.items[i], &d, 0)) s += d;
    return num(vm, s);
  }
  case GW_FN_min: case GW_FN_max: {
    if (x->type != GWV_ARRAY) return &gwv_null;
    GwValue *best = NULL;
    for (uint32_t i = 0; i < x->n; i++) {
      GwValue *e = x->u.items[i];
      if (e->type != GWV_NUMBER && e->type != GWV_STRING) continue;
      if (!best) { best = e; continue; }
      int c = gwv_compare(e, best);
      if (c == 2) continue;
      if ((fn == GW_FN_min && c < 0) || (fn == GW_FN_max && c > 0)) best = e;
    }
    return best ? best : &gwv_null;
  }
  case GW_FN_keys: case GW_FN_values: {
    if (x->type != GWV_OBJECT) return &gwv_null;
    GwValue *r = gwv_array(a, x->n);
    for (uint32_t i = 0; i < x->n; i++)
      gwv_append(a, r, fn == GW_FN_keys ? gwv_string_ref(a, x->u.members[i].key, x->u.members[i].klen) : x->u.members[i].val);
    return r;
  }
  case GW_FN_merge: {
    GwValue *r = gwv_object(a, 8);
    for (int k = 0; k < n; k++) {
      if (args[k]->type != GWV_OBJECT) continue;
      for (uint32_t i = 0; i < args[k]->n; i++)
        gwv_set(a, r, args[k]->u.members[i].key, args[k]->u.members[i].klen, args[k]->u.members[i].val, 0);
    }
    return r;
  }
  case GW_FN_omit: case GW_FN_pick: {
    if (x->type != GWV_OBJECT) return &gwv_null;
    GwValue *r = gwv_object(a, x->n);
    for (uint32_t i = 0; i < x->n; i++) {
      const GwMember *m = &x->u.members[i];
      int named = 0;
      for (int k = 1; k < n; k++)
        if (args[k]->type == GWV_STRING && args[k]->n == m->klen && !memcmp(args[k]->u.s, m->key, m->klen)) named = 1;
      if (named == (fn == GW_FN_pick)) gwv_set(a, r, m->key, m->klen, m->val, 0);
    }
    return r;
  }
  case GW_FN_flatten: {
    if (x->type != GWV_ARRAY) return &gwv_null;
    GwValue *r = gwv_array(a, x->n);
    for (uint32_t i = 0; i < x->n; i++) {
      GwValue *e = x->u.items[i];
      if (e->type == GWV_ARRAY) for (uint32_t j = 0; j < e->n; j++) gwv_append(a, r, e->u.items[j]);
      else gwv_append(a, r, e);
    }
    return r;
  }
  case GW_FN_unique: {
    if (x->type != GWV_ARRAY) return &gwv_null;
    GwValue *r = gwv_array(a, x->n);
    for (uint32_t i = 0; i < x->n; i++) {
      int seen = 0;
      for (uint32_t j = 0; j < r->n && !seen; j++) seen = gwv_equal(r->u.items[j], x->u.items[i]);
      vm->steps += r->n;
      if (vm->steps > vm->max_steps) return NULL;      /* quadratic: bounded by the budget */
      if (!seen) gwv_append(a, r, x->u.items[i]);
    }
    return r;
  }
  case GW_FN_join: {
    if (x->type != GWV_ARRAY) return &gwv_null;
    GwBuf b = {0};
    for (uint32_t i = 0; i < x->n; i++) {
      if (i) gwv_render(args[1], &b);
      gwv_render(x->u.items[i], &b);
    }
    return str_of(vm, &b);
  }
  case GW_FN_split: {
    if (x->type != GWV_STRING || args[1]->type != GWV_STRING) return &gwv_null;
    GwValue *r = gwv_array(a, 4);
    const char *s = x->u.s, *sep = args[1]->u.s;
    size_t sn = x->n, pn = args[1]->n, start = 0;
    if (pn == 0) {                   /* into characters */
      for (size_t i = 0; i < sn;) {
        size_t j = i + 1;
        while (j < sn && ((unsigned char)s[j] & 0xC0) == 0x80) j++;
        gwv_append(a, r, gwv_string_ref(a, s + i, j - i));
        i = j;
      }
      return r;
    }
    for (size_t i = 0; i + pn <= sn;) {
      if (!memcmp(s + i, sep, pn)) { gwv_append(a, r, gwv_string_ref(a, s + start, i - start)); i += pn; start = i; }
      else i++;
    }
    gwv_append(a, r, gwv_string_ref(a, s + start, sn - start));
    return r;
  }
  case GW_FN_now: return num(vm, floor(vm->now));
  default: return &gwv_null;
  }
}

GwValue *gwr_vm_run(GwrVm *vm, uint32_t b, GwValue *cur) {
  const GwProgram *p = vm->p;
  const GwBlock *B = &p->blocks[b];
  const GwIns *code = p->code + B->code_first;
  GwValue *st[GW_MAX_STACK];
  int sp = 0;
  GwArena *ar = vm->arena;
  for (uint32_t pc = 0; pc < B->code_count; pc++) {
    if (++vm->steps > vm->max_steps) { vm->error = "expression too expensive (step budget exceeded)"; return NULL; }
    uint32_t ins = code[pc].ins, a = GW_INS_A(ins);
    GwValue *x, *y;
    switch (GW_INS_OP(ins)) {
    case GW_OP_NULL: st[sp++] = &gwv_null; break;
    case GW_OP_TRUE: st[sp++] = &gwv_true; break;
    case GW_OP_FALSE: st[sp++] = &gwv_false; break;
    case GW_OP_CONST: st[sp++] = (GwValue *)&vm->consts[a]; break;   /* never written to */
    case GW_OP_ENV: st[sp++] = vm->envs && vm->envs[a] ? vm->envs[a] : &gwv_null; break;
    case GW_OP_PARAM: st[sp++] = vm->params[a] ? vm->params[a] : &gwv_null; break;
    case GW_OP_ROOT: st[sp++] = vm->roots[a] ? vm->roots[a] : &gwv_null; break;
    case GW_OP_RESULT: st[sp++] = vm->results && vm->results[a] ? vm->results[a] : &gwv_null; break;
    case GW_OP_CUR: st[sp++] = cur ? cur : &gwv_null; break;
    case GW_OP_FIELD: {
      const GwConst *k = &p->consts[a];
      GwValue *r = gwv_get(st[sp - 1], (const char *)p->blob + k->off, k->len);
      st[sp - 1] = r ? r : &gwv_null;
      break;
    }
    case GW_OP_INDEX: y = st[--sp]; st[sp - 1] = index_of(vm, st[sp - 1], y); break;
    case GW_OP_SLICE: { GwValue *hi = st[--sp], *lo = st[--sp]; st[sp - 1] = slice(vm, st[sp - 1], lo, hi); break; }
    case GW_OP_MAP: case GW_OP_EACH: {
      x = st[sp - 1];
      int op = GW_INS_OP(ins);
      if (x->type == GWV_ARRAY || (op == GW_OP_EACH && x->type == GWV_OBJECT)) {
        GwValue *r = gwv_array(ar, x->n);
        for (uint32_t i = 0; i < x->n; i++) {
          GwValue *e = x->type == GWV_ARRAY ? x->u.items[i] : x->u.members[i].val;
          GwValue *v = gwr_vm_run(vm, a, e);
          if (!v) return NULL;
          gwv_append(ar, r, v);
        }
        st[sp - 1] = r;
      } else if (op == GW_OP_MAP && x->type != GWV_NULL) {
        GwValue *v = gwr_vm_run(vm, a, x);
        if (!v) return NULL;
        st[sp - 1] = v;
      } else {
        st[sp - 1] = &gwv_null;
      }
      break;
    }
    case GW_OP_FILTER: {
      x = st[sp - 1];
      if (x->type != GWV_ARRAY) { st[sp - 1] = &gwv_null; break; }
      GwValue *r = gwv_array(ar, x->n);
      for (uint32_t i = 0; i < x->n; i++) {
        GwValue *v = gwr_vm_run(vm, a, x->u.items[i]);
        if (!v) return NULL;
        if (gwv_truthy(v)) gwv_append(ar, r, x->u.items[i]);
      }
      st[sp - 1] = r;
      break;
    }
    case GW_OP_SORTBY: {
      x = st[sp - 1];
      if (x->type != GWV_ARRAY) { st[sp - 1] = &gwv_null; break; }
      SortItem *it = gw_arena_alloc(ar, sizeof *it * (x->n + 1));
      for (uint32_t i = 0; i < x->n; i++) {
        it[i].val = x->u.items[i];
        it[i].pos = i;
        it[i].key = gwr_vm_run(vm, a, x->u.items[i]);
        if (!it[i].key) return NULL;
      }
      qsort(it, x->n, sizeof *it, cmp_item);
      vm->steps += x->n;
      GwValue *r = gwv_array(ar, x->n);
      for (uint32_t i = 0; i < x->n; i++) gwv_append(ar, r, it[i].val);
      st[sp - 1] = r;
      break;
    }
    case GW_OP_OBJECT: st[sp++] = gwv_object(ar, 4); break;
    case GW_OP_SETKEY: {
      const GwConst *k = &p->consts[a];
      y = st[--sp];
      gwv_set(ar, st[sp - 1], (const char *)p->blob + k->off, k->len, y, 0);
      break;
    }
    case GW_OP_SPREAD:
      y = st[--sp];
      if (y->type == GWV_OBJECT)
        for (uint32_t i = 0; i < y->n; i++)
          gwv_set(ar, st[sp - 1], y->u.members[i].key, y->u.members[i].klen, y->u.members[i].val, 0);
      else if (y->type != GWV_NULL) { vm->error = "spread of a value that is not an object"; return NULL; }
      break;
    case GW_OP_ARRAY: st[sp++] = gwv_array(ar, 4); break;
    case GW_OP_APPEND: y = st[--sp]; gwv_append(ar, st[sp - 1], y); break;
    case GW_OP_CONCAT: {
      GwBuf buf = {0};
      for (uint32_t i = 0; i < a; i++) gwv_render(st[sp - a + i], &buf);
      sp -= (int)a;
      st[sp++] = str_of(vm, &buf);
      break;
    }
    case GW_OP_ENCSEG: case GW_OP_ENCTAIL: case GW_OP_ENCQUERY: {
      x = st[sp - 1];
      int op = GW_INS_OP(ins);
      if (x->type == GWV_NULL && op != GW_OP_ENCQUERY) {
        vm->missing = 1;
        vm->error = "a value needed for the URL is missing (null)";
        return NULL;
      }
      GwBuf r = {0}, enc = {0};
      if (op == GW_OP_ENCTAIL && x == vm->tail_value && vm->tail_seg) {
        for (int i = 0; i < vm->tail_n; i++) {
          if (i) gw_buf_addc(&enc, '/');
          enc_segment(&enc, vm->tail_seg[i], vm->tail_len[i]);
        }
        st[sp - 1] = str_of(vm, &enc);
        break;
      }
      gwv_render(x, &r);
      const char *s = r.p ? r.p : "";
      if (op == GW_OP_ENCTAIL) {
        size_t start = 0;
        for (size_t i = 0; i <= r.n; i++)
          if (i == r.n || s[i] == '/') {
            if (start) gw_buf_addc(&enc, '/');
            enc_segment(&enc, s + start, i - start);
            start = i + 1;
          }
      } else if (op == GW_OP_ENCSEG) {
        enc_segment(&enc, s, r.n);
      } else {
        gwr_pct_encode(&enc, s, r.n);
      }
      gw_buf_free(&r);
      st[sp - 1] = str_of(vm, &enc);
      break;
    }
    case GW_OP_ADD: case GW_OP_SUB: case GW_OP_MUL: case GW_OP_DIV: case GW_OP_MOD: {
      y = st[--sp]; x = st[sp - 1];
      double u, v, r = 0;
      if (!gwv_to_double(x, &u, 0) || !gwv_to_double(y, &v, 0)) { st[sp - 1] = &gwv_null; break; }
      switch (GW_INS_OP(ins)) {
      case GW_OP_ADD: r = u + v; break;
      case GW_OP_SUB: r = u - v; break;
      case GW_OP_MUL: r = u * v; break;
      case GW_OP_DIV: if (v == 0) { st[sp - 1] = &gwv_null; continue; } r = u / v; break;
      default: if (v == 0) { st[sp - 1] = &gwv_null; continue; } r = fmod(u, v); break;
      }
      st[sp - 1] = num(vm, r);
      break;
    }
    case GW_OP_NEG: {
      double u;
      st[sp - 1] = gwv_to_double(st[sp - 1], &u, 0) ? num(vm, -u) : &gwv_null;
      break;
    }
    case GW_OP_NOT: st[sp - 1] = gwv_bool(!gwv_truthy(st[sp - 1])); break;
    case GW_OP_EQ: y = st[--sp]; st[sp - 1] = gwv_bool(gwv_equal(st[sp - 1], y)); break;
    case GW_OP_NE: y = st[--sp]; st[sp - 1] = gwv_bool(!gwv_equal(st[sp - 1], y)); break;
    case GW_OP_LT: case GW_OP_LE: case GW_OP_GT: case GW_OP_GE: {
      y = st[--sp];
      int c = gwv_compare(st[sp - 1], y), r = 0;
      if (c != 2) switch (GW_INS_OP(ins)) {
        case GW_OP_LT: r = c < 0; break;
        case GW_OP_LE: r = c <= 0; break;
        case GW_OP_GT: r = c > 0; break;
        default: r = c >= 0; break;
      }
      st[sp - 1] = gwv_bool(r);
      break;
    }
    case GW_OP_IN: {
      y = st[--sp]; x = st[sp - 1];
      int r = 0;
      if (y->type == GWV_ARRAY) { for (uint32_t i = 0; i < y->n && !r; i++) r = gwv_equal(x, y->u.items[i]); vm->steps += y->n; }
      else if (y->type == GWV_OBJECT && x->type == GWV_STRING) r = gwv_get(y, x->u.s, x->n) != NULL;
      st[sp - 1] = gwv_bool(r);
      break;
    }
    case GW_OP_TRUTHY: st[sp - 1] = gwv_bool(gwv_truthy(st[sp - 1])); break;
    case GW_OP_JMP: pc += a; break;
    case GW_OP_JNOTNULL: if (!GWV_IS_NULL(st[sp - 1])) pc += a; else sp--; break;
    case GW_OP_JTRUE: if (gwv_truthy(st[sp - 1])) { st[sp - 1] = &gwv_true; pc += a; } else sp--; break;
    case GW_OP_JFALSE: if (!gwv_truthy(st[sp - 1])) { st[sp - 1] = &gwv_false; pc += a; } else sp--; break;
    case GW_OP_FUNC: {
      int n = (int)(a >> 16);
      GwValue *r = builtin(vm, (int)(a & 0xFFFF), st + sp - n, n);
      if (!r) { vm->error = "expression too expensive (step budget exceeded)"; return NULL; }
      sp -= n;
      st[sp++] = r;
      break;
    }
    case GW_OP_RETURN: return st[sp - 1];
    default: vm->error = "bad opcode"; return NULL;
    }
  }
  vm->error = "block without RETURN";
  return NULL;
}
