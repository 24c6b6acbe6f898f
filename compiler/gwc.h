/*
** gwc.h — the compiler's internal interface: source files, tokens, the AST,
** diagnostics, and the passes (parse → sema → graph → codegen).
**
** One GwcCompiler holds one compilation: every AST node, string and table is
** allocated from its arena and dies with gwc_free(). Nothing here is used by
** the runtime except through gwc_compile_paths() (gwc_lib.c), which gwd calls
** to compile a .gw file or a directory in process.
*/
#ifndef GWC_H
#define GWC_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include "gw_util.h"
#include "gw_bytecode.h"

typedef struct GwcCompiler GwcCompiler;
typedef struct Node Node;

/* ---- source files ------------------------------------------------------ */

typedef struct GwcFile {
  char       *path;      /* as given or as resolved from an import */
  char       *dir;       /* directory of path, for relative file names */
  char       *real;      /* realpath, to load each file once */
  char       *text;      /* whole file, NUL-terminated (owned, malloc) */
  size_t      len;
  uint32_t   *lines;     /* byte offset of each line start */
  int         nlines;
  int         nerrors;   /* errors reported against this file */
  Node       *decls;     /* top-level declarations, in order */
  Node       *comments;  /* comments in order (for gwc fmt) */
  int         imported;  /* reached through an import */
} GwcFile;

/* ---- tokens (the lexer's output) ----------------------------------------
** The token codes are lemon's (TK_* in build/gen/gw_parse.h). Every token
** carries its byte offset; the decoded value of strings lives in the arena. */
typedef struct GwcToken {
  int         type;
  uint32_t    off, len;   /* byte span in the file */
  const char *s;          /* identifier text or decoded string value */
  size_t      n;
  int         file;
} GwcToken;

/* The lexer (grammar/gw.re). It pulls input through read() in chunks of
** any size, so it can be tested fed one byte at a time. */
typedef struct GwcLexer GwcLexer;
typedef size_t (*GwcReadFn)(void *ctx, char *dst, size_t cap);

GwcLexer *gwc_lexer_new(GwcCompiler *C, int file, GwcReadFn read, void *ctx);
void      gwc_lexer_free(GwcLexer *L);
/* Next token; TK_EOF-like 0 at the end. Lexical errors are reported
** through diagnostics and skipped. */
int       gwc_lex(GwcLexer *L, GwcToken *t);
/* Brace depth outside strings, for error recovery. */
int       gwc_lexer_depth(GwcLexer *L);
const char *gwc_token_name(int type);
/* The keyword table, for hints. NULL-terminated. */
extern const char *const gwc_keywords[];

/* ---- the AST -------------------------------------------------------------
** One node type for everything; `kind` says which fields mean what. Lists are
** chained through `next`. Spans are byte offsets into `file`. */
enum {
  /* expressions */
  E_NULL = 1, E_TRUE, E_FALSE, E_NUM, E_STR, E_ISTR, E_NAME, E_CUR,
  E_FIELD,    /* a.name: a, s */
  E_INDEX,    /* a[b] */
  E_SLICE,    /* a[b:c], b/c may be NULL */
  E_EACH,     /* a[*] */
  E_FILTER,   /* a[? b] */
  E_SELECT,   /* a { list } */
  E_OBJ,      /* { list } */
  E_ARR,      /* [ list ] */
  E_CALL,     /* s(list) */
  E_BIN,      /* a op b */
  E_UN,       /* op a */
  E_ENTRY,    /* key s: a (a NULL for shorthand) */
  E_SPREAD,   /* ...a */
  /* option values (declaration blocks) */
  V_STR, V_NUM, V_DUR, V_SIZE, V_RATE, V_WORD, V_BOOL, V_LIST, V_BLOCK, V_ENV,
  /* declarations */
  D_IMPORT, D_SERVER, D_BACKEND, D_AUTH, D_LIMIT, D_CORS, D_ENDPOINT,
  O_OPT,      /* an option: s = name, list = values, a = expression */
  /* endpoint statements */
  S_AUTH, S_LIMIT, S_CORS, S_CACHE, S_TIMEOUT, S_CALL, S_FAIL, S_RESPOND,
  S_HEADER, S_PROXY,
  N_KIND_MAX
};

/* Binary and unary operators (Node.op for E_BIN / E_UN). */
enum {
  OPR_COALESCE = 1, OPR_OR, OPR_AND, OPR_EQ, OPR_NE, OPR_LT, OPR_LE, OPR_GT,
  OPR_GE, OPR_IN, OPR_ADD, OPR_SUB, OPR_MUL, OPR_DIV, OPR_MOD, OPR_NOT, OPR_NEG
};

/* Call modes (S_CALL.op). */
enum { CALL_REQUIRED = 0, CALL_OPTIONAL = 1, CALL_DEFAULT = 2 };

struct Node {
  int         kind;
  int         op;         /* operator, auth type, call mode, status, … */
  int         file;
  uint32_t    off, len;   /* the node's main token */
  uint32_t    start, end; /* the node's whole source span */
  const char *s;          /* name / decoded text */
  size_t      n;
  Node       *a, *b, *c;  /* children */
  Node       *list;       /* first child of a list */
  Node       *next;       /* next sibling */
  Node       *tail;       /* last element, on a list's first node */
  /* filled by later passes */
  int         idx;        /* index in its table (calls, params, decls) */
  int         flags;
  void       *sem;        /* pass-specific annotation */
  uint64_t    ival;       /* numeric value of durations (ms), sizes (bytes), rates */
  uint64_t    ival2;      /* rate period in ms */
};

/* Node.flags */
#define NF_USED      0x01
#define NF_MULTILINE 0x02  /* the object/array spanned lines in the source */
#define NF_LAMBDA    0x04
#define NF_BLANK     0x08  /* a blank line came before this node (for fmt) */
#define NF_SEMI      0x10  /* ended with ';' in the source */
#define NF_PAREN     0x20  /* written in parentheses */
#define NF_FRACTION  0x40  /* a number literal that is not a whole number */

/* AST builders, called from the grammar actions (one line each). */
Node *gwc_node(GwcCompiler *C, int kind, const GwcToken *t);
Node *gwc_node2(GwcCompiler *C, int kind, int op, Node *a, Node *b);
Node *gwc_append(Node *list, Node *item);      /* returns list head */
Node *gwc_with_list(Node *n, Node *list);
Node *gwc_span_kids(Node *n);                  /* widen n's span over its children */
Node *gwc_at(Node *n, const GwcToken *t);      /* main token := t */
Node *gwc_extend(Node *n, const GwcToken *t);  /* span starts at t */
Node *gwc_end_at(Node *n, const GwcToken *t);
Node *gwc_str_lit(GwcCompiler *C, const GwcToken *t);
Node *gwc_istr(GwcCompiler *C, const GwcToken *beg, Node *first, Node *rest);
Node *gwc_istr_part(GwcCompiler *C, const GwcToken *t, Node *expr, Node *rest);
Node *gwc_option(GwcCompiler *C, const GwcToken *name, Node *vals);
Node *gwc_option2(GwcCompiler *C, const GwcToken *name, const GwcToken *word, Node *vals);
Node *gwc_value(GwcCompiler *C, int kind, const GwcToken *t);
void  gwc_decl(GwcCompiler *C, Node *decl);
void  gwc_syntax_error(GwcCompiler *C, const GwcToken *t);

/* ---- diagnostics ---------------------------------------------------------- */
enum { DIAG_ERROR, DIAG_WARNING, DIAG_NOTE };

/* Report at file/offset/len; hint (may be NULL) is appended "; hint". */
void gwc_diag(GwcCompiler *C, int sev, int file, uint32_t off, uint32_t len,
              const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void gwc_diag_node(GwcCompiler *C, int sev, const Node *n, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));
/* A plain error without a position (I/O, usage). */
void gwc_error_plain(GwcCompiler *C, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The closest of names[] to s within a small edit distance, or NULL. */
const char *gwc_closest(const char *s, const char *const *names, int n);
void gwc_line_col(GwcCompiler *C, int file, uint32_t off, int *line, int *col);

/* ---- the compilation --------------------------------------------------------*/
#define GWC_MAX_ERRORS_PER_FILE 20
#define GWC_MAX_FILE_SIZE (16u << 20)
#define GWC_MAX_FILES 4096
#define GWC_MAX_DEPTH 200          /* expression nesting */

struct GwcCompiler {
  GwArena     arena;
  GwcFile   **files;
  int         nfiles, capfiles;
  int         nerrors, nwarnings;
  int         io_error;            /* an input could not be read */
  FILE       *diag_out;            /* where diagnostics go (stderr) */
  int         color;
  /* parser state */
  int         cur_file;
  int         parse_error;         /* the current declaration had a syntax error */
  const char *next_keyword;        /* for the message about an incomplete declaration */
  GwcToken    last_token;          /* the token being parsed, for stack overflow */
  int         depth;
  /* sema results */
  Node      **backends;  int nbackends;
  Node      **auths;     int nauths;
  Node      **limits;    int nlimits;
  Node      **corses;    int ncorses;
  Node      **endpoints; int nendpoints;
  Node       *server;
  /* options */
  int         keep_comments;       /* lexer records comments (fmt) */
};

GwcCompiler *gwc_new(void);
void         gwc_free(GwcCompiler *C);
/* Add an input: a .gw file or a directory of them (sorted, recursive).
** Returns the number of files added, -1 on I/O error (reported). */
int  gwc_add_path(GwcCompiler *C, const char *path);
/* Load one file's text; returns its index or -1. */
int  gwc_load_file(GwcCompiler *C, const char *path, int imported);
/* Parse every loaded file (following imports). */
void gwc_parse_all(GwcCompiler *C);
/* Parse one file from a reader (the lexer chunk tests use this). */
void gwc_parse_file(GwcCompiler *C, int file);
/* Semantic checks; annotates the AST. */
void gwc_sema(GwcCompiler *C);
/* The call graph and read paths (after sema). */
void gwc_graph(GwcCompiler *C);
void gwc_graph_free(GwcCompiler *C);
/* Code generation into a program image (owned GwBuf). 0 on success. */
int  gwc_codegen(GwcCompiler *C, GwBuf *out);
/* Formatting one parsed file back to canonical source. */
void gwc_format(GwcCompiler *C, int file, GwBuf *out);
/* Disassembly of a loaded program. */
void gwc_dump(const GwProgram *p, FILE *out);
void gwc_routes(const GwProgram *p, FILE *out);

/* Whole pipeline for gwd and the CLI: load paths, parse, check, build.
** Returns 0 and an owned image in *out, or 1 if diagnostics had errors,
** 2 on I/O error. Diagnostics go to diag (may be NULL for stderr). */
int gwc_compile_paths(const char *const *paths, int n, FILE *diag, GwBuf *out);

#endif
