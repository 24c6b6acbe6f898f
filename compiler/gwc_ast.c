/*
** gwc_ast.c — the AST builders the grammar actions call (one line each in
** grammar/gw.y), and the conversion of literal option values (durations,
** sizes, rates) to numbers.
**
** Nodes live in the compilation's arena. Lists are chained through `next`;
** the first node of a list keeps its `tail` so appending is O(1).
*/
#include <string.h>
#include "gwc.h"
#include "gw_parse.h"

Node *gwc_node(GwcCompiler *C, int kind, const GwcToken *t) {
  Node *n = gw_arena_alloc(&C->arena, sizeof *n);
  n->kind = kind;
  n->idx = -1;
  if (t) {
    n->file = t->file;
    n->off = n->start = t->off;
    n->len = t->len;
    n->end = t->off + t->len;
    n->s = t->s ? t->s : "";
    n->n = t->n;
  } else {
    n->file = C->cur_file;
    n->s = "";
  }
  return n;
}

static void widen(Node *n, const Node *c) {
  if (!c) return;
  if (c->start < n->start) n->start = c->start;
  if (c->end > n->end) n->end = c->end;
}

Node *gwc_node2(GwcCompiler *C, int kind, int op, Node *a, Node *b) {
  Node *n = gwc_node(C, kind, NULL);
  const Node *m = a ? a : b;
  if (m) {
    n->file = m->file;
    n->off = m->off; n->len = m->len;
    n->start = m->start; n->end = m->end;
  }
  n->op = op;
  n->a = a; n->b = b;
  widen(n, a); widen(n, b);
  /* binary operators point at their left operand's start but are
  ** reported at the operator; the grammar does not pass the operator
  ** token, so keep the left operand's position. */
  return n;
}

Node *gwc_append(Node *list, Node *item) {
  if (!item) return list;
  if (!list) { item->tail = item; return item; }
  Node *t = list->tail ? list->tail : list;
  while (t->next) t = t->next;
  t->next = item;
  list->tail = item;
  return list;
}

Node *gwc_span_kids(Node *n) {
  widen(n, n->a); widen(n, n->b); widen(n, n->c);
  for (Node *x = n->list; x; x = x->next) widen(n, x);
  return n;
}

Node *gwc_with_list(Node *n, Node *list) {
  n->list = list;
  for (Node *x = list; x; x = x->next) widen(n, x);
  return n;
}

Node *gwc_at(Node *n, const GwcToken *t) {
  n->off = t->off; n->len = t->len;
  if (t->off < n->start) n->start = t->off;
  if (t->off + t->len > n->end) n->end = t->off + t->len;
  return n;
}

Node *gwc_extend(Node *n, const GwcToken *t) {
  if (t->off < n->start) n->start = t->off;
  return n;
}

Node *gwc_end_at(Node *n, const GwcToken *t) {
  if (t->off + t->len > n->end) n->end = t->off + t->len;
  return n;
}

Node *gwc_str_lit(GwcCompiler *C, const GwcToken *t) {
  return gwc_node(C, E_STR, t);
}

Node *gwc_istr_part(GwcCompiler *C, const GwcToken *t, Node *expr, Node *rest) {
  Node *s = gwc_node(C, E_STR, t);
  s->next = expr;
  if (expr) expr->next = rest;
  return s;
}

Node *gwc_istr(GwcCompiler *C, const GwcToken *beg, Node *first, Node *rest) {
  Node *n = gwc_node(C, E_ISTR, beg);
  Node *s = gwc_node(C, E_STR, beg);
  s->next = first;
  first->next = rest;
  n->list = s;
  for (Node *x = s; x; x = x->next) widen(n, x);
  return n;
}

Node *gwc_option(GwcCompiler *C, const GwcToken *name, Node *vals) {
  Node *n = gwc_node(C, O_OPT, name);
  return gwc_with_list(n, vals);
}

Node *gwc_option2(GwcCompiler *C, const GwcToken *name, const GwcToken *word, Node *vals) {
  Node *n = gwc_option(C, name, vals);
  n->b = gwc_node(C, V_WORD, word);
  widen(n, n->b);
  return n;
}

/* Digits of s[0..n) as a number; *ok cleared on overflow past 2^53. */
static uint64_t digits(const char *s, size_t n, size_t *used, int *ok) {
  uint64_t v = 0;
  size_t i = 0;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
    v = v * 10 + (uint64_t)(s[i] - '0');
    if (v > (1ull << 53)) *ok = 0;
  }
  *used = i;
  return v;
}

Node *gwc_value(GwcCompiler *C, int kind, const GwcToken *t) {
  Node *n = gwc_node(C, kind, t);
  size_t k = 0;
  int ok = 1;
  const char *u;
  switch (kind) {
  case V_DUR: {
    uint64_t v = digits(t->s, t->n, &k, &ok);
    u = t->s + k;
    uint64_t mul = !strcmp(u, "ms") ? 1 : !strcmp(u, "s") ? 1000 : !strcmp(u, "m") ? 60000
                 : !strcmp(u, "h") ? 3600000 : 86400000;
    /* the .gwb keeps milliseconds in 32 bits: past that a duration would wrap */
    if (ok && v > UINT32_MAX / mul) {
      gwc_diag(C, DIAG_ERROR, t->file, t->off, t->len, "duration '%s' is too long (at most 49d)", t->s);
      n->ival = UINT32_MAX;              /* reported once: no follow-up diagnostics */
      return n;
    }
    n->ival = v * mul;
    break;
  }
  case V_SIZE: {
    uint64_t v = digits(t->s, t->n, &k, &ok);
    u = t->s + k;
    uint64_t mul = !strcmp(u, "b") ? 1 : !strcmp(u, "kb") ? 1024 : !strcmp(u, "mb") ? 1048576 : 1073741824;
    /* the .gwb keeps sizes in 32 bits: past that a size would wrap */
    if (ok && v > UINT32_MAX / mul) {
      gwc_diag(C, DIAG_ERROR, t->file, t->off, t->len, "size '%s' is too large (at most 4095mb)", t->s);
      n->ival = UINT32_MAX;
      return n;
    }
    n->ival = v * mul;
    break;
  }
  case V_RATE: {
    uint64_t v = digits(t->s, t->n, &k, &ok);
    u = t->s + k + 1;
    n->ival = v;
    n->ival2 = (*u == 's') ? 1000 : (*u == 'm') ? 60000 : (*u == 'h') ? 3600000 : 86400000;
    break;
  }
  case V_NUM: {
    int integral = strspn(t->s, "0123456789") == t->n;
    if (integral) n->ival = digits(t->s, t->n, &k, &ok);
    else n->flags |= NF_FRACTION;
    break;
  }
  default: break;
  }
  if (!ok) gwc_diag(C, DIAG_ERROR, t->file, t->off, t->len, "value '%s' is too large", t->s);
  return n;
}

void gwc_decl(GwcCompiler *C, Node *decl) {
  GwcFile *f = C->files[C->cur_file];
  f->decls = gwc_append(f->decls, decl);
}
