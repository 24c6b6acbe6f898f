/*
** gwd_main.c — the gwd command line:
**
**   gwd [--listen ADDR]… [--admin ADDR] [--workers N] [--check] PROGRAM
**
** PROGRAM is a .gwb, a .gw file or a directory of them (compiled in
** process). Flags override the program's server { } block. --check loads
** and verifies the program, prints a summary and exits 0 (or 1).
** SIGTERM/SIGINT drain and exit 0; a second signal exits at once.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <curl/curl.h>
#include "gwr.h"

#define GWD_VERSION "0.1.0"

static volatile sig_atomic_t got_signal;

static void on_signal(int sig) {
  if (got_signal) _exit(2);            /* the second signal: now */
  got_signal = sig;
}

static void usage(FILE *out) {
  fputs("usage: gwd [--listen ADDR]... [--admin ADDR] [--workers N] [--drain-timeout MS] [--check] PROGRAM\n"
        "  PROGRAM is a .gwb file, a .gw file or a directory of .gw files\n"
        "  ADDR is PORT, HOST:PORT or [V6]:PORT; --admin \"\" disables the admin listener\n"
        "  --check loads and verifies PROGRAM, prints a summary, exits 0 or 1\n", out);
}

int main(int argc, char **argv) {
  const char *listen[GWR_MAX_LISTEN], *admin = NULL, *program = NULL;
  int nlisten = 0, workers = -1, check = 0;
  long drain = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if ((!strcmp(a, "--listen") || !strcmp(a, "-l")) && i + 1 < argc) {
      if (nlisten == GWR_MAX_LISTEN) { fprintf(stderr, "gwd: too many --listen\n"); return 2; }
      listen[nlisten++] = argv[++i];
    } else if (!strcmp(a, "--admin") && i + 1 < argc) admin = argv[++i];
    else if (!strcmp(a, "--workers") && i + 1 < argc) {
      char *end;
      workers = (int)strtol(argv[++i], &end, 10);
      if (*end || workers < 1 || workers > 64) { fprintf(stderr, "gwd: --workers takes 1 to 64\n"); return 2; }
    } else if (!strcmp(a, "--drain-timeout") && i + 1 < argc) drain = strtol(argv[++i], NULL, 10);
    else if (!strcmp(a, "--check")) check = 1;
    else if (!strcmp(a, "--version")) { printf("gwd %s (bytecode format %u)\n", GWD_VERSION, GW_FORMAT_VERSION); return 0; }
    else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    else if (a[0] == '-' && a[1]) { fprintf(stderr, "gwd: unknown option '%s'\n", a); usage(stderr); return 2; }
    else if (!program) program = a;
    else { fprintf(stderr, "gwd: more than one PROGRAM\n"); return 2; }
  }
  if (!program) { usage(stderr); return 2; }

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) { fprintf(stderr, "gwd: cannot initialize libcurl\n"); return 1; }
  char err[512];
  GwrProg *g = gwr_prog_load(program, stderr, err, sizeof err);
  if (!g) { fprintf(stderr, "gwd: %s\n", err); curl_global_cleanup(); return 1; }
  if (check) {
    const GwProgram *p = g->p;
    printf("gwd: %s: ok: %u endpoints, %u backends, %u calls, %u auth policies, %u limits, %u blocks\n",
           program, p->n_endpoints, p->n_backends, p->n_calls, p->n_auths, p->n_limits, p->n_blocks);
    gwr_prog_release(g);
    curl_global_cleanup();
    return 0;
  }

  GwrServer srv;
  memset(&srv, 0, sizeof srv);
  gwr_settings_defaults(&srv.set);
  gwr_settings_from_program(&srv.set, g->p);
  if (nlisten) {
    srv.set.nlisten = nlisten;
    for (int i = 0; i < nlisten; i++) srv.set.listen[i] = listen[i];
  }
  if (admin) srv.set.admin = admin;
  if (drain >= 0) srv.set.drain_ms = (uint32_t)drain;
  srv.nworkers = workers > 0 ? workers : srv.set.workers > 0 ? srv.set.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
  srv.prog = g;
  if (gwr_prog_redis(g)) srv.set.redis = gwr_prog_redis(g);
  srv.limiter = gwr_limiter_new(srv.set.limit_keys);
  if (g->uses_redis && !srv.set.redis) gwr_log("warn", "limits with store redis but no server { redis }: they apply on_error");
  for (uint32_t i = 0; i < g->p->n_endpoints; i++)
    if (g->p->endpoints[i].cache_ms) { gwr_log("warn", "response caching is declared but not done by this build yet"); break; }

  /* the workers inherit a mask that blocks SIGTERM/SIGINT; main waits for them */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  if (gwr_server_start(&srv, err, sizeof err) != 0) {
    fprintf(stderr, "gwd: %s\n", err);
    gwr_prog_release(g);
    curl_global_cleanup();
    return 1;
  }
  for (int i = 0; i < srv.set.nlisten; i++) gwr_log("info", "listening on %s", srv.set.listen[i]);
  if (srv.set.admin && srv.set.admin[0]) gwr_log("info", "admin on %s", srv.set.admin);
  gwr_log("info", "serving %s: %u endpoints, %d workers", program, g->p->n_endpoints, srv.nworkers);
  int sig = 0;
  sigwait(&set, &sig);
  gwr_log("info", "signal %d: draining (up to %u ms)", sig, srv.set.drain_ms);
  /* a second signal during the drain exits at once */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  got_signal = sig;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  gwr_server_stop(&srv);
  gwr_prog_release(srv.prog);
  gwr_limiter_free(srv.limiter);
  curl_global_cleanup();
  gwr_log("info", "stopped");
  return 0;
}
