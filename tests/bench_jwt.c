/*
** bench_jwt.c — speed of the JWT verifier (runtime/gwr_jwt.c). Not a test.
**
**   build/bench_jwt [N]        (N new tokens per run, default 2000)
**
** Makes an RSA 2048, an EC P-256 key and an HMAC secret, compiles a program
** with one key-file policy each, signs N distinct tokens per algorithm, and
** times gwr_jwt_verify():
**   new     every token once, on a fresh verifier (cache misses: decode,
**           header, key lookup, signature, claims, cache insert);
**   cached  one token verified again and again (SHA-256 of the token, cache
**           lookup, claims parsed into the arena).
** Each figure is the median of 7 runs, in µs per verification, one thread.
** Verifications share an arena that is reset every 64 calls (a request's
** arena exists anyway; its first chunk is not the verifier's cost).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include "gwc.h"
#include "gw_bytecode.h"
#include "gw_util.h"
#include "gwr_jwt.h"

#define RUNS 7

static char dir[64];

static void die(const char *m) { fprintf(stderr, "bench_jwt: %s\n", m); exit(2); }

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static char *b64u(const unsigned char *p, size_t n) {
  static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  char *o = malloc(n * 4 / 3 + 4), *q = o;
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *q++ = al[v >> 18]; *q++ = al[v >> 12 & 63]; *q++ = al[v >> 6 & 63]; *q++ = al[v & 63];
  }
  if (n - i == 1) { uint32_t v = (uint32_t)p[i] << 16; *q++ = al[v >> 18]; *q++ = al[v >> 12 & 63]; }
  else if (n - i == 2) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
    *q++ = al[v >> 18]; *q++ = al[v >> 12 & 63]; *q++ = al[v >> 6 & 63];
  }
  *q = 0;
  return o;
}

static char *token(const char *alg, EVP_PKEY *pk, const unsigned char *sec, size_t sl, int i, long long now) {
  char hdr[64], pay[400];
  snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"k1\"}", alg);
  snprintf(pay, sizeof pay,
           "{\"iss\":\"https://login.example.com\",\"sub\":\"user-%06d\",\"aud\":\"mobile-app\","
           "\"exp\":%lld,\"iat\":%lld,\"scope\":\"read:home read:orders\",\"roles\":[\"user\"],\"jti\":\"%08x\"}",
           i, now + 3600, now - 10, (unsigned)i * 2654435761u);
  char *h = b64u((const unsigned char *)hdr, strlen(hdr)), *p = b64u((const unsigned char *)pay, strlen(pay));
  size_t n = strlen(h) + 1 + strlen(p);
  char *in = malloc(n + 1024);
  sprintf(in, "%s.%s", h, p);
  unsigned char sig[600];
  size_t sn = sizeof sig;
  if (alg[0] == 'H') {
    unsigned int ml;
    HMAC(EVP_sha256(), sec, (int)sl, (unsigned char *)in, n, sig, &ml);
    sn = ml;
  } else {
    EVP_MD_CTX *mc = EVP_MD_CTX_new();
    unsigned char der[200];
    size_t dl = sizeof der;
    if (EVP_DigestSignInit(mc, NULL, EVP_sha256(), NULL, pk) != 1) die("sign");
    if (alg[0] == 'E') {
      EVP_DigestSign(mc, der, &dl, (unsigned char *)in, n);
      const unsigned char *q = der;
      ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)dl);
      const BIGNUM *r, *s;
      ECDSA_SIG_get0(es, &r, &s);
      BN_bn2binpad(r, sig, 32);
      BN_bn2binpad(s, sig + 32, 32);
      ECDSA_SIG_free(es);
      sn = 64;
    } else {
      EVP_DigestSign(mc, sig, &sn, (unsigned char *)in, n);
    }
    EVP_MD_CTX_free(mc);
  }
  char *s = b64u(sig, sn);
  sprintf(in + n, ".%s", s);
  free(h); free(p); free(s);
  return in;
}

static void write_file(const char *name, const void *p, size_t n) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n) die("write");
  fclose(f);
}

static void write_pem(const char *name, EVP_PKEY *pk) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  PEM_write_PUBKEY(f, pk);
  fclose(f);
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static GwProgram *prog;

static GwrJwt *mk(uint32_t a) {
  char err[300];
  GwrJwt *j = gwr_jwt_new(prog, a, err, sizeof err);
  if (!j) die(err);
  return j;
}

/* Verify toks[0..n) once each on a fresh verifier; µs per verification. */
static double run_new(uint32_t a, char **toks, int n, long long now) {
  GwrJwt *j = mk(a);
  GwArena ar;
  gw_arena_init(&ar);
  double t0 = now_us();
  for (int i = 0; i < n; i++) {
    GwValue *c;
    const char *r;
    if (gwr_jwt_verify(j, toks[i], strlen(toks[i]), now, &ar, &c, &r)) { fprintf(stderr, "refused: %s\n", r); die("verify"); }
    if ((i & 63) == 63) { gw_arena_free(&ar); gw_arena_init(&ar); }
  }
  double us = (now_us() - t0) / n;
  gw_arena_free(&ar);
  gwr_jwt_free(j);
  return us;
}

static double run_cached(GwrJwt *j, const char *tok, int n, long long now) {
  GwArena ar;
  gw_arena_init(&ar);
  size_t tl = strlen(tok);
  double t0 = now_us();
  for (int i = 0; i < n; i++) {
    GwValue *c;
    const char *r;
    if (gwr_jwt_verify(j, tok, tl, now, &ar, &c, &r)) die("cached verify");
    if ((i & 63) == 63) { gw_arena_free(&ar); gw_arena_init(&ar); }
  }
  double us = (now_us() - t0) / n;
  gw_arena_free(&ar);
  return us;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  if (n < 10) n = 10;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  snprintf(dir, sizeof dir, "/tmp/gwjwtb.XXXXXX");
  if (!mkdtemp(dir)) die("mkdtemp");
  EVP_PKEY *rsa = EVP_RSA_gen(2048), *ec = EVP_EC_gen("P-256");
  unsigned char sec[32];
  for (int i = 0; i < 32; i++) sec[i] = (unsigned char)('A' + i);
  write_pem("rsa.pem", rsa);
  write_pem("ec.pem", ec);
  write_file("hs.key", sec, sizeof sec);
  const char *src =
    "auth rs jwt {\n algorithms RS256\n key file \"rsa.pem\"\n issuer \"https://login.example.com\"\n audience \"mobile-app\"\n}\n"
    "auth es jwt {\n algorithms ES256\n key file \"ec.pem\"\n issuer \"https://login.example.com\"\n audience \"mobile-app\"\n}\n"
    "auth hs jwt {\n algorithms HS256\n key file \"hs.key\"\n issuer \"https://login.example.com\"\n audience \"mobile-app\"\n}\n";
  write_file("b.gw", src, strlen(src));
  char path[256];
  snprintf(path, sizeof path, "%s/b.gw", dir);
  const char *paths[1] = { path };
  GwBuf img = { 0 };
  if (gwc_compile_paths(paths, 1, stderr, &img)) die("compile");
  char err[256];
  if (!(prog = gw_program_load(img.p, img.n, err, sizeof err))) die(err);
  gw_buf_free(&img);

  long long now = (long long)time(NULL);
  static const char *const algs[3] = { "RS256", "ES256", "HS256" };
  printf("gwr_jwt_verify, µs per verification (median of %d runs, %d new tokens per run)\n", RUNS, n);
  printf("%-6s %10s %10s\n", "alg", "new", "cached");
  for (uint32_t a = 0; a < 3; a++) {
    char **toks = malloc(sizeof *toks * (size_t)n);
    for (int i = 0; i < n; i++)
      toks[i] = token(algs[a], a == 0 ? rsa : a == 1 ? ec : NULL, sec, sizeof sec, i, now);
    double tn[RUNS], tc[RUNS];
    for (int r = 0; r < RUNS; r++) tn[r] = run_new(a, toks, n, now);
    GwrJwt *j = mk(a);
    run_cached(j, toks[0], 1000, now);   /* warm: the first call fills the cache */
    for (int r = 0; r < RUNS; r++) tc[r] = run_cached(j, toks[0], 100000, now);
    gwr_jwt_free(j);
    qsort(tn, RUNS, sizeof *tn, cmpd);
    qsort(tc, RUNS, sizeof *tc, cmpd);
    printf("%-6s %10.2f %10.3f\n", algs[a], tn[RUNS / 2], tc[RUNS / 2]);
    for (int i = 0; i < n; i++) free(toks[i]);
    free(toks);
  }
  gw_program_free(prog);
  EVP_PKEY_free(rsa);
  EVP_PKEY_free(ec);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "bench_jwt: could not remove %s\n", dir);
  curl_global_cleanup();
  return 0;
}
