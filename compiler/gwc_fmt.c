/*
** gwc_fmt.c — `gwc fmt`: a parsed file printed back in the canonical layout.
**
** The printer walks the AST of one file (parsed with comments kept) and
** writes new text; nothing of the old layout survives except what is
** listed below. The result must parse to the same AST and be a fixed point
** (fmt(fmt(x)) == fmt(x)).
**
** Layout:
**   - 4-space indentation; no trailing whitespace; the file ends with one
**     newline. Declarations are separated by exactly one blank line.
**   - Blocks (server, backend, auth, cors, endpoint, and nested blocks such
**     as breaker { }, health { }, tls { }) open with ` {` on their line, hold
**     one option or statement per line and close with `}` on its own line.
**     An empty block is `{ }`. `limit` declarations stay on one line.
**   - In an option block the option names (two-word options by their full
**     text, `key file`) are padded to the longest name + 1 so the values
**     line up; an option whose value is a nested block is not padded.
**   - Endpoint statements, one per line. A run of policy statements (auth,
**     limit, cors, cache, timeout) pads the keyword the same way; a run of
**     call statements is aligned in columns: name, `=`, backend, method,
**     then url and options. A run ends at a blank line or another kind of
**     statement.
**   - A single blank line is kept where the source had one or more between
**     two options, statements, entries or comments; none is added inside a
**     block, none follows `{` or precedes `}`.
**   - `;` is dropped, except after a call followed by an endpoint-level
**     `timeout` or `cache` (without it they would bind to the call).
**   - Expressions: one space around binary operators, none after unary
**     ones; parentheses the source had are kept (they can change what a
**     projection means), others are added only where precedence needs them.
**     Objects `{ a: 1, b, ...c }` / `{}`, arrays `[1, 2]`, selections
**     `x { a, b }`, calls `f(a, b)`. An object, array, selection or list
**     that spanned several lines in the source is printed one entry per line,
**     one level deeper, each entry followed by a comma, the `key:` of a run
**     of keyed entries padded so the values line up; one that was on a
**     single line stays on one line. Inside string interpolation everything
**     is on one line.
**   - Strings are re-escaped from their decoded value (\" \\ \n \t \r,
**     \u00XX for other control bytes, {{ }} for literal braces); numbers,
**     durations, sizes, rates and route paths print as written.
**   - Comments are never lost. A comment on a line of its own stays on its
**     own line before the next item (option, statement, entry, declaration)
**     at that item's indentation; one at the end of a line of code stays at
**     the end of that line, two spaces before the `#`. A comment that sat
**     inside a construct now printed on one line goes to the end of that
**     line (the first one) or on lines of their own just after it. Comments
**     left at the end of a block print before its `}`, those at the end of
**     the file after the last declaration.
**
** Not here: any check of the program (fmt only needs it to parse).
*/
#include <string.h>
#include "gwc.h"

typedef struct Fmt {
  const char *t;      /* source text */
  size_t      tlen;
  GwBuf      *o;
  Node       *cm;     /* next comment not printed yet */
  int         ind;    /* indentation level of the current line */
  int         pend;   /* before the next line: -1 no blank, 0 as in source, 1 blank */
  uint32_t    last;   /* source offset just past the last thing printed */
  int         one_line;  /* inside interpolation: no line breaks */
} Fmt;

static void expr(Fmt *F, Node *n);
static void item(Fmt *F, Node *n);
static void opts_block(Fmt *F, Node *list, uint32_t open, uint32_t close);

/* ---- spans --------------------------------------------------------------- */

/* Some builders set children after the span was computed (a call's url, a
** fail's condition, a limit's rate): widen every span to cover its children. */
static void fix_spans(Node *n) {
  Node *kids[3] = { n->a, n->b, n->c };
  for (int i = 0; i < 3; i++) {
    Node *k = kids[i];
    if (!k) continue;
    fix_spans(k);
    if (k->start < n->start) n->start = k->start;
    if (k->end > n->end) n->end = k->end;
  }
  for (Node *k = n->list; k; k = k->next) {
    fix_spans(k);
    if (k->start < n->start) n->start = k->start;
    if (k->end > n->end) n->end = k->end;
  }
}

/* ---- source text ------------------------------------------------------- */

/* A line holding only whitespace lies between offsets a and b. */
static int has_blank(Fmt *F, uint32_t a, uint32_t b) {
  int nl = 0, only_ws = 0;
  if (b > F->tlen) b = (uint32_t)F->tlen;
  for (uint32_t i = a; i < b; i++) {
    char c = F->t[i];
    if (c == '\n') { if (nl && only_ws) return 1; nl = 1; only_ws = 1; }
    else if (c != ' ' && c != '\t' && c != '\r') only_ws = 0;
  }
  return 0;
}

/* Only blanks, `;` and `,` on one line between a and b. */
static int same_line_clean(Fmt *F, uint32_t a, uint32_t b) {
  if (b < a || b > F->tlen) return 0;
  for (uint32_t i = a; i < b; i++) {
    char c = F->t[i];
    if (c != ' ' && c != '\t' && c != '\r' && c != ';' && c != ',') return 0;
  }
  return 1;
}

static int spans_lines(Fmt *F, uint32_t a, uint32_t b) {
  if (b > F->tlen) b = (uint32_t)F->tlen;
  for (uint32_t i = a; i < b; i++) if (F->t[i] == '\n') return 1;
  return 0;
}

/* The offset of the next `{` from `from`, skipping comments. */
static uint32_t find_brace(Fmt *F, uint32_t from) {
  uint32_t i = from;
  while (i < F->tlen && F->t[i] != '{') {
    if (F->t[i] == '#') while (i < F->tlen && F->t[i] != '\n') i++;
    else i++;
  }
  return i;
}

/* The end of the next word after from, skipping blanks and comments. */
static uint32_t word_end(Fmt *F, uint32_t from) {
  uint32_t i = from;
  for (;;) {
    while (i < F->tlen && (F->t[i] == ' ' || F->t[i] == '\t' || F->t[i] == '\r' || F->t[i] == '\n')) i++;
    if (i < F->tlen && F->t[i] == '#') { while (i < F->tlen && F->t[i] != '\n') i++; continue; }
    break;
  }
  while (i < F->tlen && (F->t[i] == '_' || (F->t[i] >= 'a' && F->t[i] <= 'z') || (F->t[i] >= 'A' && F->t[i] <= 'Z') ||
                         (F->t[i] >= '0' && F->t[i] <= '9'))) i++;
  return i;
}

/* The closing bracket of a bracketed node (its span may include the
** parentheses written around it). */
static uint32_t close_of(Fmt *F, const Node *n, char ch) {
  uint32_t p = n->end ? n->end - 1 : 0;
  while (p > n->off && F->t[p] != ch) p--;
  return p;
}

/* ---- output ------------------------------------------------------------ */

static void put(Fmt *F, const char *s) { gw_buf_adds(F->o, s); }
static void putn(Fmt *F, const char *s, size_t n) { gw_buf_add(F->o, s, n); }
static void spaces(Fmt *F, int n) { while (n-- > 0) gw_buf_addc(F->o, ' '); }
static void indent(Fmt *F) { spaces(F, 4 * F->ind); }

static void newline(Fmt *F) {
  while (F->o->n && strchr(" \t\r", F->o->p[F->o->n - 1])) F->o->n--;
  gw_buf_addc(F->o, '\n');
}

/* The blank line (or not) before a line that shows source offset pos. */
static void sep(Fmt *F, uint32_t pos) {
  int blank = F->pend == 1 || (F->pend == 0 && pos > F->last && has_blank(F, F->last, pos));
  if (blank && F->o->n && !(F->o->n >= 2 && F->o->p[F->o->n - 1] == '\n' && F->o->p[F->o->n - 2] == '\n'))
    gw_buf_addc(F->o, '\n');
  F->pend = 0;
}

static void took(Fmt *F, uint32_t end) { if (end > F->last) F->last = end; }

/* Comments before source offset pos, each on its own line. */
static void leading(Fmt *F, uint32_t pos) {
  while (F->cm && F->cm->off < pos) {
    sep(F, F->cm->off);
    indent(F);
    putn(F, F->cm->s, F->cm->n);
    newline(F);
    took(F, F->cm->off + F->cm->len);
    F->cm = F->cm->next;
  }
}

/* Start the line of an item whose source starts at pos. */
static void begin(Fmt *F, uint32_t pos) {
  leading(F, pos);
  sep(F, pos);
  indent(F);
}

/* End the line of an item whose source ends at end: the comments left
** inside it, and the one after it on the same line. The caller adds the
** newline. */
static void trail(Fmt *F, uint32_t end) {
  for (int k = 0; F->cm && (F->cm->off < end || same_line_clean(F, end, F->cm->off)); k++) {
    if (k == 0) put(F, "  ");
    else {
      newline(F);
      /* at the top level the comments that follow are a group of their own */
      if (k == 1 && F->ind == 0) gw_buf_addc(F->o, '\n');
      indent(F);
    }
    putn(F, F->cm->s, F->cm->n);
    took(F, F->cm->off + F->cm->len);
    F->cm = F->cm->next;
  }
  took(F, end);
}

/* A comment right after an opening bracket at pos, on the same line. */
static void open_trail(Fmt *F, uint32_t pos) {
  if (F->cm && F->cm->off >= pos && same_line_clean(F, pos, F->cm->off)) {
    put(F, "  ");
    putn(F, F->cm->s, F->cm->n);
    took(F, F->cm->off + F->cm->len);
    F->cm = F->cm->next;
  }
  took(F, pos);
}

/* Open a block whose `{` is at open and `}` at close. 0: it was empty and
** printed as `{ }`. */
static int block_open(Fmt *F, int empty, uint32_t open, uint32_t close) {
  if (empty && !(F->cm && F->cm->off < close)) { put(F, "{ }"); took(F, close + 1); return 0; }
  put(F, "{");
  open_trail(F, open + 1);
  newline(F);
  F->ind++;
  F->pend = -1;
  return 1;
}

static void block_close(Fmt *F, uint32_t close) {
  leading(F, close);
  F->ind--;
  indent(F);
  put(F, "}");
  F->pend = 0;
  took(F, close + 1);
}

/* ---- strings ------------------------------------------------------------- */

static void escaped(Fmt *F, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
    case '"': put(F, "\\\""); break;
    case '\\': put(F, "\\\\"); break;
    case '\n': put(F, "\\n"); break;
    case '\t': put(F, "\\t"); break;
    case '\r': put(F, "\\r"); break;
    case '{': put(F, "{{"); break;
    case '}': put(F, "}}"); break;
    default:
      if (c < 0x20) gw_buf_printf(F->o, "\\u%04x", c);
      else gw_buf_addc(F->o, (char)c);
    }
  }
}

static void str_lit(Fmt *F, const Node *n) {
  put(F, "\"");
  escaped(F, n->s, n->n);
  put(F, "\"");
}

/* An expression printed into a buffer of its own. */
static void render(Fmt *F, Node *n, GwBuf *b, int one_line) {
  GwBuf *saved = F->o;
  int saved_one = F->one_line;
  F->o = b;
  F->one_line = one_line;
  if (n->kind == E_ENTRY) {
    if (F->t[n->off] == '"') str_lit(F, n); else put(F, n->s);
  } else expr(F, n);
  F->o = saved;
  F->one_line = saved_one;
}

/* list: the literal parts (E_STR) alternating with the expressions. */
static void istr(Fmt *F, const Node *n) {
  put(F, "\"");
  int k = 0;
  for (Node *x = n->list; x; x = x->next, k++) {
    if (k % 2 == 0) { escaped(F, x->s, x->n); continue; }
    GwBuf b = {0};
    render(F, x, &b, 1);
    /* `{{` would be a literal brace */
    int brace = b.n && b.p[0] == '{';
    put(F, brace ? "{ " : "{");
    putn(F, b.p ? b.p : "", b.n);
    put(F, brace ? " }" : "}");
    gw_buf_free(&b);
  }
  put(F, "\"");
}

/* ---- expressions --------------------------------------------------------- */

static int is_postfix(int kind) {
  switch (kind) {
  case E_NAME: case E_CUR: case E_FIELD: case E_CALL: case E_OBJ: case E_ARR:
  case E_INDEX: case E_SLICE: case E_EACH: case E_FILTER: case E_SELECT: return 1;
  default: return 0;
  }
}

/* Binding strength, as the %left/%nonassoc lines of grammar/gw.y. */
static int op_prec(const Node *n) {
  if (n->kind == E_UN) return 7;
  if (n->kind != E_BIN) return is_postfix(n->kind) ? 9 : 8;
  switch (n->op) {
  case OPR_COALESCE: return 1;
  case OPR_OR: return 2;
  case OPR_AND: return 3;
  case OPR_ADD: case OPR_SUB: return 5;
  case OPR_MUL: case OPR_DIV: case OPR_MOD: return 6;
  default: return 4;
  }
}

/* The same, as an operand: a parenthesized node binds like a primary. */
static int prec(const Node *n) { return (n->flags & NF_PAREN) ? 9 : op_prec(n); }

static const char *op_text(int op) {
  static const char *const t[] = { "", "??", "||", "&&", "==", "!=", "<", "<=", ">", ">=",
                                   "in", "+", "-", "*", "/", "%", "!", "-" };
  return op > 0 && op <= OPR_NEG ? t[op] : "?";
}

static void sub(Fmt *F, Node *n, int parens) {
  if (parens) put(F, "(");
  expr(F, n);
  if (parens) put(F, ")");
}

static int key_width(Fmt *F, Node *e) {
  GwBuf b = {0};
  render(F, e, &b, 1);
  int w = (int)b.n;
  gw_buf_free(&b);
  return w;
}

/* `{ … }`, `[ … ]`: one line as in the source, or one entry per line. */
static void container(Fmt *F, Node *n, char open, char close, int spaced) {
  uint32_t cpos = close_of(F, n, close);
  int comments = F->cm && F->cm->off < cpos;
  int multi = !F->one_line && (spans_lines(F, n->off, cpos) || comments);
  char o[2] = { open, 0 }, c[2] = { close, 0 };
  if (!multi || (!n->list && !comments)) {
    put(F, o);
    if (n->list && spaced) put(F, " ");
    for (Node *x = n->list; x; x = x->next) {
      item(F, x);
      if (x->next) put(F, ", ");
    }
    if (n->list && spaced) put(F, " ");
    put(F, c);
    return;
  }
  put(F, o);
  open_trail(F, n->off + 1);
  newline(F);
  F->ind++;
  F->pend = -1;
  Node *run_end = NULL;
  int w = 0;
  for (Node *x = n->list; x; x = x->next) {
    if (!run_end) {
      /* a run of entries without a blank line: align their values */
      w = 0;
      for (Node *y = x;; y = y->next) {
        if (y->kind == E_ENTRY && y->a) { int k = key_width(F, y); if (k > w) w = k; }
        run_end = y;
        if (!y->next || has_blank(F, y->end, y->next->start)) break;
      }
    }
    begin(F, x->start);
    if (x->kind == E_ENTRY && x->a) {
      int k = key_width(F, x);
      GwBuf b = {0};
      render(F, x, &b, 1);
      putn(F, b.p, b.n);
      gw_buf_free(&b);
      put(F, ":");
      spaces(F, w - k + 1);
      expr(F, x->a);
    } else item(F, x);
    put(F, ",");
    trail(F, x->end);
    newline(F);
    if (x == run_end) run_end = NULL;
  }
  leading(F, cpos);
  F->ind--;
  indent(F);
  put(F, c);
  F->pend = 0;
  took(F, cpos + 1);
}

static void postfix_base(Fmt *F, Node *a) { sub(F, a, prec(a) < 9); }

static void expr_inner(Fmt *F, Node *n) {
  switch (n->kind) {
  case E_NULL: case E_TRUE: case E_FALSE: case E_NUM: case E_NAME: put(F, n->s); break;
  case E_CUR: put(F, "."); break;
  case E_STR: str_lit(F, n); break;
  case E_ISTR: istr(F, n); break;
  case E_FIELD:
    if (!(n->a->kind == E_CUR && !(n->a->flags & NF_PAREN))) postfix_base(F, n->a);
    put(F, ".");
    put(F, n->b->s);
    break;
  case E_INDEX: postfix_base(F, n->a); put(F, "["); expr(F, n->b); put(F, "]"); break;
  case E_SLICE:
    postfix_base(F, n->a);
    put(F, "[");
    if (n->b) expr(F, n->b);
    put(F, ":");
    if (n->c) expr(F, n->c);
    put(F, "]");
    break;
  case E_EACH: postfix_base(F, n->a); put(F, "[*]"); break;
  case E_FILTER: postfix_base(F, n->a); put(F, "[? "); expr(F, n->b); put(F, "]"); break;
  case E_SELECT: postfix_base(F, n->a); put(F, " "); container(F, n, '{', '}', 1); break;
  case E_OBJ: container(F, n, '{', '}', 1); break;
  case E_ARR: container(F, n, '[', ']', 0); break;
  case E_CALL:
    put(F, n->s);
    put(F, "(");
    for (Node *x = n->list; x; x = x->next) { expr(F, x); if (x->next) put(F, ", "); }
    put(F, ")");
    break;
  case E_BIN: {
    int p = op_prec(n), pa = prec(n->a), pb = prec(n->b);
    sub(F, n->a, pa < p || (p == 4 && pa == 4));
    put(F, " ");
    put(F, op_text(n->op));
    put(F, " ");
    sub(F, n->b, pb <= p);
    break;
  }
  case E_UN:
    put(F, op_text(n->op));
    if (n->a->kind == E_UN && n->a->op == n->op && !(n->a->flags & NF_PAREN)) put(F, " ");   /* `- -x` */
    sub(F, n->a, prec(n->a) < 7);
    break;
  case E_ENTRY:
    if (F->t[n->off] == '"') str_lit(F, n); else put(F, n->s);
    if (n->a) { put(F, ": "); expr(F, n->a); }
    break;
  case E_SPREAD: put(F, "..."); expr(F, n->a); break;
  default: item(F, n); break;
  }
}

static void expr(Fmt *F, Node *n) {
  if (n->flags & NF_PAREN) { put(F, "("); expr_inner(F, n); put(F, ")"); }
  else expr_inner(F, n);
}

/* ---- option values ------------------------------------------------------- */

static void val(Fmt *F, Node *v) {
  switch (v->kind) {
  case V_STR: str_lit(F, v); break;
  case V_LIST: container(F, v, '[', ']', 0); break;
  case V_ENV:
    put(F, v->s);
    put(F, "(");
    for (Node *x = v->list; x; x = x->next) { val(F, x); if (x->next) put(F, ", "); }
    put(F, ")");
    break;
  case V_BLOCK: {
    if (v->s[0]) { put(F, v->s); put(F, " "); }   /* `tls { … }` after listen */
    uint32_t open = find_brace(F, v->off);
    opts_block(F, v->list, open, close_of(F, v, '}'));
    break;
  }
  case V_WORD: putn(F, F->t + v->off, v->len); break;   /* `*` has no text of its own */
  default: put(F, v->s); break;
  }
}

static void item(Fmt *F, Node *n) {
  if (n->kind >= V_STR && n->kind <= V_ENV) val(F, n);
  else expr(F, n);
}

static void vals(Fmt *F, Node *list) {
  for (Node *x = list; x; x = x->next) { val(F, x); if (x->next) put(F, " "); }
}

/* ---- option blocks ------------------------------------------------------- */

static int opt_width(const Node *o) {
  return (int)strlen(o->s) + (o->b ? 1 + (int)strlen(o->b->s) : 0);
}

static void opt_name(Fmt *F, const Node *o) {
  put(F, o->s);
  if (o->b) { put(F, " "); put(F, o->b->s); }
}

static int opt_is_block(const Node *o) { return o->list && o->list->kind == V_BLOCK; }

static void opts_block(Fmt *F, Node *list, uint32_t open, uint32_t close) {
  if (!block_open(F, list == NULL, open, close)) return;
  int w = 0;
  for (Node *o = list; o; o = o->next)
    if (!opt_is_block(o) && opt_width(o) > w) w = opt_width(o);
  for (Node *o = list; o; o = o->next) {
    begin(F, o->start);
    opt_name(F, o);
    if (o->list || o->a) spaces(F, opt_is_block(o) ? 1 : w - opt_width(o) + 1);
    if (o->a) expr(F, o->a);
    else if (o->b && !strcmp(o->s, "jwks") && !strcmp(o->b->s, "url") && o->list && o->list->next) {
      val(F, o->list);          /* the grammar keeps no node for `refresh` */
      put(F, " refresh ");
      vals(F, o->list->next);
    } else vals(F, o->list);
    trail(F, o->end);
    newline(F);
  }
  block_close(F, close);
}

/* ---- endpoint statements ------------------------------------------------- */

static int is_policy(int kind) {
  return kind == S_AUTH || kind == S_LIMIT || kind == S_CORS || kind == S_CACHE || kind == S_TIMEOUT;
}

static const char *stmt_word(int kind) {
  switch (kind) {
  case S_AUTH: return "auth";
  case S_LIMIT: return "limit";
  case S_CORS: return "cors";
  case S_CACHE: return "cache";
  case S_TIMEOUT: return "timeout";
  case S_FAIL: return "fail";
  case S_RESPOND: return "respond";
  case S_HEADER: return "header";
  case S_PROXY: return "proxy";
  default: return "";
  }
}

static int same_run(Fmt *F, const Node *s, const Node *next) {
  if (!next || has_blank(F, s->end, next->start)) return 0;
  if (s->kind == S_CALL) return next->kind == S_CALL;
  return is_policy(s->kind) && is_policy(next->kind);
}

static void pad_to(Fmt *F, const char *s, int w) {
  put(F, s);
  spaces(F, w - (int)strlen(s));
}

static void stmt(Fmt *F, Node *s, const int *w) {
  const char *kw = stmt_word(s->kind);
  if (is_policy(s->kind)) { pad_to(F, kw, w[0]); put(F, " "); }
  else if (s->kind != S_CALL) put(F, kw);
  switch (s->kind) {
  case S_AUTH:
    if (s->op == 1) { put(F, "none"); break; }
    for (Node *x = s->list; x; x = x->next) { put(F, x->s); if (x->next) put(F, " or "); }
    break;
  case S_LIMIT:
    for (Node *x = s->list; x; x = x->next) { put(F, x->s); if (x->next) put(F, " "); }
    break;
  case S_CORS: put(F, s->a->s); break;
  case S_TIMEOUT: val(F, s->a); break;
  case S_CACHE:
    val(F, s->a);
    if (s->list) {
      put(F, " by ");
      for (Node *x = s->list; x; x = x->next) { expr(F, x); if (x->next) put(F, ", "); }
    }
    break;
  case S_CALL:
    pad_to(F, s->s, w[0]);
    put(F, " = ");
    pad_to(F, s->a->s, w[1]);
    put(F, " ");
    pad_to(F, s->b->s, w[2]);
    put(F, " ");
    expr(F, s->c);
    for (Node *o = s->list; o; o = o->next) {
      put(F, " ");
      put(F, o->s);
      if (o->a) { put(F, " "); expr(F, o->a); }
      else if (o->list) { put(F, " "); vals(F, o->list); }
    }
    break;
  case S_FAIL:
    put(F, " ");
    put(F, s->a->s);
    if (s->b) { put(F, " "); expr(F, s->b); }
    put(F, " if ");
    expr(F, s->c);
    break;
  case S_RESPOND:
    if (s->a) { put(F, " "); put(F, s->a->s); }
    if (s->b) { put(F, " "); expr(F, s->b); }
    break;
  case S_HEADER:
    put(F, " ");
    str_lit(F, s->a);
    put(F, " = ");
    expr(F, s->b);
    break;
  case S_PROXY:
    put(F, " ");
    put(F, s->a->s);
    if (s->c) { put(F, " "); expr(F, s->c); }
    break;
  default: break;
  }
}

static void stmts_block(Fmt *F, Node *list, uint32_t open, uint32_t close) {
  if (!block_open(F, list == NULL, open, close)) return;
  Node *run_end = NULL;
  int w[3] = { 0, 0, 0 };
  for (Node *s = list; s; s = s->next) {
    if (!run_end) {
      memset(w, 0, sizeof w);
      for (Node *y = s;; y = y->next) {
        int k[3] = { 0, 0, 0 };
        if (y->kind == S_CALL) {
          k[0] = (int)strlen(y->s); k[1] = (int)strlen(y->a->s); k[2] = (int)strlen(y->b->s);
        } else if (is_policy(y->kind)) k[0] = (int)strlen(stmt_word(y->kind));
        for (int i = 0; i < 3; i++) if (k[i] > w[i]) w[i] = k[i];
        run_end = y;
        if (!same_run(F, y, y->next)) break;
      }
    }
    begin(F, s->start);
    stmt(F, s, w);
    /* without the `;` the statement would become an option of the call */
    if (s->kind == S_CALL && s->next && (s->next->kind == S_TIMEOUT || s->next->kind == S_CACHE))
      put(F, ";");
    trail(F, s->end);
    newline(F);
    if (s == run_end) run_end = NULL;
  }
  block_close(F, close);
}

/* ---- declarations -------------------------------------------------------- */

static void decl(Fmt *F, Node *d) {
  uint32_t open = find_brace(F, d->off + d->len), close = d->end ? d->end - 1 : 0;
  switch (d->kind) {
  case D_IMPORT: put(F, "import "); str_lit(F, d->a); break;
  case D_SERVER: put(F, "server "); opts_block(F, d->list, open, close); break;
  case D_BACKEND: put(F, "backend "); put(F, d->s); put(F, " "); opts_block(F, d->list, open, close); break;
  case D_AUTH:
    put(F, "auth "); put(F, d->s); put(F, d->op == 1 ? " apikey " : " jwt ");
    opts_block(F, d->list, open, close);
    break;
  case D_CORS: put(F, "cors "); put(F, d->s); put(F, " "); opts_block(F, d->list, open, close); break;
  case D_LIMIT:
    put(F, "limit "); put(F, d->s); put(F, " "); val(F, d->a);
    for (Node *o = d->list; o; o = o->next) {
      put(F, " ");
      put(F, o->s);
      put(F, " ");
      if (o->a) expr(F, o->a); else vals(F, o->list);
    }
    break;
  case D_ENDPOINT:
    put(F, "endpoint "); val(F, d->a); put(F, " "); put(F, d->s); put(F, " ");
    stmts_block(F, d->list, open, close);
    break;
  default: break;
  }
}

/* Only blanks, `;` and comments between from and to. */
static int no_code(Fmt *F, uint32_t from, uint32_t to) {
  for (uint32_t i = from; i < to && i < F->tlen; i++) {
    char c = F->t[i];
    if (c == '#') { while (i + 1 < to && F->t[i + 1] != '\n') i++; continue; }
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != ';') return 0;
  }
  return 1;
}

void gwc_format(GwcCompiler *C, int file, GwBuf *out) {
  GwcFile *f = C->files[file];
  Fmt F = { f->text, f->len, out, f->comments, 0, -1, 0, 0 };
  for (Node *d = f->decls; d; d = d->next) {
    fix_spans(d);
    /* `auth none` keeps no node for `none` */
    if (d->kind == D_ENDPOINT)
      for (Node *s = d->list; s; s = s->next)
        if (s->kind == S_AUTH && s->op == 1) s->end = word_end(&F, s->off + s->len);
  }
  /* Code outside every declaration means a declaration was dropped (an
  ** error the caller did not see): printing the tree would lose it, so
  ** leave the file as it is. */
  uint32_t at = 0;
  for (Node *d = f->decls; d; d = d->next) {
    if (d->start < at || !no_code(&F, at, d->start)) at = UINT32_MAX;
    if (at == UINT32_MAX) break;
    at = d->end;
  }
  if (at == UINT32_MAX || !no_code(&F, at, (uint32_t)f->len)) {
    gw_buf_add(out, f->text, f->len);
    return;
  }
  for (Node *d = f->decls; d; d = d->next) {
    if (d != f->decls) F.pend = 1;
    begin(&F, d->start);
    decl(&F, d);
    trail(&F, d->end);
    newline(&F);
  }
  leading(&F, (uint32_t)f->len + 1);
}
