/*
** gwc_diag.c — GCC-style diagnostics:
**
**   file:line:col: error: message; did you mean 'users'?
**       user = user GET "/u"
**              ^~~~
**
** Errors are counted per file; past GWC_MAX_ERRORS_PER_FILE the rest of a
** file's errors are dropped with one note. Columns count bytes from 1.
*/
#include <stdarg.h>
#include <string.h>
#include "gwc.h"

void gwc_line_col(GwcCompiler *C, int file, uint32_t off, int *line, int *col) {
  GwcFile *f = C->files[file];
  int lo = 0, hi = f->nlines - 1;
  while (lo < hi) {                       /* last line starting at or before off */
    int mid = (lo + hi + 1) / 2;
    if (f->lines[mid] <= off) lo = mid; else hi = mid - 1;
  }
  *line = lo + 1;
  *col = (int)(off - f->lines[lo]) + 1;
}

static void vdiag(GwcCompiler *C, int sev, int file, uint32_t off, uint32_t len,
                  const char *fmt, va_list ap) {
  static const char *const sevname[] = { "error", "warning", "note" };
  FILE *out = C->diag_out ? C->diag_out : stderr;
  GwcFile *f = file >= 0 && file < C->nfiles ? C->files[file] : NULL;
  if (sev == DIAG_ERROR) {
    C->nerrors++;
    if (f && ++f->nerrors > GWC_MAX_ERRORS_PER_FILE) {
      if (f->nerrors == GWC_MAX_ERRORS_PER_FILE + 1)
        fprintf(out, "%s: note: too many errors, stopping this file\n", f->path);
      return;
    }
  } else if (sev == DIAG_WARNING) {
    C->nwarnings++;
  }
  if (!f) {
    fprintf(out, "gwc: %s: ", sevname[sev]);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    return;
  }
  if (off > f->len) off = (uint32_t)f->len;
  int line, col;
  gwc_line_col(C, file, off, &line, &col);
  fprintf(out, "%s:%d:%d: %s: ", f->path, line, col, sevname[sev]);
  vfprintf(out, fmt, ap);
  fputc('\n', out);
  /* the source line and a caret under the token */
  const char *ls = f->text + f->lines[line - 1];
  const char *le = ls;
  while (le < f->text + f->len && *le != '\n' && *le != '\r') le++;
  fprintf(out, "    %.*s\n    ", (int)(le - ls), ls);
  for (const char *p = ls; p < ls + col - 1 && p < le; p++) fputc(*p == '\t' ? '\t' : ' ', out);
  fputc('^', out);
  const char *tokend = f->text + off + (len ? len : 1);
  for (const char *p = f->text + off + 1; p < tokend && p < le; p++) fputc('~', out);
  fputc('\n', out);
}

void gwc_diag(GwcCompiler *C, int sev, int file, uint32_t off, uint32_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdiag(C, sev, file, off, len, fmt, ap);
  va_end(ap);
}

void gwc_diag_node(GwcCompiler *C, int sev, const Node *n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdiag(C, sev, n->file, n->off, n->len, fmt, ap);
  va_end(ap);
}

void gwc_error_plain(GwcCompiler *C, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdiag(C, DIAG_ERROR, -1, 0, 0, fmt, ap);
  va_end(ap);
}

const char *gwc_closest(const char *s, const char *const *names, int n) {
  const char *best = NULL;
  int bestd = 99;
  size_t sl = strlen(s);
  int limit = sl <= 3 ? 1 : sl <= 6 ? 2 : 3;
  for (int i = 0; i < n; i++) {
    if (!names[i]) continue;
    int d = gw_edit_distance(s, names[i]);
    if (d > 0 && d <= limit && d < bestd) { bestd = d; best = names[i]; }
  }
  return best;
}
