/*
** gwr_jwt.c — JWT verification (see gwr_jwt.h for the contract).
**
** Layout: base64url; keys (PEM / JWK → EVP_PKEY, parsed once) and key sets
** (refcounted, swapped whole when a JWKS url changes); signature checks;
** the verified-token cache; the JWKS url refresh thread; gwr_jwt_verify.
*/
#include "gwr_jwt.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include "gwr.h"
#include "gwr_json.h"

/* Algorithms, in gw_jwt_algs[] order (bit i of GwAuth.algs). */
enum { A_HS256, A_HS384, A_HS512, A_RS256, A_RS384, A_RS512, A_ES256, A_ES384,
       A_PS256, A_PS384, A_PS512, A_EDDSA };
#define ALGS_HS  (7u << A_HS256)
#define ALGS_RS  (7u << A_RS256)
#define ALGS_PS  (7u << A_PS256)
/* Key types. */
enum { KT_OCT, KT_RSA, KT_RSAPSS, KT_EC256, KT_EC384, KT_ED25519 };

#define MIN_HMAC_KEY   32      /* bytes */
#define MIN_RSA_BITS   2048
#define MAX_KID        256
#define MAX_KEYS       64      /* usable keys kept from one JWKS */
#define MAX_TRIES      4       /* keys tried for one token */
#define MAX_CACHED     4096    /* claims text bytes cached per token */
#define CACHE_SHARDS   16
#define CACHE_WAYS     4
#define CACHE_SETS     (GWR_JWT_CACHE_ENTRIES / CACHE_SHARDS / CACHE_WAYS)

typedef struct JKey {
  int            kt;
  int            alg;       /* the JWK's `alg` (index), -1: any of its family */
  char          *kid;       /* NULL: none */
  size_t         kidlen;
  EVP_PKEY      *pk;        /* public keys */
  unsigned char *secret;    /* KT_OCT */
  size_t         slen;
} JKey;

typedef struct KeySet {
  atomic_int ref;
  int        n;
  JKey       k[MAX_KEYS];
} KeySet;

typedef struct CEnt {
  unsigned char h[32];
  uint64_t      gen;        /* key-set generation it was verified under; 0: empty */
  double        exp;        /* `exp` + leeway: valid while now < this */
  double        nbf;        /* max(nbf, iat) - leeway: valid while now >= this */
  char         *text;       /* the claims' JSON text (malloc) */
  uint32_t      len;
} CEnt;

typedef struct Shard {
  pthread_mutex_t mu;
  CEnt            e[CACHE_SETS * CACHE_WAYS];
} Shard;

struct GwrJwt {
  char        name[64];
  uint32_t    algs;
  double      leeway;       /* seconds */
  char       *iss, *aud;
  size_t      iss_len, aud_len;
  int         key_file;     /* one key from `key file`: kid is not used */
  /* the key set: fixed for files; swapped by the refresh thread for a url */
  pthread_mutex_t smu;
  KeySet     *set;
  atomic_uint_fast64_t gen;
  /* jwks url */
  char       *url;
  uint64_t    refresh_ms;
  int         thread_started;
  pthread_t   thread;
  pthread_mutex_t mu;       /* the fields below */
  pthread_cond_t  cv;
  atomic_int  stop;
  int         want;         /* a refetch was asked for (unknown kid) */
  int         kid_asked;
  int64_t     last_kid_ms;  /* monotonic time of the last unknown-kid refetch */
  unsigned char doc_sha[32];
  int         have_doc;
  Shard       cache[CACHE_SHARDS];
};

/* ---- helpers ----------------------------------------------------------------- */

static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static EVP_MD *md_sha[3];   /* SHA-256/384/512, fetched once for the process */

static void md_init(void) {
  md_sha[0] = EVP_MD_fetch(NULL, "SHA256", NULL);
  md_sha[1] = EVP_MD_fetch(NULL, "SHA384", NULL);
  md_sha[2] = EVP_MD_fetch(NULL, "SHA512", NULL);
}

/* The hash of an algorithm: 0 SHA-256, 1 SHA-384, 2 SHA-512. */
static int alg_hash(int alg) {
  switch (alg) {
  case A_HS256: case A_RS256: case A_ES256: case A_PS256: return 0;
  case A_HS384: case A_RS384: case A_ES384: case A_PS384: return 1;
  default: return 2;
  }
}

/* May a key of type kt verify alg? */
static int kt_fits(int kt, int alg) {
  switch (alg) {
  case A_HS256: case A_HS384: case A_HS512: return kt == KT_OCT;
  case A_RS256: case A_RS384: case A_RS512: return kt == KT_RSA;
  case A_PS256: case A_PS384: case A_PS512: return kt == KT_RSA || kt == KT_RSAPSS;
  case A_ES256: return kt == KT_EC256;
  case A_ES384: return kt == KT_EC384;
  case A_EDDSA: return kt == KT_ED25519;
  default: return 0;
  }
}

/* Does some algorithm in algs fit kt? */
static int kt_any(int kt, uint32_t algs) {
  for (int i = 0; i < GW_JWT_NALGS; i++)
    if ((algs >> i & 1u) && kt_fits(kt, i)) return 1;
  return 0;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const signed char b64u_tab[256] = {
#define X -1
  X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X, X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,
  X,X,X,X,X,X,X,X,X,X,X,X,X,62,X,X, 52,53,54,55,56,57,58,59,60,61,X,X,X,X,X,X,
  X,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14, 15,16,17,18,19,20,21,22,23,24,25,X,X,X,X,63,
  X,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40, 41,42,43,44,45,46,47,48,49,50,51,X,X,X,X,X,
  X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X, X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,
  X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X, X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,
  X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X, X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,
  X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X, X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,X,
#undef X
};

/* Strict base64url (RFC 7515 §2): the URL-safe alphabet only, no padding,
** no length ≡ 1 (mod 4), unused trailing bits zero (one encoding per value).
** out must hold n*3/4 + 1 bytes. Returns the decoded length, or -1. */
static long b64u_decode(const char *s, size_t n, unsigned char *out) {
  if (n % 4 == 1) return -1;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64u_tab[(unsigned char)s[i]];
    if (v < 0) return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) { bits -= 8; out[o++] = (unsigned char)(acc >> bits); acc &= (1u << bits) - 1; }
  }
  if (acc != 0) return -1;   /* non-canonical trailing bits */
  return (long)o;
}

/* Decode a base64url JSON member (a JWK field) into a malloc'd buffer. */
static unsigned char *b64u_member(const GwValue *obj, const char *k, size_t *len) {
  GwValue *v = gwv_get(obj, k, strlen(k));
  if (!v || v->type != GWV_STRING || v->n == 0 || v->n > 16384) return NULL;
  unsigned char *b = malloc(v->n * 3 / 4 + 1);
  if (!b) return NULL;
  long l = b64u_decode(v->u.s, v->n, b);
  if (l <= 0) { free(b); return NULL; }
  *len = (size_t)l;
  return b;
}

static int str_is(const GwValue *v, const char *s) {
  size_t n = strlen(s);
  return v && v->type == GWV_STRING && v->n == n && !memcmp(v->u.s, s, n);
}

static const char *cstr(const GwProgram *p, uint32_t k) {
  return k == GW_NONE ? NULL : gw_const_str(p, k, NULL);
}

/* ---- keys -------------------------------------------------------------------- */

static void key_clear(JKey *k) {
  EVP_PKEY_free(k->pk);
  if (k->secret) OPENSSL_clear_free(k->secret, k->slen);
  free(k->kid);
  memset(k, 0, sizeof *k);
}

static KeySet *set_new(void) {
  KeySet *s = calloc(1, sizeof *s);
  if (s) atomic_init(&s->ref, 1);
  return s;
}

static void set_release(KeySet *s) {
  if (!s || atomic_fetch_sub(&s->ref, 1) != 1) return;
  for (int i = 0; i < s->n; i++) key_clear(&s->k[i]);
  free(s);
}

/* The type of a public key; -1 if it is of no JWS family or too weak. */
static int pkey_type(EVP_PKEY *pk, const char **why) {
  switch (EVP_PKEY_get_base_id(pk)) {
  case EVP_PKEY_RSA:
  case EVP_PKEY_RSA_PSS:
    if (EVP_PKEY_get_bits(pk) < MIN_RSA_BITS) { *why = "RSA key under 2048 bits"; return -1; }
    return EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA ? KT_RSA : KT_RSAPSS;
  case EVP_PKEY_EC: {
    char g[64] = "";
    if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, g, sizeof g, NULL) != 1) break;
    if (!strcmp(g, "prime256v1") || !strcmp(g, "P-256")) return KT_EC256;
    if (!strcmp(g, "secp384r1") || !strcmp(g, "P-384")) return KT_EC384;
    *why = "EC key on a curve other than P-256 or P-384";
    return -1;
  }
  case EVP_PKEY_ED25519:
    return KT_ED25519;
  default:
    break;
  }
  *why = "key type not usable for JWS";
  return -1;
}

/* A PEM public key (SubjectPublicKeyInfo or PKCS#1 RSA) or certificate. */
static EVP_PKEY *pem_pubkey(const char *data, size_t len) {
  EVP_PKEY *pk = NULL;
  BIO *b = BIO_new_mem_buf(data, (int)len);
  if (b) { pk = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL); BIO_free(b); }
  if (!pk && (b = BIO_new_mem_buf(data, (int)len))) {
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    if (x) { pk = X509_get_pubkey(x); X509_free(x); }
    BIO_free(b);
  }
  if (!pk) {
    OSSL_DECODER_CTX *dc = OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", "type-specific", "RSA",
                                                         EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    const unsigned char *q = (const unsigned char *)data;
    size_t ql = len;
    if (dc && OSSL_DECODER_from_data(dc, &q, &ql) != 1) pk = NULL;
    OSSL_DECODER_CTX_free(dc);
  }
  ERR_clear_error();
  return pk;
}

static EVP_PKEY *fromdata(const char *type, OSSL_PARAM_BLD *bld) {
  EVP_PKEY *pk = NULL;
  OSSL_PARAM *prm = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
  if (!prm || !c || EVP_PKEY_fromdata_init(c) != 1 ||
      EVP_PKEY_fromdata(c, &pk, EVP_PKEY_PUBLIC_KEY, prm) != 1) pk = NULL;
  EVP_PKEY_CTX_free(c);
  OSSL_PARAM_free(prm);
  return pk;
}

/* One JWK (RFC 7517/7518) into k. 0 ok; -1: skip the key (not usable by
** this policy, or malformed). */
static int jwk_load(const GwrJwt *j, const GwValue *o, JKey *k) {
  memset(k, 0, sizeof *k);
  k->alg = -1;
  if (!o || o->type != GWV_OBJECT) return -1;
  GwValue *use = gwv_get(o, "use", 3);
  if (use && !str_is(use, "sig")) return -1;
  GwValue *alg = gwv_get(o, "alg", 3);
  if (alg) {
    if (alg->type != GWV_STRING) return -1;
    for (int i = 0; i < GW_JWT_NALGS; i++)
      if (str_is(alg, gw_jwt_algs[i])) k->alg = i;
    if (k->alg < 0 || !(j->algs >> k->alg & 1u)) return -1;
  }
  GwValue *kty = gwv_get(o, "kty", 3), *crv = gwv_get(o, "crv", 3);
  unsigned char *b1 = NULL, *b2 = NULL;
  size_t l1 = 0, l2 = 0;
  int rc = -1;
  if (str_is(kty, "oct")) {
    k->kt = KT_OCT;
    if (!kt_any(KT_OCT, j->algs)) return -1;
    if (!(b1 = b64u_member(o, "k", &l1)) || l1 < MIN_HMAC_KEY) goto out;
    k->secret = b1; k->slen = l1; b1 = NULL;
  } else if (str_is(kty, "RSA")) {
    k->kt = KT_RSA;
    if (!kt_any(KT_RSA, j->algs)) return -1;
    if (!(b1 = b64u_member(o, "n", &l1)) || !(b2 = b64u_member(o, "e", &l2)) || l2 > 8) goto out;
    BIGNUM *n = BN_bin2bn(b1, (int)l1, NULL), *e = BN_bin2bn(b2, (int)l2, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (n && e && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
      k->pk = fromdata("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n); BN_free(e);
  } else if (str_is(kty, "EC")) {
    int kt = str_is(crv, "P-256") ? KT_EC256 : str_is(crv, "P-384") ? KT_EC384 : -1;
    if (kt < 0 || !kt_any(kt, j->algs)) return -1;
    k->kt = kt;
    size_t fl = kt == KT_EC256 ? 32 : 48;
    if (!(b1 = b64u_member(o, "x", &l1)) || !(b2 = b64u_member(o, "y", &l2)) || l1 != fl || l2 != fl) goto out;
    unsigned char pt[97];
    pt[0] = 4;
    memcpy(pt + 1, b1, fl);
    memcpy(pt + 1 + fl, b2, fl);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, kt == KT_EC256 ? "P-256" : "P-384", 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * fl))
      k->pk = fromdata("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    if (k->pk) {   /* the point must be on the curve */
      EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pk, NULL);
      if (!c || EVP_PKEY_public_check(c) != 1) { EVP_PKEY_free(k->pk); k->pk = NULL; }
      EVP_PKEY_CTX_free(c);
    }
  } else if (str_is(kty, "OKP")) {
    if (!str_is(crv, "Ed25519") || !kt_any(KT_ED25519, j->algs)) return -1;
    k->kt = KT_ED25519;
    if (!(b1 = b64u_member(o, "x", &l1)) || l1 != 32) goto out;
    k->pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, b1, l1);
  } else {
    return -1;
  }
  if (k->kt != KT_OCT) {
    const char *why;
    if (!k->pk || pkey_type(k->pk, &why) != k->kt) goto out;
  }
  if (k->alg >= 0 && !kt_fits(k->kt, k->alg)) goto out;
  GwValue *kid = gwv_get(o, "kid", 3);
  if (kid) {
    if (kid->type != GWV_STRING || kid->n > MAX_KID) goto out;
    if (!(k->kid = malloc(kid->n + 1))) goto out;
    memcpy(k->kid, kid->u.s, kid->n);
    k->kid[kid->n] = 0;
    k->kidlen = kid->n;
  }
  rc = 0;
out:
  free(b1);
  free(b2);
  if (rc) key_clear(k);
  ERR_clear_error();
  return rc;
}

/* A JWKS document into a new key set (refcount 1). NULL with err when it is
** not a JWKS or holds no key this policy can use. */
static KeySet *jwks_parse(const GwrJwt *j, const char *doc, size_t n, char *err, size_t errlen) {
  GwArena a;
  gw_arena_init(&a);
  GwValue *v = NULL;
  KeySet *s = NULL;
  char jerr[128];
  GwrJsonLimits lim = { 16 };
  if (gwr_json_parse(&a, doc, n, &lim, &v, jerr, sizeof jerr)) {
    snprintf(err, errlen, "not JSON (%s)", jerr);
    goto out;
  }
  GwValue *keys = gwv_get(v, "keys", 4);
  if (!keys || keys->type != GWV_ARRAY) { snprintf(err, errlen, "not a JWKS (no \"keys\" array)"); goto out; }
  if (!(s = set_new())) { snprintf(err, errlen, "out of memory"); goto out; }
  for (uint32_t i = 0; i < keys->n && s->n < MAX_KEYS; i++)
    if (!jwk_load(j, keys->u.items[i], &s->k[s->n])) s->n++;
  if (s->n == 0) {
    snprintf(err, errlen, "no key usable with the policy's algorithms");
    set_release(s);
    s = NULL;
  }
out:
  gw_arena_free(&a);
  return s;
}

/* `key file`: an HMAC secret (all algorithms HS*) or a PEM public key. */
static KeySet *keyfile_load(const GwrJwt *j, const char *path, char *err, size_t errlen) {
  char *data = NULL;
  size_t len = 0;
  if (gw_read_file(path, GWR_JWT_MAX_JWKS, &data, &len)) {
    snprintf(err, errlen, "key file %s: %s", path, strerror(errno));
    return NULL;
  }
  KeySet *s = set_new();
  if (!s) { free(data); snprintf(err, errlen, "out of memory"); return NULL; }
  JKey *k = &s->k[0];
  k->alg = -1;
  if (!(j->algs & ~ALGS_HS)) {
    size_t n = len;
    if (n && data[n - 1] == '\n') { n--; if (n && data[n - 1] == '\r') n--; }
    if (n >= 10 && !memcmp(data, "-----BEGIN", 10)) {
      snprintf(err, errlen, "key file %s: a PEM key cannot be an HMAC secret (HS* algorithms take the secret's bytes)", path);
      goto fail;
    }
    if (n < MIN_HMAC_KEY) {
      snprintf(err, errlen, "key file %s: an HMAC secret must be at least %d bytes", path, MIN_HMAC_KEY);
      goto fail;
    }
    k->kt = KT_OCT;
    if (!(k->secret = malloc(n))) { snprintf(err, errlen, "out of memory"); goto fail; }
    memcpy(k->secret, data, n);
    k->slen = n;
  } else {
    const char *why = NULL;
    if (!(k->pk = pem_pubkey(data, len))) {
      snprintf(err, errlen, "key file %s: no PEM public key or certificate", path);
      goto fail;
    }
    k->kt = pkey_type(k->pk, &why);
    if (k->kt < 0) { snprintf(err, errlen, "key file %s: %s", path, why); goto fail; }
    if (!kt_any(k->kt, j->algs)) {
      snprintf(err, errlen, "key file %s: the key's type fits none of the policy's algorithms", path);
      goto fail;
    }
  }
  s->n = 1;
  OPENSSL_clear_free(data, len);
  return s;
fail:
  OPENSSL_clear_free(data, len);
  key_clear(k);
  set_release(s);
  return NULL;
}

/* ---- signatures --------------------------------------------------------------- */

/* Verify sig over msg with key k for alg (k fits alg). 1 valid, 0 not. */
static int sig_ok(const JKey *k, int alg, const unsigned char *msg, size_t mlen,
                  const unsigned char *sig, size_t slen) {
  const EVP_MD *md = md_sha[alg_hash(alg)];
  if (k->kt == KT_OCT) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    if (!HMAC(md, k->secret, (int)k->slen, msg, mlen, mac, &ml)) { ERR_clear_error(); return 0; }
    return slen == ml && CRYPTO_memcmp(mac, sig, ml) == 0;
  }
  unsigned char der[128];
  if (alg == A_ES256 || alg == A_ES384) {
    /* JOSE: r || s, each exactly the field size; DER is for ASN.1 users. */
    size_t half = alg == A_ES256 ? 32 : 48;
    if (slen != 2 * half) return 0;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
      BN_free(r); BN_free(s); ECDSA_SIG_free(es);
      return 0;
    }
    int dl = i2d_ECDSA_SIG(es, NULL);
    unsigned char *pp = der;
    if (dl <= 0 || dl > (int)sizeof der || i2d_ECDSA_SIG(es, &pp) != dl) { ECDSA_SIG_free(es); return 0; }
    ECDSA_SIG_free(es);
    sig = der;
    slen = (size_t)dl;
  } else if (alg != A_EDDSA) {
    if (slen != (size_t)EVP_PKEY_get_size(k->pk)) return 0;   /* RSA: modulus length */
  }
  int ok = 0;
  EVP_MD_CTX *mc = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pc = NULL;
  if (!mc || EVP_DigestVerifyInit(mc, &pc, alg == A_EDDSA ? NULL : md, NULL, k->pk) != 1) goto out;
  if (alg >= A_PS256 && alg <= A_PS512) {
    if (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(pc, md) != 1) goto out;
  } else if (alg >= A_RS256 && alg <= A_RS512) {
    if (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) != 1) goto out;
  }
  ok = EVP_DigestVerify(mc, sig, slen, msg, mlen) == 1;
out:
  EVP_MD_CTX_free(mc);
  ERR_clear_error();
  return ok;
}

/* ---- the verified-token cache ------------------------------------------------- */

static void cache_init(GwrJwt *j) {
  for (int i = 0; i < CACHE_SHARDS; i++) pthread_mutex_init(&j->cache[i].mu, NULL);
}

static void cache_free(GwrJwt *j) {
  for (int i = 0; i < CACHE_SHARDS; i++) {
    for (int e = 0; e < CACHE_SETS * CACHE_WAYS; e++) free(j->cache[i].e[e].text);
    pthread_mutex_destroy(&j->cache[i].mu);
  }
}

static CEnt *cache_set(Shard *sh, const unsigned char h[32]) {
  unsigned set = ((unsigned)h[1] | (unsigned)h[2] << 8) % CACHE_SETS;
  return &sh->e[set * CACHE_WAYS];
}

/* A hit: 0 with *claims parsed into a; 1: miss; 401 with *reason. */
static int cache_get(GwrJwt *j, const unsigned char h[32], double now, GwArena *a,
                     GwValue **claims, const char **reason) {
  Shard *sh = &j->cache[h[0] % CACHE_SHARDS];
  uint64_t gen = atomic_load(&j->gen);
  char *text = NULL;
  uint32_t len = 0;
  int rc = 1;
  pthread_mutex_lock(&sh->mu);
  CEnt *e = cache_set(sh, h);
  for (int w = 0; w < CACHE_WAYS; w++, e++) {
    if (!e->gen || memcmp(e->h, h, 32)) continue;
    if (e->gen != gen) break;                 /* verified with another key set */
    if (now >= e->exp) {                      /* expired: never served again */
      free(e->text); memset(e, 0, sizeof *e);
      *reason = "expired";
      rc = 401;
    } else if (now < e->nbf) {
      *reason = "not yet valid";
      rc = 401;
    } else if ((text = gw_arena_alloc_raw(a, e->len + 1))) {
      memcpy(text, e->text, e->len);
      len = e->len;
      rc = 0;
    }
    break;
  }
  pthread_mutex_unlock(&sh->mu);
  if (rc) return rc;
  char jerr[8];
  if (gwr_json_parse(a, text, len, NULL, claims, jerr, sizeof jerr) || (*claims)->type != GWV_OBJECT)
    return 1;   /* cannot happen: the text was parsed before */
  return 0;
}

static void cache_put(GwrJwt *j, const unsigned char h[32], uint64_t gen, double exp, double nbf,
                      const char *text, size_t len) {
  if (len > MAX_CACHED) return;
  char *t = malloc(len ? len : 1);
  if (!t) return;
  memcpy(t, text, len);
  Shard *sh = &j->cache[h[0] % CACHE_SHARDS];
  pthread_mutex_lock(&sh->mu);
  CEnt *set = cache_set(sh, h), *v = NULL;
  for (int w = 0; w < CACHE_WAYS && !v; w++)
    if (!set[w].gen || !memcmp(set[w].h, h, 32)) v = &set[w];
  if (!v)                                    /* else: the one expiring first */
    for (int w = 0; w < CACHE_WAYS; w++)
      if (!v || set[w].exp < v->exp) v = &set[w];
  free(v->text);
  memcpy(v->h, h, 32);
  v->gen = gen; v->exp = exp; v->nbf = nbf; v->text = t; v->len = (uint32_t)len;
  pthread_mutex_unlock(&sh->mu);
}

/* ---- JWKS url ---------------------------------------------------------------- */

typedef struct Body { char *p; size_t n; int over; } Body;

static size_t body_write(char *p, size_t sz, size_t nm, void *ud) {
  Body *b = ud;
  size_t n = sz * nm;
  if (b->n + n > GWR_JWT_MAX_JWKS) { b->over = 1; return 0; }
  char *q = realloc(b->p, b->n + n + 1);
  if (!q) return 0;
  memcpy(q + b->n, p, n);
  b->p = q;
  b->n += n;
  b->p[b->n] = 0;
  return n;
}

static int xfer_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
  GwrJwt *j = ud;
  return atomic_load(&j->stop) ? 1 : 0;
}

/* Fetch the JWKS and install it if it changed. 0 ok, -1 failed (logged). */
static int jwks_fetch(GwrJwt *j) {
  Body b = { 0 };
  long code = 0;
  CURL *c = curl_easy_init();
  if (!c) { gwr_log("error", "auth '%s': jwks url: cannot create a transfer", j->name); return -1; }
  curl_easy_setopt(c, CURLOPT_URL, j->url);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)GWR_JWT_MAX_JWKS);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "gwd");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, xfer_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, j);
  CURLcode rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(c);
  int ret = -1;
  if (atomic_load(&j->stop)) goto out;
  if (rc != CURLE_OK) {
    gwr_log("warn", "auth '%s': jwks url fetch failed: %s; keeping the last good keys", j->name,
            b.over ? "document over 1 MB" : curl_easy_strerror(rc));
    goto out;
  }
  if (code != 200) {
    gwr_log("warn", "auth '%s': jwks url answered %ld; keeping the last good keys", j->name, code);
    goto out;
  }
  unsigned char sha[32];
  gw_sha256(b.p ? b.p : "", b.n, sha);
  if (j->have_doc && !memcmp(sha, j->doc_sha, 32)) { ret = 0; goto out; }   /* unchanged */
  char err[200];
  KeySet *s = jwks_parse(j, b.p ? b.p : "", b.n, err, sizeof err);
  if (!s) {
    gwr_log("warn", "auth '%s': jwks url: %s; keeping the last good keys", j->name, err);
    goto out;
  }
  pthread_mutex_lock(&j->smu);
  KeySet *old = j->set;
  j->set = s;
  atomic_fetch_add(&j->gen, 1);
  pthread_mutex_unlock(&j->smu);
  set_release(old);
  memcpy(j->doc_sha, sha, 32);
  j->have_doc = 1;
  gwr_log("info", "auth '%s': jwks url: %d key(s) loaded", j->name, s->n);
  ret = 0;
out:
  free(b.p);
  return ret;
}

static void *refresh_main(void *arg) {
  GwrJwt *j = arg;
  int64_t refresh = (int64_t)j->refresh_ms, backoff = refresh < 1000 ? refresh : 1000;
  pthread_mutex_lock(&j->mu);
  while (!atomic_load(&j->stop)) {
    j->want = 0;
    pthread_mutex_unlock(&j->mu);
    int ok = jwks_fetch(j) == 0;
    pthread_mutex_lock(&j->mu);
    /* after a failure, retry sooner (1 s doubling, up to the refresh period) */
    int64_t wait = ok ? refresh : backoff;
    backoff = ok ? (refresh < 1000 ? refresh : 1000) : backoff * 2 > refresh ? refresh : backoff * 2;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += wait / 1000;
    dl.tv_nsec += (wait % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    while (!atomic_load(&j->stop) && !j->want)
      if (pthread_cond_timedwait(&j->cv, &j->mu, &dl) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&j->mu);
  return NULL;
}

/* An unknown kid: ask for a refetch, at most once per GWR_JWT_KID_REFETCH_S. */
static void ask_refetch(GwrJwt *j) {
  pthread_mutex_lock(&j->mu);
  int64_t now = mono_ms();
  if (!j->kid_asked || now - j->last_kid_ms >= GWR_JWT_KID_REFETCH_S * 1000) {
    j->kid_asked = 1;
    j->last_kid_ms = now;
    j->want = 1;
    pthread_cond_signal(&j->cv);
  }
  pthread_mutex_unlock(&j->mu);
}

/* A plain-http JWKS url is accepted only on the loopback interface. */
static int url_ok(const char *u) {
  if (!strncasecmp(u, "https://", 8)) return 1;
  if (strncasecmp(u, "http://", 7)) return 0;
  static const char *const lo[] = { "127.0.0.1", "localhost", "[::1]" };
  for (int i = 0; i < 3; i++) {
    size_t l = strlen(lo[i]);
    if (!strncasecmp(u + 7, lo[i], l) && (u[7 + l] == ':' || u[7 + l] == '/' || !u[7 + l])) return 1;
  }
  return 0;
}

/* ---- the policy ---------------------------------------------------------------- */

GwrJwt *gwr_jwt_new(const GwProgram *p, uint32_t a, char *err, size_t errlen) {
  if (errlen) err[0] = 0;
  pthread_once(&md_once, md_init);
  if (!p || a >= p->n_auths) { snprintf(err, errlen, "no auth policy %u", a); return NULL; }
  const GwAuth *A = &p->auths[a];
  const char *name = cstr(p, A->name);
  if (A->type != 0) { snprintf(err, errlen, "auth '%s' is not a jwt policy", name); return NULL; }
  uint32_t algs = A->algs & ((1u << GW_JWT_NALGS) - 1);
  if (!algs) { snprintf(err, errlen, "auth '%s': no algorithms", name); return NULL; }
  if (!md_sha[0] || !md_sha[1] || !md_sha[2]) { snprintf(err, errlen, "auth '%s': OpenSSL has no SHA-2", name); return NULL; }
  GwrJwt *j = calloc(1, sizeof *j);
  if (!j) { snprintf(err, errlen, "out of memory"); return NULL; }
  snprintf(j->name, sizeof j->name, "%s", name);
  j->algs = algs;
  j->leeway = A->leeway_ms / 1000.0;
  pthread_mutex_init(&j->smu, NULL);
  pthread_mutex_init(&j->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&j->cv, &ca);
  pthread_condattr_destroy(&ca);
  atomic_init(&j->gen, 1);
  atomic_init(&j->stop, 0);
  cache_init(j);
  char e2[300];
  uint32_t slen = 0;
  const char *s;
  if (A->issuer != GW_NONE) {
    s = gw_const_str(p, A->issuer, &slen);
    if (!(j->iss = malloc(slen + 1))) goto oom;
    memcpy(j->iss, s, slen + 1);
    j->iss_len = slen;
  }
  if (A->audience != GW_NONE) {
    s = gw_const_str(p, A->audience, &slen);
    if (!(j->aud = malloc(slen + 1))) goto oom;
    memcpy(j->aud, s, slen + 1);
    j->aud_len = slen;
  }
  if (A->key_file != GW_NONE) {
    j->key_file = 1;
    if (!(j->set = keyfile_load(j, cstr(p, A->key_file), e2, sizeof e2))) goto fail;
  } else if (A->jwks_file != GW_NONE) {
    const char *path = cstr(p, A->jwks_file);
    char *data = NULL;
    size_t len = 0;
    if (gw_read_file(path, GWR_JWT_MAX_JWKS, &data, &len)) {
      snprintf(e2, sizeof e2, "jwks file %s: %s", path, strerror(errno));
      goto fail;
    }
    char e3[200];
    j->set = jwks_parse(j, data, len, e3, sizeof e3);
    free(data);
    if (!j->set) { snprintf(e2, sizeof e2, "jwks file %s: %s", path, e3); goto fail; }
  } else if (A->jwks_url != GW_NONE) {
    const char *u = cstr(p, A->jwks_url);
    if (!url_ok(u)) {
      snprintf(e2, sizeof e2, "jwks url must be https:// (plain http only to 127.0.0.1, localhost or [::1])");
      goto fail;
    }
    if (!(j->url = strdup(u))) goto oom;
    j->refresh_ms = A->jwks_refresh_ms ? A->jwks_refresh_ms : 600000;
    if (pthread_create(&j->thread, NULL, refresh_main, j)) {
      snprintf(e2, sizeof e2, "cannot start the jwks refresh thread");
      goto fail;
    }
    j->thread_started = 1;
  } else {
    snprintf(e2, sizeof e2, "no key file, jwks file or jwks url");
    goto fail;
  }
  return j;
oom:
  snprintf(e2, sizeof e2, "out of memory");
fail:
  snprintf(err, errlen, "auth '%s': %s", name, e2);
  gwr_jwt_free(j);
  return NULL;
}

void gwr_jwt_free(GwrJwt *j) {
  if (!j) return;
  if (j->thread_started) {
    pthread_mutex_lock(&j->mu);
    atomic_store(&j->stop, 1);
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
  }
  set_release(j->set);
  cache_free(j);
  pthread_mutex_destroy(&j->smu);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  free(j->iss);
  free(j->aud);
  free(j->url);
  free(j);
}

int gwr_jwt_nkeys(GwrJwt *j) {
  pthread_mutex_lock(&j->smu);
  int n = j->set ? j->set->n : 0;
  pthread_mutex_unlock(&j->smu);
  return n;
}

/* A numeric claim: 1 present and a number (*d), 0 absent, -1 not a number. */
static int num_claim(const GwValue *c, const char *k, double *d) {
  GwValue *v = gwv_get(c, k, strlen(k));
  if (!v) return 0;
  if (v->type != GWV_NUMBER || !gwv_to_double(v, d, 0)) return -1;
  return 1;
}

#define FAIL(r) do { *reason = (r); rc = 401; goto out; } while (0)

int gwr_jwt_verify(GwrJwt *j, const char *tok, size_t n, int64_t now_s, GwArena *a,
                   GwValue **claims, const char **reason) {
  *claims = NULL;
  *reason = "";
  if (!j) { *reason = "no policy"; return 401; }
  if (!tok || n == 0) { *reason = "no token"; return 401; }
  if (n > GWR_JWT_MAX_TOKEN) { *reason = "token too large"; return 401; }
  const char *d1 = memchr(tok, '.', n);
  const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(tok + n - d1 - 1)) : NULL;
  if (!d2 || memchr(d2 + 1, '.', (size_t)(tok + n - d2 - 1))) { *reason = "malformed token"; return 401; }
  size_t hl = (size_t)(d1 - tok), pl = (size_t)(d2 - d1 - 1), sl = (size_t)(tok + n - d2 - 1);
  if (!hl || !pl || !sl) { *reason = "malformed token"; return 401; }
  double now = (double)now_s;

  unsigned char h[32];
  gw_sha256(tok, n, h);
  int rc = cache_get(j, h, now, a, claims, reason);
  if (rc != 1) return rc;
  rc = 0;

  KeySet *set = NULL;
  unsigned char buf[GWR_JWT_MAX_TOKEN];   /* the three decoded parts (3/4 of n) */
  unsigned char *hdr = buf, *pay, *sig;
  long hn = b64u_decode(tok, hl, hdr);
  if (hn < 0) FAIL("bad base64url");
  pay = hdr + hn;
  long pn = b64u_decode(d1 + 1, pl, pay);
  if (pn < 0) FAIL("bad base64url");
  sig = pay + pn;
  long sn = b64u_decode(d2 + 1, sl, sig);
  if (sn <= 0) FAIL("bad base64url");

  /* header */
  GwValue *hv = NULL;
  char jerr[8];
  GwrJsonLimits lim = { 16 };
  if (gwr_json_parse(a, (const char *)hdr, (size_t)hn, &lim, &hv, jerr, sizeof jerr) || hv->type != GWV_OBJECT)
    FAIL("bad header");
  GwValue *av = gwv_get(hv, "alg", 3);
  if (!av || av->type != GWV_STRING) FAIL("alg missing");
  if (av->n == 4 && !strncasecmp(av->u.s, "none", 4)) FAIL("alg none refused");
  int alg = -1;
  for (int i = 0; i < GW_JWT_NALGS; i++)
    if ((j->algs >> i & 1u) && str_is(av, gw_jwt_algs[i])) alg = i;
  if (alg < 0) FAIL("alg not allowed");
  if (gwv_get(hv, "crit", 4)) FAIL("crit header not supported");
  GwValue *kid = gwv_get(hv, "kid", 3);
  if (kid && (kid->type != GWV_STRING || kid->n > MAX_KID)) FAIL("bad kid");

  /* keys: kid is only a lookup key into the loaded set */
  pthread_mutex_lock(&j->smu);
  set = j->set;
  uint64_t gen = atomic_load(&j->gen);
  if (set) atomic_fetch_add(&set->ref, 1);
  pthread_mutex_unlock(&j->smu);
  if (!set || !set->n) FAIL("no keys loaded");
  const JKey *cand[MAX_TRIES];
  int nc = 0;
  for (int i = 0; i < set->n && nc < MAX_TRIES; i++) {
    const JKey *k = &set->k[i];
    if (!kt_fits(k->kt, alg) || (k->alg >= 0 && k->alg != alg)) continue;
    if (kid && !j->key_file && (!k->kid || k->kidlen != kid->n || memcmp(k->kid, kid->u.s, kid->n))) continue;
    cand[nc++] = k;
  }
  if (!nc) {
    if (kid && j->url) ask_refetch(j);
    FAIL(kid ? "unknown kid" : "no key for alg");
  }
  int good = 0;
  for (int i = 0; i < nc && !good; i++)
    good = sig_ok(cand[i], alg, (const unsigned char *)tok, hl + 1 + pl, sig, (size_t)sn);
  if (!good) FAIL("bad signature");

  /* claims */
  GwValue *cv = NULL;
  if (gwr_json_parse(a, (const char *)pay, (size_t)pn, NULL, &cv, jerr, sizeof jerr) || cv->type != GWV_OBJECT)
    FAIL("bad payload");
  double exp = 0, nbf = 0, iat = 0;
  int r = num_claim(cv, "exp", &exp);
  if (r == 0) FAIL("exp missing");
  if (r < 0) FAIL("exp not a number");
  if (now >= exp + j->leeway) FAIL("expired");
  double lo = -1e300;
  if ((r = num_claim(cv, "nbf", &nbf)) < 0) FAIL("nbf not a number");
  if (r) { if (nbf > now + j->leeway) FAIL("not yet valid"); lo = nbf - j->leeway; }
  if ((r = num_claim(cv, "iat", &iat)) < 0) FAIL("iat not a number");
  if (r) { if (iat > now + j->leeway) FAIL("iat in the future"); if (iat - j->leeway > lo) lo = iat - j->leeway; }
  if (j->iss) {
    GwValue *v = gwv_get(cv, "iss", 3);
    if (!v || v->type != GWV_STRING || v->n != j->iss_len || memcmp(v->u.s, j->iss, j->iss_len))
      FAIL("wrong issuer");
  }
  if (j->aud) {
    GwValue *v = gwv_get(cv, "aud", 3);
    int found = 0;
    if (v && v->type == GWV_STRING)
      found = v->n == j->aud_len && !memcmp(v->u.s, j->aud, j->aud_len);
    else if (v && v->type == GWV_ARRAY)
      for (uint32_t i = 0; i < v->n && !found; i++) {
        GwValue *e = v->u.items[i];
        found = e && e->type == GWV_STRING && e->n == j->aud_len && !memcmp(e->u.s, j->aud, j->aud_len);
      }
    if (!found) FAIL("wrong audience");
  }
  cache_put(j, h, gen, exp + j->leeway, lo, (const char *)pay, (size_t)pn);
  *claims = cv;
out:
  set_release(set);
  return rc;
}
