/*
** gw_util.c — arena, byte buffer, SHA-256 and file reading (see gw_util.h).
*/
#include "gw_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <openssl/evp.h>

struct GwArenaChunk {
  GwArenaChunk *next;
  size_t size, used;
  _Alignas(16) unsigned char data[];
};

#define CHUNK_MIN 16384

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) { fputs("gw: out of memory\n", stderr); abort(); }
  return p;
}

void gw_arena_init(GwArena *a) { a->head = NULL; a->used = 0; }

/* Chunks of the standard size are kept per thread for the next arena: a
** request's arena then costs no malloc/free, and the allocator does not
** shrink and regrow its heap between requests (measured: an mprotect every
** ~60 requests, and the page faults after it). At most SPARE_MAX are kept. */
#define SPARE_MAX 64
static _Thread_local GwArenaChunk *spare;
static _Thread_local int nspare;
static _Thread_local int spare_registered;
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

void gw_arena_drop_spares(void) {
  while (spare) { GwArenaChunk *n = spare->next; free(spare); spare = n; }
  nspare = 0;
}

/* A thread's spares are freed when it exits (a key destructor runs while its
** thread-local storage is still there), the main thread's at exit(). */
static void spare_thread_exit(void *unused) { (void)unused; gw_arena_drop_spares(); }
static void spare_init(void) {
  pthread_key_create(&spare_key, spare_thread_exit);
  atexit(gw_arena_drop_spares);
}
static void spare_register(void) {
  pthread_once(&spare_once, spare_init);
  pthread_setspecific(spare_key, (void *)1);   /* non-NULL: the destructor runs */
  spare_registered = 1;
}

void gw_arena_free(GwArena *a) {
  GwArenaChunk *c = a->head;
  while (c) {
    GwArenaChunk *n = c->next;
    if (c->size == CHUNK_MIN && nspare < SPARE_MAX) {
      if (!spare_registered) spare_register();
      c->next = spare; spare = c; nspare++;
    }
    else free(c);
    c = n;
  }
  a->head = NULL; a->used = 0;
}

void *gw_arena_alloc_raw(GwArena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  GwArenaChunk *c = a->head;
  if (!c || c->size - c->used < n) {
    size_t sz = n > CHUNK_MIN ? n : CHUNK_MIN;
    if (sz == CHUNK_MIN && spare) { c = spare; spare = c->next; nspare--; }
    else c = xmalloc(sizeof *c + sz);
    c->size = sz; c->used = 0;
    c->next = a->head; a->head = c;
  }
  void *p = c->data + c->used;
  c->used += n; a->used += n;
  return p;
}

void *gw_arena_alloc(GwArena *a, size_t n) {
  void *p = gw_arena_alloc_raw(a, n);
  memset(p, 0, n);
  return p;
}

char *gw_arena_strndup(GwArena *a, const char *s, size_t n) {
  char *p = gw_arena_alloc_raw(a, n + 1);   /* every byte is written below */
  if (n) memcpy(p, s, n);
  p[n] = 0;
  return p;
}

char *gw_arena_printf(GwArena *a, const char *fmt, ...) {
  GwBuf b = {0};
  va_list ap;
  va_start(ap, fmt); gw_buf_vprintf(&b, fmt, ap); va_end(ap);
  char *s = gw_arena_strndup(a, b.p ? b.p : "", b.n);
  gw_buf_free(&b);
  return s;
}

void gw_buf_free(GwBuf *b) { free(b->p); b->p = NULL; b->n = b->cap = 0; }

void gw_buf_reserve(GwBuf *b, size_t extra) {
  if (b->cap - b->n > extra) return;   /* keep one byte for the NUL */
  size_t cap = b->cap ? b->cap : 64;
  while (cap - b->n <= extra) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) { fputs("gw: out of memory\n", stderr); abort(); }
  b->p = p; b->cap = cap;
}

void gw_buf_add(GwBuf *b, const void *p, size_t n) {
  gw_buf_reserve(b, n);
  if (n) memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = 0;
}

void gw_buf_addc(GwBuf *b, char c) { gw_buf_add(b, &c, 1); }
void gw_buf_adds(GwBuf *b, const char *s) { gw_buf_add(b, s, strlen(s)); }

void gw_buf_vprintf(GwBuf *b, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) return;
  gw_buf_reserve(b, (size_t)n + 1);
  vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
  b->n += (size_t)n;
}

void gw_buf_printf(GwBuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt); gw_buf_vprintf(b, fmt, ap); va_end(ap);
}

void gw_buf_add_u32(GwBuf *b, uint32_t v) {
  unsigned char t[4];
  gw_put_u32(t, v);
  gw_buf_add(b, t, 4);
}

const char *gw_buf_cstr(GwBuf *b) {
  if (!b->p) gw_buf_reserve(b, 1), b->p[0] = 0;
  return b->p;
}

void gw_sha256(const void *p, size_t n, unsigned char out[32]) {
  unsigned int len = 32;
  if (!EVP_Digest(p, n, out, &len, EVP_sha256(), NULL)) memset(out, 0, 32);
}

int gw_read_file(const char *path, size_t max, char **data, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  struct stat st;
  if (fstat(fileno(f), &st) != 0) { fclose(f); return -1; }
  if (S_ISDIR(st.st_mode)) { fclose(f); errno = EISDIR; return -1; }
  GwBuf b = {0};
  char tmp[65536];
  size_t n;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
    if (b.n + n > max) { gw_buf_free(&b); fclose(f); errno = EFBIG; return -1; }
    gw_buf_add(&b, tmp, n);
  }
  int err = ferror(f);
  fclose(f);
  if (err) { gw_buf_free(&b); errno = EIO; return -1; }
  gw_buf_cstr(&b);
  *data = b.p; *len = b.n;
  return 0;
}

int gw_edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 40 || lb > 40) return 99;
  int d[41][41];
  for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      int c = d[i-1][j-1] + (a[i-1] != b[j-1]);
      if (d[i-1][j] + 1 < c) c = d[i-1][j] + 1;
      if (d[i][j-1] + 1 < c) c = d[i][j-1] + 1;
      /* a swap of two neighbours costs one */
      if (i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] && d[i-2][j-2] + 1 < c)
        c = d[i-2][j-2] + 1;
      d[i][j] = c;
    }
  return d[la][lb] > 99 ? 99 : d[la][lb];
}

void gw_hex(char *out, const void *p, size_t n) {
  static const char d[] = "0123456789abcdef";
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) { out[2 * i] = d[b[i] >> 4]; out[2 * i + 1] = d[b[i] & 15]; }
  out[2 * n] = 0;
}

size_t gw_form_decode(char *out, const char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '+') out[k++] = ' ';
    else if (s[i] == '%' && i + 2 < n && gw_hexval(s[i + 1]) >= 0 && gw_hexval(s[i + 2]) >= 0) {
      out[k++] = (char)(gw_hexval(s[i + 1]) * 16 + gw_hexval(s[i + 2]));
      i += 2;
    } else out[k++] = s[i];
  }
  return k;
}

int gw_utf8_valid(const void *p, size_t n) {
  const unsigned char *s = p;
  size_t i = 0;
  while (i < n) {
    /* ASCII, the common case, eight bytes at a time */
    while (n - i >= 8) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i == n) break;
    unsigned c = s[i];
    if (c < 0x80) { i++; continue; }
    if (c < 0xC2 || c > 0xF4) return 0;
    size_t len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (n - i < len) return 0;
    unsigned c1 = s[i + 1];
    if ((c1 & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0) ||
        (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90)) return 0;
    for (size_t j = 2; j < len; j++)
      if ((s[i + j] & 0xC0) != 0x80) return 0;
    i += len;
  }
  return 1;
}

int gw_http_token(const char *s, size_t n) {
  if (!n) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          (c && strchr("!#$%&'*+-.^_`|~", c)))) return 0;
  }
  return 1;
}

int gw_header_class(const char *name, size_t n) {
  static const struct { const char *name; int cls; } t[] = {
    { "connection", GW_HDR_HOP }, { "keep-alive", GW_HDR_HOP }, { "proxy-connection", GW_HDR_HOP },
    { "te", GW_HDR_HOP }, { "trailer", GW_HDR_HOP }, { "transfer-encoding", GW_HDR_HOP },
    { "upgrade", GW_HDR_HOP }, { "proxy-authenticate", GW_HDR_HOP }, { "proxy-authorization", GW_HDR_HOP },
    { "host", GW_HDR_FRAMING }, { "content-length", GW_HDR_FRAMING }, { "expect", GW_HDR_FRAMING },
    { "forwarded", GW_HDR_FORWARDING }, { "x-real-ip", GW_HDR_FORWARDING },
    { "x-client-ip", GW_HDR_FORWARDING }, { "true-client-ip", GW_HDR_FORWARDING },
    { "client-ip", GW_HDR_FORWARDING }, { "x-cluster-client-ip", GW_HDR_FORWARDING },
    { "cf-connecting-ip", GW_HDR_FORWARDING },
    { "x-request-id", GW_HDR_GATEWAY }, { "traceparent", GW_HDR_GATEWAY }, { "x-gw-partial", GW_HDR_GATEWAY },
  };
  if (n >= 12 && !strncasecmp(name, "x-forwarded-", 12)) return GW_HDR_FORWARDING;
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (strlen(t[i].name) == n && !strncasecmp(t[i].name, name, n)) return t[i].cls;
  return 0;
}
