"""Keys, JWKS documents and JWS tokens for the auth end-to-end tests.

Standard library only: RSA and EC keys are made and used through the
`openssl` command line, HMAC through hmac/hashlib. ES* signatures come out
of openssl as DER and are converted to the raw r||s form JWS uses.
"""
import base64
import hashlib
import hmac
import json
import os
import subprocess


def b64u(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_json(obj):
    return b64u(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def _openssl(args, data=None, timeout=20):
    p = subprocess.run(["openssl"] + args, input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), p.stderr.decode("utf-8", "replace")))
    return p.stdout


def _der_len(buf, i):
    n = buf[i]
    i += 1
    if n & 0x80:
        k = n & 0x7f
        n = int.from_bytes(buf[i:i + k], "big")
        i += k
    return n, i


def der_ecdsa_to_raw(der, size):
    """DER SEQUENCE { INTEGER r, INTEGER s } -> r||s, each `size` bytes."""
    if der[0] != 0x30:
        raise ValueError("not a DER sequence")
    _, i = _der_len(der, 1)
    out = b""
    for _ in range(2):
        if der[i] != 0x02:
            raise ValueError("not a DER integer")
        n, i = _der_len(der, i + 1)
        v = der[i:i + n].lstrip(b"\x00")
        i += n
        if len(v) > size:
            raise ValueError("integer too long")
        out += v.rjust(size, b"\x00")
    return out


class Key:
    """A private key on disk (RSA or EC), with its public PEM and JWK."""

    def __init__(self, directory, name, kind):
        self.name = name
        self.kind = kind                      # "rsa" | "ec256" | "ec384"
        self.priv = os.path.join(directory, name + ".key.pem")
        self.pub = os.path.join(directory, name + ".pub.pem")
        if kind == "rsa":
            _openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                      "-out", self.priv])
        elif kind in ("ec256", "ec384"):
            curve = "P-256" if kind == "ec256" else "P-384"
            _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:" + curve,
                      "-out", self.priv])
        else:
            raise ValueError(kind)
        _openssl(["pkey", "-in", self.priv, "-pubout", "-out", self.pub])
        with open(self.pub, "rb") as f:
            self.pub_pem = f.read()

    def jwk(self, kid, alg=None, use="sig"):
        if self.kind == "rsa":
            out = _openssl(["rsa", "-pubin", "-in", self.pub, "-noout", "-modulus"]).decode()
            n = bytes.fromhex(out.strip().split("=", 1)[1])
            text = _openssl(["rsa", "-pubin", "-in", self.pub, "-noout", "-text"]).decode()
            e = 65537
            for line in text.splitlines():
                if line.strip().startswith("Exponent:"):
                    e = int(line.split()[1])
            eb = e.to_bytes((e.bit_length() + 7) // 8, "big")
            j = {"kty": "RSA", "kid": kid, "n": b64u(n), "e": b64u(eb)}
        else:
            der = _openssl(["pkey", "-pubin", "-in", self.pub, "-outform", "DER"])
            size = 32 if self.kind == "ec256" else 48
            pt = der[-(2 * size + 1):]
            if pt[0] != 4:
                raise ValueError("EC point not uncompressed")
            j = {"kty": "EC", "kid": kid, "crv": "P-256" if size == 32 else "P-384",
                 "x": b64u(pt[1:1 + size]), "y": b64u(pt[1 + size:])}
        if alg:
            j["alg"] = alg
        if use:
            j["use"] = use
        return j

    def sign(self, alg, data):
        digest = {"256": "-sha256", "384": "-sha384", "512": "-sha512"}[alg[2:]]
        sig = _openssl(["dgst", digest, "-sign", self.priv], data=data)
        if alg.startswith("ES"):
            sig = der_ecdsa_to_raw(sig, 32 if alg == "ES256" else 48)
        return sig


def hmac_sign(alg, secret, data):
    h = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return hmac.new(secret, data, h).digest()


def make_token(claims, alg, key=None, secret=None, kid=None, header=None, sig=None):
    """A compact JWS. `key` (Key) signs RS*/ES*, `secret` (bytes) HS*;
    `header` replaces the default header entirely; `sig` (bytes) forces the
    signature (b"" for an unsigned token)."""
    h = header if header is not None else {"alg": alg, "typ": "JWT"}
    if header is None and kid is not None:
        h["kid"] = kid
    signing_input = (b64u_json(h) + "." + (claims if isinstance(claims, str) else b64u_json(claims))).encode()
    if sig is None:
        if alg.startswith("HS"):
            sig = hmac_sign(alg, secret, signing_input)
        else:
            sig = key.sign(alg, signing_input)
    return signing_input.decode() + "." + b64u(sig)


def jwks(*jwk_list):
    return json.dumps({"keys": list(jwk_list)}, indent=1)


def oct_jwk(kid, secret):
    return {"kty": "oct", "kid": kid, "k": b64u(secret)}
