/*
** gwr_http.h — a strict, incremental HTTP/1.1 request parser (RFC 9112) and
** the request-target normalizer (RFC 3986 section 6) that routing, auth, the
** cache key and the access log all share.
**
** Pure code: no libevent, no sockets, no clock. The server (gwr_server.c)
** owns the connection, the deadlines (408) and the responses; this file only
** says what the bytes are, or why they are refused. Everything it refuses
** must close the connection: after a framing error nothing that follows on
** the connection can be trusted (request smuggling).
**
** The rules, their statuses and RFC sections are listed in docs/http.md.
*/
#ifndef GWR_HTTP_H
#define GWR_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include "gw_util.h"

/* ---- limits ------------------------------------------------------------ */

typedef struct GwrHttpLimits {
  size_t   max_request_line;   /* bytes of the request line, CRLF excluded; default 8 KB -> 414 */
  size_t   max_header_bytes;   /* bytes of all header lines with their CRLFs, the blank line
                               ** excluded; trailers count too; default 16 KB -> 431 */
  uint32_t max_headers;        /* header lines (+ trailer lines); default 100 -> 431 */
  uint64_t max_body;           /* decoded body bytes; default 1 MB -> 413, decided from
                               ** Content-Length before the body, or while chunks are decoded */
} GwrHttpLimits;

/* Fill *l with the defaults above. */
void gwr_http_default_limits(GwrHttpLimits *l);

/* A chunk-size line (size and extensions, CRLF excluded) longer than this is a 400. */
#define GWR_HTTP_MAX_CHUNK_LINE 4096
/* Empty lines (CRLF) ignored before a request line (RFC 9112 2.2); one more is a 400. */
#define GWR_HTTP_MAX_EMPTY_LINES 4

/* ---- the parsed request ------------------------------------------------ */

/* A header field line. The name is lower-cased; the value has its leading and
** trailing OWS removed. Both are NUL-terminated (the lengths are exact). */
typedef struct GwrHeader {
  const char *name;  uint32_t name_len;
  const char *value; uint32_t value_len;
} GwrHeader;

typedef struct GwrHttpReq {
  int method;                  /* GW_METHOD_GET..GW_METHOD_OPTIONS (gw_bytecode.h) */
  const char *target; size_t target_len;   /* raw request-target, NUL-terminated;
                               ** "/..." (origin-form), "http(s)://..." (absolute-form),
                               ** or "*" (only with OPTIONS) */
  int minor;                   /* 0 or 1 (HTTP/1.x with x > 1 is served as 1.1) */
  GwrHeader *headers; uint32_t nheaders;   /* in arrival order */
  const char *host; size_t host_len;       /* the Host value, or the authority of an
                               ** absolute-form target (which wins, RFC 9112 3.2.2);
                               ** NUL-terminated; NULL if none (HTTP/1.0 only) */
  int keep_alive;              /* 1.1: unless "Connection: close"; 1.0: only with
                               ** "Connection: keep-alive" (and no close) */
  int expect_continue;         /* "Expect: 100-continue" on HTTP/1.1 with a body to send */
  int chunked;                 /* Transfer-Encoding: chunked */
  int64_t content_length;      /* -1 if none; a request with neither has no body */
} GwrHttpReq;

/* gwr_http_feed() results. */
enum { GWR_HTTP_MORE, GWR_HTTP_HEAD, GWR_HTTP_BODY, GWR_HTTP_DONE, GWR_HTTP_ERROR };

/* The parser. Public fields: req, status, error; the rest is private state.
** The struct is embedded in the connection; it allocates only its head buffer
** (bounded by the limits), its header array and a line buffer for chunk-size
** and trailer lines. */
typedef struct GwrHttpParser {
  GwrHttpReq  req;             /* complete after GWR_HTTP_HEAD */
  int         status;          /* after GWR_HTTP_ERROR: 400 413 414 431 501 505 */
  const char *error;           /* after GWR_HTTP_ERROR: short lower-case reason (static) */

  /* private */
  GwrHttpLimits lim;
  int      state;
  int      cr;                 /* the previous byte was a CR (a LF must follow) */
  int      seen_line;          /* the request line has been parsed */
  int      nempty;             /* empty lines skipped before the request line */
  GwBuf    head;               /* the head, one NUL-terminated line after another */
  GwBuf    line;               /* the current chunk-size or trailer line */
  size_t   line_start;         /* offset in head of the line being collected */
  size_t   hbytes;             /* header (and trailer) bytes so far */
  uint32_t nfields;            /* header (and trailer) lines so far */
  struct GwrHttpField *fields; uint32_t fields_cap;   /* offsets into head */
  GwrHeader *hdrs; uint32_t hdrs_cap;
  size_t   target_off, host_off;
  int      has_host;           /* Host lines seen */
  int      abs_host;           /* host comes from an absolute-form target */
  int      conn_close, conn_keep;
  int      te_seen, te_chunked, te_unknown;
  int      expect;
  uint64_t remaining;          /* body bytes left: Content-Length or current chunk */
  uint64_t total;              /* decoded body bytes so far */
} GwrHttpParser;

/* Prepare p for the first request of a connection. lim is copied; NULL means
** the defaults. Allocates nothing until bytes arrive. */
void gwr_http_init(GwrHttpParser *p, const GwrHttpLimits *lim);

/* Ready p for the next request on the connection (after GWR_HTTP_DONE).
** Invalidates every pointer in p->req. Keeps the buffers for reuse. */
void gwr_http_reset(GwrHttpParser *p);

/* Release p's buffers. p may be initialized again. */
void gwr_http_free(GwrHttpParser *p);

/* Feed data[0..len). Never reads past len; data is borrowed for the call.
** *used is set to the bytes consumed (always <= len). Returns:
**   GWR_HTTP_MORE   all of data was consumed (*used == len); feed more.
**   GWR_HTTP_HEAD   once per request: p->req is complete. Its pointers point
**                   into p's own buffers and stay valid until gwr_http_reset()
**                   or gwr_http_free(). Call again with the rest of the data.
**   GWR_HTTP_BODY   *body, *body_len: the next piece of the decoded body (chunked
**                   framing removed; never empty). The piece points INTO data
**                   (no copy): use it before data goes away. Call again.
**   GWR_HTTP_DONE   the request is complete; data[*used..len) belongs to the next
**                   pipelined request: call gwr_http_reset(), then feed it.
**                   A request without a body gives HEAD, then DONE (which needs
**                   no input: len may be 0).
**   GWR_HTTP_ERROR  p->status and p->error say why; close the connection.
** After DONE (until reset) and after ERROR, feeding returns the same result again
** and consumes nothing. body and body_len may be NULL only if the caller knows
** the request has no body. */
int gwr_http_feed(GwrHttpParser *p, const char *data, size_t len, size_t *used,
                  const char **body, size_t *body_len);

/* The first value of the header named lower_name (lower case), NUL-terminated
** and borrowed from r; or NULL. */
const char *gwr_http_header(const GwrHttpReq *r, const char *lower_name);

/* ---- request-target normalization -------------------------------------- */

#define GWR_MAX_SEGMENTS 64

/* A path segment: raw is the segment as it appears in GwrPath.path (a slice
** of it, not NUL-terminated: unreserved characters decoded, other escapes with
** upper-case hex); dec is fully percent-decoded (valid UTF-8, no NUL byte) and
** NUL-terminated. */
typedef struct GwrSeg { const char *raw; uint32_t raw_len; const char *dec; uint32_t dec_len; } GwrSeg;

typedef struct GwrPath {
  const char *path; size_t path_len;      /* normalized path, e.g. "/a/b%2Fc"; NUL-terminated */
  GwrSeg seg[GWR_MAX_SEGMENTS]; int nseg; /* segments of path; "/" has none, and a trailing
                                          ** slash ("/a/") adds no empty segment */
  int trailing_slash;                     /* path ends with "/" and nseg > 0 */
  const char *query; size_t query_len;    /* after the first '?', raw; NULL if no '?' */
} GwrPath;

/* Normalize a request-target (origin-form, or absolute-form whose path is taken;
** asterisk-form is refused: answer "OPTIONS *" before calling this). Returns 0,
** or an HTTP status (400, or 414 for more than GWR_MAX_SEGMENTS segments) with
** *err set to a static lower-case reason. Every string in *out is allocated in a;
** target is borrowed for the call. The rules are in docs/http.md. */
int gwr_path_normalize(GwArena *a, const char *target, size_t n, GwrPath *out, const char **err);

#endif
