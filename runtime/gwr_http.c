/*
** gwr_http.c — the strict HTTP/1.1 request parser and the request-target
** normalizer (see gwr_http.h; the rules, with statuses and RFC sections, are
** in docs/http.md).
**
** The head is copied into the parser's own buffer one line at a time, each line
** NUL-terminated, so names, values and the target can be handed out as C
** strings. While the head grows the buffer may move, so fields are recorded as
** offsets and turned into pointers once, when the head is complete. Bodies are
** never copied: a BODY piece is a slice of the caller's input.
**
** Strictness is the point: every line ends with CRLF, and anything ambiguous
** about where a message ends is refused, because the backends behind the
** gateway may read the same bytes differently (request smuggling).
**
** Not here: sockets, deadlines (408), responses, routing.
*/
#include "gwr_http.h"
#include "gw_bytecode.h"

#include <stdlib.h>
#include <string.h>

enum {
  S_HEAD,          /* collecting the request line and header lines */
  S_NOBODY,        /* HEAD returned; the request has no body */
  S_BODY_CL,       /* Content-Length bytes left in p->remaining */
  S_CHUNK_SIZE,    /* collecting a chunk-size line */
  S_CHUNK_DATA,    /* p->remaining bytes of chunk data left */
  S_CHUNK_CRLF,    /* the CRLF after chunk data */
  S_TRAILER,       /* trailer lines, then the blank line */
  S_DONE,
  S_ERROR
};

/* A header line inside p->head. */
struct GwrHttpField { uint32_t no, nl, vo, vl; };

void gwr_http_default_limits(GwrHttpLimits *l) {
  l->max_request_line = 8 * 1024;
  l->max_header_bytes = 16 * 1024;
  l->max_headers = 100;
  l->max_body = 1024 * 1024;
}

void gwr_http_init(GwrHttpParser *p, const GwrHttpLimits *lim) {
  memset(p, 0, sizeof *p);
  if (lim) p->lim = *lim;
  else gwr_http_default_limits(&p->lim);
  gwr_http_reset(p);
}

void gwr_http_reset(GwrHttpParser *p) {
  GwrHttpLimits lim = p->lim;
  GwBuf head = p->head, line = p->line;
  struct GwrHttpField *fields = p->fields; uint32_t fields_cap = p->fields_cap;
  GwrHeader *hdrs = p->hdrs; uint32_t hdrs_cap = p->hdrs_cap;
  memset(p, 0, sizeof *p);
  p->lim = lim;
  p->head = head; p->head.n = 0;
  p->line = line; p->line.n = 0;
  p->fields = fields; p->fields_cap = fields_cap;
  p->hdrs = hdrs; p->hdrs_cap = hdrs_cap;
  p->req.content_length = -1;
  p->state = S_HEAD;
}

void gwr_http_free(GwrHttpParser *p) {
  gw_buf_free(&p->head);
  gw_buf_free(&p->line);
  free(p->fields);
  free(p->hdrs);
  memset(p, 0, sizeof *p);
  p->state = S_ERROR;
}

/* ---- character classes ------------------------------------------------- */

/* tchar (RFC 9110 5.6.2). */
static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}
static int is_ows(char c) { return c == ' ' || c == '\t'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

/* Case-insensitive s[0..n) == lit. */
static int eq_ci(const char *s, size_t n, const char *lit) {
  size_t m = strlen(lit);
  if (n != m) return 0;
  for (size_t i = 0; i < n; i++) if (lower(s[i]) != lit[i]) return 0;
  return 1;
}

static int fail(GwrHttpParser *p, int status, const char *why) {
  p->status = status;
  p->error = why;
  p->state = S_ERROR;
  return GWR_HTTP_ERROR;
}

/* ---- lines ------------------------------------------------------------- */

enum { LINE_MORE, LINE_OK, LINE_BARE_CR, LINE_BARE_LF, LINE_TOO_LONG };

/* Append bytes of d[*i..len) to b until a CRLF, which is consumed but not
** stored. The line collected so far is b->p[start..b->n) and may not grow
** beyond max bytes. A CR must be followed by LF and a LF preceded by CR. */
static int take_line(GwrHttpParser *p, GwBuf *b, size_t start, size_t max,
                     const char *d, size_t len, size_t *i) {
  while (*i < len) {
    char c = d[*i];
    if (p->cr) {
      if (c != '\n') return LINE_BARE_CR;
      (*i)++;
      p->cr = 0;
      return LINE_OK;
    }
    if (c == '\r') { p->cr = 1; (*i)++; continue; }
    if (c == '\n') return LINE_BARE_LF;
    size_t j = *i;
    while (j < len && d[j] != '\r' && d[j] != '\n') j++;
    if (j - *i > max - (b->n - start)) return LINE_TOO_LONG;
    gw_buf_add(b, d + *i, j - *i);
    *i = j;
  }
  return LINE_MORE;
}

static int line_error(GwrHttpParser *p, int r, int too_long_status, const char *too_long) {
  if (r == LINE_BARE_CR) return fail(p, 400, "bare cr");
  if (r == LINE_BARE_LF) return fail(p, 400, "bare lf");
  return fail(p, too_long_status, too_long);
}

/* ---- field lines ------------------------------------------------------- */

/* Check a field line s[0..n) (RFC 9112 5, RFC 9110 5.5). On success the name
** is s[0..*nl) and the value, trimmed of OWS, s[*vo..*vo+*vl). */
static const char *check_field(const char *s, size_t n, size_t *nl, size_t *vo, size_t *vl) {
  if (n && is_ows(s[0])) return "obs-fold";
  size_t i = 0;
  while (i < n && is_tchar((unsigned char)s[i])) i++;
  if (i == n) return "missing colon in header";
  if (s[i] != ':') {
    if (is_ows(s[i])) return "whitespace before colon";
    return i ? "invalid character in header name" : "empty header name";
  }
  if (i == 0) return "empty header name";
  *nl = i;
  size_t a = i + 1, z = n;
  for (size_t k = a; k < n; k++) {
    unsigned char c = (unsigned char)s[k];
    if (c == 0) return "nul in header value";
    if ((c < 0x20 && c != '\t') || c == 0x7f) return "control character in header value";
  }
  while (a < z && is_ows(s[a])) a++;
  while (z > a && is_ows(s[z - 1])) z--;
  *vo = a; *vl = z - a;
  return NULL;
}

/* Split a comma-separated list: *a..*z is the next element trimmed of OWS,
** *pos advances past it and its comma. Returns 0 at the end of the list. */
static int next_elem(const char *s, size_t n, size_t *pos, size_t *a, size_t *z) {
  if (*pos > n) return 0;
  size_t i = *pos, j = i;
  while (j < n && s[j] != ',') j++;
  *pos = j + 1;
  while (i < j && is_ows(s[i])) i++;
  while (j > i && is_ows(s[j - 1])) j--;
  *a = i; *z = j;
  return 1;
}

static int is_token(const char *s, size_t n) {
  if (!n) return 0;
  for (size_t i = 0; i < n; i++) if (!is_tchar((unsigned char)s[i])) return 0;
  return 1;
}

/* Content-Length: 1*DIGIT, or a list of identical ones (RFC 9110 8.6). */
static int on_content_length(GwrHttpParser *p, const char *v, size_t n) {
  size_t pos = 0, a, z;
  while (next_elem(v, n, &pos, &a, &z)) {
    if (a == z) return fail(p, 400, "invalid content-length");
    uint64_t x = 0;
    for (size_t i = a; i < z; i++) {
      if (!is_digit(v[i])) return fail(p, 400, "invalid content-length");
      if (x > ((uint64_t)INT64_MAX - (uint64_t)(v[i] - '0')) / 10)
        return fail(p, 400, "content-length overflow");
      x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (p->req.content_length >= 0 && (uint64_t)p->req.content_length != x)
      return fail(p, 400, "conflicting content-length");
    p->req.content_length = (int64_t)x;
  }
  return GWR_HTTP_MORE;
}

/* Transfer-Encoding (RFC 9112 6.1): chunked must be last and only once; any
** other coding is 501, decided when the head is complete (so that a framing
** error, a 400, wins over it). */
static int on_transfer_encoding(GwrHttpParser *p, const char *v, size_t n) {
  size_t pos = 0, a, z;
  p->te_seen = 1;
  while (next_elem(v, n, &pos, &a, &z)) {
    if (a == z) return fail(p, 400, "empty transfer-coding");
    size_t e = a;
    while (e < z && is_tchar((unsigned char)v[e])) e++;
    if (e == a) return fail(p, 400, "invalid transfer-coding");
    if (p->te_chunked) {
      if (eq_ci(v + a, e - a, "chunked")) return fail(p, 400, "chunked repeated");
      return fail(p, 400, "chunked is not the last transfer-coding");
    }
    if (eq_ci(v + a, e - a, "chunked")) {
      if (e != z) return fail(p, 400, "parameters on chunked");
      p->te_chunked = 1;
    } else {
      /* transfer-parameter syntax is not checked: the coding is refused anyway */
      p->te_unknown = 1;
    }
  }
  return GWR_HTTP_MORE;
}

static void on_connection(GwrHttpParser *p, const char *v, size_t n) {
  size_t pos = 0, a, z;
  while (next_elem(v, n, &pos, &a, &z)) {
    if (eq_ci(v + a, z - a, "close")) p->conn_close = 1;
    else if (eq_ci(v + a, z - a, "keep-alive")) p->conn_keep = 1;
  }
}

/* uri-host [":" port] (RFC 9110 7.2), loosely: the characters a reg-name,
** an IP literal and a port may use. Empty is allowed. */
static int valid_host(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) continue;
    if (!c || !strchr("-._~!$&'()*+,;=:[]%", c)) return 0;
  }
  return 1;
}

/* ---- the request line -------------------------------------------------- */

static const struct { const char *name; int method; } methods[] = {
  { "GET", GW_METHOD_GET }, { "HEAD", GW_METHOD_HEAD }, { "POST", GW_METHOD_POST },
  { "PUT", GW_METHOD_PUT }, { "PATCH", GW_METHOD_PATCH }, { "DELETE", GW_METHOD_DELETE },
  { "OPTIONS", GW_METHOD_OPTIONS },
};

/* Case-insensitive "http://" or "https://" prefix: its length, or 0. */
static size_t http_scheme(const char *s, size_t n) {
  if (n >= 7 && eq_ci(s, 7, "http://")) return 7;
  if (n >= 8 && eq_ci(s, 8, "https://")) return 8;
  return 0;
}

/* method SP request-target SP HTTP-version (RFC 9112 3), exactly. The line is
** NUL-terminated at p->head.p[off + n]. */
static int request_line(GwrHttpParser *p, size_t off, size_t n) {
  char *s = p->head.p + off;
  size_t i = 0;
  while (i < n && s[i] != ' ') i++;
  if (i == n) return fail(p, 400, "malformed request line");
  size_t mlen = i;
  if (!is_token(s, mlen)) return fail(p, 400, "invalid method");
  size_t t = ++i;
  while (i < n && s[i] != ' ') i++;
  size_t tlen = i - t;
  if (tlen == 0) return fail(p, 400, "malformed request line");
  for (size_t k = t; k < t + tlen; k++) {
    unsigned char c = (unsigned char)s[k];
    if (c == '#') return fail(p, 400, "fragment in request target");
    if (c <= 0x20 || c >= 0x7f) return fail(p, 400, "invalid character in request target");
  }
  if (i == n) {
    /* "GET /": an HTTP/0.9 request line */
    return fail(p, 505, "http/0.9 is not supported");
  }
  const char *v = s + i + 1;
  size_t vlen = n - i - 1;
  if (vlen != 8 || memcmp(v, "HTTP/", 5) || !is_digit(v[5]) || v[6] != '.' || !is_digit(v[7]))
    return fail(p, 400, "malformed http version");
  if (v[5] != '1') return fail(p, 505, "http version not supported");
  p->req.minor = v[7] == '0' ? 0 : 1;

  p->req.method = 0;
  for (size_t k = 0; k < sizeof methods / sizeof methods[0]; k++)
    if (strlen(methods[k].name) == mlen && !memcmp(methods[k].name, s, mlen))
      p->req.method = methods[k].method;
  if (!p->req.method) return fail(p, 501, "method not implemented");

  /* the request-target's form (RFC 9112 3.2) */
  const char *tg = s + t;
  if (tg[0] == '/') {
    /* origin-form */
  } else if (tlen == 1 && tg[0] == '*') {
    if (p->req.method != GW_METHOD_OPTIONS) return fail(p, 400, "asterisk-form without options");
  } else {
    size_t sl = http_scheme(tg, tlen);
    if (!sl) return fail(p, 400, "invalid request target");
    size_t e = sl;
    while (e < tlen && tg[e] != '/' && tg[e] != '?') e++;
    if (e == sl) return fail(p, 400, "empty authority in request target");
    if (memchr(tg + sl, '@', e - sl)) return fail(p, 400, "userinfo in request target");
    if (!valid_host(tg + sl, e - sl)) return fail(p, 400, "invalid authority in request target");
    p->abs_host = 1;
    p->host_off = off + t + sl;           /* copied and terminated in finish_head() */
    p->req.host_len = e - sl;
  }
  s[t + tlen] = 0;
  p->target_off = off + t;
  p->req.target_len = tlen;
  return GWR_HTTP_MORE;
}

/* A complete header line at p->head.p[off..off+n), NUL-terminated. */
static int header_line(GwrHttpParser *p, size_t off, size_t n) {
  char *s = p->head.p + off;
  size_t nl, vo, vl;
  const char *why = check_field(s, n, &nl, &vo, &vl);
  if (why) return fail(p, 400, why);
  if (++p->nfields > p->lim.max_headers) return fail(p, 431, "too many headers");
  for (size_t k = 0; k < nl; k++) s[k] = lower(s[k]);
  s[nl] = 0;                 /* the colon */
  s[vo + vl] = 0;            /* trailing OWS, or the line's own NUL */
  if (p->req.nheaders == p->fields_cap) {
    uint32_t cap = p->fields_cap ? p->fields_cap * 2 : 16;
    struct GwrHttpField *f = realloc(p->fields, cap * sizeof *f);
    if (!f) abort();
    p->fields = f; p->fields_cap = cap;
  }
  p->fields[p->req.nheaders++] = (struct GwrHttpField){
    (uint32_t)off, (uint32_t)nl, (uint32_t)(off + vo), (uint32_t)vl };

  const char *v = s + vo;
  if (nl == 4 && !memcmp(s, "host", 4)) {
    if (p->has_host++) return fail(p, 400, "duplicate host");
    if (!valid_host(v, vl)) return fail(p, 400, "invalid host");
    if (!p->abs_host) { p->host_off = off + vo; p->req.host_len = vl; }
  } else if (nl == 14 && !memcmp(s, "content-length", 14)) {
    return on_content_length(p, v, vl);
  } else if (nl == 17 && !memcmp(s, "transfer-encoding", 17)) {
    return on_transfer_encoding(p, v, vl);
  } else if (nl == 10 && !memcmp(s, "connection", 10)) {
    on_connection(p, v, vl);
  } else if (nl == 6 && !memcmp(s, "expect", 6)) {
    /* other expectations are ignored (RFC 9110 10.1.1 allows, not requires, 417) */
    size_t pos = 0, a, z;
    while (next_elem(v, vl, &pos, &a, &z))
      if (eq_ci(v + a, z - a, "100-continue")) p->expect = 1;
  }
  return GWR_HTTP_MORE;
}

/* The blank line: the checks that need the whole head, then the pointers. */
static int finish_head(GwrHttpParser *p) {
  GwrHttpReq *r = &p->req;
  if (r->minor == 1 && !p->has_host) return fail(p, 400, "missing host");
  if (p->te_seen) {
    if (r->content_length >= 0) return fail(p, 400, "content-length with transfer-encoding");
    if (r->minor == 0) return fail(p, 400, "transfer-encoding in http/1.0");
    if (!p->te_chunked)          /* only codings we do not know: that is the problem (RFC 9112 6.1) */
      return p->te_unknown ? fail(p, 501, "transfer-coding not implemented")
                           : fail(p, 400, "chunked is not the last transfer-coding");
    if (p->te_unknown) return fail(p, 501, "transfer-coding not implemented");
    r->chunked = 1;
  }
  if (r->content_length >= 0 && (uint64_t)r->content_length > p->lim.max_body)
    return fail(p, 413, "body too large");

  if (p->abs_host) {
    /* copy the authority so that host is NUL-terminated like everything else */
    size_t at = p->head.n;
    gw_buf_reserve(&p->head, r->host_len + 1);
    memcpy(p->head.p + at, p->head.p + p->host_off, r->host_len);
    p->head.n += r->host_len;
    gw_buf_addc(&p->head, 0);
    p->host_off = at;
  }
  if (p->hdrs_cap < r->nheaders) {
    free(p->hdrs);
    p->hdrs = malloc(r->nheaders * sizeof *p->hdrs);
    if (!p->hdrs) abort();
    p->hdrs_cap = r->nheaders;
  }
  char *b = p->head.p;
  for (uint32_t i = 0; i < r->nheaders; i++) {
    struct GwrHttpField *f = &p->fields[i];
    p->hdrs[i] = (GwrHeader){ b + f->no, f->nl, b + f->vo, f->vl };
  }
  r->headers = r->nheaders ? p->hdrs : NULL;
  r->target = b + p->target_off;
  r->host = (p->has_host || p->abs_host) ? b + p->host_off : NULL;
  if (!r->host) r->host_len = 0;
  r->keep_alive = r->minor == 1 ? !p->conn_close : (p->conn_keep && !p->conn_close);
  r->expect_continue = p->expect && r->minor == 1 && (r->chunked || r->content_length > 0);
  if (r->chunked) p->state = S_CHUNK_SIZE;
  else if (r->content_length > 0) { p->state = S_BODY_CL; p->remaining = (uint64_t)r->content_length; }
  else p->state = S_NOBODY;
  return GWR_HTTP_HEAD;
}

static int feed_head(GwrHttpParser *p, const char *d, size_t len, size_t *i) {
  for (;;) {
    size_t max;
    if (!p->seen_line) max = p->lim.max_request_line;
    else max = p->lim.max_header_bytes > p->hbytes ? p->lim.max_header_bytes - p->hbytes : 0;
    int r = take_line(p, &p->head, p->line_start, max, d, len, i);
    if (r == LINE_MORE) return GWR_HTTP_MORE;
    if (r != LINE_OK) {
      if (!p->seen_line) return line_error(p, r, 414, "request line too long");
      return line_error(p, r, 431, "header section too large");
    }
    size_t off = p->line_start, n = p->head.n - off;
    gw_buf_addc(&p->head, 0);
    p->line_start = p->head.n;
    int st;
    if (!p->seen_line) {
      if (n == 0) {
        if (++p->nempty > GWR_HTTP_MAX_EMPTY_LINES) return fail(p, 400, "too many empty lines");
        p->head.n = p->line_start = 0;
        continue;
      }
      p->seen_line = 1;
      st = request_line(p, off, n);
    } else {
      if (n == 0) return finish_head(p);
      p->hbytes += n + 2;
      if (p->hbytes > p->lim.max_header_bytes) return fail(p, 431, "header section too large");
      st = header_line(p, off, n);
    }
    if (st != GWR_HTTP_MORE) return st;
  }
}

/* ---- chunked ----------------------------------------------------------- */

/* chunk-ext = *( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )
** (RFC 9112 7.1.1): checked, then ignored. */
static int valid_chunk_ext(const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    while (i < n && is_ows(s[i])) i++;
    if (i == n || s[i] != ';') return 0;
    i++;
    while (i < n && is_ows(s[i])) i++;
    size_t a = i;
    while (i < n && is_tchar((unsigned char)s[i])) i++;
    if (i == a) return 0;
    size_t k = i;
    while (k < n && is_ows(s[k])) k++;
    if (k < n && s[k] == '=') {
      i = k + 1;
      while (i < n && is_ows(s[i])) i++;
      if (i < n && s[i] == '"') {
        for (i++;; i++) {
          if (i >= n) return 0;
          unsigned char c = (unsigned char)s[i];
          if (c == '"') { i++; break; }
          if (c == '\\') { if (++i >= n) return 0; c = (unsigned char)s[i]; }
          if ((c < 0x20 && c != '\t') || c == 0x7f) return 0;
        }
      } else {
        a = i;
        while (i < n && is_tchar((unsigned char)s[i])) i++;
        if (i == a) return 0;
      }
    }
  }
  return 1;
}

/* chunk-size [ chunk-ext ] (RFC 9112 7.1). */
static int chunk_size_line(GwrHttpParser *p, const char *s, size_t n) {
  uint64_t x = 0;
  size_t i = 0;
  for (; i < n && gw_hexval((unsigned char)s[i]) >= 0; i++) {
    if (x > (UINT64_MAX >> 4)) return fail(p, 400, "chunk size overflow");
    x = x << 4 | (uint64_t)gw_hexval((unsigned char)s[i]);
  }
  if (i == 0) return fail(p, 400, "invalid chunk size");
  if (i < n && !valid_chunk_ext(s + i, n - i)) return fail(p, 400, "invalid chunk size");
  if (x == 0) { p->state = S_TRAILER; return GWR_HTTP_MORE; }
  if (x > p->lim.max_body - p->total) return fail(p, 413, "body too large");
  p->remaining = x;
  p->state = S_CHUNK_DATA;
  return GWR_HTTP_MORE;
}

/* A trailer line (RFC 9112 7.1.2): checked like a header, counted against the
** header limits, then dropped. */
static int trailer_line(GwrHttpParser *p, const char *s, size_t n) {
  size_t nl, vo, vl;
  const char *why = check_field(s, n, &nl, &vo, &vl);
  if (why) return fail(p, 400, why);
  if (++p->nfields > p->lim.max_headers) return fail(p, 431, "too many headers");
  return GWR_HTTP_MORE;
}

int gwr_http_feed(GwrHttpParser *p, const char *d, size_t len, size_t *used,
                  const char **body, size_t *body_len) {
  size_t i = 0;
  int r = GWR_HTTP_MORE;
  if (body) *body = NULL;
  if (body_len) *body_len = 0;
  for (;;) {
    switch (p->state) {
    case S_HEAD:
      r = feed_head(p, d, len, &i);
      goto out;

    case S_NOBODY:
      p->state = S_DONE;
      r = GWR_HTTP_DONE;
      goto out;

    case S_BODY_CL:
    case S_CHUNK_DATA: {
      if (i == len) { r = GWR_HTTP_MORE; goto out; }
      size_t k = len - i;
      if ((uint64_t)k > p->remaining) k = (size_t)p->remaining;
      if (body) *body = d + i;
      if (body_len) *body_len = k;
      i += k;
      p->remaining -= k;
      if (p->state == S_CHUNK_DATA) {
        p->total += k;
        if (!p->remaining) p->state = S_CHUNK_CRLF;
      } else if (!p->remaining) {
        p->state = S_NOBODY;     /* the next call says DONE */
      }
      r = GWR_HTTP_BODY;
      goto out;
    }

    case S_CHUNK_SIZE:
    case S_TRAILER: {
      size_t max;
      if (p->state == S_CHUNK_SIZE) max = GWR_HTTP_MAX_CHUNK_LINE;
      else max = p->lim.max_header_bytes > p->hbytes ? p->lim.max_header_bytes - p->hbytes : 0;
      int lr = take_line(p, &p->line, 0, max, d, len, &i);
      if (lr == LINE_MORE) { r = GWR_HTTP_MORE; goto out; }
      if (lr != LINE_OK) {
        if (p->state == S_CHUNK_SIZE) r = line_error(p, lr, 400, "chunk size line too long");
        else r = line_error(p, lr, 431, "header section too large");
        goto out;
      }
      size_t n = p->line.n;
      p->line.n = 0;
      if (p->state == S_CHUNK_SIZE) {
        r = chunk_size_line(p, p->line.p, n);
      } else if (n == 0) {
        p->state = S_DONE;
        r = GWR_HTTP_DONE;
        goto out;
      } else {
        p->hbytes += n + 2;
        if (p->hbytes > p->lim.max_header_bytes) r = fail(p, 431, "header section too large");
        else r = trailer_line(p, p->line.p, n);
      }
      if (r != GWR_HTTP_MORE) goto out;
      break;
    }

    case S_CHUNK_CRLF:
      if (i == len) { r = GWR_HTTP_MORE; goto out; }
      if (!p->cr) {
        if (d[i] != '\r') { r = fail(p, 400, "missing crlf after chunk data"); goto out; }
        p->cr = 1;
        i++;
        break;
      }
      if (d[i] != '\n') { r = fail(p, 400, "bare cr"); goto out; }
      p->cr = 0;
      i++;
      p->state = S_CHUNK_SIZE;
      break;

    case S_DONE:
      r = GWR_HTTP_DONE;
      goto out;

    default:
      r = GWR_HTTP_ERROR;
      goto out;
    }
  }
out:
  *used = i;
  return r;
}

const char *gwr_http_header(const GwrHttpReq *r, const char *lower_name) {
  size_t n = strlen(lower_name);
  for (uint32_t i = 0; i < r->nheaders; i++)
    if (r->headers[i].name_len == n && !memcmp(r->headers[i].name, lower_name, n))
      return r->headers[i].value;
  return NULL;
}

/* ---- path normalization ------------------------------------------------ */

static int is_unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~';
}
/* pchar without pct-encoded (RFC 3986 3.3): these stay as they are. */
static int is_pchar_plain(unsigned char c) {
  return is_unreserved(c) || (c && strchr("!$&'()*+,;=:@", c));
}


static const char HEX[] = "0123456789ABCDEF";

int gwr_path_normalize(GwArena *a, const char *target, size_t n, GwrPath *out, const char **err) {
  memset(out, 0, sizeof *out);
  *err = NULL;
  if (n == 0) { *err = "empty request target"; return 400; }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)target[i];
    if (c == '#') { *err = "fragment in request target"; return 400; }
    if (c <= 0x20 || c >= 0x7f) { *err = "invalid character in request target"; return 400; }
  }
  const char *s = target, *end = target + n;
  if (s[0] != '/') {
    if (n == 1 && s[0] == '*') { *err = "asterisk-form request target"; return 400; }
    size_t sl = http_scheme(s, n);
    if (!sl) { *err = "invalid request target"; return 400; }
    s += sl;
    const char *auth = s;
    while (s < end && *s != '/' && *s != '?') s++;
    if (s == auth) { *err = "empty authority in request target"; return 400; }
    if (memchr(auth, '@', (size_t)(s - auth))) { *err = "userinfo in request target"; return 400; }
  }
  const char *q = memchr(s, '?', (size_t)(end - s));
  const char *pend = q ? q : end;
  if (q) {
    out->query = gw_arena_strndup(a, q + 1, (size_t)(end - q - 1));
    out->query_len = (size_t)(end - q - 1);
  }

  /* The normalized form is at most 3x the input (a byte may become %XX). */
  size_t plen = (size_t)(pend - s);
  char *raw = gw_arena_alloc(a, plen * 3 + 2);      /* segments' raw text, packed */
  char *dec = gw_arena_alloc(a, plen + GWR_MAX_SEGMENTS + 2);   /* decoded, NUL after each */
  size_t rn = 0, dn = 0;
  struct { size_t ro, rl, dof, dl; } st[GWR_MAX_SEGMENTS];
  int nseg = 0, trailing = 0;

  const char *c = s;
  while (c < pend) {
    if (*c == '/') c++;
    const char *b = c;
    while (c < pend && *c != '/') c++;
    /* one segment b..c: normalize its escapes into raw, decode into dec */
    size_t ro = rn, dof = dn;
    for (const char *x = b; x < c; x++) {
      unsigned char ch = (unsigned char)*x;
      if (ch == '%') {
        int h1 = x + 1 < c ? gw_hexval((unsigned char)x[1]) : -1;
        int h2 = x + 2 < c ? gw_hexval((unsigned char)x[2]) : -1;
        if (h1 < 0 || h2 < 0) { *err = "invalid percent-encoding"; return 400; }
        unsigned char v = (unsigned char)(h1 << 4 | h2);
        if (v == 0) { *err = "%00 in path"; return 400; }
        x += 2;
        dec[dn++] = (char)v;
        if (is_unreserved(v)) raw[rn++] = (char)v;
        else { raw[rn++] = '%'; raw[rn++] = HEX[v >> 4]; raw[rn++] = HEX[v & 15]; }
      } else {
        dec[dn++] = (char)ch;
        if (is_pchar_plain(ch)) raw[rn++] = (char)ch;
        else { raw[rn++] = '%'; raw[rn++] = HEX[ch >> 4]; raw[rn++] = HEX[ch & 15]; }
      }
    }
    size_t rl = rn - ro, dl = dn - dof;
    if (!gw_utf8_valid(dec + dof, dl)) { *err = "invalid utf-8 in path"; return 400; }
    if (rl == 0 || (rl == 1 && raw[ro] == '.')) {
      rn = ro; dn = dof;
      trailing = 1;                      /* "/a/", "/a/." → "/a/" */
    } else if (rl == 2 && raw[ro] == '.' && raw[ro + 1] == '.') {
      rn = ro; dn = dof;
      if (nseg) {                        /* at the root, ".." stays at the root */
        nseg--;
        rn = st[nseg].ro; dn = st[nseg].dof;
      }
      trailing = 1;                      /* "/a/b/.." → "/a/" */
    } else {
      if (nseg == GWR_MAX_SEGMENTS) { *err = "too many path segments"; return 414; }
      dec[dn++] = 0;
      st[nseg].ro = ro; st[nseg].rl = rl; st[nseg].dof = dof; st[nseg].dl = dl;
      nseg++;
      trailing = 0;
    }
  }

  /* assemble "/" seg ("/" seg)* ["/"] */
  char *path = gw_arena_alloc(a, rn + (size_t)nseg + 2);
  size_t pn = 0;
  for (int k = 0; k < nseg; k++) {
    path[pn++] = '/';
    memcpy(path + pn, raw + st[k].ro, st[k].rl);
    out->seg[k].raw = path + pn;
    out->seg[k].raw_len = (uint32_t)st[k].rl;
    out->seg[k].dec = dec + st[k].dof;
    out->seg[k].dec_len = (uint32_t)st[k].dl;
    pn += st[k].rl;
  }
  if (nseg == 0 || trailing) path[pn++] = '/';
  path[pn] = 0;
  out->path = path;
  out->path_len = pn;
  out->nseg = nseg;
  out->trailing_slash = nseg > 0 && trailing;
  return 0;
}
