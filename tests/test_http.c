/*
** test_http.c — unit tests of the HTTP/1.1 request parser and the path
** normalizer (gwr_http.c).
**
**   build/test_http          (from the repository root, no arguments)
**
** Every input is fed whole, in every chunk size from 1 to 31 bytes, and split
** at every byte position into two feeds; each piece is copied into a buffer of
** exactly its size, so a read past len is caught under ASan. Each way of
** feeding must give the same transcript (method, target, headers, body bytes,
** keep-alive, and the stream offset where each request ends), and the
** transcript of valid requests must match the expected one. Malformed
** requests must end in ERROR with the expected status whichever way they are
** fed. Then the path normalization table, and a deterministic random
** mutation run checking the same equivalence and the feed() invariants.
** Ends with "N passed, N failed".
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gwr_http.h"
#include "gw_bytecode.h"
#include "gw_util.h"

static int passed, failed;

static void ok(const char *name) { passed++; (void)name; }
static void bad(const char *name, const char *why) { failed++; printf("FAIL %s: %s\n", name, why); }

/* ---- the driver -------------------------------------------------------- */

static const GwrHttpLimits *cur_lim;
static GwrHttpLimits small_lim = { 64, 128, 4, 16 };

static void esc(GwBuf *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\\') gw_buf_adds(b, "\\\\");
    else if (c >= 0x20 && c < 0x7f) gw_buf_addc(b, (char)c);
    else gw_buf_printf(b, "\\x%02x", c);
  }
}

typedef struct Run {
  GwrHttpParser p;
  GwBuf out;        /* the transcript */
  GwBuf body;       /* the current request's body */
  size_t off;       /* stream offset of the next piece */
  int stopped;      /* ERROR seen */
  int in_req;       /* bytes of a request have been consumed since the last DONE */
  int status;       /* the last error status */
  char why[200];    /* invariant violations */
} Run;

static void run_begin(Run *r, const GwrHttpLimits *lim) {
  memset(r, 0, sizeof *r);
  gwr_http_init(&r->p, lim);
}

static void on_head(Run *r) {
  const GwrHttpReq *q = &r->p.req;
  GwBuf *o = &r->out;
  gw_buf_printf(o, "HEAD %s ", q->method > 0 && q->method < GW_METHOD_MAX ? gw_method_names[q->method] : "?");
  esc(o, q->target, q->target_len);
  if (strlen(q->target) != q->target_len) gw_buf_adds(o, " (target not NUL-terminated)");
  gw_buf_printf(o, " 1.%d ka=%d ec=%d ch=%d cl=%lld host=", q->minor, q->keep_alive,
                q->expect_continue, q->chunked, (long long)q->content_length);
  if (q->host) {
    esc(o, q->host, q->host_len);
    if (strlen(q->host) != q->host_len) gw_buf_adds(o, " (host not NUL-terminated)");
  } else {
    gw_buf_adds(o, "-");
  }
  gw_buf_adds(o, "\n");
  for (uint32_t i = 0; i < q->nheaders; i++) {
    const GwrHeader *h = &q->headers[i];
    gw_buf_adds(o, "  ");
    esc(o, h->name, h->name_len);
    gw_buf_adds(o, ": ");
    esc(o, h->value, h->value_len);
    if (strlen(h->name) != h->name_len || strlen(h->value) != h->value_len)
      gw_buf_adds(o, " (not NUL-terminated)");
    gw_buf_adds(o, "\n");
  }
}

/* Feed one piece; the piece is copied into an exact-size buffer. */
static void run_piece(Run *r, const char *s, size_t n) {
  if (r->stopped) return;
  char *d = malloc(n ? n : 1);
  if (!d) abort();
  memcpy(d, s, n);
  size_t at = 0;
  int guard = 0;
  for (;;) {
    if (++guard > 100000) { snprintf(r->why, sizeof r->why, "feed loops"); break; }
    size_t used = 99999999;
    const char *body = NULL;
    size_t blen = 0;
    int res = gwr_http_feed(&r->p, d + at, n - at, &used, &body, &blen);
    if (used > n - at) { snprintf(r->why, sizeof r->why, "used %zu > len %zu", used, n - at); break; }
    if (used) r->in_req = 1;
    at += used;
    if (res == GWR_HTTP_MORE) {
      if (at != n) snprintf(r->why, sizeof r->why, "MORE with unconsumed input");
      break;
    } else if (res == GWR_HTTP_HEAD) {
      on_head(r);
    } else if (res == GWR_HTTP_BODY) {
      if (!blen || body < d || body + blen > d + n) {
        snprintf(r->why, sizeof r->why, "bad body piece");
        break;
      }
      gw_buf_add(&r->body, body, blen);
    } else if (res == GWR_HTTP_DONE) {
      gw_buf_printf(&r->out, "BODY %zu ", r->body.n);
      esc(&r->out, r->body.p, r->body.n);
      gw_buf_printf(&r->out, "\nDONE @%zu\n", r->off + at);
      r->body.n = 0;
      r->in_req = 0;
      gwr_http_reset(&r->p);
    } else if (res == GWR_HTTP_ERROR) {
      gw_buf_printf(&r->out, "ERROR %d %s\n", r->p.status, r->p.error ? r->p.error : "(null)");
      r->status = r->p.status;
      r->stopped = 1;
      const char *e = r->p.error;
      for (; e && *e; e++)
        if (*e >= 'A' && *e <= 'Z') snprintf(r->why, sizeof r->why, "error reason not lower-case");
      if (!r->p.error) snprintf(r->why, sizeof r->why, "no error reason");
      break;
    } else {
      snprintf(r->why, sizeof r->why, "bad result %d", res);
      break;
    }
  }
  r->off += n;
  free(d);
}

/* The transcript; frees r. */
static char *run_end(Run *r) {
  if (!r->stopped && r->in_req) gw_buf_adds(&r->out, "INCOMPLETE\n");
  if (r->why[0]) gw_buf_printf(&r->out, "INVARIANT %s\n", r->why);
  char *s = strdup(gw_buf_cstr(&r->out));
  gw_buf_free(&r->out);
  gw_buf_free(&r->body);
  gwr_http_free(&r->p);
  return s;
}

static char *feed_chunks(const char *s, size_t n, size_t k, int *status) {
  Run r;
  run_begin(&r, cur_lim);
  if (k == 0) k = n ? n : 1;
  for (size_t i = 0; i < n; i += k) run_piece(&r, s + i, n - i < k ? n - i : k);
  if (n == 0) run_piece(&r, s, 0);
  if (status) *status = r.status;
  return run_end(&r);
}

static char *feed_split(const char *s, size_t n, size_t at) {
  Run r;
  run_begin(&r, cur_lim);
  run_piece(&r, s, at);
  run_piece(&r, s + at, n - at);
  return run_end(&r);
}

/* Whole, 1..31 byte chunks and every split give the same transcript: 0 and
** the whole transcript in *whole, or -1 (reported as name). */
static int same_every_way(const char *name, const char *s, size_t n, char **whole, int splits) {
  *whole = feed_chunks(s, n, 0, NULL);
  char why[600];
  for (size_t k = 1; k <= 31; k++) {
    char *t = feed_chunks(s, n, k, NULL);
    int same = !strcmp(t, *whole);
    if (!same) {
      snprintf(why, sizeof why, "chunk size %zu differs:\n--- whole\n%.250s--- chunked\n%.250s", k, *whole, t);
      free(t);
      bad(name, why);
      return -1;
    }
    free(t);
  }
  if (splits) {
    for (size_t at = 0; at <= n; at++) {
      char *t = feed_split(s, n, at);
      int same = !strcmp(t, *whole);
      if (!same) {
        snprintf(why, sizeof why, "split at %zu differs:\n--- whole\n%.250s--- split\n%.250s", at, *whole, t);
        free(t);
        bad(name, why);
        return -1;
      }
      free(t);
    }
  }
  return 0;
}

/* ---- valid requests ---------------------------------------------------- */

typedef struct Valid { const char *name; const char *in; const char *want; int small; } Valid;

static const Valid valid[] = {
  { "get with headers",
    "GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1.0\r\nX-Mixed-Case:   spaced value \t\r\nAccept:\r\n\r\n",
    "HEAD GET /a/b?x=1 1.1 ka=1 ec=0 ch=0 cl=-1 host=example.com\n"
    "  host: example.com\n  user-agent: t/1.0\n  x-mixed-case: spaced value\n  accept: \n"
    "BODY 0 \nDONE @104\n", 0 },
  { "post with content-length",
    "POST /orders HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":[1,2,3]}",
    "HEAD POST /orders 1.1 ka=1 ec=0 ch=0 cl=13 host=h\n"
    "  host: h\n  content-type: application/json\n  content-length: 13\n"
    "BODY 13 {\"a\":[1,2,3]}\nDONE @99\n", 0 },
  { "chunked with extensions and trailers",
    "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;name=val\r\nhello\r\n1 ; a ; b=\"q\\\"x\"\r\n,\r\n6\r\n world\r\n0;last\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n",
    "HEAD POST /up 1.1 ka=1 ec=0 ch=1 cl=-1 host=h\n  host: h\n  transfer-encoding: chunked\n"
    "BODY 12 hello, world\nDONE @141\n", 0 },
  { "chunked upper-case hex, leading zeros, no trailers",
    "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n00A\r\n0123456789\r\n000\r\n\r\n",
    "HEAD PUT /x 1.1 ka=1 ec=0 ch=1 cl=-1 host=h\n  host: h\n  transfer-encoding: Chunked\n"
    "BODY 10 0123456789\nDONE @80\n", 0 },
  { "pipelined",
    "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
    "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    "\r\nDELETE /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "HEAD GET /1 1.1 ka=1 ec=0 ch=0 cl=-1 host=h\n  host: h\nBODY 0 \nDONE @28\n"
    "HEAD POST /2 1.1 ka=1 ec=0 ch=0 cl=3 host=h\n  host: h\n  content-length: 3\nBODY 3 abc\nDONE @79\n"
    "HEAD DELETE /3 1.1 ka=0 ec=0 ch=0 cl=-1 host=h\n  host: h\n  connection: close\nBODY 0 \nDONE @131\n", 0 },
  { "pipelined chunked then get",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /n HTTP/1.1\r\nHost: h\r\n\r\n",
    "HEAD POST / 1.1 ka=1 ec=0 ch=1 cl=-1 host=h\n  host: h\n  transfer-encoding: chunked\nBODY 3 abc\nDONE @69\n"
    "HEAD GET /n 1.1 ka=1 ec=0 ch=0 cl=-1 host=h\n  host: h\nBODY 0 \nDONE @97\n", 0 },
  { "http/1.0 without keep-alive",
    "GET / HTTP/1.0\r\n\r\n",
    "HEAD GET / 1.0 ka=0 ec=0 ch=0 cl=-1 host=-\nBODY 0 \nDONE @18\n", 0 },
  { "http/1.0 with keep-alive",
    "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\nHEAD /b HTTP/1.0\r\n\r\n",
    "HEAD GET / 1.0 ka=1 ec=0 ch=0 cl=-1 host=h\n  connection: Keep-Alive\n  host: h\nBODY 0 \nDONE @51\n"
    "HEAD HEAD /b 1.0 ka=0 ec=0 ch=0 cl=-1 host=-\nBODY 0 \nDONE @71\n", 0 },
  { "http/1.0 keep-alive and close",
    "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
    "HEAD GET / 1.0 ka=0 ec=0 ch=0 cl=-1 host=-\n  connection: keep-alive, close\nBODY 0 \nDONE @49\n", 0 },
  { "http/1.1 connection list with close",
    "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, CLOSE\r\n\r\n",
    "HEAD GET / 1.1 ka=0 ec=0 ch=0 cl=-1 host=h\n  host: h\n  connection: upgrade, CLOSE\nBODY 0 \nDONE @55\n", 0 },
  { "expect 100-continue",
    "PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
    "HEAD PUT /f 1.1 ka=1 ec=1 ch=0 cl=2 host=h\n  host: h\n  expect: 100-Continue\n  content-length: 2\n"
    "BODY 2 ok\nDONE @71\n", 0 },
  { "expect 100-continue without a body",
    "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
    "HEAD GET / 1.1 ka=1 ec=0 ch=0 cl=-1 host=h\n  host: h\n  expect: 100-continue\nBODY 0 \nDONE @49\n", 0 },
  { "expect 100-continue ignored on http/1.0",
    "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    "HEAD POST / 1.0 ka=0 ec=0 ch=0 cl=1 host=-\n  expect: 100-continue\n  content-length: 1\nBODY 1 x\nDONE @61\n", 0 },
  { "http/1.2 served as 1.1",
    "OPTIONS /o HTTP/1.2\r\nHost: h\r\n\r\n",
    "HEAD OPTIONS /o 1.1 ka=1 ec=0 ch=0 cl=-1 host=h\n  host: h\nBODY 0 \nDONE @32\n", 0 },
  { "absolute-form target",
    "GET http://api.example.com:8080/v1/x?y HTTP/1.1\r\nHost: other\r\n\r\n",
    "HEAD GET http://api.example.com:8080/v1/x?y 1.1 ka=1 ec=0 ch=0 cl=-1 host=api.example.com:8080\n"
    "  host: other\nBODY 0 \nDONE @64\n", 0 },
  { "options asterisk",
    "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "HEAD OPTIONS * 1.1 ka=1 ec=0 ch=0 cl=-1 host=h\n  host: h\nBODY 0 \nDONE @31\n", 0 },
  { "repeated identical content-length",
    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\ncontent-length: 02\r\n\r\nhi",
    "HEAD POST / 1.1 ka=1 ec=0 ch=0 cl=2 host=h\n  host: h\n  content-length: 2, 2\n  content-length: 02\n"
    "BODY 2 hi\nDONE @72\n", 0 },
  { "content-length zero",
    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    "HEAD POST / 1.1 ka=1 ec=0 ch=0 cl=0 host=h\n  host: h\n  content-length: 0\nBODY 0 \nDONE @47\n", 0 },
  { "leading empty lines",
    "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    "HEAD GET / 1.1 ka=1 ec=0 ch=0 cl=-1 host=h\n  host: h\nBODY 0 \nDONE @31\n", 0 },
  { "empty host, obs-text value, tabs",
    "DELETE /d HTTP/1.1\r\nHost:\r\nX-T:\tcaf\xc3\xa9\t \r\n\r\n",
    "HEAD DELETE /d 1.1 ka=1 ec=0 ch=0 cl=-1 host=\n  host: \n  x-t: caf\\xc3\\xa9\nBODY 0 \nDONE @43\n", 0 },
  { "incomplete head",
    "GET / HTTP/1.1\r\nHost: h\r\n",
    "INCOMPLETE\n", 0 },
  { "incomplete body",
    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
    "HEAD POST / 1.1 ka=1 ec=0 ch=0 cl=5 host=h\n  host: h\n  content-length: 5\nINCOMPLETE\n", 0 },
  { "limits: everything exactly at the limit",
    /* request line 64 bytes; header lines 128 bytes with CRLFs; 4 lines; body 16 bytes */
    "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n"
    "Host: h\r\nA: 1\r\nB: 1\r\nC: 456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345\r\n\r\n",
    "HEAD GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1.1 ka=1 ec=0 ch=0 cl=-1 host=h\n"
    "  host: h\n  a: 1\n  b: 1\n  c: 456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345\n"
    "BODY 0 \nDONE @196\n", 1 },
  { "limits: content-length at max_body",
    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 16\r\n\r\n0123456789abcdef",
    "HEAD POST / 1.1 ka=1 ec=0 ch=0 cl=16 host=h\n  host: h\n  content-length: 16\n"
    "BODY 16 0123456789abcdef\nDONE @64\n", 1 },
  { "limits: trailer at the header limit",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 45678901234567890123456789012345678901234567890123456789012345678901234567890123456789\r\n\r\n",
    "HEAD POST / 1.1 ka=1 ec=0 ch=1 cl=-1 host=h\n  host: h\n  transfer-encoding: chunked\n"
    "BODY 0 \nDONE @152\n", 1 },
  { "limits: chunked total at max_body",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n",
    "HEAD POST / 1.1 ka=1 ec=0 ch=1 cl=-1 host=h\n  host: h\n  transfer-encoding: chunked\n"
    "BODY 16 0123456789abcdef\nDONE @87\n", 1 },
};

static void test_valid(void) {
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
    const Valid *v = &valid[i];
    cur_lim = v->small ? &small_lim : NULL;
    char *whole;
    char name[120];
    snprintf(name, sizeof name, "valid: %s", v->name);
    if (same_every_way(name, v->in, strlen(v->in), &whole, 1) == 0) {
      const char *want = v->want;
      if (strcmp(whole, want)) {
        char why[1200];
        snprintf(why, sizeof why, "transcript\n--- want\n%s--- got\n%s", want, whole);
        bad(name, why);
      } else {
        ok(name);
      }
    }
    free(whole);
  }
  cur_lim = NULL;
}

/* Pointers of p->req stay valid while the rest of the body is fed, and
** gwr_http_header() finds the first value. */
static void test_header_lookup(void) {
  const char *in = "POST /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 3\r\n\r\nabc";
  GwrHttpParser p;
  gwr_http_init(&p, NULL);
  size_t used;
  const char *body; size_t blen;
  int r = gwr_http_feed(&p, in, strlen(in) - 2, &used, &body, &blen);
  const char *a = gwr_http_header(&p.req, "x-a");
  int r2 = gwr_http_feed(&p, in + used, strlen(in) - 2 - used, &used, &body, &blen);
  int good = r == GWR_HTTP_HEAD && a && !strcmp(a, "1") && r2 == GWR_HTTP_BODY && blen == 1 &&
             !strcmp(gwr_http_header(&p.req, "host"), "h") && !gwr_http_header(&p.req, "nope") &&
             !strcmp(p.req.target, "/x") && p.req.method == GW_METHOD_POST;
  if (good) ok("header lookup"); else bad("header lookup", "wrong result");
  /* feeding after DONE without reset, and after ERROR, consumes nothing */
  gwr_http_reset(&p);
  r = gwr_http_feed(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\nX", 28, &used, &body, &blen);
  r2 = gwr_http_feed(&p, "X", 1, &used, &body, &blen);
  int r3 = gwr_http_feed(&p, "X", 1, &used, &body, &blen);
  if (r == GWR_HTTP_HEAD && r2 == GWR_HTTP_DONE && r3 == GWR_HTTP_DONE && used == 0) ok("done is sticky");
  else bad("done is sticky", "wrong result");
  gwr_http_reset(&p);
  r = gwr_http_feed(&p, "GET / HTTP/9.9\r\n", 16, &used, &body, &blen);
  r2 = gwr_http_feed(&p, "GET", 3, &used, &body, &blen);
  if (r == GWR_HTTP_ERROR && r2 == GWR_HTTP_ERROR && used == 0 && p.status == 505) ok("error is sticky");
  else bad("error is sticky", "wrong result");
  gwr_http_free(&p);
}

/* ---- malformed requests ------------------------------------------------ */

typedef struct Bad { const char *name; const char *in; size_t len; int status; int small; } Bad;

#define H "GET / HTTP/1.1\r\nHost: h\r\n"
#define P "POST / HTTP/1.1\r\nHost: h\r\n"
#define TE "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"

static const Bad bads[] = {
  /* framing: Content-Length and Transfer-Encoding */
  { "cl with te", P "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello", 0, 400, 0 },
  { "te with cl", P "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 0, 400, 0 },
  { "cl +5", P "Content-Length: +5\r\n\r\nhello", 0, 400, 0 },
  { "cl -5", P "Content-Length: -5\r\n\r\n", 0, 400, 0 },
  { "cl 0x5", P "Content-Length: 0x5\r\n\r\nhello", 0, 400, 0 },
  { "cl empty", P "Content-Length:\r\n\r\n", 0, 400, 0 },
  { "cl 5 , 6", P "Content-Length: 5 , 6\r\n\r\nhello!", 0, 400, 0 },
  { "cl space inside", P "Content-Length: 1 0\r\n\r\n", 0, 400, 0 },
  { "cl empty list element", P "Content-Length: 5,,5\r\n\r\nhello", 0, 400, 0 },
  { "cl decimal point", P "Content-Length: 5.0\r\n\r\nhello", 0, 400, 0 },
  { "cl duplicate different", P "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 0, 400, 0 },
  { "cl overflow", P "Content-Length: 99999999999999999999\r\n\r\n", 0, 400, 0 },
  { "cl above int64", P "Content-Length: 9223372036854775808\r\n\r\n", 0, 400, 0 },
  { "te chunked, gzip", P "Transfer-Encoding: chunked, gzip\r\n\r\n", 0, 400, 0 },
  { "te gzip, chunked", P "Transfer-Encoding: gzip, chunked\r\n\r\n", 0, 501, 0 },
  { "te gzip alone", P "Transfer-Encoding: gzip\r\n\r\n", 0, 501, 0 },   /* an unknown coding alone: 501 (RFC 9112 6.1) */
  { "te chunked, chunked", P "Transfer-Encoding: chunked, chunked\r\n\r\n", 0, 400, 0 },
  { "te chunked on two lines", P "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 400, 0 },
  { "te chunked then gzip line", P "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 400, 0 },
  { "te empty", P "Transfer-Encoding:\r\n\r\n", 0, 400, 0 },
  { "te chunked with parameter", P "Transfer-Encoding: chunked;q=1\r\n\r\n", 0, 400, 0 },
  { "te on http/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, 400, 0 },
  /* chunks */
  { "chunk size -1", TE "-1\r\n", 0, 400, 0 },
  { "chunk size +1", TE "+1\r\na\r\n0\r\n\r\n", 0, 400, 0 },
  { "chunk size 1 space", TE "1 \r\na\r\n0\r\n\r\n", 0, 400, 0 },
  { "chunk size space 1", TE " 1\r\na\r\n0\r\n\r\n", 0, 400, 0 },
  { "chunk size 0x1", TE "0x1\r\na\r\n0\r\n\r\n", 0, 400, 0 },
  { "chunk size overflow", TE "fffffffffffffffffff\r\n", 0, 400, 0 },
  { "chunk size empty", TE "\r\na\r\n", 0, 400, 0 },
  { "chunk size not hex", TE "g\r\n", 0, 400, 0 },
  { "chunk ext without name", TE "1;\r\na\r\n0\r\n\r\n", 0, 400, 0 },
  { "chunk ext unterminated quote", TE "1;a=\"x\r\na\r\n0\r\n\r\n", 0, 400, 0 },
  { "chunk size bare lf", TE "1\na\r\n0\r\n\r\n", 0, 400, 0 },
  { "chunk data without crlf", TE "1\r\nab\r\n0\r\n\r\n", 0, 400, 0 },
  { "chunk data bare lf", TE "1\r\na\n0\r\n\r\n", 0, 400, 0 },
  { "chunk data bare cr", TE "1\r\na\rX0\r\n\r\n", 0, 400, 0 },
  { "chunk line too long", TE "1;a=\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 0, 0, 0 },   /* built at run time */
  { "trailer obs-fold", TE "0\r\nX: 1\r\n 2\r\n\r\n", 0, 400, 0 },
  { "trailer without colon", TE "0\r\nnocolon\r\n\r\n", 0, 400, 0 },
  { "trailer bare lf", TE "0\r\nX: 1\n\r\n", 0, 400, 0 },
  /* header syntax */
  { "host space colon", "GET / HTTP/1.1\r\nHost :x\r\n\r\n", 0, 400, 0 },
  { "tab before colon", H "X\t: 1\r\n\r\n", 0, 400, 0 },
  { "obs-fold", H "X-A: 1\r\n  continued\r\n\r\n", 0, 400, 0 },
  { "obs-fold tab", H "X-A: 1\r\n\tcontinued\r\n\r\n", 0, 400, 0 },
  { "space before first header", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", 0, 400, 0 },
  { "bare lf ending header", "GET / HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n", 0, 400, 0 },
  { "bare lf ending request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", 0, 400, 0 },
  { "bare lf blank line", H "\n", 0, 400, 0 },
  { "bare cr in value", H "X: a\rb\r\n\r\n", 0, 400, 0 },
  { "bare cr in request line", "GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "nul in value", H "X: a\0b\r\n\r\n", sizeof(H "X: a\0b\r\n\r\n") - 1, 400, 0 },
  { "nul in name", H "X\0: 1\r\n\r\n", sizeof(H "X\0: 1\r\n\r\n") - 1, 400, 0 },
  { "control character in value", H "X: a\001b\r\n\r\n", 0, 400, 0 },
  { "del in value", H "X: a\177b\r\n\r\n", 0, 400, 0 },
  { "invalid name character", H "X@Y: 1\r\n\r\n", 0, 400, 0 },
  { "non-ascii name", H "X\xc3\xa9: 1\r\n\r\n", 0, 400, 0 },
  { "empty header name", H ": x\r\n\r\n", 0, 400, 0 },
  { "header without colon", H "NoColon\r\n\r\n", 0, 400, 0 },
  /* host */
  { "missing host", "GET / HTTP/1.1\r\nX: 1\r\n\r\n", 0, 400, 0 },
  { "missing host with absolute-form", "GET http://h/ HTTP/1.1\r\n\r\n", 0, 400, 0 },
  { "two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 0, 400, 0 },
  { "two hosts on http/1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 0, 400, 0 },
  { "invalid host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, 400, 0 },
  { "host with userinfo", "GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", 0, 400, 0 },
  /* request line */
  { "fragment", "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "unknown method", "BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 501, 0 },
  { "lower-case method", "get / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 501, 0 },
  { "connect", "CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 0, 501, 0 },
  { "malformed method", "GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "empty method", " / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "http/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 0, 505, 0 },
  { "http/0.9 version", "GET / HTTP/0.9\r\n\r\n", 0, 505, 0 },
  { "http/0.9 request line", "GET /\r\n\r\n", 0, 505, 0 },
  { "double space", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "space before version twice", "GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "trailing space", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "tab separator", "GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "lower-case version", "GET / http/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "two-digit minor", "GET / HTTP/1.10\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "no version digits", "GET / HTTP/\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "single token", "GET\r\n\r\n", 0, 400, 0 },
  { "non-ascii target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "relative target", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "asterisk without options", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "absolute-form userinfo", "GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "absolute-form empty authority", "GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "absolute-form other scheme", "GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  { "too many empty lines", "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 400, 0 },
  /* limits (small: request line 64, header bytes 128, 4 headers, body 16) */
  { "request line too long", "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: h\r\n\r\n", 0, 414, 1 },
  { "request line too long without end", "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0, 414, 1 },
  { "too many headers", H "A: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n", 0, 431, 1 },
  { "header bytes", H "A: 4567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678\r\n\r\n", 0, 431, 1 },
  { "header bytes without end", H "A: 456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890", 0, 431, 1 },
  { "content-length above max_body", P "Content-Length: 17\r\n\r\n", 0, 413, 1 },
  { "chunked total above max_body", TE "8\r\n01234567\r\n9\r\n", 0, 413, 1 },
  { "chunked size above max_body", TE "ffffffffffffffff\r\n", 0, 413, 1 },
  { "too many trailers", TE "0\r\nA: 1\r\nB: 1\r\nC: 1\r\n\r\n", 0, 431, 1 },
  { "trailer bytes", TE "0\r\nA: 456789012345678901234567890123456789012345678901234567890123456789012345678901234567890\r\n\r\n", 0, 431, 1 },
};

/* Big inputs for the default limits. */
static void test_default_limits(void) {
  GwBuf b = {0};
  struct { const char *name; int status; } big[6] = {
    { "default: request line of 8193 bytes", 414 }, { "default: 101 headers", 431 },
    { "default: header section above 16 KB", 431 }, { "default: content-length above 1 MB", 413 },
    { "default: chunked above 1 MB", 413 }, { "default: limits are exact", 0 },
  };
  for (int t = 0; t < 6; t++) {
    b.n = 0;
    switch (t) {
    case 0:
      gw_buf_adds(&b, "GET /");
      for (int i = 0; i < 8193 - 14; i++) gw_buf_addc(&b, 'a');
      gw_buf_adds(&b, " HTTP/1.1\r\nHost: h\r\n\r\n");
      break;
    case 1:
      gw_buf_adds(&b, H);
      for (int i = 0; i < 100; i++) gw_buf_printf(&b, "X-%d: %d\r\n", i, i);
      gw_buf_adds(&b, "\r\n");
      break;
    case 2:
      gw_buf_adds(&b, H "X: ");
      for (int i = 0; i < 16 * 1024; i++) gw_buf_addc(&b, 'v');
      gw_buf_adds(&b, "\r\n\r\n");
      break;
    case 3:
      gw_buf_adds(&b, P "Content-Length: 1048577\r\n\r\n");
      break;
    case 4:
      gw_buf_adds(&b, TE "80000\r\n");
      for (int i = 0; i < 0x80000; i++) gw_buf_addc(&b, 'x');
      gw_buf_adds(&b, "\r\n80001\r\n");
      break;
    case 5: /* 8192-byte request line, 100 headers, 16 KB of header lines, 1 MB body */
      gw_buf_adds(&b, "PUT /");
      for (int i = 0; i < 8192 - 14; i++) gw_buf_addc(&b, 'a');
      gw_buf_adds(&b, " HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n");
      for (int i = 0; i < 97; i++) gw_buf_printf(&b, "X-%02d: 1\r\n", i);
      {
        size_t hb = 9 + 25 + 97 * 9;     /* header bytes so far */
        gw_buf_adds(&b, "Z: ");
        for (size_t i = 0; i < 16 * 1024 - hb - 5; i++) gw_buf_addc(&b, 'z');
        gw_buf_adds(&b, "\r\n\r\n");
      }
      for (int i = 0; i < 1048576; i++) gw_buf_addc(&b, 'b');
      break;
    }
    cur_lim = NULL;
    int st = -1;
    int bad_chunk = 0;
    char *whole = feed_chunks(b.p, b.n, 0, &st);
    int st_whole = st;
    /* the whole thing in 1..31 byte chunks is slow only for the 1 MB bodies: sample */
    for (size_t k = 1; k <= 31; k += (t >= 4 ? 10 : 1)) {
      char *c = feed_chunks(b.p, b.n, k, &st);
      if (strcmp(c, whole)) bad_chunk = 1;
      free(c);
    }
    char why[300];
    if (bad_chunk) {
      bad(big[t].name, "chunked feeding differs");
    } else if (t == 5) {
      if (strstr(whole, "DONE @") && !strstr(whole, "ERROR") && strstr(whole, "BODY 1048576 "))
        ok(big[t].name);
      else {
        snprintf(why, sizeof why, "%.200s", whole);
        bad(big[t].name, why);
      }
    } else if (st_whole != big[t].status || !strstr(whole, "ERROR")) {
      snprintf(why, sizeof why, "want %d, got %.200s", big[t].status, whole);
      bad(big[t].name, why);
    } else {
      ok(big[t].name);
    }
    free(whole);
  }
  gw_buf_free(&b);
}

static void test_bad(void) {
  GwBuf longline = {0};
  gw_buf_adds(&longline, TE "1;a=");
  for (int i = 0; i < GWR_HTTP_MAX_CHUNK_LINE; i++) gw_buf_addc(&longline, 'x');
  gw_buf_adds(&longline, "\r\na\r\n0\r\n\r\n");
  for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
    const Bad *t = &bads[i];
    const char *in = t->in;
    size_t len = t->len ? t->len : strlen(in);
    int want = t->status;
    if (!strcmp(t->name, "chunk line too long")) { in = longline.p; len = longline.n; want = 400; }
    cur_lim = t->small ? &small_lim : NULL;
    char name[120];
    snprintf(name, sizeof name, "malformed: %s", t->name);
    char *whole;
    if (same_every_way(name, in, len, &whole, len < 2000) == 0) {
      /* ERROR must be the last thing, with the expected status */
      char tail[40];
      snprintf(tail, sizeof tail, "ERROR %d ", want);
      const char *e = strstr(whole, "ERROR ");
      if (!e || strncmp(e, tail, strlen(tail)) || strchr(e, '\n')[1] != 0 || strstr(whole, "INVARIANT")) {
        char why[600];
        snprintf(why, sizeof why, "want status %d (close), got:\n%s", want, whole);
        bad(name, why);
      } else {
        ok(name);
      }
    }
    free(whole);
  }
  cur_lim = NULL;
  gw_buf_free(&longline);
}

/* ---- path normalization ------------------------------------------------ */

typedef struct PathCase {
  const char *in; int status; const char *path;
  const char *segs;     /* "raw=dec raw=dec", dec escaped as in esc() */
  const char *query;    /* NULL: no query */
} PathCase;

static const PathCase paths[] = {
  { "/a/./b/../c", 0, "/a/c", "a=a c=c", NULL },
  { "//a///b", 0, "/a/b", "a=a b=b", NULL },
  { "/%61%62", 0, "/ab", "ab=ab", NULL },
  { "/a%2Fb", 0, "/a%2Fb", "a%2Fb=a/b", NULL },
  { "/a%2fb/c", 0, "/a%2Fb/c", "a%2Fb=a/b c=c", NULL },
  { "/%2e%2e/x", 0, "/x", "x=x", NULL },
  { "/a/%2E./x", 0, "/x", "x=x", NULL },
  { "/a/.%2e", 0, "/", "", NULL },
  { "/..", 0, "/", "", NULL },
  { "/../../a", 0, "/a", "a=a", NULL },
  { "/a/b/../../../c", 0, "/c", "c=c", NULL },
  { "/%00", 400, NULL, NULL, NULL },
  { "/a%00b", 400, NULL, NULL, NULL },
  { "/%c0%af", 400, NULL, NULL, NULL },
  { "/%e0%80%af", 400, NULL, NULL, NULL },
  { "/%zz", 400, NULL, NULL, NULL },
  { "/%", 400, NULL, NULL, NULL },
  { "/%4", 400, NULL, NULL, NULL },
  { "/%4/x", 400, NULL, NULL, NULL },
  { "/%e2%82", 400, NULL, NULL, NULL },
  { "/%e2%82/%ac", 400, NULL, NULL, NULL },
  { "/%80", 400, NULL, NULL, NULL },
  { "/%ed%a0%80", 400, NULL, NULL, NULL },
  { "/%f4%90%80%80", 400, NULL, NULL, NULL },
  { "/%ff", 400, NULL, NULL, NULL },
  { "/x/%ff/../y", 400, NULL, NULL, NULL },
  { "/%C3%A9", 0, "/%C3%A9", "%C3%A9=\\xc3\\xa9", NULL },
  { "/caf%c3%a9/%e2%82%ac", 0, "/caf%C3%A9/%E2%82%AC", "caf%C3%A9=caf\\xc3\\xa9 %E2%82%AC=\\xe2\\x82\\xac", NULL },
  { "/%f0%9f%98%80", 0, "/%F0%9F%98%80", "%F0%9F%98%80=\\xf0\\x9f\\x98\\x80", NULL },
  { "/%25", 0, "/%25", "%25=%", NULL },
  { "/%7e%41%2d%5F%2E", 0, "/~A-_.", "~A-_.=~A-_.", NULL },
  { "/%41%2f%42", 0, "/A%2FB", "A%2FB=A/B", NULL },
  { "/..%2F", 0, "/..%2F", "..%2F=../", NULL },
  { "/%2e%2e%2f", 0, "/..%2F", "..%2F=../", NULL },
  { "/a/b?x=1&y=%2f#", 400, NULL, NULL, NULL },
  { "/a/b?x=1&y=%2f", 0, "/a/b", "a=a b=b", "x=1&y=%2f" },
  { "/a/../b?", 0, "/b", "b=b", "" },
  { "/?a?b", 0, "/", "", "a?b" },
  { "/a#x", 400, NULL, NULL, NULL },
  { "http://example.com/a/../b?x", 0, "/b", "b=b", "x" },
  { "http://example.com", 0, "/", "", NULL },
  { "HTTPS://h:8443?q", 0, "/", "", "q" },
  { "http://u@h/", 400, NULL, NULL, NULL },
  { "http:///a", 400, NULL, NULL, NULL },
  { "ftp://h/a", 400, NULL, NULL, NULL },
  { "/a/", 0, "/a/", "a=a", NULL },
  { "/a//", 0, "/a/", "a=a", NULL },
  { "/", 0, "/", "", NULL },
  { "/a/b/..", 0, "/a/", "a=a", NULL },
  { "/a/.", 0, "/a/", "a=a", NULL },
  { "/a/%2e", 0, "/a/", "a=a", NULL },
  { "/a/../%2e%2E/b/", 0, "/b/", "b=b", NULL },
  { "/.a/..b/a..", 0, "/.a/..b/a..", ".a=.a ..b=..b a..=a..", NULL },
  { "/{x}|^", 0, "/%7Bx%7D%7C%5E", "%7Bx%7D%7C%5E={x}|^", NULL },
  { "/a;b=c,d:e@f!$&'()*+", 0, "/a;b=c,d:e@f!$&'()*+", "a;b=c,d:e@f!$&'()*+=a;b=c,d:e@f!$&'()*+", NULL },
  { "/%0a", 0, "/%0A", "%0A=\\x0a", NULL },
  { "*", 400, NULL, NULL, NULL },
  { "a/b", 400, NULL, NULL, NULL },
  { "", 400, NULL, NULL, NULL },
  { "/a b", 400, NULL, NULL, NULL },
  { "/caf\xc3\xa9", 400, NULL, NULL, NULL },
};

static void check_path(const char *name, const char *in, size_t n, int want_status, const char *want_path,
                       const char *want_segs, const char *want_query) {
  GwArena a;
  gw_arena_init(&a);
  GwrPath out;
  const char *err = NULL;
  char *copy = malloc(n ? n : 1);       /* exact size: reading past n is caught */
  if (!copy) abort();
  memcpy(copy, in, n);
  int st = gwr_path_normalize(&a, copy, n, &out, &err);
  GwBuf got = {0};
  if (st) {
    gw_buf_printf(&got, "%d %s", st, err ? err : "(no reason)");
  } else {
    esc(&got, out.path, out.path_len);
    if (strlen(out.path) != out.path_len) gw_buf_adds(&got, " (path not NUL-terminated)");
    gw_buf_adds(&got, " [");
    for (int i = 0; i < out.nseg; i++) {
      if (i) gw_buf_addc(&got, ' ');
      esc(&got, out.seg[i].raw, out.seg[i].raw_len);
      gw_buf_addc(&got, '=');
      esc(&got, out.seg[i].dec, out.seg[i].dec_len);
      if (strlen(out.seg[i].dec) != out.seg[i].dec_len) gw_buf_adds(&got, " (dec not NUL-terminated)");
    }
    gw_buf_adds(&got, "] ");
    if (out.query) esc(&got, out.query, out.query_len); else gw_buf_adds(&got, "-");
  }
  GwBuf want = {0};
  if (want_status) {
    gw_buf_printf(&want, "%d %s", want_status, err ? err : "(no reason)");
  } else {
    gw_buf_printf(&want, "%s [%s] %s", want_path, want_segs, want_query ? want_query : "-");
  }
  if (!strcmp(gw_buf_cstr(&got), gw_buf_cstr(&want))) ok(name);
  else {
    char why[600];
    snprintf(why, sizeof why, "want '%s', got '%s'", gw_buf_cstr(&want), gw_buf_cstr(&got));
    bad(name, why);
  }
  gw_buf_free(&got);
  gw_buf_free(&want);
  free(copy);
  gw_arena_free(&a);
}

static void test_paths(void) {
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    const PathCase *c = &paths[i];
    char name[120];
    snprintf(name, sizeof name, "path: '%s'", c->in);
    check_path(name, c->in, strlen(c->in), c->status, c->path, c->segs, c->query);
  }
  /* segment count: 64 are fine, 65 are 414; ".." pops before the count matters */
  GwBuf b = {0}, segs = {0};
  for (int i = 0; i < 64; i++) {
    gw_buf_printf(&b, "/s%d", i);
    gw_buf_printf(&segs, "%ss%d=s%d", i ? " " : "", i, i);
  }
  check_path("path: 64 segments", b.p, b.n, 0, gw_buf_cstr(&b), gw_buf_cstr(&segs), NULL);
  gw_buf_adds(&b, "/x");
  check_path("path: 65 segments", b.p, b.n, 414, NULL, NULL, NULL);
  b.n = 0;
  for (int i = 0; i < 200; i++) gw_buf_adds(&b, "/a/..");
  gw_buf_adds(&b, "/z");
  check_path("path: 200 popped segments", b.p, b.n, 0, "/z", "z=z", NULL);
  gw_buf_free(&b);
  gw_buf_free(&segs);
}

/* ---- random mutations -------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
  return (uint32_t)(rng % n);
}

static void test_mutations(void) {
  static const char interesting[] = "\r\n\0 \t:;,-+0fF\"#%/?.xHTTP";
  char buf[512];
  int fails = 0, done = 0, refused = 0;
  for (int it = 0; it < 4000 && fails < 3; it++) {
    const Valid *v = &valid[rnd(sizeof valid / sizeof valid[0])];
    size_t n = strlen(v->in);
    if (n > sizeof buf - 8) n = sizeof buf - 8;
    memcpy(buf, v->in, n);
    int muts = 1 + (int)rnd(4);
    for (int m = 0; m < muts && n > 1; m++) {
      size_t at = rnd((uint32_t)n);
      switch (rnd(3)) {
      case 0: buf[at] = rnd(2) ? interesting[rnd(sizeof interesting - 1)] : (char)rnd(256); break;
      case 1: memmove(buf + at, buf + at + 1, n - at - 1); n--; break;
      default:
        if (n < sizeof buf - 1) {
          memmove(buf + at + 1, buf + at, n - at);
          buf[at] = interesting[rnd(sizeof interesting - 1)];
          n++;
        }
      }
    }
    cur_lim = v->small ? &small_lim : NULL;
    char *whole = feed_chunks(buf, n, 0, NULL);
    size_t k = 1 + rnd(31);
    char *c1 = feed_chunks(buf, n, k, NULL);
    char *c2 = feed_split(buf, n, rnd((uint32_t)n + 1));
    if (strcmp(whole, c1) || strcmp(whole, c2) || strstr(whole, "INVARIANT")) {
      GwBuf e = {0};
      esc(&e, buf, n);
      char why[1500];
      snprintf(why, sizeof why, "input '%.300s'\n--- whole\n%.300s--- chunk %zu\n%.300s--- split\n%.300s",
               gw_buf_cstr(&e), whole, k, c1, c2);
      gw_buf_free(&e);
      bad("mutations", why);
      fails++;
    }
    done += strstr(whole, "DONE @") != NULL;
    refused += strstr(whole, "ERROR ") != NULL;
    free(whole); free(c1); free(c2);
  }
  cur_lim = NULL;
  printf("mutations: %d of 4000 with a complete request, %d refused\n", done, refused);
  if (!fails && done > 400 && refused > 400) ok("mutations");
  else if (!fails) bad("mutations", "too few complete or refused inputs: the mutator is off");
}

int main(void) {
  test_valid();
  test_header_lookup();
  test_bad();
  test_default_limits();
  test_paths();
  test_mutations();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
