/*
** gwr_tls.h — TLS termination for gwd's public listeners: the OpenSSL
** contexts of one listener, built from its certificate/key pairs.
**
** One GwrTls per TLS listener of a loaded program (GwrProg), built when the
** program loads, so a reload re-reads the files and builds new contexts;
** connections already open keep the SSL they have (and a reference to the
** GwrTls that made it). Immutable once built and shared by every worker
** (SSL_CTX is thread-safe for SSL_new); the reference count is atomic.
**
** What a context accepts (docs/tls.md has the operator's view):
**   - TLS 1.2 and 1.3 only;
**   - TLS 1.2: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only (no
**     CBC, no SHA-1 MACs, no 3DES, no RC4, no static RSA); the server's order
**     of preference; no renegotiation;
**   - TLS 1.3: the AES-GCM and ChaCha20-Poly1305 suites;
**   - ALPN: `http/1.1` is selected when offered; a client that offers only
**     protocols gwd does not speak (e.g. `h2` alone) fails the handshake with
**     the no_application_protocol alert (RFC 7301 3.2, as nginx does); a
**     client that sends no ALPN is served HTTP/1.1;
**   - SNI: with several pairs, the first pair whose certificate matches the
**     server name (SAN dNSName, wildcards included: X509_check_host) serves
**     the connection; no name, or no match: the first pair;
**   - sessions: resumption by session tickets only (stateless; the ticket
**     key is random per GwrTls, so a reload or restart starts over), no
**     session cache in memory.
**
** Not here: sockets, bufferevents, counting failures (gwr_server.c).
*/
#ifndef GWR_TLS_H
#define GWR_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

/* One certificate (chain, PEM: the leaf first) and its private key (PEM). */
typedef struct GwrTlsPair { const char *cert, *key; } GwrTlsPair;

typedef struct GwrTls GwrTls;

/* Contexts for the n pairs (n >= 1; borrowed, read during the call). what
** names the listener in messages ("listener 8443"). Loads and checks every
** file now: a missing, unreadable or invalid certificate or key, or a key
** that does not match its certificate, returns NULL with a one-line message
** naming the file in err. Returns an owned reference (count 1). Leaves the
** thread's OpenSSL error queue empty. */
GwrTls *gwr_tls_new(const GwrTlsPair *pairs, int n, const char *what, char *err, size_t errlen);
void    gwr_tls_retain(GwrTls *t);
/* Drops a reference; the last one frees the contexts (SSL objects made
** from them stay valid: OpenSSL counts its own references). NULL is allowed. */
void    gwr_tls_release(GwrTls *t);
/* A new server-side SSL for one connection, owned by the caller (or by the
** bufferevent it is given to); NULL when out of memory. The caller keeps a
** reference to t for as long as the SSL may still be handshaking (the SNI
** callback reads t). */
SSL    *gwr_tls_ssl_new(GwrTls *t);
/* The OpenSSL reason of the most recent failure packed code (ERR_get_error
** value or an SSL_ERROR_* from libevent), as a short static string. */
const char *gwr_tls_reason(unsigned long code);

#endif
