-- bench/lua/jwt.lua — the OpenResty side of the jwt-* and everything scenarios:
-- the checks of gwd's `auth NAME jwt` (docs/jwt.md) on the same tokens, through
-- LuaJIT FFI to OpenSSL's libcrypto (what lua-resty-jwt / lua-resty-openssl do;
-- Debian packages neither):
--   HS256  HMAC(EVP_sha256()) over header.payload, compared with CRYPTO_memcmp
--   RS256  EVP_DigestVerifyInit + EVP_DigestVerify (PKCS#1 v1.5) with the public
--          key loaded once per worker (PEM_read_bio_PUBKEY)
-- plus base64url (ngx.base64), cjson for the header and the payload, the pinned
-- alg, `exp` (and `nbf`/`iat` when present). A refused token is 401 with
-- `WWW-Authenticate: Bearer error="invalid_token"` and {"error":"unauthorized"},
-- as gwd answers.
--
-- Cached (check(alg, true)): a per-worker table token -> claims per alg, cleared
-- when it reaches 10,000 entries (gwd keeps 4,096 per policy), so that both sides
-- cache verified tokens. Cold (check(alg, false)): every request is verified.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local b64 = require "ngx.base64"

local C = ffi.load("libcrypto.so.3")
ffi.cdef [[
typedef struct evp_md_st EVP_MD;
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_pkey_ctx_st EVP_PKEY_CTX;
typedef struct engine_st ENGINE;
typedef struct bio_st BIO;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
int CRYPTO_memcmp(const void *a, const void *b, size_t len);
BIO *BIO_new_mem_buf(const void *buf, int len);
int BIO_free(BIO *a);
EVP_PKEY *PEM_read_bio_PUBKEY(BIO *bp, EVP_PKEY **x, void *cb, void *u);
int EVP_PKEY_get_size(const EVP_PKEY *pkey);
EVP_MD_CTX *EVP_MD_CTX_new(void);
int EVP_MD_CTX_reset(EVP_MD_CTX *ctx);
int EVP_DigestVerifyInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type,
                         ENGINE *e, EVP_PKEY *pkey);
int EVP_DigestVerify(EVP_MD_CTX *ctx, const unsigned char *sig, size_t siglen,
                     const unsigned char *tbs, size_t tbslen);
void ERR_clear_error(void);
]]

local decode, enc = cjson.decode, cjson.encode
local b64d = b64.decode_base64url
local find, sub, lower = string.find, string.sub, string.lower
local type, now = type, ngx.time
local cast = ffi.cast
local uchar_p = ffi.typeof("const unsigned char *")

local M = {}

local secret, pub_pem          -- read in init_by_lua (the master)
local sha256, pkey, pkey_size, mdctx
local mac = ffi.new("unsigned char[32]")
local MAX_CACHE = 10000
local caches = { HS256 = { t = {}, n = 0 }, RS256 = { t = {}, n = 0 } }

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

-- init_by_lua: read the keys' files (the worker runs as nobody).
function M.init(hs_path, rs_path)
    secret = slurp(hs_path):gsub("\r?\n$", "")     -- gwd trims one trailing newline
    pub_pem = slurp(rs_path)
end

-- init_worker_by_lua: the OpenSSL objects, once per worker.
function M.init_worker()
    sha256 = C.EVP_sha256()
    local bio = C.BIO_new_mem_buf(pub_pem, #pub_pem)
    pkey = C.PEM_read_bio_PUBKEY(bio, nil, nil, nil)
    C.BIO_free(bio)
    if pkey == nil then error("jwt.lua: cannot read the RS256 public key") end
    pkey_size = C.EVP_PKEY_get_size(pkey)
    mdctx = C.EVP_MD_CTX_new()
end

local function sig_ok(alg, tok, signed_len, sig)
    local msg = cast(uchar_p, tok)
    if alg == "HS256" then
        if #sig ~= 32 then return false end
        if C.HMAC(sha256, secret, #secret, msg, signed_len, mac, nil) == nil then
            C.ERR_clear_error()
            return false
        end
        return C.CRYPTO_memcmp(mac, sig, 32) == 0
    end
    -- RS256: the signature is exactly the modulus length
    if #sig ~= pkey_size then return false end
    C.EVP_MD_CTX_reset(mdctx)
    if C.EVP_DigestVerifyInit(mdctx, nil, sha256, nil, pkey) ~= 1
        or C.EVP_DigestVerify(mdctx, sig, #sig, msg, signed_len) ~= 1 then
        C.ERR_clear_error()
        return false
    end
    return true
end

local function num_ok(v)
    return v == nil or type(v) == "number"
end

-- The claims of a valid token, or nil.
local function verify(alg, tok)
    local d1 = find(tok, ".", 1, true)
    if not d1 or d1 == 1 then return nil end
    local d2 = find(tok, ".", d1 + 1, true)
    if not d2 or d2 == d1 + 1 or d2 == #tok or find(tok, ".", d2 + 1, true) then return nil end

    local h = b64d(sub(tok, 1, d1 - 1))
    local hdr = h and decode(h)
    if type(hdr) ~= "table" or hdr.alg ~= alg or hdr.crit ~= nil then return nil end

    local sig = b64d(sub(tok, d2 + 1))
    if not sig or not sig_ok(alg, tok, d2 - 1, sig) then return nil end

    local p = b64d(sub(tok, d1 + 1, d2 - 1))
    local c = p and decode(p)
    if type(c) ~= "table" then return nil end
    local t = now()
    local exp, nbf, iat = c.exp, c.nbf, c.iat
    if type(exp) ~= "number" or t >= exp then return nil end
    if not (num_ok(nbf) and num_ok(iat)) then return nil end
    if (nbf and nbf > t) or (iat and iat > t) then return nil end
    return c
end

local function send(status, body)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Content-Length"] = #body
    ngx.print(body)
end

local function unauthorized()
    ngx.header["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    send(401, '{"error":"unauthorized"}')
    return nil
end

-- The claims of the request's bearer token, or nil after answering 401.
function M.check(alg, use_cache)
    local h = ngx.var.http_authorization
    if not h or #h < 8 then return unauthorized() end
    local scheme = sub(h, 1, 7)
    if scheme ~= "Bearer " and lower(scheme) ~= "bearer " then return unauthorized() end
    local tok = sub(h, 8)
    if #tok > 8192 then return unauthorized() end

    if not use_cache then
        return verify(alg, tok) or unauthorized()
    end
    local cache = caches[alg]
    local c = cache.t[tok]
    if c then                          -- a hit is refused once it expires
        local t = now()
        if t < c.exp and not (c.nbf and c.nbf > t) then return c end
    end
    c = verify(alg, tok)
    if not c then return unauthorized() end
    if cache.n >= MAX_CACHE then cache.t, cache.n = {}, 0 end
    cache.t[tok] = c
    cache.n = cache.n + 1
    return c
end

-- The jwt-* endpoints: `respond { sub: jwt.sub }`.
function M.sub(alg, use_cache)
    local c = M.check(alg, use_cache)
    if c then send(200, '{"sub":' .. enc(c.sub) .. "}") end
end

return M
