/*
** test_jwt.c — unit tests of the JWT verifier (runtime/gwr_jwt.c).
**
**   build/test_jwt            (from the repo root; no arguments)
**
** Makes keys at test time with OpenSSL (RSA 2048, EC P-256 and P-384,
** Ed25519, HMAC secrets), writes key files, a certificate and a JWKS into a
** temporary directory, compiles a small program declaring one jwt policy
** per case (gwc_compile_paths + gw_program_load), signs tokens itself with
** EVP and checks every acceptance and refusal, the verified-token cache, and
** a JWKS url served by a tiny HTTP server on 127.0.0.1 inside the process
** (first fetch, one refetch on an unknown kid, none for a second unknown kid
** within 30 s, key rotation invalidating cached tokens, the server down
** keeping the last good keys). Ends with "N passed, N failed".
*/
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include "gwc.h"
#include "gw_bytecode.h"
#include "gw_util.h"
#include "gwr_json.h"
#include "gwr_jwt.h"
#include "gwr_value.h"

#define NOW 1700000000LL

static int passed, failed;
static char dir[64];

static void ok(const char *name) { passed++; printf("ok   %s\n", name); }
static void bad(const char *name, const char *why) { failed++; printf("FAIL %s: %s\n", name, why); }
static void check(const char *name, int cond, const char *why) { if (cond) ok(name); else bad(name, why); }

static void die(const char *m) { fprintf(stderr, "test_jwt: %s\n", m); exit(2); }

/* ---- encoding and signing ----------------------------------------------------- */

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
static char *b64us(const char *s) { return b64u((const unsigned char *)s, strlen(s)); }

enum { S_RAW, S_DER };   /* ES* signature form */

/* Sign in[0..n) for alg with pk (or the HMAC secret). Returns the length. */
static size_t sign(const char *alg, EVP_PKEY *pk, const void *sec, size_t sl, const char *in, size_t n,
                   unsigned char *out, int form) {
  const EVP_MD *md = strstr(alg, "384") ? EVP_sha384() : strstr(alg, "512") ? EVP_sha512() : EVP_sha256();
  if (alg[0] == 'H') {
    unsigned int ml = 0;
    HMAC(md, sec, (int)sl, (const unsigned char *)in, n, out, &ml);
    return ml;
  }
  EVP_MD_CTX *mc = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pc = NULL;
  if (EVP_DigestSignInit(mc, &pc, !strcmp(alg, "EdDSA") ? NULL : md, NULL, pk) != 1) die("sign init");
  if (alg[0] == 'P') {
    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST);
  }
  unsigned char tmp[1024];
  size_t tl = sizeof tmp;
  if (EVP_DigestSign(mc, tmp, &tl, (const unsigned char *)in, n) != 1) die("sign");
  EVP_MD_CTX_free(mc);
  if (alg[0] == 'E' && alg[1] == 'S' && form == S_RAW) {
    size_t half = strstr(alg, "384") ? 48 : 32;
    const unsigned char *p = tmp;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)tl);
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(es, &r, &s);
    BN_bn2binpad(r, out, (int)half);
    BN_bn2binpad(s, out + half, (int)half);
    ECDSA_SIG_free(es);
    return 2 * half;
  }
  memcpy(out, tmp, tl);
  return tl;
}

/* A token: header JSON, payload JSON, signed as alg (which may differ from
** the header's alg, for the attacks). */
static char *token_f(const char *hdr, const char *pay, const char *alg, EVP_PKEY *pk,
                     const void *sec, size_t sl, int form) {
  char *h = b64us(hdr), *p = b64us(pay);
  size_t n = strlen(h) + 1 + strlen(p);
  char *in = malloc(n + 2000);
  sprintf(in, "%s.%s", h, p);
  unsigned char sig[1024];
  size_t sn = sign(alg, pk, sec, sl, in, n, sig, form);
  char *s = b64u(sig, sn);
  in = realloc(in, n + strlen(s) + 2);
  sprintf(in + n, ".%s", s);
  free(h); free(p); free(s);
  return in;
}
static char *token(const char *hdr, const char *pay, const char *alg, EVP_PKEY *pk, const void *sec, size_t sl) {
  return token_f(hdr, pay, alg, pk, sec, sl, S_RAW);
}

/* ---- keys and files ---------------------------------------------------------- */

static EVP_PKEY *k_rsa, *k_rsa2, *k_ec256, *k_ec384, *k_ed, *k_u1, *k_u2, *k_u3;
static unsigned char hs_secret[48], jwks_secret[32];
static char *rsa_pem;          /* the RSA public key's PEM text */
static size_t rsa_pem_len;

static char *path_of(const char *name) {
  static char buf[8][256];
  static int i;
  char *b = buf[i++ % 8];
  snprintf(b, 256, "%s/%s", dir, name);
  return b;
}

static void write_file(const char *name, const void *p, size_t n) {
  FILE *f = fopen(path_of(name), "wb");
  if (!f || fwrite(p, 1, n, f) != n) die("write");
  fclose(f);
}

static char *pubkey_pem(EVP_PKEY *pk, size_t *len) {
  BIO *b = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(b, pk);
  char *d;
  long n = BIO_get_mem_data(b, &d);
  char *r = malloc((size_t)n + 1);
  memcpy(r, d, (size_t)n);
  r[n] = 0;
  BIO_free(b);
  if (len) *len = (size_t)n;
  return r;
}

static void write_pem(const char *name, EVP_PKEY *pk) {
  size_t n;
  char *p = pubkey_pem(pk, &n);
  write_file(name, p, n);
  free(p);
}

static void write_cert(const char *name, EVP_PKEY *pk) {
  X509 *x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, pk);
  X509_NAME *nm = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"test", -1, -1, 0);
  X509_set_issuer_name(x, nm);
  if (!X509_sign(x, pk, EVP_sha256())) die("cert");
  FILE *f = fopen(path_of(name), "w");
  PEM_write_X509(f, x);
  fclose(f);
  X509_free(x);
}

static char *bn_b64u(EVP_PKEY *pk, const char *param, int pad) {
  BIGNUM *bn = NULL;
  if (EVP_PKEY_get_bn_param(pk, param, &bn) != 1) die("bn param");
  unsigned char buf[600];
  int n = pad ? pad : BN_num_bytes(bn);
  BN_bn2binpad(bn, buf, n);
  BN_free(bn);
  return b64u(buf, (size_t)n);
}

/* JWKs as JSON text (static buffers, rotated). */
static char *jwk_rsa(EVP_PKEY *pk, const char *kid, const char *extra) {
  static char out[4][2000];
  static int i;
  char *o = out[i++ % 4];
  char *n = bn_b64u(pk, OSSL_PKEY_PARAM_RSA_N, 0), *e = bn_b64u(pk, OSSL_PKEY_PARAM_RSA_E, 0);
  snprintf(o, 2000, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s}", kid, n, e, extra);
  free(n); free(e);
  return o;
}
static char *jwk_ec(EVP_PKEY *pk, const char *kid, const char *crv, int fl) {
  static char out[4][600];
  static int i;
  char *o = out[i++ % 4];
  char *x = bn_b64u(pk, OSSL_PKEY_PARAM_EC_PUB_X, fl), *y = bn_b64u(pk, OSSL_PKEY_PARAM_EC_PUB_Y, fl);
  snprintf(o, 600, "{\"kty\":\"EC\",\"crv\":\"%s\",\"kid\":\"%s\",\"use\":\"sig\",\"x\":\"%s\",\"y\":\"%s\"}", crv, kid, x, y);
  free(x); free(y);
  return o;
}
static char *jwk_ed(EVP_PKEY *pk, const char *kid) {
  static char o[300];
  unsigned char raw[32];
  size_t l = 32;
  EVP_PKEY_get_raw_public_key(pk, raw, &l);
  char *x = b64u(raw, l);
  snprintf(o, sizeof o, "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"%s\",\"x\":\"%s\"}", kid, x);
  free(x);
  return o;
}

/* ---- the in-process JWKS server -------------------------------------------------- */

static int srv_fd = -1, srv_port;
static atomic_int srv_stop, srv_count_a, srv_count_b, srv_fail_b;
static pthread_t srv_thread;
static pthread_mutex_t srv_mu = PTHREAD_MUTEX_INITIALIZER;
static char *doc_a, *doc_b;

static void set_doc(char **d, const char *s) {
  pthread_mutex_lock(&srv_mu);
  free(*d);
  *d = strdup(s);
  pthread_mutex_unlock(&srv_mu);
}

static void *srv_main(void *arg) {
  while (!atomic_load(&srv_stop)) {
    struct pollfd pf = { srv_fd, POLLIN, 0 };
    if (poll(&pf, 1, 20) <= 0) continue;
    int c = accept(srv_fd, NULL, NULL);
    if (c < 0) continue;
    char req[4096];
    size_t n = 0;
    while (n < sizeof req - 1) {
      ssize_t r = read(c, req + n, sizeof req - 1 - n);
      if (r <= 0) break;
      n += (size_t)r;
      req[n] = 0;
      if (strstr(req, "\r\n\r\n")) break;
    }
    req[n] = 0;
    int is_b = strncmp(req, "GET /b", 6) == 0;
    atomic_fetch_add(is_b ? &srv_count_b : &srv_count_a, 1);
    char *resp;
    pthread_mutex_lock(&srv_mu);
    const char *body = is_b ? doc_b : doc_a;
    if (is_b && atomic_load(&srv_fail_b)) {
      resp = strdup("HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    } else {
      size_t bl = strlen(body);
      resp = malloc(bl + 200);
      sprintf(resp, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s", bl, body);
    }
    pthread_mutex_unlock(&srv_mu);
    size_t rl = strlen(resp), off = 0;
    while (off < rl) { ssize_t w = write(c, resp + off, rl - off); if (w <= 0) break; off += (size_t)w; }
    free(resp);
    close(c);
  }
  return NULL;
}

static void srv_start(void) {
  srv_fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = { 0 };
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(srv_fd, (struct sockaddr *)&sa, sizeof sa) || listen(srv_fd, 16)) die("listen");
  socklen_t sl = sizeof sa;
  getsockname(srv_fd, (struct sockaddr *)&sa, &sl);
  srv_port = ntohs(sa.sin_port);
  pthread_create(&srv_thread, NULL, srv_main, NULL);
}

static void srv_stop_now(void) {
  if (srv_fd < 0) return;
  atomic_store(&srv_stop, 1);
  pthread_join(srv_thread, NULL);
  close(srv_fd);
  srv_fd = -1;
}

static void sleep_ms(int ms) {
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}

/* ---- the program ---------------------------------------------------------------- */

static GwProgram *prog;

static uint32_t auth_index(const char *name) {
  for (uint32_t i = 0; i < prog->n_auths; i++)
    if (!strcmp(gw_const_str(prog, prog->auths[i].name, NULL), name)) return i;
  die("no such auth");
  return 0;
}

static GwrJwt *mk(const char *name) {
  char err[300];
  GwrJwt *j = gwr_jwt_new(prog, auth_index(name), err, sizeof err);
  if (!j) { printf("gwr_jwt_new(%s): %s\n", name, err); die("policy"); }
  return j;
}

/* gwr_jwt_new must refuse policy name with a message containing want. */
static void expect_new_fails(const char *name, const char *want) {
  char err[300] = "";
  GwrJwt *j = gwr_jwt_new(prog, auth_index(name), err, sizeof err);
  char t[100], why[500];
  snprintf(t, sizeof t, "load refused: %s", name);
  if (j) { gwr_jwt_free(j); bad(t, "accepted"); return; }
  snprintf(why, sizeof why, "message '%s' lacks '%s'", err, want);
  check(t, strstr(err, want) != NULL && strstr(err, name) != NULL, why);
}

/* Verify tok; want 0 or 401 with a reason containing want_reason. */
static void expect(const char *name, GwrJwt *j, const char *tok, int64_t now, int want, const char *want_reason) {
  GwArena a;
  gw_arena_init(&a);
  GwValue *claims = (GwValue *)1;
  const char *reason = NULL;
  int rc = gwr_jwt_verify(j, tok, strlen(tok), now, &a, &claims, &reason);
  char why[300];
  if (rc != want) {
    snprintf(why, sizeof why, "rc %d (reason '%s'), want %d", rc, reason ? reason : "(null)", want);
    bad(name, why);
  } else if (want == 0 && (!claims || claims == (GwValue *)1 || claims->type != GWV_OBJECT)) {
    bad(name, "no claims object");
  } else if (want != 0 && (claims || !reason || !*reason || (want_reason && !strstr(reason, want_reason)))) {
    snprintf(why, sizeof why, "reason '%s', want '%s'", reason ? reason : "(null)", want_reason ? want_reason : "");
    bad(name, why);
  } else if (want != 0 && strlen(tok) > 10 && strstr(tok, reason) && strlen(reason) > 8) {
    bad(name, "reason contains token text");
  } else {
    ok(name);
  }
  gw_arena_free(&a);
}

static char *claims_json(GwrJwt *j, const char *tok, int64_t now) {
  GwArena a;
  gw_arena_init(&a);
  GwValue *c = NULL;
  const char *r;
  char *out = NULL;
  if (gwr_jwt_verify(j, tok, strlen(tok), now, &a, &c, &r) == 0) {
    GwBuf b = { 0 };
    gwv_json(c, &b);
    out = strdup(gw_buf_cstr(&b));
    gw_buf_free(&b);
  }
  gw_arena_free(&a);
  return out;
}

static int verify_ok(GwrJwt *j, const char *tok, int64_t now) {
  GwArena a;
  gw_arena_init(&a);
  GwValue *c;
  const char *r;
  int rc = gwr_jwt_verify(j, tok, strlen(tok), now, &a, &c, &r);
  gw_arena_free(&a);
  return rc == 0;
}

static char pay_buf[4096];
static const char *pay_std(void) {
  snprintf(pay_buf, sizeof pay_buf,
           "{\"sub\":\"u123\",\"iss\":\"https://issuer.test\",\"aud\":\"mobile\",\"exp\":%lld,\"iat\":%lld,\"roles\":[\"admin\"]}",
           NOW + 600, NOW - 5);
  return pay_buf;
}

/* ---- concurrency (for ASan/TSan) -------------------------------------------------- */

typedef struct TArg { GwrJwt *j; char **toks; int n; int bad; } TArg;
static void *conc_main(void *arg) {
  TArg *t = arg;
  for (int r = 0; r < 20; r++)
    for (int i = 0; i < t->n; i++)
      if (!verify_ok(t->j, t->toks[i], NOW)) t->bad++;
  return NULL;
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  snprintf(dir, sizeof dir, "/tmp/gwjwt.XXXXXX");
  if (!mkdtemp(dir)) die("mkdtemp");

  /* keys */
  k_rsa = EVP_RSA_gen(2048);
  k_rsa2 = EVP_RSA_gen(2048);
  k_u1 = EVP_RSA_gen(2048);
  k_u2 = EVP_RSA_gen(2048);
  k_u3 = EVP_RSA_gen(2048);
  k_ec256 = EVP_EC_gen("P-256");
  k_ec384 = EVP_EC_gen("P-384");
  k_ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  EVP_PKEY *k_rsa1024 = EVP_RSA_gen(1024);
  if (!k_rsa || !k_rsa2 || !k_ec256 || !k_ec384 || !k_ed || !k_u1 || !k_u2 || !k_u3 || !k_rsa1024) die("keygen");
  for (size_t i = 0; i < sizeof hs_secret; i++) hs_secret[i] = (unsigned char)('a' + i % 26);
  RAND_bytes(jwks_secret, sizeof jwks_secret);

  /* files */
  char hsfile[sizeof hs_secret + 1];
  memcpy(hsfile, hs_secret, sizeof hs_secret);
  hsfile[sizeof hs_secret] = '\n';                      /* one trailing newline: trimmed */
  write_file("hs.key", hsfile, sizeof hsfile);
  write_file("short.key", "tooshort\n", 9);
  write_pem("rsa.pem", k_rsa);
  rsa_pem = pubkey_pem(k_rsa, &rsa_pem_len);
  write_file("rsa_as_secret.key", rsa_pem, rsa_pem_len);
  write_cert("rsa_cert.pem", k_rsa2);
  write_pem("ec256.pem", k_ec256);
  write_pem("ec384.pem", k_ec384);
  write_pem("ed.pem", k_ed);
  write_pem("rsa1024.pem", k_rsa1024);
  {
    const char *g = "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n";
    write_file("garbage.pem", g, strlen(g));
  }
  char *ks = b64u(jwks_secret, sizeof jwks_secret);
  char jwks[8000];
  snprintf(jwks, sizeof jwks,
           "{\"keys\":[%s,%s,%s,%s,"
           "{\"kty\":\"oct\",\"kid\":\"h1\",\"k\":\"%s\"},"
           "{\"kty\":\"RSA\",\"kid\":\"enc\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
           "{\"kty\":\"XYZ\",\"kid\":\"x\"},%s]}",
           jwk_rsa(k_rsa, "r1", ""), jwk_ec(k_ec256, "e1", "P-256", 32), jwk_ec(k_ec384, "e2", "P-384", 48),
           jwk_ed(k_ed, "d1"), ks, jwk_rsa(k_rsa2, "r2", ",\"alg\":\"PS256\""));
  free(ks);
  write_file("jwks.json", jwks, strlen(jwks));
  {
    const char *eo = "{\"keys\":[{\"kty\":\"oct\",\"use\":\"enc\",\"k\":\"AAAA\"}]}";
    write_file("jwks_enc_only.json", eo, strlen(eo));
  }

  srv_start();
  char buf[4000];
  snprintf(buf, sizeof buf, "{\"keys\":[%s]}", jwk_rsa(k_u1, "u1", ""));
  set_doc(&doc_a, buf);
  set_doc(&doc_b, buf);

  /* the program */
  char src[8000];
  snprintf(src, sizeof src,
    "auth hs jwt {\n algorithms HS256 HS384 HS512\n key file \"hs.key\"\n issuer \"https://issuer.test\"\n audience \"mobile\"\n leeway 30s\n}\n"
    "auth rs jwt {\n algorithms RS256 RS384 RS512 PS256 PS384 PS512\n key file \"rsa.pem\"\n leeway 30s\n}\n"
    "auth rscert jwt {\n algorithms RS256\n key file \"rsa_cert.pem\"\n}\n"
    "auth es256 jwt {\n algorithms ES256\n key file \"ec256.pem\"\n}\n"
    "auth es384 jwt {\n algorithms ES384\n key file \"ec384.pem\"\n}\n"
    "auth ed jwt {\n algorithms EdDSA\n key file \"ed.pem\"\n}\n"
    "auth jw jwt {\n algorithms HS256 RS256 PS256 ES256 ES384 EdDSA\n jwks file \"jwks.json\"\n}\n"
    "auth jwrs jwt {\n algorithms RS256\n jwks file \"jwks.json\"\n}\n"
    "auth ua jwt {\n algorithms RS256\n jwks url \"http://127.0.0.1:%d/a\" refresh 10m\n}\n"
    "auth ub jwt {\n algorithms RS256\n jwks url \"http://127.0.0.1:%d/b\" refresh 10s\n}\n"
    "auth udead jwt {\n algorithms RS256\n jwks url \"http://127.0.0.1:1/x\"\n}\n"
    "auth bad_missing jwt {\n algorithms RS256\n key file \"nonexistent.pem\"\n}\n"
    "auth bad_pem jwt {\n algorithms RS256\n key file \"garbage.pem\"\n}\n"
    "auth bad_type jwt {\n algorithms ES256\n key file \"rsa.pem\"\n}\n"
    "auth bad_hspem jwt {\n algorithms HS256\n key file \"rsa_as_secret.key\"\n}\n"
    "auth bad_short jwt {\n algorithms HS256\n key file \"short.key\"\n}\n"
    "auth bad_weak jwt {\n algorithms RS256\n key file \"rsa1024.pem\"\n}\n"
    "auth bad_jwks jwt {\n algorithms HS256\n jwks file \"jwks_enc_only.json\"\n}\n"
    "auth jw384 jwt {\n algorithms ES384\n jwks file \"jwks.json\"\n}\n"
    "auth bad_url jwt {\n algorithms RS256\n jwks url \"http://login.example.com/jwks\"\n}\n",
    srv_port, srv_port);
  write_file("t.gw", src, strlen(src));
  FILE *devnull = fopen("/dev/null", "w");
  GwBuf img = { 0 };
  const char *paths[1] = { path_of("t.gw") };
  int crc = gwc_compile_paths(paths, 1, stderr, &img);
  if (crc) die("compile");
  char err[300];
  prog = gw_program_load(img.p, img.n, err, sizeof err);
  if (!prog) die(err);
  gw_buf_free(&img);
  fclose(devnull);
  prog->auths[auth_index("ub")].jwks_refresh_ms = 200;   /* fast refresh for the test */

  /* ---- load errors ---- */
  expect_new_fails("bad_missing", "No such file");
  expect_new_fails("bad_pem", "no PEM public key");
  expect_new_fails("bad_type", "fits none of the policy's algorithms");
  expect_new_fails("bad_hspem", "PEM key cannot be an HMAC secret");
  expect_new_fails("bad_short", "at least 32 bytes");
  expect_new_fails("bad_weak", "2048");
  expect_new_fails("bad_jwks", "no key usable");
  expect_new_fails("bad_url", "https");
  {
    GwrJwt *j = mk("jw384");   /* only the P-384 key of the JWKS is used */
    check("jwks: keys of other types ignored", gwr_jwt_nkeys(j) == 1, "want 1 key");
    gwr_jwt_free(j);
  }

  GwrJwt *hs = mk("hs"), *rs = mk("rs"), *rscert = mk("rscert"), *es256 = mk("es256"),
         *es384 = mk("es384"), *ed = mk("ed"), *jw = mk("jw"), *jwrs = mk("jwrs");
  check("jwks file: usable keys", gwr_jwt_nkeys(jw) == 6, "want 6 keys (r1 e1 e2 d1 h1 r2)");
  char *t;
  char p[4096];

  /* ---- every algorithm ---- */
  static const char *const hsalgs[] = { "HS256", "HS384", "HS512" };
  for (int i = 0; i < 3; i++) {
    char h[100], nm[100];
    snprintf(h, sizeof h, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", hsalgs[i]);
    t = token(h, pay_std(), hsalgs[i], NULL, hs_secret, sizeof hs_secret);
    snprintf(nm, sizeof nm, "valid %s (key file)", hsalgs[i]);
    expect(nm, hs, t, NOW, 0, NULL);
    free(t);
  }
  static const char *const rsalgs[] = { "RS256", "RS384", "RS512", "PS256", "PS384", "PS512" };
  for (int i = 0; i < 6; i++) {
    char h[100], nm[100];
    snprintf(h, sizeof h, "{\"alg\":\"%s\"}", rsalgs[i]);
    t = token(h, pay_std(), rsalgs[i], k_rsa, NULL, 0);
    snprintf(nm, sizeof nm, "valid %s (PEM key file)", rsalgs[i]);
    expect(nm, rs, t, NOW, 0, NULL);
    free(t);
  }
  t = token("{\"alg\":\"RS256\"}", pay_std(), "RS256", k_rsa2, NULL, 0);
  expect("valid RS256 (certificate key file)", rscert, t, NOW, 0, NULL);
  expect("RS256 signed by another key", rs, t, NOW, 401, "bad signature");
  free(t);
  t = token("{\"alg\":\"ES256\"}", pay_std(), "ES256", k_ec256, NULL, 0);
  expect("valid ES256", es256, t, NOW, 0, NULL);
  free(t);
  t = token("{\"alg\":\"ES384\"}", pay_std(), "ES384", k_ec384, NULL, 0);
  expect("valid ES384", es384, t, NOW, 0, NULL);
  free(t);
  t = token("{\"alg\":\"EdDSA\"}", pay_std(), "EdDSA", k_ed, NULL, 0);
  expect("valid EdDSA", ed, t, NOW, 0, NULL);
  free(t);
  /* the same through the JWKS */
  t = token("{\"alg\":\"RS256\",\"kid\":\"r1\"}", pay_std(), "RS256", k_rsa, NULL, 0);
  expect("jwks: valid RS256 kid r1", jw, t, NOW, 0, NULL);
  free(t);
  t = token("{\"alg\":\"PS256\",\"kid\":\"r2\"}", pay_std(), "PS256", k_rsa2, NULL, 0);
  expect("jwks: valid PS256 kid r2 (alg PS256)", jw, t, NOW, 0, NULL);
  free(t);
  t = token("{\"alg\":\"RS256\",\"kid\":\"r2\"}", pay_std(), "RS256", k_rsa2, NULL, 0);
  expect("jwks: key alg PS256 refuses RS256", jw, t, NOW, 401, "unknown kid");
  free(t);
  t = token("{\"alg\":\"ES256\",\"kid\":\"e1\"}", pay_std(), "ES256", k_ec256, NULL, 0);
  expect("jwks: valid ES256 kid e1", jw, t, NOW, 0, NULL);
  free(t);
  t = token("{\"alg\":\"ES384\",\"kid\":\"e2\"}", pay_std(), "ES384", k_ec384, NULL, 0);
  expect("jwks: valid ES384 kid e2", jw, t, NOW, 0, NULL);
  free(t);
  t = token("{\"alg\":\"ES384\",\"kid\":\"e1\"}", pay_std(), "ES384", k_ec256, NULL, 0);
  expect("jwks: ES384 with the P-256 key's kid", jw, t, NOW, 401, "unknown kid");
  free(t);
  t = token("{\"alg\":\"EdDSA\",\"kid\":\"d1\"}", pay_std(), "EdDSA", k_ed, NULL, 0);
  expect("jwks: valid EdDSA kid d1", jw, t, NOW, 0, NULL);
  free(t);
  t = token("{\"alg\":\"HS256\",\"kid\":\"h1\"}", pay_std(), "HS256", NULL, jwks_secret, sizeof jwks_secret);
  expect("jwks: valid HS256 kid h1", jw, t, NOW, 0, NULL);
  free(t);
  t = token("{\"alg\":\"ES256\"}", pay_std(), "ES256", k_ec256, NULL, 0);
  expect("jwks: no kid, the key of the alg's family", jw, t, NOW, 0, NULL);
  free(t);

  /* ---- claims ---- */
#define P(...) (snprintf(p, sizeof p, __VA_ARGS__), p)
#define RS(pay) token("{\"alg\":\"RS256\"}", pay, "RS256", k_rsa, NULL, 0)
#define HS(pay) token("{\"alg\":\"HS256\"}", pay, "HS256", NULL, hs_secret, sizeof hs_secret)
  t = RS(P("{\"sub\":\"a\",\"exp\":%lld}", NOW - 100)); expect("expired", rs, t, NOW, 401, "expired"); free(t);
  t = token("{\"alg\":\"RS256\"}", P("{\"sub\":\"a\",\"exp\":%lld}", NOW), "RS256", k_rsa2, NULL, 0); expect("exp == now is expired (no leeway)", rscert, t, NOW, 401, "expired"); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":%lld}", NOW - 10)); expect("exp within leeway", rs, t, NOW, 0, NULL); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":%lld.5}", NOW + 10)); expect("fractional exp", rs, t, NOW, 0, NULL); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", NOW + 600, NOW + 100)); expect("nbf in the future", rs, t, NOW, 401, "not yet valid"); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", NOW + 600, NOW + 10)); expect("nbf within leeway", rs, t, NOW, 0, NULL); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":%lld,\"iat\":%lld}", NOW + 600, NOW + 100)); expect("iat in the future", rs, t, NOW, 401, "iat in the future"); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":%lld,\"iat\":%lld}", NOW + 600, NOW + 10)); expect("iat within leeway", rs, t, NOW, 0, NULL); free(t);
  t = RS(P("{\"sub\":\"a\"}")); expect("exp missing", rs, t, NOW, 401, "exp missing"); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":\"%lld\"}", NOW + 600)); expect("exp a string", rs, t, NOW, 401, "exp not a number"); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":null}")); expect("exp null", rs, t, NOW, 401, "exp not a number"); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":\"0\"}", NOW + 600)); expect("nbf a string", rs, t, NOW, 401, "nbf not a number"); free(t);
  t = RS(P("{\"sub\":\"a\",\"exp\":%lld,\"iat\":true}", NOW + 600)); expect("iat a boolean", rs, t, NOW, 401, "iat not a number"); free(t);
  t = RS("[1,2]"); expect("payload an array", rs, t, NOW, 401, "bad payload"); free(t);
  t = RS("{\"exp\":"); expect("payload not JSON", rs, t, NOW, 401, "bad payload"); free(t);
  t = HS(P("{\"iss\":\"https://evil.test\",\"aud\":\"mobile\",\"exp\":%lld}", NOW + 600)); expect("wrong iss", hs, t, NOW, 401, "wrong issuer"); free(t);
  t = HS(P("{\"iss\":\"https://issuer.test/\",\"aud\":\"mobile\",\"exp\":%lld}", NOW + 600)); expect("iss not exact", hs, t, NOW, 401, "wrong issuer"); free(t);
  t = HS(P("{\"aud\":\"mobile\",\"exp\":%lld}", NOW + 600)); expect("iss missing", hs, t, NOW, 401, "wrong issuer"); free(t);
  t = HS(P("{\"iss\":\"https://issuer.test\",\"aud\":\"mobile\",\"exp\":%lld}", NOW + 600)); expect("aud string", hs, t, NOW, 0, NULL); free(t);
  t = HS(P("{\"iss\":\"https://issuer.test\",\"aud\":[\"web\",\"mobile\"],\"exp\":%lld}", NOW + 600)); expect("aud array containing", hs, t, NOW, 0, NULL); free(t);
  t = HS(P("{\"iss\":\"https://issuer.test\",\"aud\":[\"web\",\"mobile2\"],\"exp\":%lld}", NOW + 600)); expect("aud array not containing", hs, t, NOW, 401, "wrong audience"); free(t);
  t = HS(P("{\"iss\":\"https://issuer.test\",\"aud\":\"web\",\"exp\":%lld}", NOW + 600)); expect("aud other string", hs, t, NOW, 401, "wrong audience"); free(t);
  t = HS(P("{\"iss\":\"https://issuer.test\",\"exp\":%lld}", NOW + 600)); expect("aud missing", hs, t, NOW, 401, "wrong audience"); free(t);

  /* ---- algorithms and keys ---- */
  char *h64 = NULL, *p64 = b64us(pay_std()), *s64 = b64us("signature-bytes");
  static const char *const nones[] = { "none", "NONE", "nOnE" };
  for (int i = 0; i < 3; i++) {
    char h[100], tok[2000], nm[100];
    snprintf(h, sizeof h, "{\"alg\":\"%s\"}", nones[i]);
    h64 = b64us(h);
    snprintf(tok, sizeof tok, "%s.%s.", h64, p64);
    snprintf(nm, sizeof nm, "alg %s, empty signature", nones[i]);
    expect(nm, jw, tok, NOW, 401, NULL);
    snprintf(tok, sizeof tok, "%s.%s.%s", h64, p64, s64);
    snprintf(nm, sizeof nm, "alg %s", nones[i]);
    expect(nm, jw, tok, NOW, 401, "alg none refused");
    free(h64);
  }
  free(s64);
  t = token("{\"alg\":\"HS256\"}", pay_std(), "HS256", NULL, hs_secret, sizeof hs_secret);
  expect("alg not pinned (HS256 on an RS policy)", rs, t, NOW, 401, "alg not allowed");
  free(t);
  t = token("{\"alg\":\"RS256\"}", pay_std(), "RS256", k_rsa, NULL, 0);
  expect("alg not pinned (RS256 on an ES256 policy)", es256, t, NOW, 401, "alg not allowed");
  free(t);
  t = token("{\"alg\":\"HS1024\"}", pay_std(), "HS256", NULL, hs_secret, sizeof hs_secret);
  expect("unknown alg", hs, t, NOW, 401, "alg not allowed");
  free(t);
  t = token("{\"alg\":\"hs256\"}", pay_std(), "HS256", NULL, hs_secret, sizeof hs_secret);
  expect("alg case matters", hs, t, NOW, 401, "alg not allowed");
  free(t);
  t = token("{\"typ\":\"JWT\"}", pay_std(), "HS256", NULL, hs_secret, sizeof hs_secret);
  expect("alg missing", hs, t, NOW, 401, "alg missing");
  free(t);
  t = token("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", pay_std(), "HS256", NULL, hs_secret, sizeof hs_secret);
  expect("crit header refused", hs, t, NOW, 401, "crit");
  free(t);
  /* RS→HS confusion: HMAC keyed with the RSA public key's PEM text */
  t = token("{\"alg\":\"HS256\"}", pay_std(), "HS256", NULL, rsa_pem, rsa_pem_len);
  expect("RS->HS confusion, policy RS*", rs, t, NOW, 401, "alg not allowed");
  free(t);
  t = token("{\"alg\":\"HS256\",\"kid\":\"r1\"}", pay_std(), "HS256", NULL, rsa_pem, rsa_pem_len);
  expect("RS->HS confusion, JWKS HS256+RS256, kid of the RSA key", jw, t, NOW, 401, "unknown kid");
  free(t);
  t = token("{\"alg\":\"HS256\"}", pay_std(), "HS256", NULL, rsa_pem, rsa_pem_len);
  expect("RS->HS confusion, JWKS HS256+RS256, no kid", jw, t, NOW, 401, "bad signature");
  free(t);
  {
    /* the RSA modulus bytes as an HMAC secret too */
    BIGNUM *bn = NULL;
    EVP_PKEY_get_bn_param(k_rsa, OSSL_PKEY_PARAM_RSA_N, &bn);
    unsigned char nb[256];
    BN_bn2binpad(bn, nb, 256);
    BN_free(bn);
    t = token("{\"alg\":\"HS256\",\"kid\":\"r1\"}", pay_std(), "HS256", NULL, nb, 256);
    expect("RS->HS confusion, modulus as secret", jw, t, NOW, 401, "unknown kid");
    free(t);
  }
  t = token("{\"alg\":\"RS256\",\"kid\":\"nope\"}", pay_std(), "RS256", k_rsa, NULL, 0);
  expect("kid unknown", jw, t, NOW, 401, "unknown kid");
  free(t);
  t = token("{\"alg\":\"RS256\",\"kid\":\"../../etc/passwd\"}", pay_std(), "RS256", k_rsa, NULL, 0);
  expect("kid ../../etc/passwd", jw, t, NOW, 401, "unknown kid");
  free(t);
  t = token("{\"alg\":\"RS256\",\"kid\":\"/etc/passwd\"}", pay_std(), "RS256", k_rsa, NULL, 0);
  expect("kid /etc/passwd", jwrs, t, NOW, 401, "unknown kid");
  free(t);
  t = token("{\"alg\":\"RS256\",\"kid\":7}", pay_std(), "RS256", k_rsa, NULL, 0);
  expect("kid not a string", jw, t, NOW, 401, "bad kid");
  free(t);
  t = token("{\"alg\":\"RS256\",\"kid\":\"anything\"}", pay_std(), "RS256", k_rsa, NULL, 0);
  expect("key file: kid is not used", rs, t, NOW, 0, NULL);
  free(t);
  {
    /* jku / x5u / jwk headers name the attacker's key: never used */
    char h[3000];
    snprintf(h, sizeof h, "{\"alg\":\"RS256\",\"kid\":\"r1\",\"jku\":\"http://127.0.0.1:%d/b\",\"x5u\":\"http://127.0.0.1:%d/b\",\"jwk\":%s}",
             srv_port, srv_port, jwk_rsa(k_u3, "r1", ""));
    int before = atomic_load(&srv_count_b);
    t = token(h, pay_std(), "RS256", k_u3, NULL, 0);
    expect("jku/x5u/jwk headers ignored (attacker key)", jw, t, NOW, 401, "bad signature");
    free(t);
    t = token(h, pay_std(), "RS256", k_rsa, NULL, 0);
    expect("jku/x5u/jwk headers ignored (real key)", jw, t, NOW, 0, NULL);
    free(t);
    check("jku never fetched", atomic_load(&srv_count_b) == before, "a request was made");
  }

  /* ---- format ---- */
  char *good = token("{\"alg\":\"RS256\"}", pay_std(), "RS256", k_rsa, NULL, 0);
  expect("good token", rs, good, NOW, 0, NULL);
  {
    char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
    char tok[4000];
    /* tampered payload: another subject, same signature */
    char *p2 = b64us("{\"sub\":\"admin\",\"exp\":99999999999}");
    snprintf(tok, sizeof tok, "%.*s.%s%s", (int)(d1 - good), good, p2, d2);
    expect("tampered payload", rs, tok, NOW, 401, "bad signature");
    free(p2);
    snprintf(tok, sizeof tok, "%s", good);
    tok[d2 - good + 10] = tok[d2 - good + 10] == 'A' ? 'B' : 'A';
    expect("tampered signature", rs, tok, NOW, 401, "bad signature");
    snprintf(tok, sizeof tok, "%.*s", (int)strlen(good) - 4, good);
    expect("truncated signature", rs, tok, NOW, 401, NULL);
    snprintf(tok, sizeof tok, "%.*s", (int)(d2 - good), good);
    expect("truncated to two parts", rs, tok, NOW, 401, "malformed");
    snprintf(tok, sizeof tok, "%.*s", (int)(d2 - good + 1), good);
    expect("empty signature", rs, tok, NOW, 401, "malformed");
    snprintf(tok, sizeof tok, "%s.AAAA", good);
    expect("4 parts", rs, tok, NOW, 401, "malformed");
    snprintf(tok, sizeof tok, "..");
    expect("empty parts", rs, tok, NOW, 401, "malformed");
    expect("empty token", rs, "", NOW, 401, NULL);
    snprintf(tok, sizeof tok, "%s", good);
    tok[3] = '+';
    expect("bad base64url (+)", rs, tok, NOW, 401, "bad base64url");
    snprintf(tok, sizeof tok, "%s", good);
    tok[d2 - good + 3] = '/';
    expect("bad base64url (/ in signature)", rs, tok, NOW, 401, "bad base64url");
    snprintf(tok, sizeof tok, "%s", good);
    tok[5] = ' ';
    expect("bad base64url (space)", rs, tok, NOW, 401, "bad base64url");
    snprintf(tok, sizeof tok, "%.*s=%s", (int)(d1 - good), good, d1);
    expect("padding in header", rs, tok, NOW, 401, "bad base64url");
    snprintf(tok, sizeof tok, "%s==", good);
    expect("padding after signature", rs, tok, NOW, 401, "bad base64url");
    /* non-canonical trailing bits: {"alg":"RS256"} is 15 bytes -> 20 chars, no spare bits;
       use a 16-byte header so the last char carries 4 unused bits */
    char *g2 = token("{\"alg\":\"RS256\" }", pay_std(), "RS256", k_rsa, NULL, 0);
    expect("16-byte header valid", rs, g2, NOW, 0, NULL);
    char *e1 = strchr(g2, '.');
    snprintf(tok, sizeof tok, "%s", g2);
    char c = tok[e1 - g2 - 1];
    tok[e1 - g2 - 1] = (char)(c + 1);   /* same value, nonzero spare bits */
    expect("non-canonical base64url", rs, tok, NOW, 401, "bad base64url");
    free(g2);
    char *nj = b64us("not json");
    snprintf(tok, sizeof tok, "%s.%s", nj, d1 + 1);
    free(nj);
    expect("header not JSON", rs, tok, NOW, 401, "bad header");
  }
  {
    /* > 8 KB: refused before any crypto */
    char *big = malloc(9000);
    int n = snprintf(big, 9000, "{\"exp\":%lld,\"pad\":\"", NOW + 600);
    memset(big + n, 'x', 6500);
    strcpy(big + n + 6500, "\"}");
    t = RS(big);
    check("oversized token is over 8 KB", strlen(t) > 8192, "token too short for the test");
    expect("token over 8 KB", rs, t, NOW, 401, "too large");
    free(t);
    big[n + 5500] = 0;
    strcat(big, "\"}");
    t = RS(big);
    check("7.5 KB token under the limit", strlen(t) <= 8192, "too long");
    expect("token under 8 KB accepted", rs, t, NOW, 0, NULL);
    free(t);
    free(big);
  }
  t = token_f("{\"alg\":\"ES256\"}", pay_std(), "ES256", k_ec256, NULL, 0, S_DER);
  expect("ES256 signature in DER refused", es256, t, NOW, 401, "bad signature");
  free(t);
  t = token_f("{\"alg\":\"ES384\"}", pay_std(), "ES384", k_ec384, NULL, 0, S_DER);
  expect("ES384 signature in DER refused", es384, t, NOW, 401, "bad signature");
  free(t);
  t = token("{\"alg\":\"ES256\"}", pay_std(), "ES256", k_ec384, NULL, 0);
  expect("ES256 token signed with a P-384 key", es256, t, NOW, 401, "bad signature");
  free(t);
  t = token("{\"alg\":\"PS256\"}", pay_std(), "RS256", k_rsa, NULL, 0);
  expect("PKCS#1 v1.5 signature as PS256", rs, t, NOW, 401, "bad signature");
  free(t);
  t = token("{\"alg\":\"EdDSA\"}", pay_std(), "EdDSA", k_ed, NULL, 0);
  char *d2 = strrchr(t, '.');
  d2[1] = d2[1] == 'A' ? 'B' : 'A';
  expect("EdDSA tampered", ed, t, NOW, 401, "bad signature");
  free(t);

  /* ---- cache ---- */
  {
    char *c1 = claims_json(rs, good, NOW);   /* miss or hit: the good token was verified above */
    char *c2 = claims_json(rs, good, NOW + 1);
    check("cache hit: same claims", c1 && c2 && !strcmp(c1, c2), "claims differ");
    check("cache hit: claims content", c1 && strstr(c1, "\"sub\":\"u123\"") && strstr(c1, "\"roles\":[\"admin\"]"), c1 ? c1 : "null");
    free(c1); free(c2);
    expect("cached token expires (exp+leeway passed)", rs, good, NOW + 600 + 30, 401, "expired");
    expect("cached token still within leeway", rs, good, NOW + 600 + 29, 0, NULL);
    expect("cached token: nbf/iat still checked", rs, good, NOW - 100, 401, NULL);
    t = HS(P("{\"iss\":\"https://issuer.test\",\"aud\":\"mobile\",\"exp\":%lld}", NOW + 5));
    expect("short-lived token", hs, t, NOW, 0, NULL);
    expect("short-lived token cached", hs, t, NOW + 34, 0, NULL);
    expect("short-lived token expired from the cache (exp + 30 s leeway)", hs, t, NOW + 35, 401, "expired");
    expect("and stays expired", hs, t, NOW + 36, 401, "expired");
    free(t);
  }
  free(good);
  free(p64);

  /* ---- concurrency ---- */
  {
    char *toks[16];
    for (int i = 0; i < 16; i++) {
      char pl[200];
      snprintf(pl, sizeof pl, "{\"sub\":\"c%d\",\"exp\":%lld}", i, NOW + 600);
      toks[i] = i % 2 ? token("{\"alg\":\"ES256\",\"kid\":\"e1\"}", pl, "ES256", k_ec256, NULL, 0)
                      : token("{\"alg\":\"HS256\",\"kid\":\"h1\"}", pl, "HS256", NULL, jwks_secret, sizeof jwks_secret);
    }
    pthread_t th[4];
    TArg ta[4];
    for (int i = 0; i < 4; i++) { ta[i] = (TArg){ jw, toks, 16, 0 }; pthread_create(&th[i], NULL, conc_main, &ta[i]); }
    int nb = 0;
    for (int i = 0; i < 4; i++) { pthread_join(th[i], NULL); nb += ta[i].bad; }
    check("4 threads verifying at once", nb == 0, "some failed");
    for (int i = 0; i < 16; i++) free(toks[i]);
  }

  /* ---- JWKS url ---- */
  {
    GwrJwt *dead = mk("udead");
    t = token("{\"alg\":\"RS256\",\"kid\":\"u1\"}", pay_std(), "RS256", k_u1, NULL, 0);
    expect("jwks url never fetched: refused", dead, t, NOW, 401, "no keys");
    gwr_jwt_free(dead);
    check("free with the endpoint down is prompt", 1, "");

    GwrJwt *ua = mk("ua");
    for (int i = 0; i < 500 && !gwr_jwt_nkeys(ua); i++) sleep_ms(10);
    check("jwks url: first fetch", gwr_jwt_nkeys(ua) == 1 && atomic_load(&srv_count_a) == 1, "no keys");
    expect("jwks url: valid token", ua, t, NOW, 0, NULL);
    free(t);
    /* a new key appears: the unknown kid triggers one refetch */
    snprintf(buf, sizeof buf, "{\"keys\":[%s,%s]}", jwk_rsa(k_u1, "u1", ""), jwk_rsa(k_u2, "u2", ""));
    set_doc(&doc_a, buf);
    t = token("{\"alg\":\"RS256\",\"kid\":\"u2\"}", pay_std(), "RS256", k_u2, NULL, 0);
    expect("jwks url: unknown kid refused at once", ua, t, NOW, 401, "unknown kid");
    int okk = 0;
    for (int i = 0; i < 300 && !okk; i++) { okk = verify_ok(ua, t, NOW); if (!okk) sleep_ms(10); }
    check("jwks url: refetched on unknown kid, new key works", okk, "never accepted");
    check("jwks url: exactly one refetch", atomic_load(&srv_count_a) == 2, "count != 2");
    free(t);
    t = token("{\"alg\":\"RS256\",\"kid\":\"u3\"}", pay_std(), "RS256", k_u3, NULL, 0);
    expect("jwks url: second unknown kid refused", ua, t, NOW, 401, "unknown kid");
    expect("jwks url: third unknown kid refused", ua, t, NOW, 401, "unknown kid");
    sleep_ms(300);
    char why[100];
    snprintf(why, sizeof why, "count %d, want 2", atomic_load(&srv_count_a));
    check("jwks url: no refetch within 30 s", atomic_load(&srv_count_a) == 2, why);
    free(t);
    gwr_jwt_free(ua);

    /* rotation (refresh 200 ms): a cached token dies with its key */
    GwrJwt *ub = mk("ub");
    for (int i = 0; i < 500 && !gwr_jwt_nkeys(ub); i++) sleep_ms(10);
    t = token("{\"alg\":\"RS256\",\"kid\":\"u1\"}", pay_std(), "RS256", k_u1, NULL, 0);
    expect("jwks url b: valid (cached now)", ub, t, NOW, 0, NULL);
    expect("jwks url b: valid again (cache hit)", ub, t, NOW, 0, NULL);
    snprintf(buf, sizeof buf, "{\"keys\":[%s]}", jwk_rsa(k_u2, "u2", ""));
    set_doc(&doc_b, buf);
    char *t2 = token("{\"alg\":\"RS256\",\"kid\":\"u2\"}", pay_std(), "RS256", k_u2, NULL, 0);
    int rot = 0;
    for (int i = 0; i < 300 && !rot; i++) { rot = verify_ok(ub, t2, NOW); if (!rot) sleep_ms(10); }
    check("jwks url b: rotated by the periodic refresh", rot, "never");
    expect("jwks url b: cached token of the removed key refused", ub, t, NOW, 401, "unknown kid");
    /* the endpoint fails: 500s, then down */
    atomic_store(&srv_fail_b, 1);
    int c0 = atomic_load(&srv_count_b);
    sleep_ms(700);
    check("jwks url b: endpoint answering 500 was retried", atomic_load(&srv_count_b) > c0, "no attempts");
    expect("jwks url b: 500s keep the last good keys", ub, t2, NOW, 0, NULL);
    srv_stop_now();
    sleep_ms(500);
    expect("jwks url b: endpoint down keeps the last good keys", ub, t2, NOW + 1, 0, NULL);
    check("jwks url b: keys still loaded", gwr_jwt_nkeys(ub) == 1, "lost keys");
    free(t); free(t2);
    gwr_jwt_free(ub);
  }

  gwr_jwt_free(hs); gwr_jwt_free(rs); gwr_jwt_free(rscert); gwr_jwt_free(es256);
  gwr_jwt_free(es384); gwr_jwt_free(ed); gwr_jwt_free(jw); gwr_jwt_free(jwrs);
  gw_program_free(prog);
  EVP_PKEY_free(k_rsa); EVP_PKEY_free(k_rsa2); EVP_PKEY_free(k_ec256); EVP_PKEY_free(k_ec384);
  EVP_PKEY_free(k_ed); EVP_PKEY_free(k_u1); EVP_PKEY_free(k_u2); EVP_PKEY_free(k_u3); EVP_PKEY_free(k_rsa1024);
  free(rsa_pem); free(doc_a); free(doc_b);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "test_jwt: could not remove %s\n", dir);
  curl_global_cleanup();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
