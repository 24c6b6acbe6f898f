/*
** gwc_sema.h — what the checks (gwc_sema.c) leave on the AST for the call
** graph (gwc_graph.c) and code generation (gwc_codegen.c).
*/
#ifndef GWC_SEMA_H
#define GWC_SEMA_H

#include "gwc.h"

/* How an E_NAME (or a shorthand object entry) resolved: Node.op. */
enum { R_NONE, R_PARAM, R_CALL, R_ROOT, R_ENV };

/* Contexts an expression can appear in (what it may read). */
enum { CTX_ENDPOINT, CTX_LIMIT, CTX_REQUIRE, CTX_BACKEND };

typedef struct Param {
  const char *name;
  int         seg;      /* GW_SEG_* */
  Node       *node;     /* for positions */
  int         used;
} Param;

typedef struct Seg { int kind; const char *text; } Seg;

/* Per endpoint (D_ENDPOINT.sem). */
typedef struct Ep {
  Node   *decl;
  int     method;       /* GW_METHOD_* */
  Seg    *segs;  int nsegs;
  Param  *params; int nparams;
  Node  **calls; int ncalls;
  Node  **fails; int nfails;
  Node  **headers; int nheaders;
  Node   *respond, *proxy, *auth, *cors, *cache, *timeout;
  Node  **limits; int nlimits;     /* V_WORD nodes naming limits */
  int     has_jwt, has_apikey;
  int     cache_off;    /* `cache` declared, but its key holds no identity (gwc_graph.c) */
  /* graph results */
  uint8_t *deps;        /* ncalls x ncalls: deps[i*ncalls+j] = call i reads call j */
  uint8_t *rdeps;       /* calls read by the response and its headers */
  uint8_t **gdeps;      /* per fail: calls read */
  struct ReadSet *reads;/* per call */
  struct InputSet *inputs;
} Ep;

/* Option values of a declaration after checking (D_*.sem). */
typedef struct Opts { Node **v; int n; } Opts;

/* Find the first option named `name` ("key file" for two-word options). */
Node *gwc_opt(Node *decl_or_block_list, const char *name);
const char *gwc_opt_name(GwcCompiler *C, const Node *o);
int gwc_lookup_backend(GwcCompiler *C, const char *name);
int gwc_lookup_auth(GwcCompiler *C, const char *name);
int gwc_lookup_limit(GwcCompiler *C, const char *name);
int gwc_lookup_cors(GwcCompiler *C, const char *name);
int gwc_builtin(const char *name);

#endif
