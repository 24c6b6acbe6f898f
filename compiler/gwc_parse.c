/*
** gwc_parse.c — the front of the compiler: the compilation object, loading
** files and directories, driving the lexer into the lemon parser, recovering
** from syntax errors, and following imports.
**
** Error recovery is deliberately simple: after a syntax error the parser is
** restarted at the next top-level keyword (`endpoint`, `backend`, …) seen at
** brace depth 0, so one broken declaration costs one diagnostic and the rest
** of the file is still checked.
*/
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "gwc.h"
#include "gw_parse.h"

/* lemon's interface (build/gen/gw_parse.c) */
void *gwParseAlloc(void *(*)(size_t));
void  gwParseFree(void *, void (*)(void *));
void  gwParse(void *, int, GwcToken, GwcCompiler *);

GwcCompiler *gwc_new(void) {
  GwcCompiler *C = calloc(1, sizeof *C);
  if (!C) abort();
  gw_arena_init(&C->arena);
  C->diag_out = stderr;
  return C;
}

void gwc_free(GwcCompiler *C) {
  if (!C) return;
  gwc_graph_free(C);
  for (int i = 0; i < C->nfiles; i++) {
    free(C->files[i]->text);
    free(C->files[i]->lines);
    free(C->files[i]);
  }
  free(C->files);
  gw_arena_free(&C->arena);
  free(C);
}

static char *dirname_of(GwcCompiler *C, const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return gw_arena_strndup(&C->arena, ".", 1);
  if (slash == path) return gw_arena_strndup(&C->arena, "/", 1);
  return gw_arena_strndup(&C->arena, path, (size_t)(slash - path));
}

int gwc_load_file(GwcCompiler *C, const char *path, int imported) {
  char real[PATH_MAX];
  const char *key = realpath(path, real) ? real : path;
  for (int i = 0; i < C->nfiles; i++)
    if (strcmp(C->files[i]->real, key) == 0) return i;
  if (C->nfiles >= GWC_MAX_FILES) {
    gwc_error_plain(C, "too many source files (at most %d)", GWC_MAX_FILES);
    return -1;
  }
  char *text; size_t len;
  if (gw_read_file(path, GWC_MAX_FILE_SIZE, &text, &len) != 0) {
    gwc_error_plain(C, "cannot read '%s': %s", path,
                    errno == EFBIG ? "file too large (16 MB at most)" : strerror(errno));
    C->io_error = 1;
    return -1;
  }
  GwcFile *f = calloc(1, sizeof *f);
  if (!f) abort();
  f->path = gw_arena_strndup(&C->arena, path, strlen(path));
  f->real = gw_arena_strndup(&C->arena, key, strlen(key));
  f->dir = dirname_of(C, path);
  f->text = text; f->len = len;
  f->imported = imported;
  int cap = 64;
  f->lines = malloc(sizeof(uint32_t) * (size_t)cap);
  if (!f->lines) abort();
  f->lines[f->nlines++] = 0;
  for (size_t i = 0; i < len; i++)
    if (text[i] == '\n') {
      if (f->nlines == cap) {
        cap *= 2;
        f->lines = realloc(f->lines, sizeof(uint32_t) * (size_t)cap);
        if (!f->lines) abort();
      }
      f->lines[f->nlines++] = (uint32_t)(i + 1);
    }
  if (C->nfiles == C->capfiles) {
    C->capfiles = C->capfiles ? C->capfiles * 2 : 16;
    C->files = realloc(C->files, sizeof(GwcFile *) * (size_t)C->capfiles);
    if (!C->files) abort();
  }
  C->files[C->nfiles] = f;
  return C->nfiles++;
}

static int cmpstr(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && strcmp(s + n - m, suf) == 0;
}

/* All .gw files under dir, sorted by name, recursively. */
static int add_dir(GwcCompiler *C, const char *dir, int depth) {
  if (depth > 16) return 0;
  DIR *d = opendir(dir);
  if (!d) {
    gwc_error_plain(C, "cannot open directory '%s': %s", dir, strerror(errno));
    C->io_error = 1;
    return -1;
  }
  char **names = NULL;
  int n = 0, cap = 0, added = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (n == cap) { cap = cap ? cap * 2 : 32; names = realloc(names, sizeof(char *) * (size_t)cap); if (!names) abort(); }
    names[n++] = gw_arena_printf(&C->arena, "%s/%s", dir, e->d_name);
  }
  closedir(d);
  if (n) qsort(names, (size_t)n, sizeof(char *), cmpstr);
  for (int i = 0; i < n; i++) {
    struct stat st;
    if (stat(names[i], &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) { int k = add_dir(C, names[i], depth + 1); if (k > 0) added += k; }
    else if (ends_with(names[i], ".gw") && gwc_load_file(C, names[i], 0) >= 0) added++;
  }
  free(names);
  return added;
}

int gwc_add_path(GwcCompiler *C, const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    gwc_error_plain(C, "cannot open '%s': %s", path, strerror(errno));
    C->io_error = 1;
    return -1;
  }
  if (S_ISDIR(st.st_mode)) {
    /* drop a trailing slash so paths print cleanly */
    size_t n = strlen(path);
    char *p = gw_arena_strndup(&C->arena, path, n);
    while (n > 1 && p[n - 1] == '/') p[--n] = 0;
    return add_dir(C, p, 0);
  }
  return gwc_load_file(C, path, 0) >= 0 ? 1 : -1;
}

/* ---- parsing --------------------------------------------------------------- */

typedef struct Reader { const char *p; size_t n, pos, chunk; } Reader;

static size_t read_chunk(void *ctx, char *dst, size_t cap) {
  Reader *r = ctx;
  size_t n = r->n - r->pos;
  if (n > cap) n = cap;
  if (r->chunk && n > r->chunk) n = r->chunk;
  memcpy(dst, r->p + r->pos, n);
  r->pos += n;
  return n;
}

static int is_toplevel(int type) {
  return type == TK_IMPORT || type == TK_SERVER || type == TK_BACKEND || type == TK_AUTH ||
         type == TK_LIMIT || type == TK_CORS || type == TK_ENDPOINT;
}

void gwc_syntax_error(GwcCompiler *C, const GwcToken *t) {
  if (C->parse_error) return;
  C->parse_error = 1;
  if (!t) {
    const GwcToken *l = &C->last_token;
    gwc_diag(C, DIAG_ERROR, l->file, l->off, l->len, "expression or block nested too deeply");
    return;
  }
  GwcFile *f = C->files[t->file];
  const char *kind = gwc_token_name(t->type);
  const char *text = f->text + t->off;
  int tl = (int)t->len;
  if (tl > 40) tl = 40;
  if (t->type == TK_SEMI && t->len == 0) {
    gwc_diag(C, DIAG_ERROR, t->file, t->off, (uint32_t)strlen(C->next_keyword ? C->next_keyword : ""),
             "unexpected '%s': the declaration before it is incomplete", C->next_keyword ? C->next_keyword : "");
  } else if (t->type == 0) {
    gwc_diag(C, DIAG_ERROR, t->file, t->off, 0, "unexpected end of file");
  } else if (t->type == TK_ID || t->type == TK_BIND) {
    int nk = 0;
    while (gwc_keywords[nk]) nk++;
    const char *hint = gwc_closest(t->s, gwc_keywords, nk);
    if (hint)
      gwc_diag(C, DIAG_ERROR, t->file, t->off, t->len, "unexpected identifier '%s'; did you mean '%s'?", t->s, hint);
    else
      gwc_diag(C, DIAG_ERROR, t->file, t->off, t->len, "unexpected identifier '%s'", t->s);
  } else if (kind) {
    gwc_diag(C, DIAG_ERROR, t->file, t->off, t->len, "unexpected %s %.*s", kind, tl, text);
  } else {
    gwc_diag(C, DIAG_ERROR, t->file, t->off, t->len, "unexpected '%.*s'", tl, text);
  }
}


/* Parse file `file`, reading it `chunk` bytes at a time (0: all at once). */
static void parse_file(GwcCompiler *C, int file, size_t chunk) {
  GwcFile *f = C->files[file];
  Reader r = { f->text, f->len, 0, chunk };
  GwcLexer *L = gwc_lexer_new(C, file, read_chunk, &r);
  void *P = gwParseAlloc(malloc);
  int saved = C->cur_file;
  C->cur_file = file;
  C->parse_error = 0;
  GwcToken t;
  for (;;) {
    int depth = gwc_lexer_depth(L);
    int type = gwc_lex(L, &t);
    if (f->nerrors > GWC_MAX_ERRORS_PER_FILE) break;
    if (C->parse_error) {
      /* skip to the next declaration at depth 0 */
      if (type != 0 && !(depth == 0 && is_toplevel(type))) continue;
      gwParseFree(P, free);
      P = gwParseAlloc(malloc);
      C->parse_error = 0;
    }
    if (depth == 0 && is_toplevel(type)) {
      /* A declaration keyword at depth 0 always starts a declaration, even
      ** where the grammar would let it fall back to an identifier (an
      ** option value): an invisible ';' ends whatever came before. */
      GwcToken semi = t;
      semi.type = TK_SEMI;
      semi.len = 0;
      C->next_keyword = t.s;
      gwParse(P, TK_SEMI, semi, C);
      C->next_keyword = NULL;
      if (C->parse_error) {
        gwParseFree(P, free);
        P = gwParseAlloc(malloc);
        C->parse_error = 0;
      }
    }
    C->last_token = t;
    gwParse(P, type, t, C);
    if (type == 0) break;
  }
  gwParseFree(P, free);
  gwc_lexer_free(L);
  C->cur_file = saved;
  C->parse_error = 0;
}

void gwc_parse_file(GwcCompiler *C, int file) {
  const char *chunk = getenv("GWC_LEX_CHUNK");   /* tests: feed the lexer in pieces */
  parse_file(C, file, chunk ? (size_t)strtoul(chunk, NULL, 10) : 0);
}

/* Imports: resolve relative to the importing file, load, and remember the
** edge (D_IMPORT.idx = the imported file) for the cycle check. */
static void follow_imports(GwcCompiler *C, int file) {
  GwcFile *f = C->files[file];
  for (Node *d = f->decls; d; d = d->next) {
    if (d->kind != D_IMPORT) continue;
    const char *name = d->a->s;
    char *path = name[0] == '/' ? gw_arena_strndup(&C->arena, name, strlen(name))
                                : gw_arena_printf(&C->arena, "%s/%s", f->dir, name);
    struct stat st;
    if (stat(path, &st) != 0 || S_ISDIR(st.st_mode)) {
      gwc_diag_node(C, DIAG_ERROR, d->a, "import not found: '%s'", name);
      continue;
    }
    int before = C->nfiles;
    int k = gwc_load_file(C, path, 1);
    if (k < 0) { gwc_diag_node(C, DIAG_ERROR, d->a, "cannot read import '%s'", name); continue; }
    d->idx = k;
    if (k >= before) gwc_parse_file(C, k);
  }
}

/* Report import cycles: DFS over the import edges. */
static int import_dfs(GwcCompiler *C, int file, int *color, int *stack, int depth) {
  color[file] = 1;
  stack[depth] = file;
  for (Node *d = C->files[file]->decls; d; d = d->next) {
    if (d->kind != D_IMPORT || d->idx < 0) continue;
    if (color[d->idx] == 1) {
      GwBuf b = {0};
      int i = depth;
      while (i > 0 && stack[i] != d->idx) i--;
      for (int k = i; k <= depth; k++) gw_buf_printf(&b, "%s -> ", C->files[stack[k]]->path);
      gw_buf_adds(&b, C->files[d->idx]->path);
      gwc_diag_node(C, DIAG_ERROR, d->a, "import cycle: %s", gw_buf_cstr(&b));
      gw_buf_free(&b);
      continue;
    }
    if (color[d->idx] == 0 && import_dfs(C, d->idx, color, stack, depth + 1)) return 1;
  }
  color[file] = 2;
  return 0;
}

void gwc_parse_all(GwcCompiler *C) {
  int n = C->nfiles;
  for (int i = 0; i < n; i++) gwc_parse_file(C, i);
  for (int i = 0; i < C->nfiles; i++) follow_imports(C, i);
  int *color = calloc((size_t)C->nfiles + 1, sizeof(int));
  int *stack = calloc((size_t)C->nfiles + 1, sizeof(int));
  if (!color || !stack) abort();
  for (int i = 0; i < C->nfiles; i++) if (!color[i]) import_dfs(C, i, color, stack, 0);
  free(color); free(stack);
}
