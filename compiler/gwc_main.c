/*
** gwc_main.c — the gwc command line:
**
**   gwc check FILES|DIR             validate; diagnostics on stderr
**   gwc build -o OUT.gwb FILES|DIR  compile
**   gwc dump PROGRAM                disassemble a .gwb (or compile .gw/DIR first)
**   gwc routes PROGRAM              the route table
**   gwc fmt [--check|--stdout] FILES  canonical layout, in place
**   gwc --version | --help
**
** Exit status: 0 ok, 1 diagnostics (or fmt --check found changes), 2 usage
** or I/O error.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "gwc.h"

#define GWC_VERSION "0.1.0"

static void usage(FILE *out) {
  fputs("usage: gwc check FILES|DIR\n"
        "       gwc build -o OUT.gwb FILES|DIR\n"
        "       gwc dump PROGRAM          (a .gwb, or .gw files / a directory)\n"
        "       gwc routes PROGRAM\n"
        "       gwc fmt [--check | --stdout] FILES|DIR\n"
        "       gwc --version | --help\n"
        "exit status: 0 ok, 1 diagnostics, 2 usage or I/O error\n", out);
}

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && !strcmp(s + n - m, suf);
}

/* Load a program for dump/routes: a .gwb file, or sources compiled now. */
static GwProgram *load_program(char **paths, int n, int *rc) {
  GwBuf img = {0};
  if (n == 1 && ends_with(paths[0], ".gwb")) {
    char *data; size_t len;
    if (gw_read_file(paths[0], GW_MAX_FILE_SIZE, &data, &len) != 0) {
      fprintf(stderr, "gwc: cannot read '%s': %s\n", paths[0], errno == EFBIG ? "file too large" : strerror(errno));
      *rc = 2;
      return NULL;
    }
    img.p = data; img.n = len;
  } else {
    *rc = gwc_compile_paths((const char *const *)paths, n, stderr, &img);
    if (*rc) { gw_buf_free(&img); return NULL; }
  }
  char err[256];
  GwProgram *p = gw_program_load(img.p, img.n, err, sizeof err);
  if (!p) {
    fprintf(stderr, "gwc: %s: %s\n", paths[0], err);
    *rc = 1;
  }
  gw_buf_free(&img);
  return p;
}

static int write_atomically(const char *path, const void *p, size_t n) {
  char *tmp = malloc(strlen(path) + 16);
  if (!tmp) abort();
  sprintf(tmp, "%s.tmp%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) { fprintf(stderr, "gwc: cannot write '%s': %s\n", tmp, strerror(errno)); free(tmp); return 2; }
  size_t w = fwrite(p, 1, n, f);
  int bad = w != n || fflush(f) != 0 || fsync(fileno(f)) != 0;
  bad |= fclose(f) != 0;
  if (bad || rename(tmp, path) != 0) {
    fprintf(stderr, "gwc: cannot write '%s': %s\n", path, strerror(errno));
    unlink(tmp);
    free(tmp);
    return 2;
  }
  free(tmp);
  return 0;
}

/* gwc fmt: FILES or directories of them; in place, --check or --stdout. */
static int cmd_fmt(int argc, char **argv) {
  int check = 0, to_stdout = 0, rc = 0, nargs = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--check")) { check = 1; continue; }
    if (!strcmp(argv[i], "--stdout")) { to_stdout = 1; continue; }
    if (argv[i][0] == '-') { usage(stderr); return 2; }
    nargs++;
    GwcCompiler *C = gwc_new();
    C->keep_comments = 1;
    if (gwc_add_path(C, argv[i]) < 0) { gwc_free(C); rc = 2; continue; }
    for (int f = 0; f < C->nfiles; f++) {
      GwcFile *F = C->files[f];
      gwc_parse_file(C, f);
      if (F->nerrors) { if (rc < 1) rc = 1; continue; }
      GwBuf out = {0};
      gwc_format(C, f, &out);
      int same = out.n == F->len && !memcmp(out.p ? out.p : "", F->text, out.n);
      if (to_stdout) fwrite(out.p ? out.p : "", 1, out.n, stdout);
      else if (check) { if (!same) { printf("%s\n", F->path); if (rc < 1) rc = 1; } }
      else if (!same) { int w = write_atomically(F->path, out.p ? out.p : "", out.n); if (w) rc = w; }
      gw_buf_free(&out);
    }
    gwc_free(C);
  }
  if (!nargs) { usage(stderr); return 2; }
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) { usage(stderr); return 2; }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
    printf("gwc %s (bytecode format %u)\n", GWC_VERSION, GW_FORMAT_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
  if (!strcmp(cmd, "fmt")) return cmd_fmt(argc - 2, argv + 2);
  if (!strcmp(cmd, "check")) {
    if (argc < 3) { usage(stderr); return 2; }
    GwBuf img = {0};
    int rc = gwc_compile_paths((const char *const *)argv + 2, argc - 2, stderr, &img);
    gw_buf_free(&img);
    return rc;
  }
  if (!strcmp(cmd, "build")) {
    const char *out = NULL;
    int i = 2;
    char **files = malloc(sizeof(char *) * (size_t)argc);
    int n = 0;
    if (!files) abort();
    for (; i < argc; i++) {
      if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
      else if (!strncmp(argv[i], "-o", 2) && argv[i][2]) out = argv[i] + 2;
      else if (argv[i][0] == '-') { free(files); usage(stderr); return 2; }
      else files[n++] = argv[i];
    }
    if (!out || !n) { free(files); usage(stderr); return 2; }
    GwBuf img = {0};
    int rc = gwc_compile_paths((const char *const *)files, n, stderr, &img);
    if (rc == 0) rc = write_atomically(out, img.p, img.n);
    gw_buf_free(&img);
    free(files);
    return rc;
  }
  if (!strcmp(cmd, "dump") || !strcmp(cmd, "routes")) {
    if (argc < 3) { usage(stderr); return 2; }
    int rc = 0;
    GwProgram *p = load_program(argv + 2, argc - 2, &rc);
    if (!p) return rc ? rc : 1;
    if (!strcmp(cmd, "dump")) gwc_dump(p, stdout); else gwc_routes(p, stdout);
    gw_program_free(p);
    return 0;
  }
  fprintf(stderr, "gwc: unknown command '%s'\n", cmd);
  usage(stderr);
  return 2;
}
