/*
** gwr_jwt.h — JWT verification for `auth NAME jwt { … }` policies.
**
** One GwrJwt per jwt policy of a loaded program, built at load from the
** policy's record (GwAuth). Its configuration is immutable; verification is
** thread-safe (any number of workers call gwr_jwt_verify() at once).
**
** What a token must be to pass (docs/jwt.md has the operator's view):
**   - at most GWR_JWT_MAX_TOKEN bytes (checked before anything else);
**   - exactly three base64url parts (strict alphabet, no padding, canonical
**     trailing bits), header and payload JSON objects;
**   - header `alg` one of the policy's pinned algorithms (`none` in any case
**     is refused by name); no `crit`; `kid`, if present, a string that is
**     only ever a lookup key into the loaded key set; `jku`, `x5u`, `jwk`,
**     `x5c` are never used;
**   - a key of the algorithm's family: HMAC secret (oct) for HS*, RSA for
**     RS* and PS*, EC P-256 for ES256, EC P-384 for ES384, Ed25519 for EdDSA.
**     An RSA public key is never an HMAC secret (the RS→HS confusion);
**   - the signature verified with OpenSSL EVP against keys parsed once at
**     load (HS*: HMAC + CRYPTO_memcmp; RS*: PKCS#1 v1.5; PS*: PSS, salt =
**     hash length; ES*: JOSE raw r||s of exactly 2×field bytes; EdDSA:
**     Ed25519);
**   - claims: `exp` present and a number, now < exp + leeway; `nbf` (if
**     present) a number, nbf <= now + leeway; `iat` (if present) a number,
**     iat <= now + leeway; `iss` equal to the policy's issuer when set; `aud`
**     the policy's audience, or an array containing it, when set.
**
** Keys: `key file` (HMAC secret bytes, one trailing newline trimmed, at
** least 32 bytes, not PEM; or a PEM public key / certificate), `jwks file`
** (read once at load), or `jwks url` (a background thread fetches it at
** start, every jwks_refresh_ms, and after an unknown `kid` at most once per
** GWR_JWT_KID_REFETCH_S; failures keep the last good set; until the first
** success there are no keys and every token is refused).
**
** A bounded cache (GWR_JWT_CACHE_ENTRIES, sharded, a mutex per shard) keeps
** tokens that passed every check, by SHA-256 of the token, with their
** claims' JSON text and `exp`: a hit re-checks `exp` (an entry never
** outlives it) and parses the claims into the caller's arena. A new key set
** from a JWKS url invalidates every entry verified with the old one.
*/
#ifndef GWR_JWT_H
#define GWR_JWT_H

#include <stddef.h>
#include <stdint.h>
#include "gw_bytecode.h"
#include "gw_util.h"
#include "gwr_value.h"

#define GWR_JWT_MAX_TOKEN      8192     /* bytes of the compact token */
#define GWR_JWT_CACHE_ENTRIES  4096     /* verified tokens kept, per policy */
#define GWR_JWT_KID_REFETCH_S  30       /* unknown kid: at most one refetch per this */
#define GWR_JWT_MAX_JWKS       (1u << 20) /* bytes of a JWKS document */

typedef struct GwrJwt GwrJwt;

/* Build the verifier of auths[a] of p (a jwt policy; p verified). Reads the
** key file or JWKS file now; for a JWKS url, starts the refresh thread
** (curl_global_init must have been called by the process, as gwd does).
** p is only read during the call (strings are copied). Returns NULL with a
** one-line message in err (naming the policy) on: a file that cannot be
** read, no PEM public key or certificate in a key file, an HMAC secret that
** is empty, shorter than 32 bytes or looks like a PEM key, a key whose type
** matches none of the pinned algorithms, a JWKS file with no usable key, an
** RSA key under 2048 bits, out of memory. */
GwrJwt *gwr_jwt_new(const GwProgram *p, uint32_t a, char *err, size_t errlen);

/* Stop the refresh thread (waits at most for a transfer to notice: it is
** aborted) and free everything. No gwr_jwt_verify() may be running. NULL ok. */
void gwr_jwt_free(GwrJwt *j);

/* Verify the compact token tok[0..n) (no "Bearer "). now_s: seconds since
** the epoch (time(NULL) in gwd; injectable for tests). Returns 0 with
** *claims the payload object (allocated in arena a), or 401 with *reason a
** short static lower-case reason for logs ("expired", "bad signature", …),
** never containing any part of the token. Never blocks on the network: an
** unknown kid only wakes the refresh thread. */
int gwr_jwt_verify(GwrJwt *j, const char *tok, size_t n, int64_t now_s, GwArena *a,
                   GwValue **claims, const char **reason);

/* Number of keys usable now (0 while a JWKS url has not been fetched yet). */
int gwr_jwt_nkeys(GwrJwt *j);

#endif
