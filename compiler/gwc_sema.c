/*
** gwc_sema.c — the checks: names, options and their kinds, routes, endpoint
** statements and expressions. Each problem gets its own diagnostic, with a
** hint where a close name exists. Results are left on the AST (Node.op/idx
** for names, Ep for endpoints) for the call graph and code generation.
**
** Not here: data flow (gwc_graph.c) and anything about the bytecode.
*/
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "gwc_sema.h"

/* ---- small helpers ---------------------------------------------------------- */

/* Arrays grow in the arena: when n reaches a power of two (or 4), copy
** into one twice as large. The old copy is left to the arena. */
static void *agrow(GwcCompiler *C, void *p, int n, size_t size) {
  if (n >= 4 && (n & (n - 1)) == 0) {
    void *q = gw_arena_alloc(&C->arena, size * (size_t)n * 2);
    memcpy(q, p, size * (size_t)n);
    return q;
  }
  if (n == 0) return gw_arena_alloc(&C->arena, size * 4);
  return p;
}
#define PUSH(arr, n, x) ((arr) = agrow(C, (arr), (n), sizeof *(arr)), (arr)[(n)++] = (x))

int gwc_builtin(const char *name) {
  for (int i = 0; i < GW_FN_MAX; i++) if (!strcmp(gw_fns[i].name, name)) return i;
  return -1;
}

static const char *kind_desc(const Node *v) {
  switch (v->kind) {
  case V_STR: return "a string";
  case V_NUM: return "a number";
  case V_DUR: return "a duration";
  case V_SIZE: return "a size";
  case V_RATE: return "a rate";
  case V_WORD: return "a word";
  case V_BOOL: return "true/false";
  case V_LIST: return "a list";
  case V_BLOCK: return "a block";
  case V_ENV: return "a function call";
  default: return "an expression";
  }
}

const char *gwc_opt_name(GwcCompiler *C, const Node *o) {
  if (!o->b) return o->s;
  return gw_arena_printf(&C->arena, "%s %s", o->s, o->b->s);
}

Node *gwc_opt(Node *list, const char *name) {
  for (Node *o = list; o; o = o->next) {
    if (o->kind != O_OPT) continue;
    if (o->b) {
      size_t l = strlen(o->s);
      if (!strncmp(name, o->s, l) && name[l] == ' ' && !strcmp(name + l + 1, o->b->s)) return o;
    } else if (!strcmp(o->s, name)) return o;
  }
  return NULL;
}

static int lookup(Node **v, int n, const char *name) {
  for (int i = 0; i < n; i++) if (!strcmp(v[i]->s, name)) return i;
  return -1;
}
int gwc_lookup_backend(GwcCompiler *C, const char *name) { return lookup(C->backends, C->nbackends, name); }
int gwc_lookup_auth(GwcCompiler *C, const char *name) { return lookup(C->auths, C->nauths, name); }
int gwc_lookup_limit(GwcCompiler *C, const char *name) { return lookup(C->limits, C->nlimits, name); }
int gwc_lookup_cors(GwcCompiler *C, const char *name) { return lookup(C->corses, C->ncorses, name); }

static void note_prev(GwcCompiler *C, const Node *prev, const char *what) {
  gwc_diag_node(C, DIAG_NOTE, prev, "%s declared here", what);
}

/* "unknown X 'name'; did you mean 'y'?" over the names of v[]. */
static void unknown(GwcCompiler *C, const Node *at, const char *what, const char *name,
                     const char *const *names, int n) {
  const char *hint = gwc_closest(name, names, n);
  if (hint) gwc_diag_node(C, DIAG_ERROR, at, "unknown %s '%s'; did you mean '%s'?", what, name, hint);
  else gwc_diag_node(C, DIAG_ERROR, at, "unknown %s '%s'", what, name);
}

static void unknown_in(GwcCompiler *C, const Node *at, const char *what, const char *name, Node **v, int n) {
  const char **names = calloc((size_t)n + 1, sizeof *names);
  if (!names) abort();
  for (int i = 0; i < n; i++) names[i] = v[i]->s;
  unknown(C, at, what, name, names, n);
  free(names);
}

/* ---- options ------------------------------------------------------------------ */

/* Value kinds an option takes. */
enum {
  OK_DUR, OK_SIZE, OK_INT, OK_STR, OK_BOOL, OK_WORD, OK_WORDS, OK_STRS, OK_URL,
  OK_ADDR, OK_BLOCK, OK_EXPR, OK_RATE, OK_JWKSURL, OK_FROM, OK_LISTEN, OK_METHODS
};

typedef struct OptSpec {
  const char *name;
  int kind;
  int repeat;
  const char *const *words;        /* OK_WORD / OK_WORDS */
  const struct OptSpec *sub;       /* OK_BLOCK */
} OptSpec;

static const char *const balance_words[] = { "round_robin", "least_requests", NULL };
static const char *const store_words[] = { "local", "redis", NULL };
static const char *const onerror_words[] = { "allow", "deny", NULL };

static const OptSpec tls_listen_spec[] = {
  { "cert", OK_STR, 1, 0, 0 }, { "key", OK_STR, 1, 0, 0 }, { 0, 0, 0, 0, 0 } };
static const OptSpec server_spec[] = {
  { "listen", OK_LISTEN, 1, 0, 0 }, { "admin", OK_ADDR, 0, 0, 0 }, { "drain", OK_DUR, 0, 0, 0 },
  { "workers", OK_INT, 0, 0, 0 }, { "max_body", OK_SIZE, 0, 0, 0 }, { "max_header", OK_SIZE, 0, 0, 0 },
  { "max_headers", OK_INT, 0, 0, 0 }, { "max_request_line", OK_SIZE, 0, 0, 0 },
  { "header_timeout", OK_DUR, 0, 0, 0 }, { "body_timeout", OK_DUR, 0, 0, 0 },
  { "idle_timeout", OK_DUR, 0, 0, 0 }, { "max_connections", OK_INT, 0, 0, 0 },
  { "cache_size", OK_SIZE, 0, 0, 0 }, { "trusted_proxies", OK_STRS, 0, 0, 0 },
  { "redis", OK_URL, 0, 0, 0 }, { "redis_timeout", OK_DUR, 0, 0, 0 },
  { "max_json_depth", OK_INT, 0, 0, 0 }, { "limit_keys", OK_INT, 0, 0, 0 }, { 0, 0, 0, 0, 0 } };
static const OptSpec breaker_spec[] = {
  { "failures", OK_INT, 0, 0, 0 }, { "window", OK_DUR, 0, 0, 0 }, { "cooldown", OK_DUR, 0, 0, 0 },
  { 0, 0, 0, 0, 0 } };
static const OptSpec health_spec[] = {
  { "path", OK_STR, 0, 0, 0 }, { "every", OK_DUR, 0, 0, 0 }, { "failures", OK_INT, 0, 0, 0 },
  { "cooldown", OK_DUR, 0, 0, 0 }, { 0, 0, 0, 0, 0 } };
static const OptSpec btls_spec[] = {
  { "ca", OK_STR, 0, 0, 0 }, { "cert", OK_STR, 0, 0, 0 }, { "key", OK_STR, 0, 0, 0 },
  { "verify", OK_BOOL, 0, 0, 0 }, { 0, 0, 0, 0, 0 } };
static const OptSpec backend_spec[] = {
  { "url", OK_URL, 1, 0, 0 }, { "balance", OK_WORD, 0, balance_words, 0 },
  { "timeout", OK_DUR, 0, 0, 0 }, { "connect_timeout", OK_DUR, 0, 0, 0 },
  { "retries", OK_INT, 0, 0, 0 }, { "max_connections", OK_INT, 0, 0, 0 },
  { "max_response", OK_SIZE, 0, 0, 0 }, { "breaker", OK_BLOCK, 0, 0, breaker_spec },
  { "health", OK_BLOCK, 0, 0, health_spec }, { "headers", OK_EXPR, 0, 0, 0 },
  { "tls", OK_BLOCK, 0, 0, btls_spec }, { 0, 0, 0, 0, 0 } };
static const OptSpec jwt_spec[] = {
  { "algorithms", OK_WORDS, 0, gw_jwt_algs, 0 }, { "key file", OK_STR, 0, 0, 0 },
  { "jwks file", OK_STR, 0, 0, 0 }, { "jwks url", OK_JWKSURL, 0, 0, 0 },
  { "issuer", OK_STR, 0, 0, 0 }, { "audience", OK_STR, 0, 0, 0 }, { "leeway", OK_DUR, 0, 0, 0 },
  { "from header", OK_FROM, 0, 0, 0 }, { "from cookie", OK_STR, 0, 0, 0 },
  { "require", OK_EXPR, 0, 0, 0 }, { 0, 0, 0, 0, 0 } };
static const OptSpec apikey_spec[] = {
  { "from header", OK_STR, 0, 0, 0 }, { "from query", OK_STR, 0, 0, 0 },
  { "keys file", OK_STR, 0, 0, 0 }, { 0, 0, 0, 0, 0 } };
static const OptSpec cors_spec[] = {
  { "origins", OK_STRS, 0, 0, 0 }, { "methods", OK_METHODS, 0, 0, 0 }, { "headers", OK_STRS, 0, 0, 0 },
  { "expose_headers", OK_STRS, 0, 0, 0 }, { "credentials", OK_BOOL, 0, 0, 0 },
  { "max_age", OK_DUR, 0, 0, 0 }, { 0, 0, 0, 0, 0 } };

static const char *expect_desc(int kind) {
  switch (kind) {
  case OK_DUR: return "a duration (like 250ms or 5s)";
  case OK_SIZE: return "a size (like 64kb or 1mb)";
  case OK_INT: return "a whole number";
  case OK_STR: return "a string";
  case OK_BOOL: return "true or false";
  case OK_RATE: return "a rate (like 100/min)";
  case OK_URL: return "a string or env(\"NAME\")";
  case OK_ADDR: return "a port number or a \"host:port\" string";
  case OK_STRS: return "a list of strings";
  case OK_METHODS: return "a list of methods";
  default: return "a value";
  }
}

static int value_is(GwcCompiler *C, const Node *v, int kind) {
  switch (kind) {
  case OK_DUR: return v->kind == V_DUR;
  case OK_SIZE: return v->kind == V_SIZE;
  case OK_RATE: return v->kind == V_RATE;
  case OK_INT: return v->kind == V_NUM && !(v->flags & NF_FRACTION) && v->s[0] != '-';
  case OK_STR: return v->kind == V_STR;
  case OK_BOOL: return v->kind == V_BOOL;
  case OK_URL: return v->kind == V_STR || v->kind == V_ENV;
  case OK_ADDR: return v->kind == V_STR || (v->kind == V_NUM && !(v->flags & NF_FRACTION));
  default: (void)C; return 1;
  }
}

static void check_env_call(GwcCompiler *C, Node *v);

/* Check a value of one of the single-value kinds. */
static int check_scalar(GwcCompiler *C, const Node *o, const char *oname, Node *v, int kind) {
  if (!value_is(C, v, kind)) {
    if (v->kind == V_NUM)
      gwc_diag_node(C, DIAG_ERROR, v, "'%s' takes %s, not %s", oname, expect_desc(kind), v->s);
    else
      gwc_diag_node(C, DIAG_ERROR, v, "'%s' takes %s, not %s", oname, expect_desc(kind), kind_desc(v));
    return 0;
  }
  if (v->kind == V_ENV) check_env_call(C, v);
  if (kind == OK_ADDR && v->kind == V_NUM && (v->ival == 0 || v->ival > 65535)) {
    gwc_diag_node(C, DIAG_ERROR, v, "port %s out of range (1-65535)", v->s);
    return 0;
  }
  (void)o;
  return 1;
}

static int count_list(const Node *l) { int n = 0; for (; l; l = l->next) n++; return n; }

static void check_opts(GwcCompiler *C, Node *opts, const OptSpec *spec, const char *what);

static void check_opt(GwcCompiler *C, Node *o, const OptSpec *sp, const OptSpec *hint_spec) {
  const char *oname = gwc_opt_name(C, o);
  int nv = count_list(o->list);
  switch (sp->kind) {
  case OK_EXPR:
    if (!o->a) gwc_diag_node(C, DIAG_ERROR, o, "'%s' takes an expression", oname);
    return;
  case OK_WORDS:
    if (nv == 0) { gwc_diag_node(C, DIAG_ERROR, o, "'%s' needs at least one value", oname); return; }
    for (Node *v = o->list; v; v = v->next) {
      if (v->kind != V_WORD) { gwc_diag_node(C, DIAG_ERROR, v, "'%s' takes words, not %s", oname, kind_desc(v)); continue; }
      if (!strcasecmp(v->s, "none")) { gwc_diag_node(C, DIAG_ERROR, v, "algorithm 'none' is never accepted"); continue; }
      int ok = 0;
      for (int i = 0; sp->words[i]; i++) if (!strcmp(sp->words[i], v->s)) ok = 1;
      if (!ok) {
        int n = 0; while (sp->words[n]) n++;
        unknown(C, v, "algorithm", v->s, sp->words, n);
      }
    }
    return;
  case OK_STRS: case OK_METHODS:
    if (o->a) {                  /* `headers [..]` parses as an expression */
      if (o->a->kind != E_ARR) { gwc_diag_node(C, DIAG_ERROR, o->a, "'%s' takes %s", oname, expect_desc(sp->kind)); return; }
      for (Node *v = o->a->list; v; v = v->next)
        if (v->kind != E_STR) gwc_diag_node(C, DIAG_ERROR, v, "'%s' takes strings", oname);
      return;
    }
    if (nv != 1 || o->list->kind != V_LIST) {
      gwc_diag_node(C, DIAG_ERROR, nv ? o->list : o, "'%s' takes %s", oname, expect_desc(sp->kind));
      return;
    }
    for (Node *v = o->list->list; v; v = v->next) {
      if (sp->kind == OK_METHODS && (v->kind == V_WORD || v->kind == V_STR)) {
        static const char *const m[] = { "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", NULL };
        int ok = 0;
        for (int i = 0; m[i]; i++) if (!strcmp(m[i], v->s)) ok = 1;
        if (!ok) unknown(C, v, "method", v->s, m, 7);
      } else if (v->kind != V_STR) {
        gwc_diag_node(C, DIAG_ERROR, v, "'%s' takes strings, not %s", oname, kind_desc(v));
      }
    }
    return;
  case OK_BLOCK:
    if (nv != 1 || o->list->kind != V_BLOCK) {
      gwc_diag_node(C, DIAG_ERROR, nv ? o->list : o, "'%s' takes a block { … }", oname);
      return;
    }
    check_opts(C, o->list->list, sp->sub, oname);
    return;
  case OK_JWKSURL:
    if (nv < 1 || !check_scalar(C, o, oname, o->list, OK_STR)) return;
    if (nv == 2) {
      Node *r = o->list->next;
      if (check_scalar(C, o, "refresh", r, OK_DUR) && r->ival < 10000)
        gwc_diag_node(C, DIAG_ERROR, r, "'refresh' must be at least 10s");
    }
    return;
  case OK_FROM:
    if (nv < 1) return;
    check_scalar(C, o, oname, o->list, OK_STR);
    return;
  case OK_LISTEN:
    if (nv < 1) { gwc_diag_node(C, DIAG_ERROR, o, "'listen' takes a port or an address"); return; }
    check_scalar(C, o, oname, o->list, OK_ADDR);
    if (nv == 2) {
      Node *b = o->list->next;
      check_opts(C, b->list, tls_listen_spec, "tls");
      int nc = 0, nk = 0;
      for (Node *x = b->list; x; x = x->next) { if (!strcmp(x->s, "cert")) nc++; if (!strcmp(x->s, "key")) nk++; }
      if (nc == 0 || nc != nk)
        gwc_diag_node(C, DIAG_ERROR, b, "a tls listener needs cert and key in pairs (%d cert, %d key)", nc, nk);
    }
    return;
  case OK_WORD:
    if (nv != 1 || o->list->kind != V_WORD) {
      gwc_diag_node(C, DIAG_ERROR, nv ? o->list : o, "'%s' takes one of: %s%s%s", oname, sp->words[0],
                    sp->words[1] ? ", " : "", sp->words[1] ? sp->words[1] : "");
      return;
    } else {
      int ok = 0, n = 0;
      for (; sp->words[n]; n++) if (!strcmp(sp->words[n], o->list->s)) ok = 1;
      if (!ok) unknown(C, o->list, oname, o->list->s, sp->words, n);
    }
    return;
  default:
    if (nv != 1) {
      Node *extra = nv ? o->list->next ? o->list->next : o : o;
      if (extra->kind == V_WORD && hint_spec) {
        /* most likely a misspelt option that the value list swallowed */
        const char *names[64];
        int n = 0;
        for (const OptSpec *s = hint_spec; s->name && n < 63; s++) names[n++] = s->name;
        const char *hint = gwc_closest(extra->s, names, n);
        if (hint) {
          gwc_diag_node(C, DIAG_ERROR, extra, "unknown option '%s'; did you mean '%s'?", extra->s, hint);
          return;
        }
      }
      gwc_diag_node(C, DIAG_ERROR, extra, "'%s' takes one value (%s)", oname, expect_desc(sp->kind));
      return;
    }
    check_scalar(C, o, oname, o->list, sp->kind);
  }
}

static void check_opts(GwcCompiler *C, Node *opts, const OptSpec *spec, const char *what) {
  for (Node *o = opts; o; o = o->next) {
    const char *oname = gwc_opt_name(C, o);
    const OptSpec *sp = NULL;
    for (const OptSpec *s = spec; s->name; s++) if (!strcmp(s->name, oname)) { sp = s; break; }
    if (!sp) {
      const char *names[64];
      int n = 0;
      for (const OptSpec *s = spec; s->name && n < 63; s++) names[n++] = s->name;
      names[n] = NULL;
      const char *hint = gwc_closest(oname, names, n);
      if (hint) gwc_diag_node(C, DIAG_ERROR, o, "unknown option '%s' in %s; did you mean '%s'?", oname, what, hint);
      else gwc_diag_node(C, DIAG_ERROR, o, "unknown option '%s' in %s", oname, what);
      continue;
    }
    if (!sp->repeat) {
      Node *first = gwc_opt(opts, oname);
      if (first != o) {
        gwc_diag_node(C, DIAG_ERROR, o, "duplicate option '%s' in %s", oname, what);
        note_prev(C, first, "first");
        continue;
      }
    }
    check_opt(C, o, sp, spec);
  }
}

/* ---- expressions ------------------------------------------------------------------ */

typedef struct Scope {
  int ctx;
  Ep *ep;
  int lambda;          /* inside a selection, filter or sort_by key */
  int no_calls;        /* call results are not available (cache keys) */
  int depth;
} Scope;

static const char *const root_names[] = { "query", "headers", "body", "jwt", "client" };

static void check_env_call(GwcCompiler *C, Node *v) {
  /* v is V_ENV (option) or E_CALL env(...) */
  if (strcmp(v->s, "env")) {
    gwc_diag_node(C, DIAG_ERROR, v, "only env(\"NAME\"[, \"default\"]) may be called here, not '%s'", v->s);
    return;
  }
  int n = count_list(v->list);
  if (n < 1 || n > 2) { gwc_diag_node(C, DIAG_ERROR, v, "env() takes a name and an optional default"); return; }
  for (Node *a = v->list; a; a = a->next)
    if (a->kind != V_STR && a->kind != E_STR) {
      gwc_diag_node(C, DIAG_ERROR, a, "env() takes string literals");
      return;
    }
  const char *name = v->list->s;
  int ok = name[0] && !(name[0] >= '0' && name[0] <= '9');
  for (const char *p = name; *p; p++)
    if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) ok = 0;
  if (!ok) gwc_diag_node(C, DIAG_ERROR, v->list, "invalid environment variable name '%s'", name);
}

static void check_expr(GwcCompiler *C, Scope *S, Node *e);

static void resolve_name(GwcCompiler *C, Scope *S, Node *e, const char *name) {
  Ep *ep = S->ep;
  e->op = R_NONE;
  if (ep) {
    for (int i = 0; i < ep->nparams; i++)
      if (!strcmp(ep->params[i].name, name)) { e->op = R_PARAM; e->idx = i; ep->params[i].used = 1; return; }
    for (int i = 0; i < ep->ncalls; i++)
      if (!strcmp(ep->calls[i]->s, name)) {
        e->op = R_CALL; e->idx = i;
        if (S->no_calls)
          gwc_diag_node(C, DIAG_ERROR, e, "a cache key is computed before any call is made; '%s' is a call result", name);
        return;
      }
  }
  for (int i = 0; i < 5; i++)
    if (!strcmp(root_names[i], name)) {
      e->op = R_ROOT; e->idx = i;
      int allowed = S->ctx == CTX_ENDPOINT ? 1
                  : S->ctx == CTX_BACKEND ? 0
                  : (i != GW_ROOT_BODY);
      if (!allowed) {
        gwc_diag_node(C, DIAG_ERROR, e, "'%s' is not available in %s", name,
                      S->ctx == CTX_BACKEND ? "backend headers (only constants and env())" : "this policy");
        return;
      }
      if (i == GW_ROOT_JWT && ep && !ep->has_jwt && S->ctx == CTX_ENDPOINT)
        gwc_diag_node(C, DIAG_ERROR, e, "'jwt' is used but the endpoint has no jwt auth");
      return;
    }
  /* not found: hint from every visible name */
  const char **names = calloc((size_t)(ep ? ep->nparams + ep->ncalls : 0) + 6, sizeof *names);
  if (!names) abort();
  int n = 0;
  if (ep) {
    for (int i = 0; i < ep->nparams; i++) names[n++] = ep->params[i].name;
    for (int i = 0; i < ep->ncalls; i++) names[n++] = ep->calls[i]->s;
  }
  for (int i = 0; i < 5; i++) names[n++] = root_names[i];
  unknown(C, e, "name", name, names, n);
  free(names);
}

static void check_list(GwcCompiler *C, Scope *S, Node *l) { for (; l; l = l->next) check_expr(C, S, l); }

static void check_entries(GwcCompiler *C, Scope *S, Node *l, int selection) {
  for (Node *x = l; x; x = x->next) {
    if (x->kind == E_SPREAD) { check_expr(C, S, x->a); continue; }
    if (x->a) check_expr(C, S, x->a);
    else if (!selection) resolve_name(C, S, x, x->s);
  }
}

static void check_expr(GwcCompiler *C, Scope *S, Node *e) {
  if (!e) return;
  if (++S->depth > GWC_MAX_DEPTH) {
    gwc_diag_node(C, DIAG_ERROR, e, "expression nested too deeply");
    S->depth--;
    return;
  }
  switch (e->kind) {
  case E_NULL: case E_TRUE: case E_FALSE: case E_NUM: case E_STR: break;
  case E_ISTR: check_list(C, S, e->list); break;
  case E_NAME: resolve_name(C, S, e, e->s); break;
  case E_CUR:
    if (!S->lambda)
      gwc_diag_node(C, DIAG_ERROR, e, "'.' is only valid inside a selection { }, a filter [? ] or sort_by");
    break;
  case E_FIELD: check_expr(C, S, e->a); break;
  case E_INDEX: check_expr(C, S, e->a); check_expr(C, S, e->b); break;
  case E_SLICE: check_expr(C, S, e->a); check_expr(C, S, e->b); check_expr(C, S, e->c); break;
  case E_EACH: check_expr(C, S, e->a); break;
  case E_FILTER: case E_SELECT: {
    check_expr(C, S, e->a);
    int saved = S->lambda;
    S->lambda = 1;
    if (e->kind == E_FILTER) check_expr(C, S, e->b); else check_entries(C, S, e->list, 1);
    S->lambda = saved;
    break;
  }
  case E_OBJ: check_entries(C, S, e->list, 0); break;
  case E_ARR: check_list(C, S, e->list); break;
  case E_CALL: {
    int fn = gwc_builtin(e->s);
    int n = count_list(e->list);
    if (fn < 0) {
      const char *names[GW_FN_MAX];
      for (int i = 0; i < GW_FN_MAX; i++) names[i] = gw_fns[i].name;
      unknown(C, e, "function", e->s, names, GW_FN_MAX);
      check_list(C, S, e->list);
      break;
    }
    e->idx = fn;
    if (n < gw_fns[fn].min || n > gw_fns[fn].max) {
      if (gw_fns[fn].min == gw_fns[fn].max)
        gwc_diag_node(C, DIAG_ERROR, e, "%s() takes %d argument%s, not %d", e->s, gw_fns[fn].min, gw_fns[fn].min == 1 ? "" : "s", n);
      else
        gwc_diag_node(C, DIAG_ERROR, e, "%s() takes %d to %d arguments, not %d", e->s, gw_fns[fn].min, gw_fns[fn].max, n);
      break;
    }
    if (fn == GW_FN_env) { check_env_call(C, e); break; }
    if (fn == GW_FN_sort_by) {
      check_expr(C, S, e->list);
      int saved = S->lambda;
      S->lambda = 1;
      check_expr(C, S, e->list->next);
      S->lambda = saved;
      break;
    }
    check_list(C, S, e->list);
    break;
  }
  case E_BIN:
    if (e->op >= OPR_EQ && e->op <= OPR_IN)
      for (Node *x = e->a; x; x = x == e->a ? e->b : NULL)
        if (x->kind == E_BIN && x->op >= OPR_EQ && x->op <= OPR_IN && !(x->flags & NF_PAREN)) {
          gwc_diag_node(C, DIAG_ERROR, x, "comparisons do not chain; write (a < b) && (b < c)");
          break;
        }
    check_expr(C, S, e->a); check_expr(C, S, e->b);
    break;
  case E_UN: check_expr(C, S, e->a); break;
  default: break;
  }
  S->depth--;
}

/* ---- routes -------------------------------------------------------------------------- */

static int is_pchar(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         strchr("-._~!$&'()*+,;=:@%", c) != NULL;
}

static void parse_route(GwcCompiler *C, Ep *ep) {
  Node *d = ep->decl;
  const char *p = d->s;
  uint32_t base = d->off;
  if (p[0] != '/') { gwc_diag_node(C, DIAG_ERROR, d, "a route path starts with '/'"); return; }
  const char *s = p + 1;
  if (*s == 0) return;                                    /* the root "/" */
  for (;;) {
    const char *e = strchr(s, '/');
    if (!e) e = s + strlen(s);
    uint32_t off = base + (uint32_t)(s - p), len = (uint32_t)(e - s);
    if (e == s) {
      gwc_diag(C, DIAG_ERROR, d->file, off, 1, "empty segment in route path");
      break;
    }
    Seg seg = { GW_SEG_STATIC, NULL };
    if (*s == '{') {
      const char *close = memchr(s, '}', (size_t)(e - s));
      if (!close || close + 1 != e) {
        gwc_diag(C, DIAG_ERROR, d->file, off, len, "a path parameter must be a whole segment, like /{id}");
        break;
      }
      const char *colon = memchr(s, ':', (size_t)(close - s));
      const char *nend = colon ? colon : close;
      int tail = 0;
      if (nend[-1] == '*') { tail = 1; nend--; }
      else if (colon && close[-1] == '*') {
        gwc_diag(C, DIAG_ERROR, d->file, off, len, "a tail parameter {name*} takes no type");
        goto next;
      }
      char *name = gw_arena_strndup(&C->arena, s + 1, (size_t)(nend - s - 1));
      seg.text = name;
      int valid = name[0] && !(name[0] >= '0' && name[0] <= '9') && !memchr(s + 1, '*', (size_t)(nend - s - 1));
      for (const char *q = name; *q; q++)
        if (!((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_')) valid = 0;
      if (!valid) {
        gwc_diag(C, DIAG_ERROR, d->file, off, len, "invalid path parameter '%.*s' (write {name}, {name:int}, {name:uuid} or {name*})",
                 (int)len, s);
        goto next;
      }
      seg.kind = tail ? GW_SEG_TAIL : GW_SEG_STRING;
      if (colon) {
        char *type = gw_arena_strndup(&C->arena, colon + 1, (size_t)(close - colon - 1));
        if (tail) gwc_diag(C, DIAG_ERROR, d->file, off, len, "a tail parameter {%s*} takes no type", name);
        else if (!strcmp(type, "int")) seg.kind = GW_SEG_INT;
        else if (!strcmp(type, "uuid")) seg.kind = GW_SEG_UUID;
        else if (!strcmp(type, "string")) seg.kind = GW_SEG_STRING;
        else {
          static const char *const types[] = { "int", "uuid", "string" };
          const char *hint = gwc_closest(type, types, 3);
          gwc_diag(C, DIAG_ERROR, d->file, base + (uint32_t)(colon + 1 - p), (uint32_t)(close - colon - 1),
                   "unknown parameter type '%s'%s%s%s", type, hint ? "; did you mean '" : "", hint ? hint : "", hint ? "'?" : "");
        }
      }
      if (tail && *e) gwc_diag(C, DIAG_ERROR, d->file, off, len, "a tail parameter {%s*} must be the last segment", name);
      for (int i = 0; i < ep->nparams; i++)
        if (!strcmp(ep->params[i].name, name)) {
          gwc_diag(C, DIAG_ERROR, d->file, off, len, "path parameter '%s' declared twice", name);
          goto next;
        }
      static const char *const roots[] = { "query", "headers", "body", "jwt", "client" };
      for (int i = 0; i < 5; i++)
        if (!strcmp(roots[i], name))
          gwc_diag(C, DIAG_ERROR, d->file, off, len, "path parameter '%s' hides the request root of that name", name);
      Param pr = { name, seg.kind, d, 0 };
      PUSH(ep->params, ep->nparams, pr);
    } else {
      seg.text = gw_arena_strndup(&C->arena, s, (size_t)(e - s));
      if (memchr(s, '{', (size_t)(e - s)) || memchr(s, '}', (size_t)(e - s))) {
        gwc_diag(C, DIAG_ERROR, d->file, off, len, "a path parameter must be a whole segment, like /{id}");
        goto next;
      }
      for (const char *q = s; q < e; q++)
        if (!is_pchar((unsigned char)*q)) {
          unsigned char c = (unsigned char)*q;
          if (c > 0x20 && c < 0x7f)
            gwc_diag(C, DIAG_ERROR, d->file, base + (uint32_t)(q - p), 1, "invalid character '%c' in route path", c);
          else
            gwc_diag(C, DIAG_ERROR, d->file, base + (uint32_t)(q - p), 1, "invalid character '\\x%02x' in route path", c);
          goto next;
        }
      if (!strcmp(seg.text, ".") || !strcmp(seg.text, ".."))
        gwc_diag(C, DIAG_ERROR, d->file, off, len, "'%s' segments are resolved before routing and cannot be routed", seg.text);
    }
  next:
    PUSH(ep->segs, ep->nsegs, seg);
    if (!*e) break;
    s = e + 1;
    if (!*s) { gwc_diag(C, DIAG_ERROR, d->file, base + (uint32_t)(s - p) - 1, 1, "route path ends with '/'"); break; }
  }
}

static int method_code(const char *m) {
  for (int i = 0; i < GW_METHOD_MAX; i++) if (!strcmp(gw_method_names[i], m)) return i;
  return -1;
}

/* Two routes conflict when their methods overlap and their shapes (segment
** kinds and static texts, ignoring parameter names) are equal. */
static int same_shape(const Ep *a, const Ep *b) {
  if (a->nsegs != b->nsegs) return 0;
  for (int i = 0; i < a->nsegs; i++) {
    if (a->segs[i].kind != b->segs[i].kind) return 0;
    if (a->segs[i].kind == GW_SEG_STATIC && strcmp(a->segs[i].text, b->segs[i].text)) return 0;
  }
  return 1;
}

static uint64_t shape_hash(const Ep *a) {
  uint64_t h = 1469598103934665603ull ^ (uint64_t)a->nsegs;
  for (int i = 0; i < a->nsegs; i++) {
    h = (h ^ (uint64_t)a->segs[i].kind) * 1099511628211ull;
    if (a->segs[i].kind == GW_SEG_STATIC)
      for (const char *p = a->segs[i].text; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
  }
  return h;
}

static int cmp_hash(const void *x, const void *y) {
  const uint64_t *a = x, *b = y;
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : (a[1] < b[1] ? -1 : a[1] > b[1]);
}

static void check_route_conflicts(GwcCompiler *C) {
  int n = C->nendpoints;
  uint64_t (*h)[2] = malloc(sizeof *h * (size_t)(n ? n : 1));
  if (!h) abort();
  for (int i = 0; i < n; i++) { h[i][0] = shape_hash(C->endpoints[i]->sem); h[i][1] = (uint64_t)i; }
  qsort(h, (size_t)n, sizeof *h, cmp_hash);
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n && h[j][0] == h[i][0]; j++) {
      int x = (int)h[i][1], y = (int)h[j][1];
      if (x > y) { int t = x; x = y; y = t; }
      Ep *a = C->endpoints[x]->sem, *b = C->endpoints[y]->sem;
      if (a->method >= 0 && b->method >= 0 && a->method != b->method &&
          a->method != GW_METHOD_ANY && b->method != GW_METHOD_ANY) continue;
      if (!same_shape(a, b)) continue;
      int line, col;
      gwc_line_col(C, a->decl->file, a->decl->start, &line, &col);
      gwc_diag_node(C, DIAG_ERROR, b->decl, "route %s %s conflicts with %s %s at %s:%d",
                    gw_method_names[b->method < 0 ? 0 : b->method], b->decl->s,
                    gw_method_names[a->method < 0 ? 0 : a->method], a->decl->s, C->files[a->decl->file]->path, line);
    }
  free(h);
}

/* ---- endpoints ----------------------------------------------------------------------------- */


static int check_dur(GwcCompiler *C, Node *v, const char *what) {
  if (!v || v->kind != V_DUR) {
    gwc_diag_node(C, DIAG_ERROR, v, "'%s' takes a duration (like 250ms or 5s), not %s", what, kind_desc(v));
    return 0;
  }
  if (v->ival == 0) { gwc_diag_node(C, DIAG_ERROR, v, "'%s' must be longer than 0", what); return 0; }
  return 1;
}

static void once(GwcCompiler *C, Node **slot, Node *s, const char *what) {
  if (*slot) {
    gwc_diag_node(C, DIAG_ERROR, s, "duplicate '%s' in endpoint", what);
    note_prev(C, *slot, "first");
    return;
  }
  *slot = s;
}

static void check_call(GwcCompiler *C, Ep *ep, Node *s) {
  Scope S = { CTX_ENDPOINT, ep, 0, 0, 0 };
  int b = gwc_lookup_backend(C, s->a->s);
  if (b < 0) unknown_in(C, s->a, "backend", s->a->s, C->backends, C->nbackends);
  s->a->idx = b;
  Node *u = s->c;
  const char *lit = u->kind == E_STR ? u->s : u->list->s;
  if (lit[0] != '/')
    gwc_diag_node(C, DIAG_ERROR, u, "a call URL is a path starting with '/' (the backend's url gives the host)");
  check_expr(C, &S, u);
  Node *seen[8] = {0};
  static const char *const names[] = { "query", "headers", "body", "timeout", "cache", "optional", "default", "if" };
  s->op = CALL_REQUIRED;
  for (Node *o = s->list; o; o = o->next) {
    int k = 0;
    while (k < 8 && strcmp(names[k], o->s)) k++;
    if (k == 8) continue;
    if (seen[k]) { gwc_diag_node(C, DIAG_ERROR, o, "duplicate '%s' on call '%s'", o->s, s->s); continue; }
    seen[k] = o;
    if (o->a) check_expr(C, &S, o->a);
    if (k == 1 && o->a && o->a->kind == E_OBJ)       /* headers { }: framing is the gateway's */
      for (Node *x = o->a->list; x; x = x->next) {
        if (x->kind == E_ENTRY && gw_header_class(x->s, strlen(x->s)))
          gwc_diag_node(C, DIAG_ERROR, x, "header '%s' is set by the gateway, not by a call", x->s);
      }
    if (k == 3) check_dur(C, o->list, "timeout");
    if (k == 4) check_dur(C, o->list, "cache");
    if (k == 5) s->op = CALL_OPTIONAL;
    if (k == 6) s->op = CALL_DEFAULT;
  }
  if (seen[5] && seen[6])
    gwc_diag_node(C, DIAG_ERROR, seen[6], "a call is either 'optional' or has a 'default', not both");
  if (b >= 0 && s->b && (!strcmp(s->b->s, "GET") || !strcmp(s->b->s, "HEAD")) && seen[2])
    gwc_diag_node(C, DIAG_WARNING, seen[2], "a body on a %s call is unusual; most servers ignore it", s->b->s);
}

static void check_endpoint(GwcCompiler *C, Node *d) {
  Ep *ep = gw_arena_alloc(&C->arena, sizeof *ep);
  d->sem = ep;
  ep->decl = d;
  ep->method = method_code(d->a->s);
  parse_route(C, ep);
  /* first pass: collect statements, so names resolve in any order */
  for (Node *s = d->list; s; s = s->next) {
    switch (s->kind) {
    case S_AUTH: once(C, &ep->auth, s, "auth"); break;
    case S_CORS: once(C, &ep->cors, s, "cors"); break;
    case S_CACHE: once(C, &ep->cache, s, "cache"); break;
    case S_TIMEOUT: once(C, &ep->timeout, s, "timeout"); break;
    case S_RESPOND: once(C, &ep->respond, s, "respond"); break;
    case S_PROXY: once(C, &ep->proxy, s, "proxy"); break;
    case S_LIMIT: for (Node *x = s->list; x; x = x->next) PUSH(ep->limits, ep->nlimits, x); break;
    case S_FAIL: PUSH(ep->fails, ep->nfails, s); break;
    case S_HEADER: PUSH(ep->headers, ep->nheaders, s); break;
    case S_CALL: {
      for (int i = 0; i < ep->ncalls; i++)
        if (!strcmp(ep->calls[i]->s, s->s)) {
          gwc_diag_node(C, DIAG_ERROR, s, "duplicate binding '%s'", s->s);
          note_prev(C, ep->calls[i], "first");
          goto skip;
        }
      for (int i = 0; i < ep->nparams; i++)
        if (!strcmp(ep->params[i].name, s->s)) {
          gwc_diag_node(C, DIAG_ERROR, s, "binding '%s' has the name of a path parameter", s->s);
          goto skip;
        }
      for (int i = 0; i < 5; i++)
        if (!strcmp(root_names[i], s->s)) {
          gwc_diag_node(C, DIAG_ERROR, s, "binding '%s' hides the request root of that name", s->s);
          goto skip;
        }
      s->idx = ep->ncalls;
      PUSH(ep->calls, ep->ncalls, s);
    skip:
      break;
    }
    default: break;
    }
  }
  /* auth */
  if (ep->auth && ep->auth->op != 1) {
    for (Node *x = ep->auth->list; x; x = x->next) {
      int a = gwc_lookup_auth(C, x->s);
      x->idx = a;
      if (a < 0) { unknown_in(C, x, "auth policy", x->s, C->auths, C->nauths); continue; }
      if (C->auths[a]->op == 0) ep->has_jwt = 1; else ep->has_apikey = 1;
    }
  }
  for (int i = 0; i < ep->nlimits; i++) {
    Node *x = ep->limits[i];
    x->idx = gwc_lookup_limit(C, x->s);
    if (x->idx < 0) unknown_in(C, x, "limit", x->s, C->limits, C->nlimits);
    for (int j = 0; j < i; j++)
      if (!strcmp(ep->limits[j]->s, x->s)) gwc_diag_node(C, DIAG_ERROR, x, "limit '%s' listed twice", x->s);
  }
  if (ep->cors) {
    Node *x = ep->cors->a;
    x->idx = gwc_lookup_cors(C, x->s);
    if (x->idx < 0) unknown_in(C, x, "cors policy", x->s, C->corses, C->ncorses);
  }
  if (ep->timeout) check_dur(C, ep->timeout->a, "timeout");
  Scope S = { CTX_ENDPOINT, ep, 0, 0, 0 };
  if (ep->cache) {
    check_dur(C, ep->cache->a, "cache");
    Scope K = S;
    K.no_calls = 1;
    check_list(C, &K, ep->cache->list);
  }
  for (int i = 0; i < ep->ncalls; i++) check_call(C, ep, ep->calls[i]);
  for (int i = 0; i < ep->nfails; i++) {
    Node *f = ep->fails[i];
    if (f->a->ival < 400 || f->a->ival > 599)
      gwc_diag_node(C, DIAG_ERROR, f->a, "'fail' takes an error status (400-599), not %s", f->a->s);
    check_expr(C, &S, f->b);
    check_expr(C, &S, f->c);
  }
  for (int i = 0; i < ep->nheaders; i++) {
    Node *h = ep->headers[i];
    size_t hn = strlen(h->a->s);
    if (!gw_http_token(h->a->s, hn)) gwc_diag_node(C, DIAG_ERROR, h->a, "'%s' is not a valid header name", h->a->s);
    else if ((gw_header_class(h->a->s, hn) & (GW_HDR_HOP | GW_HDR_FRAMING | GW_HDR_GATEWAY)) ||
             !strcasecmp(h->a->s, "content-type"))
      gwc_diag_node(C, DIAG_ERROR, h->a, "header '%s' is set by the gateway", h->a->s);
    for (int j = 0; j < i; j++)
      if (!strcasecmp(ep->headers[j]->a->s, h->a->s))
        gwc_diag_node(C, DIAG_ERROR, h->a, "header '%s' set twice", h->a->s);
    check_expr(C, &S, h->b);
  }
  if (ep->proxy) {
    Node *p = ep->proxy;
    p->a->idx = gwc_lookup_backend(C, p->a->s);
    if (p->a->idx < 0) unknown_in(C, p->a, "backend", p->a->s, C->backends, C->nbackends);
    if (p->c) {
      const char *lit = p->c->kind == E_STR ? p->c->s : p->c->list->s;
      if (lit[0] != '/') gwc_diag_node(C, DIAG_ERROR, p->c, "a proxy URL is a path starting with '/'");
      check_expr(C, &S, p->c);
    }
    if (ep->respond) gwc_diag_node(C, DIAG_ERROR, ep->respond, "an endpoint with 'proxy' cannot also 'respond'");
    if (ep->ncalls) gwc_diag_node(C, DIAG_ERROR, ep->calls[0], "an endpoint with 'proxy' makes no calls");
    if (ep->nfails) gwc_diag_node(C, DIAG_ERROR, ep->fails[0], "an endpoint with 'proxy' has no 'fail'");
    if (ep->cache) gwc_diag_node(C, DIAG_ERROR, ep->cache, "a 'proxy' endpoint cannot be cached");
  } else if (!ep->respond) {
    gwc_diag(C, DIAG_ERROR, d->file, d->start, 8, "endpoint %s %s has no 'respond'", d->a->s, d->s);
  } else {
    Node *r = ep->respond;
    uint64_t st = r->a ? r->a->ival : 200;
    if (st < 200 || st > 599) gwc_diag_node(C, DIAG_ERROR, r->a, "'respond' takes a final status (200-599), not %s", r->a->s);
    if ((st == 204 || st == 304) && r->b)
      gwc_diag_node(C, DIAG_ERROR, r->b, "a %u response has no body", (unsigned)st);
    check_expr(C, &S, r->b);
  }
  if (ep->method == GW_METHOD_HEAD || ep->method == GW_METHOD_OPTIONS)
    gwc_diag_node(C, DIAG_ERROR, d->a, "%s is answered by the gateway (HEAD runs the GET endpoint; OPTIONS is CORS)", d->a->s);
}

/* ---- declarations ------------------------------------------------------------------------------ */

static void add_named(GwcCompiler *C, Node ***v, int *n, Node *d, const char *what) {
  for (int i = 0; i < *n; i++)
    if (!strcmp((*v)[i]->s, d->s)) {
      gwc_diag_node(C, DIAG_ERROR, d, "duplicate %s '%s'", what, d->s);
      note_prev(C, (*v)[i], "first");
      return;
    }
  d->idx = *n;
  PUSH(*v, *n, d);
}

static void check_auth(GwcCompiler *C, Node *d) {
  if (d->op == 0) {
    check_opts(C, d->list, jwt_spec, "auth jwt");
    int keys = !!gwc_opt(d->list, "key file") + !!gwc_opt(d->list, "jwks file") + !!gwc_opt(d->list, "jwks url");
    if (keys != 1)
      gwc_diag_node(C, DIAG_ERROR, d, "auth '%s' needs exactly one of 'key file', 'jwks file', 'jwks url'", d->s);
    if (!gwc_opt(d->list, "algorithms"))
      gwc_diag_node(C, DIAG_ERROR, d, "auth '%s' needs 'algorithms' (they are pinned per policy)", d->s);
    if (gwc_opt(d->list, "from header") && gwc_opt(d->list, "from cookie"))
      gwc_diag_node(C, DIAG_ERROR, gwc_opt(d->list, "from cookie"), "a token comes from a header or a cookie, not both");
    Node *alg = gwc_opt(d->list, "algorithms");
    if (alg && gwc_opt(d->list, "key file")) {
      int hs = 0, pk = 0;
      for (Node *v = alg->list; v; v = v->next) { if (!strncmp(v->s, "HS", 2)) hs = 1; else pk = 1; }
      if (hs && pk)
        gwc_diag_node(C, DIAG_ERROR, alg, "one key file cannot serve both HMAC (HS*) and public-key algorithms");
    }
    Node *r = gwc_opt(d->list, "require");
    if (r && r->a) { Scope S = { CTX_REQUIRE, NULL, 0, 0, 0 }; check_expr(C, &S, r->a); }
  } else {
    check_opts(C, d->list, apikey_spec, "auth apikey");
    if (!gwc_opt(d->list, "keys file")) gwc_diag_node(C, DIAG_ERROR, d, "auth '%s' needs 'keys file'", d->s);
    if (gwc_opt(d->list, "from header") && gwc_opt(d->list, "from query"))
      gwc_diag_node(C, DIAG_ERROR, gwc_opt(d->list, "from query"), "a key comes from a header or the query, not both");
  }
}

static void check_limit(GwcCompiler *C, Node *d) {
  if (d->a->kind != V_RATE)
    gwc_diag_node(C, DIAG_ERROR, d->a, "a limit takes a rate (like 100/min), not %s", kind_desc(d->a));
  else if (d->a->ival == 0)
    gwc_diag_node(C, DIAG_ERROR, d->a, "a rate of 0 blocks everything");
  Node *seen[4] = {0};
  static const char *const names[] = { "burst", "by", "store", "on_error" };
  for (Node *o = d->list; o; o = o->next) {
    int k = 0;
    while (k < 4 && strcmp(names[k], o->s)) k++;
    if (k == 4) continue;
    if (seen[k]) { gwc_diag_node(C, DIAG_ERROR, o, "duplicate '%s' in limit '%s'", o->s, d->s); continue; }
    seen[k] = o;
    if (k == 0) {
      if (!value_is(C, o->list, OK_INT) || o->list->ival == 0)
        gwc_diag_node(C, DIAG_ERROR, o->list, "'burst' takes a whole number above 0, not %s", kind_desc(o->list));
    } else if (k == 1) {
      Scope S = { CTX_LIMIT, NULL, 0, 0, 0 };
      check_expr(C, &S, o->a);
    } else {
      const char *const *w = k == 2 ? store_words : onerror_words;
      if (o->list->kind != V_WORD || (strcmp(o->list->s, w[0]) && strcmp(o->list->s, w[1])))
        gwc_diag_node(C, DIAG_ERROR, o->list, "'%s' takes %s or %s", o->s, w[0], w[1]);
    }
  }
  if (seen[2] && !strcmp(seen[2]->list->s, "redis") && !(C->server && gwc_opt(C->server->list, "redis")))
    gwc_diag_node(C, DIAG_ERROR, seen[2]->list, "'store redis' needs server { redis \"redis://…\" }");
}

static void check_cors(GwcCompiler *C, Node *d) {
  check_opts(C, d->list, cors_spec, "cors");
  Node *o = gwc_opt(d->list, "origins"), *cr = gwc_opt(d->list, "credentials");
  if (!o) gwc_diag_node(C, DIAG_ERROR, d, "cors '%s' needs 'origins'", d->s);
  if (o && cr && cr->list && cr->list->kind == V_BOOL && cr->list->op && o->list && o->list->kind == V_LIST)
    for (Node *v = o->list->list; v; v = v->next)
      if (v->kind == V_STR && !strcmp(v->s, "*"))
        gwc_diag_node(C, DIAG_ERROR, v, "origin \"*\" cannot be used with credentials true (browsers refuse it)");
}

static void check_backend(GwcCompiler *C, Node *d) {
  check_opts(C, d->list, backend_spec, "backend");
  if (!gwc_opt(d->list, "url")) gwc_diag_node(C, DIAG_ERROR, d, "backend '%s' has no 'url'", d->s);
  for (Node *o = d->list; o; o = o->next)
    if (!strcmp(o->s, "url") && o->list && o->list->kind == V_STR) {
      const char *u = o->list->s;
      if (strncmp(u, "http://", 7) && strncmp(u, "https://", 8))
        gwc_diag_node(C, DIAG_ERROR, o->list, "a backend url starts with http:// or https://");
    }
  Node *h = gwc_opt(d->list, "headers");
  if (h && h->a) {
    Scope S = { CTX_BACKEND, NULL, 0, 0, 0 };
    if (h->a->kind != E_OBJ) gwc_diag_node(C, DIAG_ERROR, h->a, "backend 'headers' takes an object { \"Name\": value }");
    check_expr(C, &S, h->a);
  }
}

void gwc_sema(GwcCompiler *C) {
  /* declarations first, so that uses may precede them */
  for (int f = 0; f < C->nfiles; f++)
    for (Node *d = C->files[f]->decls; d; d = d->next) {
      switch (d->kind) {
      case D_SERVER:
        if (C->server) { gwc_diag_node(C, DIAG_ERROR, d, "duplicate server block"); note_prev(C, C->server, "first"); }
        else C->server = d;
        break;
      case D_BACKEND: add_named(C, &C->backends, &C->nbackends, d, "backend"); break;
      case D_AUTH: add_named(C, &C->auths, &C->nauths, d, "auth policy"); break;
      case D_LIMIT: add_named(C, &C->limits, &C->nlimits, d, "limit"); break;
      case D_CORS: add_named(C, &C->corses, &C->ncorses, d, "cors policy"); break;
      case D_ENDPOINT: d->idx = C->nendpoints; PUSH(C->endpoints, C->nendpoints, d); break;
      default: break;
      }
    }
  if (C->server) {
    check_opts(C, C->server->list, server_spec, "server");
    Node *rv = gwc_opt(C->server->list, "redis");
    /* a password in a literal URL would be compiled into the .gwb */
    if (rv && rv->list && rv->list->kind == V_STR) {
      const char *u = rv->list->s, *sl = strstr(u, "://");
      const char *auth = sl ? sl + 3 : u, *end = strchr(auth, '/');
      size_t alen = end ? (size_t)(end - auth) : strlen(auth);
      if (memchr(auth, '@', alen))
        gwc_diag_node(C, DIAG_ERROR, rv->list, "the redis URL holds credentials, which would be compiled into the program; use env(\"REDIS_URL\")");
    }
  }
  for (int i = 0; i < C->nbackends; i++) check_backend(C, C->backends[i]);
  for (int i = 0; i < C->nauths; i++) check_auth(C, C->auths[i]);
  for (int i = 0; i < C->nlimits; i++) check_limit(C, C->limits[i]);
  for (int i = 0; i < C->ncorses; i++) check_cors(C, C->corses[i]);
  for (int i = 0; i < C->nendpoints; i++) check_endpoint(C, C->endpoints[i]);
  check_route_conflicts(C);
}
