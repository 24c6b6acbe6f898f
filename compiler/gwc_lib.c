/*
** gwc_lib.c — the whole compiler as one call, for the gwc CLI and for gwd
** (which compiles a .gw file or a directory in process).
*/
#include "gwc.h"

int gwc_compile_paths(const char *const *paths, int n, FILE *diag, GwBuf *out) {
  GwcCompiler *C = gwc_new();
  if (diag) C->diag_out = diag;
  for (int i = 0; i < n; i++) gwc_add_path(C, paths[i]);
  int rc;
  if (C->io_error) {
    rc = 2;
  } else {
    /* every pass runs even after errors (the AST is always whole: a
    ** declaration with a syntax error is dropped), so independent errors
    ** are all reported; only code generation needs a clean program */
    gwc_parse_all(C);
    gwc_sema(C);
    gwc_graph(C);
    rc = C->nerrors ? 1 : gwc_codegen(C, out) ? 1 : 0;
  }
  gwc_free(C);
  return rc;
}
