/*
** gwd_main.c — the gwd command line:
**
**   gwd [--listen ADDR]… [--listen-tls ADDR (--tls-cert FILE --tls-key FILE)…]…
**       [--admin ADDR] [--workers N] [--drain-timeout MS|DURATION]
**       [--access-log FILE|off] [--log-level LEVEL]
**       [--check] PROGRAM
**
** PROGRAM is a .gwb, a .gw file or a directory of them (compiled in
** process). Flags override the program's server { } block: the listeners
** given by --listen and --listen-tls, together, replace the program's
** listeners. Each --listen-tls takes the --tls-cert/--tls-key pairs that
** follow it (one at least; several are chosen by SNI); the files are read
** at start and again at every reload. --check loads
** and verifies the program, prints a summary and exits 0 (or 1).
** SIGHUP reloads PROGRAM (gwr_server_reload); SIGTERM/SIGINT drain and
** exit 0; a second one exits at once with status 2. Once the command line
** is read, stderr holds JSON log lines only (gwr_log), failures to start
** included; usage errors and --check print plain lines for a person.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <curl/curl.h>
#include "gwr.h"
#include "gwr_metrics.h"
#include "gwr_cache.h"

#define GWD_VERSION "0.1.0"

static volatile sig_atomic_t got_signal;

static void on_signal(int sig) {
  if (got_signal) _exit(2);            /* the second signal: now */
  got_signal = sig;
}

/* --drain-timeout: a whole number of milliseconds, or one with a unit as in
** the language (250ms, 30s, 2m, 1h). 0, or -1 for anything else. */
static int parse_drain(const char *a, uint32_t *ms) {
  char *end;
  errno = 0;
  if (a[0] < '0' || a[0] > '9') return -1;
  unsigned long long v = strtoull(a, &end, 10);
  unsigned long long unit = 1;
  if (!strcmp(end, "s")) unit = 1000;
  else if (!strcmp(end, "m")) unit = 60000;
  else if (!strcmp(end, "h")) unit = 3600000;
  else if (*end && strcmp(end, "ms")) return -1;
  if (errno || v > UINT32_MAX / unit) return -1;
  *ms = (uint32_t)(v * unit);
  return 0;
}

/* The compiler's diagnostics of the program, as log lines at level (warn:
** the warnings of a program that loaded; error: why it did not): stderr
** holds only JSON lines. */
static void log_diagnostics(const char *text, const char *level) {
  for (const char *p = text; p && *p;) {
    const char *e = strchr(p, '\n');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    char line[901];
    if (len > 900) len = 900;
    memcpy(line, p, len);
    line[len] = 0;
    /* a quoted source line that is not UTF-8 would make the message null */
    if (!gw_utf8_valid(line, len))
      for (size_t i = 0; i < len; i++) if ((unsigned char)line[i] >= 0x80) line[i] = '?';
    if (len) gwr_log(level, "load: %s", line);
    p = e ? e + 1 : NULL;
  }
}

/* A failure that stops gwd once its command line is read: a JSON log line
** (error), like everything gwd says on stderr while it runs — or, for
** --check (a command a person runs), the plain "gwd: …" line. */
static int checking;
static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fatal(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (checking) fprintf(stderr, "gwd: %s\n", msg);
  else {
    /* a path in the message need not be UTF-8 (the log line would lose it) */
    if (!gw_utf8_valid(msg, strlen(msg)))
      for (char *q = msg; *q; q++) if ((unsigned char)*q >= 0x80) *q = '?';
    gwr_log("error", "%s", msg);
  }
}

/* A --listen-tls is complete: a pair at least, no --tls-cert left without
** its --tls-key. 0, or -1 after a message. */
static int tls_complete(const GwrListenTls *L, const char *addr, const char *cert) {
  if (!L || !L->on) return 0;
  if (cert) { fprintf(stderr, "gwd: --tls-cert %s has no --tls-key after it\n", cert); return -1; }
  if (!L->npairs) { fprintf(stderr, "gwd: --listen-tls %s needs --tls-cert FILE --tls-key FILE\n", addr); return -1; }
  return 0;
}

static void usage(FILE *out) {
  fputs("usage: gwd [--listen ADDR]... [--listen-tls ADDR --tls-cert FILE --tls-key FILE...]...\n"
        "           [--admin ADDR] [--workers N] [--drain-timeout MS|DURATION] [--check] PROGRAM\n"
        "  PROGRAM is a .gwb file, a .gw file or a directory of .gw files\n"
        "  ADDR is PORT, HOST:PORT or [V6]:PORT; --admin \"\" disables the admin listener\n"
        "  --listen and --listen-tls (HTTPS) together replace the program's listeners;\n"
        "  each --listen-tls takes the --tls-cert FILE --tls-key FILE pairs that follow it\n"
        "  (PEM; one pair at least; with several, the client's SNI picks)\n"
        "  --drain-timeout  how long SIGTERM waits for requests in flight: milliseconds,\n"
        "                   or a duration (250ms, 30s, 2m); default: server { drain }, else 30s\n"
        "  --check loads and verifies PROGRAM, prints a summary, exits 0 or 1\n"
        "  --access-log FILE|off  the access log (JSON lines) appended to FILE, or none;\n"
        "                         default: stdout\n"
        "  --log-level debug|info|warn|error  the least level logged on stderr (default info)\n", out);
}

int main(int argc, char **argv) {
  const char *listen[GWR_MAX_LISTEN], *admin = NULL, *program = NULL, *access_log = NULL;
  static GwrListenTls ltls[GWR_MAX_LISTEN];      /* per listen[] */
  const char *cert = NULL;                       /* a --tls-cert waiting for its --tls-key */
  int nlisten = 0, workers = -1, check = 0;
  uint32_t drain = 0;
  int has_drain = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if ((!strcmp(a, "--listen") || !strcmp(a, "-l") || !strcmp(a, "--listen-tls")) && i + 1 < argc) {
      if (nlisten == GWR_MAX_LISTEN) { fprintf(stderr, "gwd: too many --listen\n"); return 2; }
      if (nlisten && tls_complete(&ltls[nlisten - 1], listen[nlisten - 1], cert)) return 2;
      memset(&ltls[nlisten], 0, sizeof ltls[nlisten]);
      ltls[nlisten].from_cli = 1;
      ltls[nlisten].on = !strcmp(a, "--listen-tls");
      listen[nlisten++] = argv[++i];
    } else if ((!strcmp(a, "--tls-cert") || !strcmp(a, "--tls-key")) && i + 1 < argc) {
      GwrListenTls *L = nlisten ? &ltls[nlisten - 1] : NULL;
      const char *file = argv[++i];
      if (!L || !L->on) { fprintf(stderr, "gwd: %s %s must follow --listen-tls ADDR\n", a, file); return 2; }
      if (!strcmp(a, "--tls-cert")) {
        if (cert) { fprintf(stderr, "gwd: --tls-cert %s has no --tls-key after it\n", cert); return 2; }
        if (L->npairs == GWR_MAX_TLS_PAIRS) {
          fprintf(stderr, "gwd: --listen-tls %s: more than %d certificates\n", listen[nlisten - 1], GWR_MAX_TLS_PAIRS);
          return 2;
        }
        cert = file;
      } else {
        if (!cert) { fprintf(stderr, "gwd: --tls-key %s must follow --tls-cert FILE\n", file); return 2; }
        L->pairs[L->npairs].cert = cert;
        L->pairs[L->npairs++].key = file;
        cert = NULL;
      }
    } else if (!strcmp(a, "--admin") && i + 1 < argc) admin = argv[++i];
    else if (!strcmp(a, "--access-log") && i + 1 < argc) access_log = argv[++i];
    else if (!strcmp(a, "--log-level") && i + 1 < argc) {
      if (gwr_log_set_level(argv[++i]) != 0) { fprintf(stderr, "gwd: --log-level takes debug, info, warn or error\n"); return 2; }
    }
    else if (!strcmp(a, "--workers") && i + 1 < argc) {
      char *end;
      workers = (int)strtol(argv[++i], &end, 10);
      if (*end || workers < 1 || workers > 64) { fprintf(stderr, "gwd: --workers takes 1 to 64\n"); return 2; }
    } else if (!strcmp(a, "--drain-timeout") && i + 1 < argc) {
      if (parse_drain(argv[++i], &drain) != 0) {
        fprintf(stderr, "gwd: --drain-timeout takes milliseconds or a duration (500, 250ms, 30s, 2m), not '%s'\n", argv[i]);
        return 2;
      }
      has_drain = 1;
    }
    else if (!strcmp(a, "--check")) check = 1;
    else if (!strcmp(a, "--version")) { printf("gwd %s (bytecode format %u)\n", GWD_VERSION, GW_FORMAT_VERSION); return 0; }
    else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    else if (a[0] == '-' && a[1]) { fprintf(stderr, "gwd: unknown option '%s'\n", a); usage(stderr); return 2; }
    else if (!program) program = a;
    else { fprintf(stderr, "gwd: more than one PROGRAM\n"); return 2; }
  }
  if (nlisten && tls_complete(&ltls[nlisten - 1], listen[nlisten - 1], cert)) return 2;
  if (!program) { usage(stderr); return 2; }
  /* descriptors 0-2 open (on /dev/null if they were closed): the access log
  ** writes to 1 by default, which must not be a socket opened later */
  for (int fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
      int n = open("/dev/null", O_RDWR);
      if (n > 2) close(n);
    }

  /* Every thread — the workers, and the JWKS refresh threads a program load
  ** starts — inherits a mask that blocks SIGTERM/SIGINT/SIGHUP: main waits for
  ** them with sigwait. So they are blocked before anything is loaded. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  checking = check;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) { fatal("cannot initialize libcurl"); return 1; }
  char err[512];
  /* the compiler's diagnostics: as gwc prints them for --check, else as
  ** JSON log lines */
  char *diag = NULL;
  size_t dlen = 0;
  FILE *df = check ? NULL : open_memstream(&diag, &dlen);
  GwrProg *g = gwr_prog_load(program, df ? df : stderr, err, sizeof err);
  if (df) fclose(df);
  log_diagnostics(diag, g ? "warn" : "error");
  free(diag);
  if (!g) {
    fatal("%s", err);
    curl_global_cleanup();
    return 1;
  }
  GwrServer srv;
  memset(&srv, 0, sizeof srv);
  gwr_settings_defaults(&srv.set);
  gwr_settings_from_program(&srv.set, g->p);
  if (nlisten) {                                  /* they replace the program's, TLS or not */
    srv.set.nlisten = nlisten;
    for (int i = 0; i < nlisten; i++) { srv.set.listen[i] = listen[i]; srv.set.tls[i] = ltls[i]; }
  }
  /* the TLS contexts of the listeners served (a reload builds them again);
  ** --check checks those of --listen-tls too: a start would fail on them */
  if (gwr_prog_listen_tls(g, &srv.set, err, sizeof err) != 0) {
    fatal("%s", err);
    gwr_prog_release(g);
    curl_global_cleanup();
    return 1;
  }
  if (check) {
    const GwProgram *p = g->p;
    printf("gwd: %s: ok: %u endpoints, %u backends, %u calls, %u auth policies, %u limits, %u blocks\n",
           program, p->n_endpoints, p->n_backends, p->n_calls, p->n_auths, p->n_limits, p->n_blocks);
    gwr_prog_release(g);
    curl_global_cleanup();
    return 0;
  }
  if (admin) srv.set.admin = admin;
  /* The admin API has no authentication: a bare port ("9901", ":9901"),
  ** from the command line or server { admin }, is on loopback. Any other
  ** interface must be named (0.0.0.0:9901, [::]:9901). */
  static char admin_lo[32];
  const char *ap = srv.set.admin && srv.set.admin[0] == ':' ? srv.set.admin + 1 : srv.set.admin;
  if (ap && ap[0] && strlen(ap) <= 5 && strspn(ap, "0123456789") == strlen(ap)) {
    snprintf(admin_lo, sizeof admin_lo, "127.0.0.1:%s", ap);
    srv.set.admin = admin_lo;
  }
  if (has_drain) srv.set.drain_ms = drain;
  int alog_fd = -1;                               /* the file --access-log opened */
  if (access_log && !strcmp(access_log, "off")) srv.set.access_log_fd = -1;
  else if (access_log) {
    alog_fd = open(access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (alog_fd < 0) {
      fatal("cannot open access log '%s': %s", access_log, strerror(errno));
      gwr_prog_release(g);
      curl_global_cleanup();
      return 1;
    }
    srv.set.access_log_fd = alog_fd;
  }
  gwr_metrics_set_version(GWD_VERSION);
  srv.nworkers = workers > 0 ? workers : srv.set.workers > 0 ? srv.set.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
  srv.prog = g;
  srv.program_path = program;
  if (gwr_prog_redis(g)) srv.set.redis = gwr_prog_redis(g);
  srv.limiter = gwr_limiter_new(srv.set.limit_keys);
  if (g->uses_redis && !srv.set.redis) gwr_log("warn", "limits with store redis but no server { redis }: they apply on_error");
  srv.cache = gwr_cache_new(srv.set.cache_size);   /* one per process: it outlives reloads */

  if (gwr_server_start(&srv, err, sizeof err) != 0) {
    fatal("%s", err);
    if (alog_fd >= 0) close(alog_fd);
    if (srv.boot) gwr_prog_release(srv.boot);     /* gwr_server_start took a reference */
    gwr_prog_release(g);
    gwr_limiter_free(srv.limiter);
    gwr_cache_free(srv.cache);
    curl_global_cleanup();
    return 1;
  }
  for (int i = 0; i < srv.set.nlisten; i++) gwr_log("info", "listening on %s", srv.set.listen[i]);
  if (srv.set.admin && srv.set.admin[0]) gwr_log("info", "admin on %s", srv.set.admin);
  gwr_log("info", "serving %s: %u endpoints, %d workers", program, g->p->n_endpoints, srv.nworkers);
  int sig = 0;
  for (;;) {
    sigwait(&set, &sig);
    if (sig != SIGHUP) break;
    char msg[600];
    gwr_server_reload(&srv, msg, sizeof msg);     /* logs its result */
  }
  gwr_log("info", "signal %d: draining (up to %u ms)", sig, srv.set.drain_ms);
  sigdelset(&set, SIGHUP);                        /* a SIGHUP while draining is ignored */
  signal(SIGHUP, SIG_IGN);
  /* a second signal during the drain exits at once */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  got_signal = sig;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  gwr_server_stop(&srv);                          /* writes what the access log buffered */
  if (alog_fd >= 0) close(alog_fd);
  gwr_prog_release(srv.prog);
  gwr_prog_release(srv.boot);
  gwr_limiter_free(srv.limiter);
  gwr_cache_free(srv.cache);
  curl_global_cleanup();
  gwr_log("info", "stopped");
  return 0;
}
