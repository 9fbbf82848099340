//! Verification keys: PEM, raw HMAC secrets and JWK sets, each pinned to one algorithm
//! and refused at registration when the verifier could never accept it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{DecodingKey, DecodingKeyKind};
use rsa::pkcs1::der::Decode as _;
use serde_json::{Map, Value};
use std::fmt;

use super::alg::Family;
use super::*;

/// Why key material was refused. Messages are meant for a SQL ERROR and
/// never contain the material itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// kid empty, too long or containing control characters.
    InvalidKid(&'static str),
    /// Algorithm name not supported (the name is echoed, truncated).
    UnsupportedAlg(String),
    /// HMAC secret shorter than [`MIN_HMAC_SECRET_BYTES`].
    WeakSecret { got: usize },
    /// A PEM document was given as an HMAC secret.
    PemAsSecret,
    /// A private key was given where a public key is required.
    PrivateKey,
    /// An X.509 certificate was given instead of a bare public key.
    Certificate,
    /// Asymmetric algorithm but the material is not a single PEM document.
    NotPem,
    /// The material is a key, but of the wrong type for the algorithm.
    WrongKeyType { alg: Alg, expected: &'static str },
    /// RSA modulus below [`MIN_RSA_BITS`].
    WeakRsa { bits: usize },
    /// The key could not be parsed, or no signature could ever verify with it
    /// (e.g. an even RSA exponent or an EC point off its curve).
    InvalidKey(&'static str),
    /// A JWK is malformed.
    InvalidJwk(String),
    /// A JWK set is malformed.
    InvalidJwks(String),
}

impl fmt::Display for KeyError {
    // Human-readable, actionable reasons; no key material is ever included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::InvalidKid(why) => write!(f, "invalid key id: {why}"),
            KeyError::UnsupportedAlg(a) => write!(
                f,
                "unsupported algorithm \"{a}\"; use one of HS256, HS384, HS512, RS256, RS384, \
                 RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
            ),
            KeyError::WeakSecret { got } => write!(
                f,
                "HMAC secret too short: {got} bytes; HS256, HS384 and HS512 keys need at least \
                 {MIN_HMAC_SECRET_BYTES} bytes"
            ),
            KeyError::PemAsSecret => f.write_str(
                "HMAC secret looks like a PEM document; register public keys with an RS*, PS*, \
                 ES* or EdDSA algorithm instead",
            ),
            KeyError::PrivateKey => f.write_str(
                "a private key was given; supply only the PUBLIC key \
                 (e.g. openssl pkey -in key.pem -pubout)",
            ),
            KeyError::Certificate => f.write_str(
                "an X.509 certificate was given; supply its public key \
                 (e.g. openssl x509 -in cert.pem -pubkey -noout)",
            ),
            KeyError::NotPem => f.write_str(
                "key material must be exactly one PEM document \
                 (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)",
            ),
            KeyError::WrongKeyType { alg, expected } => {
                write!(f, "algorithm {alg} needs {expected}")
            }
            KeyError::WeakRsa { bits } => write!(
                f,
                "RSA key too small: {bits} bits; at least {MIN_RSA_BITS} bits are required"
            ),
            KeyError::InvalidKey(why) => write!(f, "invalid key: {why}"),
            KeyError::InvalidJwk(why) => write!(f, "invalid JWK: {why}"),
            KeyError::InvalidJwks(why) => write!(f, "invalid JWKS: {why}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A verification key pinned to exactly one algorithm.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub alg: Alg,
    pub(super) decoding: DecodingKey,
}

impl fmt::Debug for Key {
    // Never print key material, not even for a public key (keeps HS secrets safe).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("material", &"[redacted]")
            .finish()
    }
}

impl Key {
    /// Build a key from `vecguard.key_add(kid, alg, material)` input.
    /// HS*: `material` is the raw secret, used byte for byte (>= 32 bytes).
    /// RS*/PS*: PEM public key (SPKI "PUBLIC KEY" or PKCS#1 "RSA PUBLIC KEY").
    /// ES256/ES384: PEM SPKI EC public key on the matching curve.
    /// EdDSA: PEM SPKI Ed25519 public key.
    /// Private keys and certificates are refused with a message saying so.
    pub fn from_material(kid: &str, alg: &str, material: &str) -> Result<Key, KeyError> {
        let kid = validate_kid(kid)?;
        let alg = parse_alg_for_key(alg)?;
        let decoding = match alg.family() {
            Family::Hmac => {
                if material.contains("-----BEGIN") {
                    return Err(KeyError::PemAsSecret);
                }
                let bytes = material.as_bytes();
                if bytes.len() < MIN_HMAC_SECRET_BYTES {
                    return Err(KeyError::WeakSecret { got: bytes.len() });
                }
                DecodingKey::from_secret(bytes)
            }
            Family::Rsa => {
                let pem = single_pem(material)?;
                if pem.label != "PUBLIC KEY" && pem.label != "RSA PUBLIC KEY" {
                    return Err(wrong_type(alg));
                }
                DecodingKey::from_rsa_pem(pem.text.as_bytes()).map_err(|_| wrong_type(alg))?
            }
            Family::Ec => {
                let pem = single_pem(material)?;
                if pem.label != "PUBLIC KEY" {
                    return Err(wrong_type(alg));
                }
                DecodingKey::from_ec_pem(pem.text.as_bytes()).map_err(|_| wrong_type(alg))?
            }
            Family::Ed => {
                let pem = single_pem(material)?;
                if pem.label != "PUBLIC KEY" {
                    return Err(wrong_type(alg));
                }
                DecodingKey::from_ed_pem(pem.text.as_bytes()).map_err(|_| wrong_type(alg))?
            }
        };
        check_key_matches_alg(alg, &decoding)?;
        Ok(Key { kid, alg, decoding })
    }

    /// Build a key from one JWK (RFC 7517) given as JSON.
    /// `kid` is required; `alg` is used when present, otherwise inferred
    /// (RSA -> RS256, EC P-256 -> ES256, EC P-384 -> ES384, OKP Ed25519 ->
    /// EdDSA, oct -> HS256). `use` other than "sig" and any private
    /// parameter (d, p, q, ...) are refused.
    pub fn from_jwk(jwk: &Value) -> Result<Key, KeyError> {
        let obj = jwk.as_object().ok_or_else(|| jwk_err("a JWK must be a JSON object"))?;
        let kid = match obj.get("kid") {
            Some(Value::String(s)) => validate_kid(s)?,
            Some(_) => return Err(jwk_err("\"kid\" must be a string")),
            None => return Err(jwk_err("\"kid\" is required")),
        };
        let kty = str_field(obj, "kty")?.ok_or_else(|| jwk_err("\"kty\" is required"))?;
        match obj.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(_) => return Err(jwk_err("\"use\" must be \"sig\" for a verification key")),
        }
        if kty != "oct" {
            for p in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
                if obj.contains_key(p) {
                    return Err(KeyError::PrivateKey);
                }
            }
        }
        let crv = str_field(obj, "crv")?;
        let alg = match obj.get("alg") {
            Some(Value::String(s)) => parse_alg_for_key(s)?,
            Some(_) => return Err(jwk_err("\"alg\" must be a string")),
            None => match (kty, crv) {
                ("RSA", _) => Alg::RS256,
                ("EC", Some("P-256")) => Alg::ES256,
                ("EC", Some("P-384")) => Alg::ES384,
                ("OKP", Some("Ed25519")) => Alg::EdDSA,
                ("oct", _) => Alg::HS256,
                _ => {
                    return Err(jwk_err(
                        "cannot infer \"alg\" from \"kty\"/\"crv\"; add an \"alg\" member",
                    ))
                }
            },
        };
        let decoding = match (kty, alg.family()) {
            ("RSA", Family::Rsa) => {
                let n = b64_field(obj, "n")?;
                let e = b64_field(obj, "e")?;
                if e.is_empty() {
                    return Err(jwk_err("\"e\" is empty"));
                }
                DecodingKey::from_rsa_raw_components(&n, &e)
            }
            ("EC", Family::Ec) => {
                let want = match (alg, crv) {
                    (Alg::ES256, Some("P-256")) => 32,
                    (Alg::ES384, Some("P-384")) => 48,
                    _ => return Err(wrong_type(alg)),
                };
                let x = b64_field(obj, "x")?;
                let y = b64_field(obj, "y")?;
                if x.len() != want || y.len() != want {
                    return Err(jwk_err("EC coordinates have the wrong length for the curve"));
                }
                DecodingKey::from_ec_components(
                    &URL_SAFE_NO_PAD.encode(&x),
                    &URL_SAFE_NO_PAD.encode(&y),
                )
                .map_err(|_| jwk_err("invalid EC coordinates"))?
            }
            ("OKP", Family::Ed) => {
                if crv != Some("Ed25519") {
                    return Err(wrong_type(alg));
                }
                let x = b64_field(obj, "x")?;
                if x.len() != 32 {
                    return Err(jwk_err("Ed25519 \"x\" must be 32 bytes"));
                }
                DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&x))
                    .map_err(|_| jwk_err("invalid Ed25519 key"))?
            }
            ("oct", Family::Hmac) => {
                let k = b64_field(obj, "k")?;
                if k.len() < MIN_HMAC_SECRET_BYTES {
                    return Err(KeyError::WeakSecret { got: k.len() });
                }
                DecodingKey::from_secret(&k)
            }
            ("RSA", _) | ("EC", _) | ("OKP", _) | ("oct", _) => return Err(wrong_type(alg)),
            _ => return Err(jwk_err("unsupported \"kty\"; expected RSA, EC, OKP or oct")),
        };
        check_key_matches_alg(alg, &decoding)?;
        Ok(Key { kid, alg, decoding })
    }

    /// RFC 7638 SHA-256 thumbprint (base64url) of an asymmetric key, for
    /// audit records such as key_added. `None` for HMAC keys, so no digest
    /// of a shared secret is ever published.
    pub fn thumbprint(&self) -> Option<String> {
        if self.alg.is_symmetric() {
            return None;
        }
        let jwk = Jwk::from_decoding_key(&self.decoding, None).ok()?;
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).ok()
    }
}

/// Parse a JWK set `{"keys":[...]}` into keys. Encryption keys
/// (`"use":"enc"` or a JWE key-management `alg`) are skipped, because real
/// identity-provider sets mix them in; any other bad key fails the whole
/// set (with its 1-based position), as do duplicate kids and a set with no
/// usable signature key.
pub fn parse_jwks(json: &str) -> Result<Vec<Key>, KeyError> {
    let v: Value = serde_json::from_str(json).map_err(|_| jwks_err("not valid JSON".into()))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| jwks_err("expected an object with a \"keys\" array".into()))?;
    let mut out: Vec<Key> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if is_encryption_jwk(k) {
            continue;
        }
        let key = Key::from_jwk(k).map_err(|e| jwks_err(format!("key #{}: {e}", i + 1)))?;
        if out.iter().any(|o| o.kid == key.kid) {
            return Err(jwks_err(format!("key #{}: duplicate kid", i + 1)));
        }
        out.push(key);
    }
    if out.is_empty() {
        return Err(jwks_err("no signature keys in the set".into()));
    }
    Ok(out)
}

// JWE keys are legitimately present in provider JWKS documents; skip them.
fn is_encryption_jwk(k: &Value) -> bool {
    if k.get("use").and_then(Value::as_str) == Some("enc") {
        return true;
    }
    match k.get("alg").and_then(Value::as_str) {
        Some(a) => ["RSA-OAEP", "RSA1_5", "ECDH-ES", "A128", "A192", "A256", "PBES2", "dir"]
            .iter()
            .any(|p| a.starts_with(p)),
        None => false,
    }
}

fn jwk_err(why: &str) -> KeyError {
    KeyError::InvalidJwk(why.to_string())
}

fn jwks_err(why: String) -> KeyError {
    KeyError::InvalidJwks(why)
}

fn wrong_type(alg: Alg) -> KeyError {
    let expected = match alg {
        Alg::HS256 | Alg::HS384 | Alg::HS512 => "a shared secret",
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
            "an RSA public key"
        }
        Alg::ES256 => "an EC public key on curve P-256",
        Alg::ES384 => "an EC public key on curve P-384",
        Alg::EdDSA => "an Ed25519 public key",
    };
    KeyError::WrongKeyType { alg, expected }
}

// Optional string member of a JWK; a non-string value is an error, not "absent".
fn str_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, KeyError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(KeyError::InvalidJwk(format!("\"{name}\" must be a string"))),
    }
}

// Required base64url member of a JWK. Padding is tolerated because some
// providers emit it, although RFC 7518 says it must be omitted.
fn b64_field(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    let s = str_field(obj, name)?
        .ok_or_else(|| KeyError::InvalidJwk(format!("\"{name}\" is required")))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| KeyError::InvalidJwk(format!("\"{name}\" is not valid base64url")))
}

// Shared by key_add and JWKs: the alg string is admin input; echo at most 32 chars.
fn parse_alg_for_key(alg: &str) -> Result<Alg, KeyError> {
    Alg::parse(alg.trim()).ok_or_else(|| KeyError::UnsupportedAlg(alg.chars().take(32).collect()))
}

// kid ends up in audit logs and SQL messages: bound it and forbid control chars.
fn validate_kid(kid: &str) -> Result<String, KeyError> {
    if kid.is_empty() {
        return Err(KeyError::InvalidKid("must not be empty"));
    }
    if kid.len() > MAX_KID_BYTES {
        return Err(KeyError::InvalidKid("longer than 256 bytes"));
    }
    if kid.chars().any(char::is_control) {
        return Err(KeyError::InvalidKid("contains control characters"));
    }
    Ok(kid.to_string())
}

struct Pem<'a> {
    label: &'a str,
    text: &'a str,
}

// Find the one PEM block in `material`. We look at every BEGIN line so that
// a private key hidden after a public one is still refused.
fn single_pem(material: &str) -> Result<Pem<'_>, KeyError> {
    let text = material.trim();
    let mut labels = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            labels.push(rest.strip_suffix("-----").unwrap_or(rest).trim());
        }
    }
    if labels.iter().any(|l| l.contains("PRIVATE KEY")) {
        return Err(KeyError::PrivateKey);
    }
    if labels.iter().any(|l| l.contains("CERTIFICATE")) {
        return Err(KeyError::Certificate);
    }
    match labels.as_slice() {
        [label] => Ok(Pem { label, text }),
        _ => Err(KeyError::NotPem),
    }
}

// Parse the decoded key once at registration so that a bad key fails at
// key_add time with a clear message, not later as "bad signature". The
// arithmetic checks run on the raw material first, because jsonwebtoken's
// own parsers refuse some of these keys without saying why, and accept
// others that its verifier then refuses on every token.
fn check_key_matches_alg(alg: Alg, key: &DecodingKey) -> Result<(), KeyError> {
    match alg.family() {
        Family::Hmac => return Ok(()),
        Family::Rsa => check_rsa(key)?,
        Family::Ec => check_ec(alg, key)?,
        Family::Ed => check_ed(key)?,
    }
    let jwk = Jwk::from_decoding_key(key, None)
        .map_err(|_| KeyError::InvalidKey("the public key could not be parsed"))?;
    match (&jwk.algorithm, alg.family()) {
        (AlgorithmParameters::RSA(_), Family::Rsa) => Ok(()),
        (AlgorithmParameters::EllipticCurve(p), Family::Ec) => match (&p.curve, alg) {
            (EllipticCurve::P256, Alg::ES256) | (EllipticCurve::P384, Alg::ES384) => Ok(()),
            _ => Err(wrong_type(alg)),
        },
        (AlgorithmParameters::OctetKeyPair(p), Family::Ed) => match p.curve {
            EllipticCurve::Ed25519 => Ok(()),
            _ => Err(wrong_type(alg)),
        },
        _ => Err(wrong_type(alg)),
    }
}

// The verifier builds RSA keys with rsa::RsaPublicKey::new, which refuses an
// exponent below 2 or even, an even modulus, n <= e, e >= 2^33 and n above
// 4096 bits; such a key can never verify a token. The common mistakes get
// their own message here, then the verifier's own constructor is run so that
// registration and verification cannot disagree.
fn check_rsa(key: &DecodingKey) -> Result<(), KeyError> {
    let (n, e) = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => (n.as_slice(), e.as_slice()),
        // PEM: PKCS#1 RSAPublicKey DER (jsonwebtoken unwraps SPKI already).
        DecodingKeyKind::SecretOrDer(der) => {
            let k = rsa::pkcs1::RsaPublicKey::from_der(der)
                .map_err(|_| KeyError::InvalidKey("the RSA public key could not be parsed"))?;
            (k.modulus.as_bytes(), k.public_exponent.as_bytes())
        }
    };
    let (n, e) = (strip_zeros(n), strip_zeros(e));
    let bits = bit_length(n);
    if bits < MIN_RSA_BITS {
        return Err(KeyError::WeakRsa { bits });
    }
    if bit_length(e) < 2 || e.last().is_some_and(|b| b & 1 == 0) {
        return Err(KeyError::InvalidKey(
            "RSA public exponent must be an odd integer of at least 3",
        ));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err(KeyError::InvalidKey("RSA modulus must be odd"));
    }
    // Big-endian without leading zeros: the longer number is the larger.
    if (n.len(), n) <= (e.len(), e) {
        return Err(KeyError::InvalidKey("RSA public exponent must be smaller than the modulus"));
    }
    let big = rsa::BigUint::from_bytes_be;
    match rsa::RsaPublicKey::new(big(n), big(e)) {
        Ok(_) => Ok(()),
        Err(rsa::Error::ModulusTooLarge) => {
            Err(KeyError::InvalidKey("RSA keys larger than 4096 bits are not supported"))
        }
        Err(rsa::Error::PublicExponentTooLarge) => Err(KeyError::InvalidKey(
            "RSA public exponent is too large; at most 2^33-1 is supported (65537 is usual)",
        )),
        Err(_) => Err(KeyError::InvalidKey("the RSA public key is not usable")),
    }
}

// The verifier calls from_sec1_bytes on this same SEC1 encoding, which refuses
// coordinates >= p, points off the curve and the identity. We also insist on
// the uncompressed form 04||x||y with exact-length coordinates, which JWK
// export and thumbprints need.
fn check_ec(alg: Alg, key: &DecodingKey) -> Result<(), KeyError> {
    let point = key
        .try_get_as_bytes()
        .map_err(|_| KeyError::InvalidKey("the EC public key could not be parsed"))?;
    if point.first() != Some(&4) || !matches!(point.len(), 65 | 97) {
        return Err(KeyError::InvalidKey(
            "EC public key must be an uncompressed P-256 or P-384 point",
        ));
    }
    let on_curve = match (alg, point.len()) {
        (Alg::ES256, 65) => p256::PublicKey::from_sec1_bytes(point).is_ok(),
        (Alg::ES384, 97) => p384::PublicKey::from_sec1_bytes(point).is_ok(),
        _ => return Err(wrong_type(alg)),
    };
    match (on_curve, alg) {
        (true, _) => Ok(()),
        (false, Alg::ES256) => {
            Err(KeyError::InvalidKey("EC public key is not a point on curve P-256"))
        }
        (false, _) => Err(KeyError::InvalidKey("EC public key is not a point on curve P-384")),
    }
}

// 32 bytes that decompress to a curve point, as the verifier needs. Small-order
// points (the identity among them) are refused too: jsonwebtoken uses
// ed25519-dalek's non-strict verify, under which such a key accepts a forged
// signature on any message.
fn check_ed(key: &DecodingKey) -> Result<(), KeyError> {
    let bytes: &[u8; 32] = key
        .try_get_as_bytes()
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(KeyError::InvalidKey("Ed25519 public key must be 32 bytes"))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(bytes)
        .map_err(|_| KeyError::InvalidKey("Ed25519 public key is not a point on the curve"))?;
    if vk.is_weak() {
        return Err(KeyError::InvalidKey(
            "Ed25519 public key is a small-order point, which would accept forged signatures",
        ));
    }
    Ok(())
}

fn strip_zeros(mut be: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = be {
        be = rest;
    }
    be
}

// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn bit_length(be: &[u8]) -> usize {
    let mut bytes = be.iter().skip_while(|b| **b == 0);
    match bytes.next() {
        None => 0,
        Some(first) => (8 - first.leading_zeros() as usize) + 8 * bytes.count(),
    }
}
