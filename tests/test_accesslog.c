/*
** test_accesslog.c — unit tests of the access log's pieces (gwr_accesslog.c)
** and the metrics' label registry and exposition (gwr_metrics.c).
**
**   build/test_accesslog
**
** Numbers and milliseconds; JSON strings (escapes, UTF-8 kept or escaped);
** request targets with their secret query values masked, the masking rule
** case by case; the worst-case sizes the callers reserve; a buffer written
** through a pipe in whole lines; the registry (a name keeps its slot, past
** the capacity everything is "other"); an exposition of one worker's
** counters (escaped labels, cumulative buckets). Ends with "N passed, N
** failed".
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/event.h>
#include "gwr.h"
#include "gwr_accesslog.h"
#include "gwr_metrics.h"

static int passed, failed;

static void ok(const char *name) { passed++; printf("ok   %s\n", name); }
static void bad(const char *name, const char *why) { failed++; printf("FAIL %s: %s\n", name, why); }

static void same(const char *name, const char *got, size_t n, const char *want) {
  if (n == strlen(want) && !memcmp(got, want, n)) { ok(name); return; }
  char why[2048];
  snprintf(why, sizeof why, "got [%.*s], want [%s]", (int)n, got, want);
  bad(name, why);
}

static void numbers(void) {
  static const struct { uint64_t v; const char *s; } u[] = {
    { 0, "0" }, { 9, "9" }, { 10, "10" }, { 99, "99" }, { 100, "100" }, { 101, "101" }, { 12345, "12345" },
    { 1000000, "1000000" }, { UINT64_MAX, "18446744073709551615" },
  };
  char b[64];
  for (size_t i = 0; i < sizeof u / sizeof *u; i++) {
    char name[64];
    snprintf(name, sizeof name, "u64 %s", u[i].s);
    same(name, b, (size_t)(gwr_alog_u64(b, u[i].v) - b), u[i].s);
  }
  static const struct { uint64_t us; const char *s; } m[] = {
    { 0, "0.000" }, { 1, "0.001" }, { 12, "0.012" }, { 999, "0.999" }, { 1000, "1.000" }, { 1234, "1.234" },
    { 1000999, "1000.999" }, { 60000000, "60000.000" },
  };
  for (size_t i = 0; i < sizeof m / sizeof *m; i++) {
    char name[64];
    snprintf(name, sizeof name, "ms %s", m[i].s);
    same(name, b, (size_t)(gwr_alog_ms(b, m[i].us) - b), m[i].s);
  }
}

static void strings(void) {
  static const struct { const char *in; size_t n; const char *out; } t[] = {
    { "plain", 5, "\"plain\"" },
    { "a\"b\\c", 5, "\"a\\\"b\\\\c\"" },
    { "tab\there\nnl\x01\x7f", 13, "\"tab\\u0009here\\u000anl\\u0001\\u007f\"" },
    { "caf\xc3\xa9", 5, "\"caf\xc3\xa9\"" },                       /* valid UTF-8: kept */
    { "bad\xff\xc3", 5, "\"bad\\u00ff\\u00c3\"" },                   /* invalid: escaped */
    { "nul\0x", 5, "\"nul\\u0000x\"" },
    { "", 0, "\"\"" },
  };
  char b[256];
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    char name[64];
    snprintf(name, sizeof name, "str %zu", i);
    size_t n = (size_t)(gwr_alog_str(b, t[i].in, t[i].n) - b);
    same(name, b, n, t[i].out);
    if (n > GWR_ALOG_STR_MAX(t[i].n)) bad(name, "longer than GWR_ALOG_STR_MAX");
  }
}

static void targets(void) {
  const char *names[] = { "k", "X-Partner" };
  static const struct { const char *in, *out; } t[] = {
    { "/a/b", "\"/a/b\"" },
    { "/a?x=1&y=2", "\"/a?x=1&y=2\"" },
    { "/a?k=s3cr3t&x=1", "\"/a?k=***&x=1\"" },                      /* a `from query` name */
    { "/a?K=s3cr3t", "\"/a?K=***\"" },                               /* any case */
    { "/a?x-partner=v", "\"/a?x-partner=***\"" },
    { "/a?api_key=v&apikey=v&key=v&monkey=v", "\"/a?api_key=***&apikey=***&key=***&monkey=***\"" },
    { "/a?access_token=v&id_token=v&token=v&tokens=v", "\"/a?access_token=***&id_token=***&token=***&tokens=v\"" },
    { "/a?password=v&passwd=v&client_secret=v&X-Amz-Signature=v&sig=v&code=v&jwt=v&session=v&auth=v",
      "\"/a?password=***&passwd=***&client_secret=***&X-Amz-Signature=***&sig=***&code=***&jwt=***&session=***&auth=***\"" },
    { "/a?credential=v&author=v&codes=v", "\"/a?credential=***&author=v&codes=v\"" },
    { "/a?api%5Fkey=v&api+key=v&%6B=v", "\"/a?api%5Fkey=***&api+key=***&%6B=***\"" },  /* decoded names */
    { "/a?token", "\"/a?token\"" },                                  /* no value: nothing to mask */
    { "/a?token=", "\"/a?token=***\"" },
    { "/a?token=a=b&x", "\"/a?token=***&x\"" },
    { "/a?&&token=v&", "\"/a?&&token=***&\"" },
    { "/a?x=%22q%22&y=\"", "\"/a?x=%22q%22&y=\\\"\"" },
    { "http://user:pw@host/p?token=v", "\"/p?token=***\"" },         /* absolute-form: from the path on */
    { "http://user:pw@host", "\"/\"" },
    { "*", "\"*\"" },
    { "/caf\xc3\xa9?k=\xc3\xa9", "\"/caf\xc3\xa9?k=***\"" },
    { "/bad\xff?x=\x01", "\"/bad\\u00ff?x=\\u0001\"" },
    /* a JWT under any name, or alone; not what merely starts like one */
    { "/a?t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln&x=1", "\"/a?t=***&x=1\"" },
    { "/a?eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "\"/a?***\"" },
    { "/a?x=eyJ&y=eyJabc&z=eyJa.", "\"/a?x=eyJ&y=eyJabc&z=***\"" },
  };
  char b[1024];
  for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
    char name[64];
    snprintf(name, sizeof name, "target %zu", i);
    size_t in = strlen(t[i].in), n = (size_t)(gwr_alog_target(b, t[i].in, in, names, 2) - b);
    same(name, b, n, t[i].out);
  }
  /* a name longer than the decoder keeps is masked */
  char longname[400];
  memset(longname, 0, sizeof longname);
  strcpy(longname, "/a?");
  memset(longname + 3, 'n', 200);
  strcat(longname, "=v");
  size_t n = (size_t)(gwr_alog_target(b, longname, strlen(longname), NULL, 0) - b);
  if (n > 5 && !memcmp(b + n - 5, "=***\"", 5)) ok("target long name masked");
  else bad("target long name masked", "not masked");
  /* worst cases stay within the bounds the callers reserve */
  const char *worst[] = { "/\x01\x01\x01?\x01=\x01", "/?a=&a=&a=&a=&a=&a=", "/?t=&t=&t=", "\x01" };
  int within = 1;
  for (size_t i = 0; i < sizeof worst / sizeof *worst; i++) {
    size_t wn = strlen(worst[i]);
    if ((size_t)(gwr_alog_target(b, worst[i], wn, NULL, 0) - b) > GWR_ALOG_TARGET_MAX(wn)) within = 0;
  }
  if (within) ok("target within GWR_ALOG_TARGET_MAX"); else bad("target within GWR_ALOG_TARGET_MAX", "longer");
}

/* Lines buffered, then written through a pipe when the buffer is freed. */
static void writer(void) {
  int fds[2];
  if (pipe(fds)) { bad("writer", "pipe"); return; }
  struct event_base *base = event_base_new();
  GwrAlog *a = gwr_alog_new(base, fds[1]);
  if (!a) { bad("writer", "gwr_alog_new"); return; }
  if (gwr_alog_new(base, -1) == NULL) ok("writer off: NULL"); else bad("writer off: NULL", "not NULL");
  for (int i = 0; i < 3; i++) {
    char *o = gwr_alog_begin(a, 64);
    o += sprintf(o, "{\"n\":%d}\n", i);
    gwr_alog_end(a, o);
  }
  char got[256];
  if (a->lines == 3 && a->buf.n == 24) ok("writer buffers"); else bad("writer buffers", "lines or bytes");
  gwr_alog_free(a);
  ssize_t n = read(fds[0], got, sizeof got);
  same("writer writes at free", got, n > 0 ? (size_t)n : 0, "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
  /* past 16 KB the buffer is written at once */
  a = gwr_alog_new(base, fds[1]);
  size_t total = 0;
  for (int i = 0; i < 200; i++) {
    char *o = gwr_alog_begin(a, 128);
    memset(o, 'x', 99);
    o[99] = '\n';
    gwr_alog_end(a, o + 100);
    total += 100;
  }
  size_t left = a->buf.n, drained = 0;
  while (drained < total - left) {
    char tmp[4096];
    n = read(fds[0], tmp, sizeof tmp);
    if (n <= 0) break;
    drained += (size_t)n;
  }
  if (left < 16384 && drained == total - left && drained >= 16384) ok("writer writes past 16 KB");
  else bad("writer writes past 16 KB", "sizes");
  gwr_alog_free(a);
  close(fds[0]);
  /* a failed write: counted, dropped, the buffer emptied */
  a = gwr_alog_new(base, fds[1]);
  char *o = gwr_alog_begin(a, 16);
  memcpy(o, "{}\n", 3);
  gwr_alog_end(a, o + 3);
  uint64_t e0 = gwr_alog_errors(), d0 = gwr_alog_dropped();
  gwr_alog_free(a);                     /* the reading end is closed: EPIPE */
  if (gwr_alog_errors() == e0 + 1 && gwr_alog_dropped() == d0 + 1) ok("writer counts a failed write");
  else bad("writer counts a failed write", "counters");
  close(fds[1]);
  event_base_free(base);
}

static void registry(void) {
  uint16_t a = gwr_metrics_slot(GWR_MK_BACKEND, "users");
  uint16_t b = gwr_metrics_slot(GWR_MK_BACKEND, "orders");
  uint16_t a2 = gwr_metrics_slot(GWR_MK_BACKEND, "users");
  if (a == a2 && a != b) ok("registry: a name keeps its slot"); else bad("registry: a name keeps its slot", "slots");
  if (gwr_metrics_slot(GWR_MK_ROUTE, "GET /x") != GWR_SLOT_UNMATCHED) ok("registry: route slot 0 is unmatched");
  else bad("registry: route slot 0 is unmatched", "slot 0 handed out");
  uint16_t last = 0;
  for (int i = 0; i < GWR_M_LIMITS + 10; i++) {
    char name[32];
    snprintf(name, sizeof name, "limit%d", i);
    last = gwr_metrics_slot(GWR_MK_LIMIT, name);
  }
  if (last == GWR_M_LIMITS - 1) ok("registry: past the capacity, other"); else bad("registry: past the capacity, other", "slot");
  if (gwr_metrics_slot(GWR_MK_LIMIT, "limit3") == 3) ok("registry: earlier names keep theirs");
  else bad("registry: earlier names keep theirs", "slot");
}

static void exposition(void) {
  GwrServer s;
  memset(&s, 0, sizeof s);
  pthread_mutex_init(&s.prog_mu, NULL);
  s.generation = 3;
  GwrWorker w[2];
  memset(w, 0, sizeof w);
  s.workers = w;
  s.nworkers = 2;
  w[0].metrics = gwr_metrics_new();
  w[1].metrics = gwr_metrics_new();
  uint16_t r = gwr_metrics_slot(GWR_MK_ROUTE, "GET /q/\"x\"\\y");
  GWR_M_ADD(w[0].metrics->route[r].status[1], 2);
  GWR_M_ADD(w[1].metrics->route[r].status[1], 1);
  gwr_hist_add(&w[0].metrics->route[r].dur, 3000);          /* 0.003 */
  gwr_hist_add(&w[0].metrics->route[r].dur, 700000);        /* 0.7 */
  gwr_hist_add(&w[1].metrics->route[r].dur, 20000000);      /* 20: +Inf */
  GwBuf b = {0};
  gwr_metrics_render(&s, &b);
  const char *t = gw_buf_cstr(&b);
  struct { const char *name, *line; } want[] = {
    { "expo requests summed over workers", "gw_requests_total{route=\"GET /q/\\\"x\\\"\\\\y\",status=\"2xx\"} 3\n" },
    { "expo bucket 0.005", "gw_request_duration_seconds_bucket{route=\"GET /q/\\\"x\\\"\\\\y\",le=\"0.005\"} 1\n" },
    { "expo bucket 0.5", "gw_request_duration_seconds_bucket{route=\"GET /q/\\\"x\\\"\\\\y\",le=\"0.5\"} 1\n" },
    { "expo bucket 1", "gw_request_duration_seconds_bucket{route=\"GET /q/\\\"x\\\"\\\\y\",le=\"1\"} 2\n" },
    { "expo bucket +Inf", "gw_request_duration_seconds_bucket{route=\"GET /q/\\\"x\\\"\\\\y\",le=\"+Inf\"} 3\n" },
    { "expo sum", "gw_request_duration_seconds_sum{route=\"GET /q/\\\"x\\\"\\\\y\"} 20.703000\n" },
    { "expo count", "gw_request_duration_seconds_count{route=\"GET /q/\\\"x\\\"\\\\y\"} 3\n" },
    { "expo generation", "gw_program_generation 3\n" },
    { "expo type before samples", "# TYPE gw_requests_total counter\n" },
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    if (strstr(t, want[i].line)) ok(want[i].name);
    else bad(want[i].name, want[i].line);
  }
  if (!strstr(t, "route=\"other\"") && !strstr(t, "status=\"5xx\"")) ok("expo: no series that counted nothing");
  else bad("expo: no series that counted nothing", "found one");
  gw_buf_free(&b);
  free(w[0].metrics);
  free(w[1].metrics);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  numbers();
  strings();
  targets();
  writer();
  registry();
  exposition();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
