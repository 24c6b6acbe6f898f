/*
** gwr_tls.c — the OpenSSL contexts of one TLS listener (see gwr_tls.h).
**
** One SSL_CTX per certificate/key pair, all configured alike. A connection's
** SSL is made from the first; the server-name callback moves it to the
** context of the pair whose certificate matches the client's SNI (before the
** cipher and the certificate are chosen), so each pair keeps its own chain.
** ALPN is answered by every context (the choice happens after the switch).
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "gwr.h"
#include "gwr_tls.h"

struct GwrTls {
  int       refcount;
  int       n;
  SSL_CTX **ctx;          /* per pair */
  X509    **leaf;         /* per pair: its certificate (owned by ctx[i]), for SNI */
};

/* TLS 1.2: forward secrecy and AEAD only, ECDSA before RSA, AES-128 first
** (Mozilla's "intermediate" list without DHE). TLS 1.3: every AEAD suite but
** the CCM ones. */
static const char CIPHERS_12[] =
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char SUITES_13[] = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
/* The protocols we speak, in ALPN wire format. */
static const unsigned char ALPN[] = "\x08http/1.1";

void gwr_tls_retain(GwrTls *t) { __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED); }

static void tls_free(GwrTls *t) {
  for (int i = 0; i < t->n; i++) SSL_CTX_free(t->ctx[i]);
  free(t->ctx);
  free(t->leaf);
  free(t);
}

void gwr_tls_release(GwrTls *t) {
  if (t && __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) == 0) tls_free(t);
}

/* A key file is never prompted for: an encrypted key fails the load. */
static int no_passphrase(char *buf, int size, int rw, void *u) {
  (void)buf; (void)size; (void)rw; (void)u;
  return -1;
}

/* The reason of the last OpenSSL error of this thread, then the queue
** emptied (a stale error would make SSL_get_error misreport the next TLS
** read of this thread as a failure). */
static const char *last_reason(void) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return r ? r : "invalid";
}

const char *gwr_tls_reason(unsigned long code) {
  switch (code) {
  case SSL_ERROR_SSL: return "protocol error";
  case SSL_ERROR_SYSCALL: return "i/o error";
  case SSL_ERROR_ZERO_RETURN: return "closed";
  default: break;
  }
  const char *r = ERR_reason_error_string(code);
  return r ? r : "unknown";
}

/* SNI: the first pair whose certificate names the host; else stay on the
** first. Runs before the certificate and the cipher are chosen. */
static int on_servername(SSL *ssl, int *alert, void *arg) {
  GwrTls *t = arg;
  (void)alert;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name || t->n < 2) return SSL_TLSEXT_ERR_OK;
  size_t len = strlen(name);
  for (int i = 0; i < t->n; i++)
    if (X509_check_host(t->leaf[i], name, len, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1) {
      if (i && SSL_set_SSL_CTX(ssl, t->ctx[i]) == NULL) return SSL_TLSEXT_ERR_ALERT_FATAL;
      break;
    }
  return SSL_TLSEXT_ERR_OK;
}

/* ALPN: http/1.1 when the client offers it; a client offering only
** protocols we do not speak gets no_application_protocol (RFC 7301 3.2):
** continuing would only let it send bytes we cannot parse. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg) {
  unsigned char *sel = NULL;
  (void)ssl; (void)arg;
  if (SSL_select_next_proto(&sel, outlen, ALPN, sizeof ALPN - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static int failf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  ERR_clear_error();
  return -1;
}

/* Whether path can be opened for reading; else a message. */
static int readable(const char *path, const char *what, const char *kind, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) return failf(err, errlen, "%s: cannot read %s '%s': %s", what, kind, path, strerror(errno));
  fclose(f);
  return 0;
}

static SSL_CTX *ctx_new(GwrTls *t, const GwrTlsPair *pr, const char *what, char *err, size_t errlen) {
  if (readable(pr->cert, what, "certificate", err, errlen) || readable(pr->key, what, "key", err, errlen)) return NULL;
  SSL_CTX *c = SSL_CTX_new(TLS_server_method());
  if (!c) { failf(err, errlen, "%s: cannot create a TLS context: %s", what, last_reason()); return NULL; }
  int ok = SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) &&
           SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) &&
           SSL_CTX_set_cipher_list(c, CIPHERS_12) &&
           SSL_CTX_set_ciphersuites(c, SUITES_13);
  if (!ok) { failf(err, errlen, "%s: cannot configure TLS: %s", what, last_reason()); SSL_CTX_free(c); return NULL; }
  SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* idle keep-alive connections do not hold read/write buffers (~34 KB) */
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  /* resumption by tickets only: no session cache shared by the workers */
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_session_id_context(c, (const unsigned char *)"gwd", 3);
  SSL_CTX_set_default_passwd_cb(c, no_passphrase);
  SSL_CTX_set_alpn_select_cb(c, on_alpn, NULL);
  SSL_CTX_set_tlsext_servername_callback(c, on_servername);
  SSL_CTX_set_tlsext_servername_arg(c, t);

  if (SSL_CTX_use_certificate_chain_file(c, pr->cert) != 1) {
    failf(err, errlen, "%s: certificate '%s' cannot be used: %s", what, pr->cert, last_reason());
    SSL_CTX_free(c);
    return NULL;
  }
  /* the key is read on its own first, so that a mismatch is told apart
  ** from a file that is not a key */
  BIO *b = BIO_new_file(pr->key, "r");
  EVP_PKEY *pk = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
  BIO_free(b);
  if (!pk) {
    failf(err, errlen, "%s: key '%s' is not a PEM private key (or it is encrypted): %s", what, pr->key, last_reason());
    SSL_CTX_free(c);
    return NULL;
  }
  X509 *leaf = SSL_CTX_get0_certificate(c);
  if (!leaf || X509_check_private_key(leaf, pk) != 1) {
    ERR_clear_error();
    EVP_PKEY_free(pk);
    failf(err, errlen, "%s: key '%s' does not match certificate '%s'", what, pr->key, pr->cert);
    SSL_CTX_free(c);
    return NULL;
  }
  ok = SSL_CTX_use_PrivateKey(c, pk) == 1 && SSL_CTX_check_private_key(c) == 1;
  EVP_PKEY_free(pk);
  if (!ok) {
    failf(err, errlen, "%s: key '%s' cannot be used with certificate '%s': %s", what, pr->key, pr->cert, last_reason());
    SSL_CTX_free(c);
    return NULL;
  }
  /* served all the same (clients decide), but worth a line */
  if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
    gwr_log("warn", "%s: certificate '%s' has expired", what, pr->cert);
  else if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0)
    gwr_log("warn", "%s: certificate '%s' is not valid yet", what, pr->cert);
  ERR_clear_error();
  return c;
}

GwrTls *gwr_tls_new(const GwrTlsPair *pairs, int n, const char *what, char *err, size_t errlen) {
  if (n < 1) { failf(err, errlen, "%s: tls needs a certificate and a key", what); return NULL; }
  GwrTls *t = calloc(1, sizeof *t);
  if (!t) abort();
  t->refcount = 1;
  t->ctx = calloc((size_t)n, sizeof *t->ctx);
  t->leaf = calloc((size_t)n, sizeof *t->leaf);
  if (!t->ctx || !t->leaf) abort();
  for (int i = 0; i < n; i++) {
    if (!(t->ctx[i] = ctx_new(t, &pairs[i], what, err, errlen))) { tls_free(t); return NULL; }
    t->leaf[i] = SSL_CTX_get0_certificate(t->ctx[i]);
    t->n++;
  }
  return t;
}

SSL *gwr_tls_ssl_new(GwrTls *t) {
  SSL *s = SSL_new(t->ctx[0]);
  if (!s) ERR_clear_error();
  return s;
}
