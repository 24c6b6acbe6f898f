/*
** gwr_accesslog.h — the access log's writer: per-worker buffers of whole JSON
** lines, written with write(2), and the JSON pieces a line is made of.
**
** A worker appends each request's line to its own buffer (no lock, no system
** call, no allocation once the buffer has grown); the buffer is written when it
** passes 16 KB, by a 200 ms timer on the worker's loop, and when the worker
** stops. Writes of all workers are serialized by one lock and each writes
** whole lines, so a line never interleaves with another, whatever the
** destination (a file opened O_APPEND, a pipe, a terminal). A failed write
** drops its lines, is counted, and is reported once on stderr; it never
** affects a request.
**
** Not here: what a line says (gwr_exchange.c writes it, docs/operations.md
** documents it).
*/
#ifndef GWR_ACCESSLOG_H
#define GWR_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "gw_util.h"

struct event_base;
struct event;

typedef struct GwrAlog {
  int           fd;            /* borrowed: the process's log destination */
  GwBuf         buf;           /* whole lines, not yet written */
  uint32_t      lines;         /* lines in buf */
  struct event *timer;         /* the 200 ms flush */
  time_t        sec;           /* the second stamp shows */
  char          stamp[24];     /* "2026-11-28T06:37:06." */
} GwrAlog;

/* A worker's log on fd (borrowed; it must stay open until gwr_alog_free),
** with its flush timer on base. NULL when fd < 0 (the log is off) or out of
** memory. */
GwrAlog *gwr_alog_new(struct event_base *base, int fd);
/* Write what is buffered, free the timer and the buffer. Call on the
** worker's thread, or after it was joined. NULL is allowed. */
void     gwr_alog_free(GwrAlog *a);
/* A line is written straight into a->buf: gwr_alog_begin makes room for
** max bytes (an upper bound of the line, computed with the bounds below) and
** returns where to write; gwr_alog_end takes the end of the line (after its
** '\n'), counts it, and writes the buffer if it passed 16 KB. */
char    *gwr_alog_begin(GwrAlog *a, size_t max);
void     gwr_alog_end(GwrAlog *a, char *end);

/* Pieces of a line: each writes at o and returns the end. */
/* "2026-11-28T06:37:06.123Z" (quoted, 26 bytes): the wall clock, UTC, ms. */
char *gwr_alog_time(GwrAlog *a, char *o);
/* s[0..n) as a JSON string: '"', '\\' and control bytes escaped; bytes
** past 0x7F kept when s is valid UTF-8, else escaped as \u00XX. At most
** GWR_ALOG_STR_MAX(n) bytes. */
#define GWR_ALOG_STR_MAX(n) (6 * (size_t)(n) + 2)
char *gwr_alog_str(char *o, const char *s, size_t n);
/* A number (at most 20 bytes); microseconds as milliseconds with three
** decimals, 1234 → 1.234 (at most 24 bytes). */
char *gwr_alog_u64(char *o, uint64_t v);
char *gwr_alog_ms(char *o, uint64_t us);
/* A request target as a JSON string, with the value of every query parameter
** that may carry a secret replaced by ***: a name (percent-decoded, any case)
** that is one of names[0..n) (the program's `from query` names), or that is
** or ends with token, key, secret, password, passwd, signature, credential,
** or is code, sig, auth, jwt, session; and any value (or bare parameter)
** that looks like a JWT ("eyJ…" with a dot). An absolute-form target loses its
** scheme and authority (which could hold user:password@). At most
** GWR_ALOG_TARGET_MAX(n) bytes. */
#define GWR_ALOG_TARGET_MAX(n) (9 * (size_t)(n) + 8)
char *gwr_alog_target(char *o, const char *t, size_t n, const char *const *names, int nnames);
/* gwr_alog_str appended to a GwBuf (for other JSON: /routes). */
void  gwr_alog_buf_str(GwBuf *b, const char *s, size_t n);

/* Failed writes, and the lines they dropped (all workers). */
uint64_t gwr_alog_errors(void);
uint64_t gwr_alog_dropped(void);

#endif
