/*
** gw.y — the lemon grammar of the gw endpoint language (docs/language.md).
**
** Actions are one-line calls into the AST builders of compiler/gwc_ast.c;
** there are no semantics here. The build fails on any parsing conflict.
**
** Two contextual tokens come from the lexer and its driver, not from the
** grammar: BIND is an identifier followed by `=` (the start of a call
** statement), and STATUS is an integer literal right after `respond` or
** `fail`. Keywords fall back to identifiers wherever a keyword cannot
** appear, so `{ limit: query.limit, default: x.default }` works.
*/
%name gwParse
%token_prefix TK_
%token_type { GwcToken }
%default_type { Node * }
%extra_argument { GwcCompiler *C }
%start_symbol file

%include {
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include "gwc.h"
#define YYNOERRORRECOVERY 1
#define YYSTACKDEPTH 1000
}

%syntax_error { gwc_syntax_error(C, &TOKEN); }
%stack_overflow { gwc_syntax_error(C, NULL); }

/* Declared first so that every other token can fall back to it. */
%token ID.
%fallback ID
  IMPORT SERVER BACKEND AUTH LIMIT CORS ENDPOINT RESPOND FAIL PROXY HEADER
  HEADERS QUERY BODY IF OR OPTIONAL DEFAULT CACHE BY TIMEOUT BURST STORE
  ON_ERROR JWT APIKEY NONE IN LISTEN TLS KEY KEYS JWKS FILE URL FROM BEARER
  COOKIE REFRESH REQUIRE OPT METHOD TRUE FALSE NULL.

%token STRING STRBEG STRMID STREND NUMBER DURATION SIZE RATE PATH BIND STATUS.

%left QQ.
%left OROR.
%left ANDAND.
%nonassoc EQ NE LT LE GT GE IN.
%left PLUS MINUS.
%left STAR SLASH PERCENT.
%right NOT.
/* A call's trailing options bind to the call: `x = b GET "/" timeout 1s`
** gives the call a timeout. */
%nonassoc CALLEND.
%nonassoc TIMEOUT CACHE.

file ::= decls.
decls ::= .
decls ::= decls decl.
decls ::= decls SEMI.

/* ---- declarations ------------------------------------------------------- */
decl ::= IMPORT(T) STRING(S).          { Node *d = gwc_node(C, D_IMPORT, &T); d->a = gwc_str_lit(C, &S); gwc_decl(C, d); }
decl ::= SERVER(T) LBRACE sopts(L) RBRACE(E). { gwc_decl(C, gwc_end_at(gwc_with_list(gwc_node(C, D_SERVER, &T), L), &E)); }
decl ::= BACKEND(T) ID(N) LBRACE opts(L) RBRACE(E). { gwc_decl(C, gwc_end_at(gwc_with_list(gwc_extend(gwc_node(C, D_BACKEND, &N), &T), L), &E)); }
decl ::= AUTH(T) ID(N) JWT LBRACE opts(L) RBRACE(E). { gwc_decl(C, gwc_end_at(gwc_with_list(gwc_extend(gwc_node(C, D_AUTH, &N), &T), L), &E)); }
decl ::= AUTH(T) ID(N) APIKEY LBRACE opts(L) RBRACE(E). { Node *d = gwc_end_at(gwc_with_list(gwc_extend(gwc_node(C, D_AUTH, &N), &T), L), &E); d->op = 1; gwc_decl(C, d); }
decl ::= LIMIT(T) ID(N) val(R) limopts(L). { Node *d = gwc_with_list(gwc_extend(gwc_node(C, D_LIMIT, &N), &T), L); d->a = R; gwc_decl(C, gwc_span_kids(d)); }
decl ::= CORS(T) ID(N) LBRACE opts(L) RBRACE(E). { gwc_decl(C, gwc_end_at(gwc_with_list(gwc_extend(gwc_node(C, D_CORS, &N), &T), L), &E)); }
decl ::= ENDPOINT(T) method(M) PATH(P) LBRACE stmts(L) RBRACE(E).
                                       { Node *d = gwc_extend(gwc_node(C, D_ENDPOINT, &P), &T); d->a = M; gwc_decl(C, gwc_end_at(gwc_with_list(d, L), &E)); }

%type method { Node * }
method(A) ::= METHOD(T).               { A = gwc_node(C, V_WORD, &T); }
method(A) ::= STAR(T).                 { A = gwc_node(C, V_WORD, &T); A->s = "*"; A->n = 1; }

/* ---- option blocks -------------------------------------------------------
** Option values are parsed generically; compiler/gwc_sema.c checks which
** options each block takes and the kind of every value. */
sopts(A) ::= .                         { A = NULL; }
sopts(A) ::= sopts(L) sopt(O).         { A = gwc_append(L, O); }
sopts(A) ::= sopts(L) SEMI.            { A = L; }
sopt(A) ::= OPT(N) vals(V).            { A = gwc_option(C, &N, V); }
sopt(A) ::= LISTEN(N) val(V).          { A = gwc_option(C, &N, V); }
sopt(A) ::= LISTEN(N) val(V) TLS(T) LBRACE opts(B) RBRACE(E). { A = gwc_option(C, &N, gwc_append(V, gwc_end_at(gwc_with_list(gwc_value(C, V_BLOCK, &T), B), &E))); }

opts(A) ::= .                          { A = NULL; }
opts(A) ::= opts(L) opt(O).            { A = gwc_append(L, O); }
opts(A) ::= opts(L) SEMI.              { A = L; }

opt(A) ::= optname(N) vals(V).         { A = gwc_option(C, &N, V); }
opt(A) ::= HEADERS(N) expr(E).         { A = gwc_option(C, &N, NULL); A->a = E; gwc_span_kids(A); }
opt(A) ::= REQUIRE(N) expr(E).         { A = gwc_option(C, &N, NULL); A->a = E; gwc_span_kids(A); }
opt(A) ::= KEY(N) FILE(W) val(V).      { A = gwc_option2(C, &N, &W, V); }
opt(A) ::= KEYS(N) FILE(W) val(V).     { A = gwc_option2(C, &N, &W, V); }
opt(A) ::= JWKS(N) FILE(W) val(V).     { A = gwc_option2(C, &N, &W, V); }
opt(A) ::= JWKS(N) URL(W) val(V).      { A = gwc_option2(C, &N, &W, V); }
opt(A) ::= JWKS(N) URL(W) val(V) REFRESH val(R). { A = gwc_span_kids(gwc_option2(C, &N, &W, gwc_append(V, R))); }
opt(A) ::= FROM(N) HEADER(W) val(V).   { A = gwc_option2(C, &N, &W, V); }
opt(A) ::= FROM(N) HEADER(W) val(V) BEARER(B). { A = gwc_span_kids(gwc_option2(C, &N, &W, gwc_append(V, gwc_value(C, V_WORD, &B)))); }
opt(A) ::= FROM(N) QUERY(W) val(V).    { A = gwc_option2(C, &N, &W, V); }
opt(A) ::= FROM(N) COOKIE(W) val(V).   { A = gwc_option2(C, &N, &W, V); }

%type optname { GwcToken }
optname(A) ::= OPT(T).                 { A = T; }
optname(A) ::= URL(T).                 { A = T; }
optname(A) ::= KEY(T).                 { A = T; }
optname(A) ::= TLS(T).                 { A = T; }
optname(A) ::= TIMEOUT(T).             { A = T; }

vals(A) ::= .                          { A = NULL; }
vals(A) ::= vals(L) val(V).            { A = gwc_append(L, V); }

val(A) ::= STRING(T).                  { A = gwc_value(C, V_STR, &T); }
val(A) ::= NUMBER(T).                  { A = gwc_value(C, V_NUM, &T); }
val(A) ::= DURATION(T).                { A = gwc_value(C, V_DUR, &T); }
val(A) ::= SIZE(T).                    { A = gwc_value(C, V_SIZE, &T); }
val(A) ::= RATE(T).                    { A = gwc_value(C, V_RATE, &T); }
val(A) ::= ID(T).                      { A = gwc_value(C, V_WORD, &T); }
val(A) ::= METHOD(T).                  { A = gwc_value(C, V_WORD, &T); }
val(A) ::= TRUE(T).                    { A = gwc_value(C, V_BOOL, &T); A->op = 1; }
val(A) ::= FALSE(T).                   { A = gwc_value(C, V_BOOL, &T); }
val(A) ::= LBRACKET(T) vlist(L) RBRACKET(E). { A = gwc_end_at(gwc_with_list(gwc_value(C, V_LIST, &T), L), &E); }
val(A) ::= LBRACE(T) opts(L) RBRACE(E). { A = gwc_end_at(gwc_with_list(gwc_value(C, V_BLOCK, &T), L), &E); }
val(A) ::= ID(T) LPAREN vlist(L) RPAREN(E). { A = gwc_end_at(gwc_with_list(gwc_value(C, V_ENV, &T), L), &E); }

vlist(A) ::= .                         { A = NULL; }
vlist(A) ::= vlist1(L).                { A = L; }
vlist(A) ::= vlist1(L) COMMA.          { A = L; }
vlist1(A) ::= val(V).                  { A = V; }
vlist1(A) ::= vlist1(L) COMMA val(V).  { A = gwc_append(L, V); }

limopts(A) ::= .                       { A = NULL; }
limopts(A) ::= limopts(L) limopt(O).   { A = gwc_append(L, O); }
limopt(A) ::= BURST(N) val(V).         { A = gwc_option(C, &N, V); }
limopt(A) ::= BY(N) expr(E).           { A = gwc_option(C, &N, NULL); A->a = E; gwc_span_kids(A); }
limopt(A) ::= STORE(N) val(V).         { A = gwc_option(C, &N, V); }
limopt(A) ::= ON_ERROR(N) val(V).      { A = gwc_option(C, &N, V); }

/* ---- endpoint statements -------------------------------------------------- */
stmts(A) ::= .                         { A = NULL; }
stmts(A) ::= stmts(L) stmt(S).         { A = gwc_append(L, S); }
stmts(A) ::= stmts(L) SEMI.            { A = L; }

stmt(A) ::= AUTH(T) authnames(L).      { A = gwc_with_list(gwc_node(C, S_AUTH, &T), L); }
stmt(A) ::= AUTH(T) NONE(N).           { A = gwc_end_at(gwc_node(C, S_AUTH, &T), &N); A->op = 1; }
stmt(A) ::= LIMIT(T) idlist(L).        { A = gwc_with_list(gwc_node(C, S_LIMIT, &T), L); }
stmt(A) ::= CORS(T) ID(N).             { A = gwc_node(C, S_CORS, &T); A->a = gwc_value(C, V_WORD, &N); gwc_span_kids(A); }
stmt(A) ::= CACHE(T) val(V).           { A = gwc_node(C, S_CACHE, &T); A->a = V; gwc_span_kids(A); }
stmt(A) ::= CACHE(T) val(V) BY exprlist(L). { A = gwc_with_list(gwc_node(C, S_CACHE, &T), L); A->a = V; gwc_span_kids(A); }
stmt(A) ::= TIMEOUT(T) val(V).         { A = gwc_node(C, S_TIMEOUT, &T); A->a = V; gwc_span_kids(A); }
stmt(A) ::= BIND(N) ASSIGN ID(B) METHOD(M) strexpr(U) callopts(L). [CALLEND]
                                       { A = gwc_with_list(gwc_node(C, S_CALL, &N), L); A->a = gwc_value(C, V_WORD, &B); A->b = gwc_value(C, V_WORD, &M); A->c = U; gwc_span_kids(A); }
stmt(A) ::= FAIL(T) STATUS(S) IF expr(E). { A = gwc_node(C, S_FAIL, &T); A->a = gwc_value(C, V_NUM, &S); A->c = E; gwc_span_kids(A); }
stmt(A) ::= FAIL(T) STATUS(S) expr(B) IF expr(E). { A = gwc_node(C, S_FAIL, &T); A->a = gwc_value(C, V_NUM, &S); A->b = B; A->c = E; gwc_span_kids(A); }
stmt(A) ::= RESPOND(T).                { A = gwc_node(C, S_RESPOND, &T); }
stmt(A) ::= RESPOND(T) expr(B).        { A = gwc_node(C, S_RESPOND, &T); A->b = B; gwc_span_kids(A); }
stmt(A) ::= RESPOND(T) STATUS(S).      { A = gwc_node(C, S_RESPOND, &T); A->a = gwc_value(C, V_NUM, &S); gwc_span_kids(A); }
stmt(A) ::= RESPOND(T) STATUS(S) expr(B). { A = gwc_node(C, S_RESPOND, &T); A->a = gwc_value(C, V_NUM, &S); A->b = B; gwc_span_kids(A); }
stmt(A) ::= HEADER(T) STRING(N) ASSIGN expr(E). { A = gwc_node(C, S_HEADER, &T); A->a = gwc_str_lit(C, &N); A->b = E; gwc_span_kids(A); }
stmt(A) ::= PROXY(T) ID(B).            { A = gwc_node(C, S_PROXY, &T); A->a = gwc_value(C, V_WORD, &B); gwc_span_kids(A); }
stmt(A) ::= PROXY(T) ID(B) strexpr(U). { A = gwc_node(C, S_PROXY, &T); A->a = gwc_value(C, V_WORD, &B); A->c = U; gwc_span_kids(A); }

authnames(A) ::= ID(N).                { A = gwc_value(C, V_WORD, &N); }
authnames(A) ::= authnames(L) OR ID(N). { A = gwc_append(L, gwc_value(C, V_WORD, &N)); }
idlist(A) ::= ID(N).                   { A = gwc_value(C, V_WORD, &N); }
idlist(A) ::= idlist(L) ID(N).         { A = gwc_append(L, gwc_value(C, V_WORD, &N)); }
idlist(A) ::= idlist(L) COMMA ID(N).   { A = gwc_append(L, gwc_value(C, V_WORD, &N)); }

callopts(A) ::= .                      { A = NULL; }
callopts(A) ::= callopts(L) callopt(O). { A = gwc_append(L, O); }
callopt(A) ::= QUERY(N) expr(E).       { A = gwc_option(C, &N, NULL); A->a = E; gwc_span_kids(A); }
callopt(A) ::= HEADERS(N) expr(E).     { A = gwc_option(C, &N, NULL); A->a = E; gwc_span_kids(A); }
callopt(A) ::= BODY(N) expr(E).        { A = gwc_option(C, &N, NULL); A->a = E; gwc_span_kids(A); }
callopt(A) ::= TIMEOUT(N) val(V).      { A = gwc_option(C, &N, V); }
callopt(A) ::= CACHE(N) val(V).        { A = gwc_option(C, &N, V); }
callopt(A) ::= OPTIONAL(N).            { A = gwc_option(C, &N, NULL); }
callopt(A) ::= DEFAULT(N) expr(E).     { A = gwc_option(C, &N, NULL); A->a = E; gwc_span_kids(A); }
callopt(A) ::= IF(N) expr(E).          { A = gwc_option(C, &N, NULL); A->a = E; gwc_span_kids(A); }

strexpr(A) ::= STRING(T).              { A = gwc_str_lit(C, &T); }
strexpr(A) ::= STRBEG(T) expr(E) strtail(R). { A = gwc_istr(C, &T, E, R); }

/* ---- expressions ----------------------------------------------------------- */
exprlist(A) ::= expr(E).               { A = E; }
exprlist(A) ::= exprlist(L) COMMA expr(E). { A = gwc_append(L, E); }

expr(A) ::= postfix(P).                { A = P; }
expr(A) ::= STRING(T).                 { A = gwc_str_lit(C, &T); }
expr(A) ::= STRBEG(T) expr(E) strtail(R). { A = gwc_istr(C, &T, E, R); }
expr(A) ::= NUMBER(T).                 { A = gwc_node(C, E_NUM, &T); }
expr(A) ::= TRUE(T).                   { A = gwc_node(C, E_TRUE, &T); }
expr(A) ::= FALSE(T).                  { A = gwc_node(C, E_FALSE, &T); }
expr(A) ::= NULL(T).                   { A = gwc_node(C, E_NULL, &T); }
expr(A) ::= expr(X) QQ expr(Y).        { A = gwc_node2(C, E_BIN, OPR_COALESCE, X, Y); }
expr(A) ::= expr(X) OROR expr(Y).      { A = gwc_node2(C, E_BIN, OPR_OR, X, Y); }
expr(A) ::= expr(X) ANDAND expr(Y).    { A = gwc_node2(C, E_BIN, OPR_AND, X, Y); }
expr(A) ::= expr(X) EQ expr(Y).        { A = gwc_node2(C, E_BIN, OPR_EQ, X, Y); }
expr(A) ::= expr(X) NE expr(Y).        { A = gwc_node2(C, E_BIN, OPR_NE, X, Y); }
expr(A) ::= expr(X) LT expr(Y).        { A = gwc_node2(C, E_BIN, OPR_LT, X, Y); }
expr(A) ::= expr(X) LE expr(Y).        { A = gwc_node2(C, E_BIN, OPR_LE, X, Y); }
expr(A) ::= expr(X) GT expr(Y).        { A = gwc_node2(C, E_BIN, OPR_GT, X, Y); }
expr(A) ::= expr(X) GE expr(Y).        { A = gwc_node2(C, E_BIN, OPR_GE, X, Y); }
expr(A) ::= expr(X) IN expr(Y).        { A = gwc_node2(C, E_BIN, OPR_IN, X, Y); }
expr(A) ::= expr(X) PLUS expr(Y).      { A = gwc_node2(C, E_BIN, OPR_ADD, X, Y); }
expr(A) ::= expr(X) MINUS expr(Y).     { A = gwc_node2(C, E_BIN, OPR_SUB, X, Y); }
expr(A) ::= expr(X) STAR expr(Y).      { A = gwc_node2(C, E_BIN, OPR_MUL, X, Y); }
expr(A) ::= expr(X) SLASH expr(Y).     { A = gwc_node2(C, E_BIN, OPR_DIV, X, Y); }
expr(A) ::= expr(X) PERCENT expr(Y).   { A = gwc_node2(C, E_BIN, OPR_MOD, X, Y); }
expr(A) ::= NOT(T) expr(X).            { A = gwc_at(gwc_node2(C, E_UN, OPR_NOT, X, NULL), &T); }
expr(A) ::= MINUS(T) expr(X). [NOT]    { A = gwc_at(gwc_node2(C, E_UN, OPR_NEG, X, NULL), &T); }

strtail(A) ::= STREND(T).              { A = gwc_istr_part(C, &T, NULL, NULL); }
strtail(A) ::= STRMID(T) expr(E) strtail(R). { A = gwc_istr_part(C, &T, E, R); }

/* Postfix operators apply to names, calls, groups and object/array
** literals, never to scalar literals: `respond 200 { … }` cannot mean a
** selection on 200. */
postfix(A) ::= ID(T).                  { A = gwc_node(C, E_NAME, &T); }
postfix(A) ::= DOT(T).                 { A = gwc_node(C, E_CUR, &T); }
postfix(A) ::= DOT(T) ID(N).           { A = gwc_at(gwc_node2(C, E_FIELD, 0, gwc_node(C, E_CUR, &T), gwc_node(C, E_NAME, &N)), &N); }
postfix(A) ::= LPAREN(T) expr(E) RPAREN(R). { A = gwc_end_at(gwc_extend(E, &T), &R); A->flags |= NF_PAREN; }
postfix(A) ::= ID(T) LPAREN args(L) RPAREN(E). { A = gwc_end_at(gwc_with_list(gwc_node(C, E_CALL, &T), L), &E); }
postfix(A) ::= LBRACE(T) entries(L) RBRACE(E). { A = gwc_end_at(gwc_with_list(gwc_node(C, E_OBJ, &T), L), &E); }
postfix(A) ::= LBRACKET(T) args(L) RBRACKET(E). { A = gwc_end_at(gwc_with_list(gwc_node(C, E_ARR, &T), L), &E); }
postfix(A) ::= postfix(X) DOT ID(N).   { A = gwc_at(gwc_node2(C, E_FIELD, 0, X, gwc_node(C, E_NAME, &N)), &N); }
postfix(A) ::= postfix(X) LBRACKET(T) expr(I) RBRACKET(E). { A = gwc_end_at(gwc_at(gwc_node2(C, E_INDEX, 0, X, I), &T), &E); }
postfix(A) ::= postfix(X) LBRACKET(T) STAR RBRACKET(E). { A = gwc_end_at(gwc_at(gwc_node2(C, E_EACH, 0, X, NULL), &T), &E); }
postfix(A) ::= postfix(X) LBRACKET(T) QUESTION expr(F) RBRACKET(E). { A = gwc_end_at(gwc_at(gwc_node2(C, E_FILTER, 0, X, F), &T), &E); }
postfix(A) ::= postfix(X) LBRACKET(T) optexpr(L) COLON optexpr(H) RBRACKET(E). { A = gwc_end_at(gwc_at(gwc_node2(C, E_SLICE, 0, X, L), &T), &E); A->c = H; }
postfix(A) ::= postfix(X) LBRACE(T) entries(L) RBRACE(E). { A = gwc_end_at(gwc_with_list(gwc_at(gwc_node2(C, E_SELECT, 0, X, NULL), &T), L), &E); }

optexpr(A) ::= .                       { A = NULL; }
optexpr(A) ::= expr(E).                { A = E; }

args(A) ::= .                          { A = NULL; }
args(A) ::= args1(L).                  { A = L; }
args(A) ::= args1(L) COMMA.            { A = L; }
args1(A) ::= expr(E).                  { A = E; }
args1(A) ::= args1(L) COMMA expr(E).   { A = gwc_append(L, E); }

entries(A) ::= .                       { A = NULL; }
entries(A) ::= entries1(L).            { A = L; }
entries(A) ::= entries1(L) COMMA.      { A = L; }
entries1(A) ::= entry(E).              { A = E; }
entries1(A) ::= entries1(L) COMMA entry(E). { A = gwc_append(L, E); }
entry(A) ::= ID(K) COLON expr(E).      { A = gwc_node(C, E_ENTRY, &K); A->a = E; }
entry(A) ::= STRING(K) COLON expr(E).  { A = gwc_str_lit(C, &K); A->kind = E_ENTRY; A->a = E; }
entry(A) ::= ID(K).                    { A = gwc_node(C, E_ENTRY, &K); }
entry(A) ::= DOTDOTDOT(T) expr(E).     { A = gwc_node(C, E_SPREAD, &T); A->a = E; }
