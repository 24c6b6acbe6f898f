/*
** gw_util.h — small shared helpers: an arena allocator, a growable byte
** buffer, little-endian I/O and SHA-256. Used by both gwc and gwd.
**
** Not here: anything that knows about the language or the bytecode.
*/
#ifndef GW_UTIL_H
#define GW_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

/* An arena: many allocations, one free. Memory is never returned piecemeal.
** gw_arena_alloc() returns zeroed memory owned by the arena. */
typedef struct GwArenaChunk GwArenaChunk;
typedef struct GwArena {
  GwArenaChunk *head;
  size_t used;        /* bytes handed out, for statistics */
} GwArena;

void  gw_arena_init(GwArena *a);
void  gw_arena_free(GwArena *a);
/* Free the chunks this thread keeps for its next arenas (done by itself at
** thread exit and at exit()). */
void  gw_arena_drop_spares(void);
void *gw_arena_alloc(GwArena *a, size_t n);
/* The same, not zeroed: for memory the caller fills at once. */
void *gw_arena_alloc_raw(GwArena *a, size_t n);
/* A NUL-terminated copy of s[0..n) in the arena. */
char *gw_arena_strndup(GwArena *a, const char *s, size_t n);
char *gw_arena_printf(GwArena *a, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

/* A growable byte buffer. The data is owned by the buffer; gw_buf_free()
** releases it. Allocation failure aborts (the compiler and the loader are
** not in a position to continue without memory). */
typedef struct GwBuf {
  char  *p;
  size_t n, cap;
} GwBuf;

void gw_buf_free(GwBuf *b);
void gw_buf_reserve(GwBuf *b, size_t extra);
void gw_buf_add(GwBuf *b, const void *p, size_t n);
void gw_buf_addc(GwBuf *b, char c);
void gw_buf_adds(GwBuf *b, const char *s);
void gw_buf_printf(GwBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gw_buf_vprintf(GwBuf *b, const char *fmt, va_list ap);
void gw_buf_add_u32(GwBuf *b, uint32_t v);   /* little-endian */
/* Returns b->p, NUL-terminated (the NUL is not counted in n). */
const char *gw_buf_cstr(GwBuf *b);

static inline uint32_t gw_get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t gw_get_u64(const unsigned char *p) {
  return (uint64_t)gw_get_u32(p) | (uint64_t)gw_get_u32(p + 4) << 32;
}
static inline void gw_put_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}

/* SHA-256 of p[0..n) into out[32] (OpenSSL EVP). */
void gw_sha256(const void *p, size_t n, unsigned char out[32]);

/* Read a whole file. Returns 0 and an owned, NUL-terminated buffer, or -1
** with errno set. Refuses files larger than max bytes (errno = EFBIG). */
int gw_read_file(const char *path, size_t max, char **data, size_t *len);

/* The value of hex digit c, or -1. */
static inline int gw_hexval(int c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}
/* p[0..n) in lower-case hex at out (2n bytes and a NUL). */
void gw_hex(char *out, const void *p, size_t n);
/* A form-encoded component s[0..n) ('+' is a space, %XX a byte; a '%' not
** followed by two hex digits stays) decoded at out, which has room for n
** bytes; returns the decoded length (no NUL added). */
size_t gw_form_decode(char *out, const char *s, size_t n);

/* Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing
** past U+10FFFF. NUL bytes are allowed (callers that refuse them check).
** The one validator of the tree: the lexer, the .gwb verifier, the HTTP
** layer, JSON extraction and the exchange all use it. */
int gw_utf8_valid(const void *s, size_t n);

/* An HTTP token (RFC 9110 5.6.2): header names, methods. */
int gw_http_token(const char *s, size_t n);

/* What a header name means to a gateway (case-insensitive), one list for the
** compiler's checks, the calls' headers and the proxy:
**   HOP        hop-by-hop (RFC 9110 7.6.1): never forwarded
**   FRAMING    framing the gateway sets itself: Host, Content-Length, Expect
**   FORWARDING a client's claims about the path: Forwarded, X-Forwarded-*,
**              X-Real-IP, …: never trusted, never passed on
**   GATEWAY    the gateway's own: X-Request-Id, traceparent, X-Gw-Partial */
enum { GW_HDR_HOP = 1, GW_HDR_FRAMING = 2, GW_HDR_FORWARDING = 4, GW_HDR_GATEWAY = 8 };
int gw_header_class(const char *name, size_t n);

/* Levenshtein distance between two short strings, capped at 99. */
int gw_edit_distance(const char *a, const char *b);

#endif
