/*
** test_lexer.c — the lexer must not care how its input is cut into reads.
**
**   build/test_lexer FILE.gw...         chunk tests (one line per file)
**   build/test_lexer --dump FILE.gw     print the token stream (golden tests)
**
** Each file is lexed once whole (the reference), then again with the read
** callback returning 1 byte at a time, every chunk size 2..31, and split at
** byte positions k into two reads [0,k) and [k,n) (every k for files under
** 4 KB, else 500 evenly spaced ones). Every run must give the same tokens
** (type, offset, length, decoded value), the same comments and the same
** number of diagnostics. The reference stream is also checked for sanity:
** tokens in order and inside the file, identifier text equal to the source.
** Ends with "N passed, N failed"; exits 1 on any failure.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gwc.h"
#include "gw_parse.h"
#include "gw_bytecode.h"
#include "gw_util.h"

#define SPLIT_ALL_BELOW 4096
#define SPLIT_SAMPLES   500

typedef struct Tok {
  int type;
  uint32_t off, len;
  char *s;           /* decoded value (NULL if the token has none) */
  size_t n;
} Tok;

typedef struct Run {
  Tok *t; size_t nt, cap;
  uint32_t *comments; size_t ncomments;   /* off,len pairs */
  int nerrors;
  int runaway;       /* the lexer did not reach the end */
} Run;

/* The read callback: chunk bytes at a time (0: as much as fits), or two
** reads split at `split` (0: no split). */
typedef struct Reader { const char *p; size_t n, pos, chunk, split; } Reader;

static size_t reader(void *ctx, char *dst, size_t cap) {
  Reader *r = ctx;
  size_t n = r->n - r->pos;
  if (r->split && r->pos < r->split) n = r->split - r->pos;
  if (r->chunk && n > r->chunk) n = r->chunk;
  if (n > cap) n = cap;
  memcpy(dst, r->p + r->pos, n);
  r->pos += n;
  return n;
}

static FILE *devnull;
static const char *cur_path;

static void run_free(Run *R) {
  for (size_t i = 0; i < R->nt; i++) free(R->t[i].s);
  free(R->t);
  free(R->comments);
  memset(R, 0, sizeof *R);
}

/* Lex cur_path fed by chunk/split into R. Returns 0, or -1 if the file
** cannot be loaded. */
static int lex_file(Run *R, size_t chunk, size_t split) {
  memset(R, 0, sizeof *R);
  GwcCompiler *C = gwc_new();
  C->diag_out = devnull;
  C->keep_comments = 1;
  int f = gwc_load_file(C, cur_path, 0);
  if (f < 0) { gwc_free(C); return -1; }
  GwcFile *F = C->files[f];
  C->nerrors = 0;
  Reader rd = { F->text, F->len, 0, chunk, split };
  GwcLexer *L = gwc_lexer_new(C, f, reader, &rd);
  size_t limit = 2 * F->len + 16;   /* more tokens than that: a runaway */
  for (;;) {
    GwcToken t;
    memset(&t, 0, sizeof t);
    int type = gwc_lex(L, &t);
    if (R->nt == R->cap) {
      R->cap = R->cap ? 2 * R->cap : 256;
      R->t = realloc(R->t, R->cap * sizeof *R->t);
      if (!R->t) abort();
    }
    Tok *k = &R->t[R->nt++];
    k->type = type; k->off = t.off; k->len = t.len; k->n = t.n; k->s = NULL;
    if (t.s) {
      k->s = malloc(t.n + 1);
      if (!k->s) abort();
      memcpy(k->s, t.s, t.n);
      k->s[t.n] = 0;
    }
    if (type == 0) break;
    if (R->nt > limit) { R->runaway = 1; break; }
  }
  gwc_lexer_free(L);
  size_t nc = 0;
  for (Node *c = F->comments; c; c = c->next) nc++;
  R->comments = malloc(2 * (nc + 1) * sizeof *R->comments);
  if (!R->comments) abort();
  for (Node *c = F->comments; c; c = c->next) {
    R->comments[2 * R->ncomments] = c->off;
    R->comments[2 * R->ncomments + 1] = c->len;
    R->ncomments++;
  }
  R->nerrors = C->nerrors;
  gwc_free(C);
  return 0;
}

/* Compare a run with the reference; on a difference, describe it in why. */
static int same(const Run *A, const Run *B, char *why, size_t wl) {
  if (B->runaway) { snprintf(why, wl, "the lexer did not reach the end of input"); return 0; }
  size_t n = A->nt < B->nt ? A->nt : B->nt;
  for (size_t i = 0; i < n; i++) {
    const Tok *a = &A->t[i], *b = &B->t[i];
    int eq = a->type == b->type && a->off == b->off && a->len == b->len && a->n == b->n &&
             (a->s == NULL) == (b->s == NULL) && (!a->s || memcmp(a->s, b->s, a->n) == 0);
    if (!eq) {
      snprintf(why, wl, "token %zu differs: whole (type %d, off %u, len %u, '%.40s') vs (type %d, off %u, len %u, '%.40s')",
               i, a->type, a->off, a->len, a->s ? a->s : "", b->type, b->off, b->len, b->s ? b->s : "");
      return 0;
    }
  }
  if (A->nt != B->nt) { snprintf(why, wl, "%zu tokens whole, %zu here", A->nt, B->nt); return 0; }
  if (A->ncomments != B->ncomments ||
      (A->ncomments && memcmp(A->comments, B->comments, 2 * A->ncomments * sizeof *A->comments))) {
    snprintf(why, wl, "comments differ (%zu whole, %zu here)", A->ncomments, B->ncomments);
    return 0;
  }
  if (A->nerrors != B->nerrors) { snprintf(why, wl, "%d diagnostics whole, %d here", A->nerrors, B->nerrors); return 0; }
  return 1;
}

static int is_string(int type) {
  return type == TK_STRING || type == TK_STRBEG || type == TK_STRMID || type == TK_STREND;
}

static int is_textual(int type) {
  return type == TK_ID || type == TK_BIND || type == TK_NUMBER || type == TK_STATUS ||
         type == TK_DURATION || type == TK_SIZE || type == TK_RATE || type == TK_PATH ||
         type == TK_METHOD;
}

/* The reference must make sense on its own. */
static int sane(const Run *R, const char *text, size_t len, char *why, size_t wl) {
  if (R->runaway) { snprintf(why, wl, "the lexer did not reach the end of input"); return 0; }
  uint32_t end = 0;
  for (size_t i = 0; i < R->nt; i++) {
    const Tok *t = &R->t[i];
    if (t->off < end || (size_t)t->off + t->len > len) {
      snprintf(why, wl, "token %zu (type %d) at %u+%u overlaps the previous one or leaves the file", i, t->type, t->off, t->len);
      return 0;
    }
    end = t->off + t->len;
    if (t->type == 0 && (i + 1 != R->nt || t->off != len)) {
      snprintf(why, wl, "end of input reported at %u of %zu", t->off, len);
      return 0;
    }
    if (t->type != 0 && t->len == 0) { snprintf(why, wl, "token %zu is empty", i); return 0; }
    int need = is_textual(t->type), have = t->s && t->type != 0 && !is_string(t->type);
    if ((need || have) && (!t->s || t->n != t->len || memcmp(t->s, text + t->off, t->len))) {
      snprintf(why, wl, "token %zu: value '%s' is not its source text", i, t->s ? t->s : "(null)");
      return 0;
    }
  }
  if (!R->nt || R->t[R->nt - 1].type != 0) { snprintf(why, wl, "no end-of-input token"); return 0; }
  return 1;
}

static const char *kind_name(int type) {
  switch (type) {
  case 0: return "EOF";
  case TK_ID: return "ID";
  case TK_BIND: return "BIND";
  case TK_STRING: return "STRING";
  case TK_STRBEG: return "STRBEG";
  case TK_STRMID: return "STRMID";
  case TK_STREND: return "STREND";
  case TK_NUMBER: return "NUMBER";
  case TK_STATUS: return "STATUS";
  case TK_DURATION: return "DURATION";
  case TK_SIZE: return "SIZE";
  case TK_RATE: return "RATE";
  case TK_PATH: return "PATH";
  case TK_METHOD: return "METHOD";
  case TK_OPT: return "OPT";
  case TK_ASSIGN: return "ASSIGN";
  case TK_EQ: return "EQ";
  case TK_SLASH: return "SLASH";
  case TK_LBRACE: return "LBRACE";
  case TK_RBRACE: return "RBRACE";
  default:
    if (type >= TK_IMPORT && type <= TK_REQUIRE) return "KW";
    if (type == TK_TRUE || type == TK_FALSE || type == TK_NULL) return "KW";
    return "PUNCT";
  }
}

static void put_escaped(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\\') fputs("\\\\", stdout);
    else if (c == '\n') fputs("\\n", stdout);
    else if (c == '\t') fputs("\\t", stdout);
    else if (c == '\r') fputs("\\r", stdout);
    else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
    else putchar(c);     /* UTF-8 passes through */
  }
}

/* --dump: one token a line, "line:col KIND source-text [=> decoded]". */
static int dump(void) {
  Run R;
  if (lex_file(&R, 0, 0) < 0) { fprintf(stderr, "cannot load %s\n", cur_path); return 1; }
  GwcCompiler *C = gwc_new();
  C->diag_out = devnull;
  int f = gwc_load_file(C, cur_path, 0);
  GwcFile *F = C->files[f];
  for (size_t i = 0; i < R.nt; i++) {
    const Tok *t = &R.t[i];
    int line, col;
    gwc_line_col(C, f, t->off, &line, &col);
    printf("%d:%d %s ", line, col, kind_name(t->type));
    put_escaped(F->text + t->off, t->len);
    if (is_string(t->type)) {
      fputs(" => ", stdout);
      put_escaped(t->s, t->n);
    }
    putchar('\n');
  }
  printf("comments %zu, diagnostics %d\n", R.ncomments, R.nerrors);
  run_free(&R);
  gwc_free(C);
  return 0;
}

static int check_file(const char *path) {
  char why[512] = "";
  Run ref, r;
  cur_path = path;
  if (lex_file(&ref, 0, 0) < 0) { printf("FAIL %s: cannot load\n", path); return 0; }
  GwcCompiler *C = gwc_new();
  C->diag_out = devnull;
  int fi = gwc_load_file(C, path, 0);
  size_t n = C->files[fi]->len;
  int good = sane(&ref, C->files[fi]->text, n, why, sizeof why);
  gwc_free(C);
  size_t runs = 0;
  /* chunk sizes 1..31, then two reads split at k (k = 0 or n would be
  ** a single read) */
  size_t npos = n < 2 ? 0 : n - 1;
  if (n >= SPLIT_ALL_BELOW && npos > SPLIT_SAMPLES) npos = SPLIT_SAMPLES;
  for (size_t i = 0; good && i < 31 + npos; i++) {
    size_t chunk = i < 31 ? i + 1 : 0, split = 0;
    if (i >= 31) {
      size_t j = i - 31;
      split = n < SPLIT_ALL_BELOW ? j + 1 : 1 + j * (n - 1) / npos;
    }
    char d[400];
    if (lex_file(&r, chunk, split) < 0) { snprintf(why, sizeof why, "cannot load"); good = 0; break; }
    runs++;
    if (!same(&ref, &r, d, sizeof d)) {
      if (chunk) snprintf(why, sizeof why, "chunk size %zu: %s", chunk, d);
      else snprintf(why, sizeof why, "split at byte %zu: %s", split, d);
      good = 0;
    }
    run_free(&r);
  }
  if (good)
    printf("ok   %s: %zu tokens, %d diagnostics, %zu runs\n", path, ref.nt, ref.nerrors, runs);
  else
    printf("FAIL %s: %s\n", path, why);
  run_free(&ref);
  return good;
}

int main(int argc, char **argv) {
  devnull = fopen("/dev/null", "w");
  if (!devnull) { perror("/dev/null"); return 2; }
  if (argc == 3 && !strcmp(argv[1], "--dump")) {
    cur_path = argv[2];
    int rc = dump();
    fclose(devnull);
    return rc;
  }
  if (argc < 2) { fprintf(stderr, "usage: test_lexer FILE.gw... | --dump FILE.gw\n"); return 2; }
  int passed = 0, failed = 0;
  for (int i = 1; i < argc; i++) {
    if (check_file(argv[i])) passed++; else failed++;
  }
  printf("%d passed, %d failed\n", passed, failed);
  fclose(devnull);
  return failed ? 1 : 0;
}
