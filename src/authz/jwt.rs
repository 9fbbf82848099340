//! JWT verification for vecguard, with the clock injected by the caller.
//!
//! Why this module exists and how it is shaped
//! -------------------------------------------
//! vecguard turns a bearer token into row-level-security decisions, so a
//! token we wrongly accept is a data leak. The classic JWT failure modes are
//! therefore treated as first-class cases here rather than left to defaults:
//!
//! * **Algorithm confusion.** Every key is registered together with exactly
//!   one algorithm (`Key::alg`) and the token header's `alg` must be *equal*
//!   to it. The header never chooses the algorithm; it only has to agree. An
//!   attacker who signs an HS256 token with an RSA public key's PEM as the
//!   HMAC secret gets `AlgMismatch`, and `none` never even parses as an
//!   [`Alg`]. HMAC keys are also refused when the "secret" looks like a PEM
//!   document, so such a confusion cannot be set up at registration either.
//! * **Key selection.** `kid` is required. The header is read (untrusted)
//!   only to learn `alg` and `kid`; `jku`, `x5u`, `jwk` and similar headers
//!   are ignored, keys come only from the caller's lookup. `crit` is
//!   rejected because we implement no header extensions (RFC 7515 4.1.11).
//! * **Signature.** Delegated to `jsonwebtoken` with a validation that lists
//!   only the key's pinned algorithm. Its own time and claim checks are
//!   switched off, because it reads the wall clock, while PostgreSQL wants
//!   one consistent notion of "now" per statement (and tests want a fixed
//!   one). We never call its `dangerous`/`insecure_decode` functions; the
//!   payload is only parsed after the signature has been verified.
//! * **Claims.** Checked by us against `now_unix`: `exp` is required and
//!   must be a JSON number (a string `"exp":"9999999999"` is a type error,
//!   not a far-future date); `nbf`/`iat` must be numbers when present;
//!   `iss` and `aud` are compared when configured. Leeway is capped at
//!   [`MAX_LEEWAY_SECS`] so a misconfiguration cannot silently extend the
//!   life of every token by hours.
//! * **Hostile input.** Size is capped at [`MAX_TOKEN_BYTES`] before any
//!   decoding, nothing indexes or unwraps input-derived data, and no error
//!   message ever echoes the token, a claim value or key material: `Reject`
//!   and `KeyError` texts are written to go straight into SQL errors and
//!   audit logs.

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use rsa::pkcs1::der::Decode as _;
use serde_json::{Map, Value};

/// Largest token we look at. Real access tokens are a few KB; anything
/// bigger is refused before base64 or JSON work is done on it.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Upper bound on clock-skew leeway; see the module essay.
pub const MAX_LEEWAY_SECS: u64 = 30;
/// Minimum HMAC secret length for every HS* algorithm (256 bits).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// Minimum RSA modulus size accepted for RS*/PS* keys.
pub const MIN_RSA_BITS: usize = 2048;
/// Longest `kid` accepted, in keys and in token headers.
pub const MAX_KID_BYTES: usize = 256;

// ---------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------

/// The signature algorithms vecguard accepts. `none` is deliberately absent.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// Key families, used to match key material to an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl Alg {
    /// Parse a JOSE algorithm name. Exact, case-sensitive match as in RFC
    /// 7518, so "none", "None" and "hs256" all yield `None`.
    pub fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }

    /// The JOSE name, as stored in key tables and audit records.
    pub fn as_str(&self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// True for HS*: the key is a shared secret, never to be displayed.
    pub fn is_symmetric(&self) -> bool {
        self.family() == Family::Hmac
    }

    // Family decides which key material is acceptable for the algorithm.
    fn family(self) -> Family {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => Family::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                Family::Rsa
            }
            Alg::ES256 | Alg::ES384 => Family::Ec,
            Alg::EdDSA => Family::Ed,
        }
    }

    // Bridge to jsonwebtoken's enum; kept private so callers never depend on it.
    fn to_jwt(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::HS384 => Algorithm::HS384,
            Alg::HS512 => Algorithm::HS512,
            Alg::RS256 => Algorithm::RS256,
            Alg::RS384 => Algorithm::RS384,
            Alg::RS512 => Algorithm::RS512,
            Alg::PS256 => Algorithm::PS256,
            Alg::PS384 => Algorithm::PS384,
            Alg::PS512 => Algorithm::PS512,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for Alg {
    // Display is the JOSE name so it can be interpolated into messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

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
    decoding: DecodingKey,
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

// ---------------------------------------------------------------------------
// Validation settings, rejections, results
// ---------------------------------------------------------------------------

/// Claim expectations configured by the administrator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validation {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

impl Validation {
    /// Build settings; empty issuer/audience strings (an unset GUC) mean
    /// "not configured", and leeway is clamped to [`MAX_LEEWAY_SECS`].
    pub fn new(issuer: Option<String>, audience: Option<String>, leeway_secs: u64) -> Validation {
        Validation {
            issuer: issuer.filter(|s| !s.is_empty()),
            audience: audience.filter(|s| !s.is_empty()),
            leeway_secs: leeway_secs.min(MAX_LEEWAY_SECS),
        }
    }
}

/// Why a token was refused. `code()` is stable for audit records; Display
/// is a human reason that never includes token text, claims or secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    TooLarge,
    Malformed,
    BadHeader,
    AlgNotAllowed,
    MissingKid,
    UnknownKey,
    AlgMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    MissingExp,
    BadClaim(String),
    WrongIssuer,
    WrongAudience,
    RevokedKey,
}

impl Reject {
    /// Stable snake_case code, used in audit records and for SQL-side matching.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::TooLarge => "too_large",
            Reject::Malformed => "malformed",
            Reject::BadHeader => "bad_header",
            Reject::AlgNotAllowed => "alg_not_allowed",
            Reject::MissingKid => "missing_kid",
            Reject::UnknownKey => "unknown_key",
            Reject::AlgMismatch => "alg_mismatch",
            Reject::BadSignature => "bad_signature",
            Reject::Expired => "expired",
            Reject::NotYetValid => "not_yet_valid",
            Reject::MissingExp => "missing_exp",
            Reject::BadClaim(_) => "bad_claim",
            Reject::WrongIssuer => "wrong_issuer",
            Reject::WrongAudience => "wrong_audience",
            Reject::RevokedKey => "revoked_key",
        }
    }
}

impl fmt::Display for Reject {
    // Reasons only; BadClaim texts are authored in this file, never copied from input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::TooLarge => write!(f, "token is larger than {MAX_TOKEN_BYTES} bytes"),
            Reject::Malformed => {
                f.write_str("token is not a well-formed JWT (three base64url segments)")
            }
            Reject::BadHeader => f.write_str("token header is invalid or unsupported"),
            Reject::AlgNotAllowed => f.write_str("token algorithm is not allowed"),
            Reject::MissingKid => f.write_str("token header has no key id (kid)"),
            Reject::UnknownKey => f.write_str("token key id (kid) is not registered"),
            Reject::AlgMismatch => {
                f.write_str("token algorithm does not match the algorithm registered for its key")
            }
            Reject::BadSignature => f.write_str("token signature is invalid"),
            Reject::Expired => f.write_str("token has expired"),
            Reject::NotYetValid => f.write_str("token is not valid yet (nbf)"),
            Reject::MissingExp => f.write_str("token has no exp claim"),
            Reject::BadClaim(why) => write!(f, "token claim is invalid: {why}"),
            Reject::WrongIssuer => f.write_str("token issuer (iss) is not the configured issuer"),
            Reject::WrongAudience => {
                f.write_str("token audience (aud) does not include the configured audience")
            }
            Reject::RevokedKey => f.write_str("token key has been revoked"),
        }
    }
}

impl std::error::Error for Reject {}

/// A token whose signature and claims passed. `claims` is the full payload
/// object, returned verbatim as data.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub claims: Value,
    pub kid: String,
    pub alg: Alg,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub jti: Option<String>,
    pub subject: Option<String>,
}

impl Verified {
    /// Re-check exp/nbf at a later statement of the same session, so a
    /// token cached by the glue stops working when it expires.
    pub fn check_time(&self, now_unix: i64, leeway_secs: u64) -> Result<(), Reject> {
        check_window(self.exp, self.nbf, now_unix, leeway_secs.min(MAX_LEEWAY_SECS))
    }
}

/// Result of a key lookup that can also report revocation.
#[derive(Debug, Clone)]
pub enum KeyLookup {
    Found(Key),
    Revoked,
    Unknown,
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/// Read the `kid` from the header without trusting anything, so the
/// caller can fetch the right key. Empty kid reads as `None`.
pub fn header_kid(token: &str) -> Result<Option<String>, Reject> {
    let parts = split_token(token)?;
    let header = decode_header(parts.header)?;
    match header.get("kid") {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_KID_BYTES => Ok(Some(s.clone())),
        Some(_) => Err(Reject::BadHeader),
    }
}

/// Verify a compact JWS token: structure, header, pinned algorithm,
/// signature, then claims against `now_unix`. `lookup` maps a kid to its key.
pub fn verify(
    token: &str,
    lookup: &dyn Fn(&str) -> Option<Key>,
    v: &Validation,
    now_unix: i64,
) -> Result<Verified, Reject> {
    verify_with(
        token,
        &|kid: &str| match lookup(kid) {
            Some(k) => KeyLookup::Found(k),
            None => KeyLookup::Unknown,
        },
        v,
        now_unix,
    )
}

/// Same as [`verify`] but the lookup can say a key was revoked, which then
/// yields `Reject::RevokedKey` instead of `UnknownKey`.
pub fn verify_with(
    token: &str,
    lookup: &dyn Fn(&str) -> KeyLookup,
    v: &Validation,
    now_unix: i64,
) -> Result<Verified, Reject> {
    let parts = split_token(token)?;
    let header = decode_header(parts.header)?;

    // The header is untrusted: it may only name an algorithm we allow...
    let alg = match header.get("alg") {
        Some(Value::String(s)) => Alg::parse(s).ok_or(Reject::AlgNotAllowed)?,
        _ => return Err(Reject::BadHeader),
    };
    // ...declare no extensions we would have to understand...
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err(Reject::BadHeader);
    }
    // ...and must name a key.
    let kid = match header.get("kid") {
        None => return Err(Reject::MissingKid),
        Some(Value::String(s)) if s.is_empty() => return Err(Reject::MissingKid),
        Some(Value::String(s)) if s.len() <= MAX_KID_BYTES => s.as_str(),
        Some(_) => return Err(Reject::BadHeader),
    };
    let key = match lookup(kid) {
        KeyLookup::Found(k) => k,
        KeyLookup::Revoked => return Err(Reject::RevokedKey),
        KeyLookup::Unknown => return Err(Reject::UnknownKey),
    };
    // The key's pinned algorithm is the only one we will verify with.
    if key.alg != alg {
        return Err(Reject::AlgMismatch);
    }
    if parts.signature.is_empty() {
        return Err(Reject::BadSignature);
    }

    let mut jv = jsonwebtoken::Validation::new(key.alg.to_jwt());
    jv.required_spec_claims = HashSet::new();
    jv.validate_exp = false;
    jv.validate_nbf = false;
    jv.validate_aud = false;
    jv.leeway = 0;
    jv.reject_tokens_expiring_in_less_than = 0;
    let data = jsonwebtoken::decode::<Value>(parts.whole, &key.decoding, &jv)
        .map_err(|e| map_jwt_error(e.kind()))?;

    let claims = data.claims;
    let obj = claims.as_object().ok_or_else(|| bad_claim("payload must be a JSON object"))?;

    let exp = match obj.get("exp") {
        None | Some(Value::Null) => return Err(Reject::MissingExp),
        Some(x) => numeric_date(x, "exp", Round::Down)?,
    };
    let nbf = match obj.get("nbf") {
        None => None,
        Some(x) => Some(numeric_date(x, "nbf", Round::Up)?),
    };
    if let Some(x) = obj.get("iat") {
        numeric_date(x, "iat", Round::Down)?;
    }
    check_window(exp, nbf, now_unix, v.leeway_secs.min(MAX_LEEWAY_SECS))?;

    let subject = opt_string(obj, "sub")?;
    let jti = opt_string(obj, "jti")?;
    let iss = opt_string(obj, "iss")?;
    match v.issuer.as_deref().filter(|s| !s.is_empty()) {
        Some(want) if iss.as_deref() != Some(want) => return Err(Reject::WrongIssuer),
        _ => {}
    }
    if let Some(want) = v.audience.as_deref().filter(|s| !s.is_empty()) {
        check_audience(obj.get("aud"), want)?;
    }

    Ok(Verified { kid: key.kid.clone(), alg: key.alg, exp, nbf, jti, subject, claims })
}

struct Parts<'a> {
    whole: &'a str,
    header: &'a str,
    signature: &'a str,
}

// Structural checks done before any decoding: size, 3 segments, alphabet.
fn split_token(token: &str) -> Result<Parts<'_>, Reject> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Reject::TooLarge);
    }
    let whole = token.trim();
    let segs: Vec<&str> = whole.splitn(4, '.').collect();
    let (header, payload, signature) = match segs.as_slice() {
        [h, p, s] => (*h, *p, *s),
        _ => return Err(Reject::Malformed),
    };
    let b64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if header.is_empty()
        || payload.is_empty()
        || ![header, payload, signature].iter().all(|s| b64url(s))
    {
        return Err(Reject::Malformed);
    }
    Ok(Parts { whole, header, signature })
}

// Header must be base64url of a JSON object.
fn decode_header(seg: &str) -> Result<Map<String, Value>, Reject> {
    let bytes = URL_SAFE_NO_PAD.decode(seg).map_err(|_| Reject::Malformed)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Reject::BadHeader),
    }
}

// jsonwebtoken's errors collapse to our codes; anything unexpected counts as
// a failed signature, which is the safe (rejecting) interpretation.
fn map_jwt_error(kind: &ErrorKind) -> Reject {
    match kind {
        ErrorKind::InvalidSignature => Reject::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => Reject::AlgMismatch,
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => Reject::Malformed,
        _ => Reject::BadSignature,
    }
}

fn bad_claim(why: &str) -> Reject {
    Reject::BadClaim(why.to_string())
}

#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

// NumericDate (RFC 7519 2): a JSON number of seconds, fractions allowed.
// Fractions round towards the stricter side (exp down, nbf up).
fn numeric_date(v: &Value, name: &str, round: Round) -> Result<i64, Reject> {
    let n = match v {
        Value::Number(n) => n,
        _ => return Err(Reject::BadClaim(format!("{name} must be a number"))),
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    // Integers beyond i64 are refused; floats must be finite and below
    // 9.2e18 (inside i64), so the `as` conversion cannot saturate.
    match n.as_f64() {
        Some(f) if n.is_f64() && f.is_finite() && f.abs() < 9.2e18 => {
            let r = match round {
                Round::Down => f.floor(),
                Round::Up => f.ceil(),
            };
            Ok(r as i64)
        }
        _ => Err(Reject::BadClaim(format!("{name} is out of range"))),
    }
}

// exp/nbf window with leeway, in i128 so no input can overflow.
fn check_window(exp: i64, nbf: Option<i64>, now: i64, leeway: u64) -> Result<(), Reject> {
    let now = i128::from(now);
    let leeway = i128::from(leeway);
    if now >= i128::from(exp) + leeway {
        return Err(Reject::Expired);
    }
    if nbf.is_some_and(|nbf| i128::from(nbf) - leeway > now) {
        return Err(Reject::NotYetValid);
    }
    Ok(())
}

// Registered string claims (sub, jti, iss) must be strings when present.
fn opt_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, Reject> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Reject::BadClaim(format!("{name} must be a string"))),
    }
}

// aud may be one string or an array of strings (RFC 7519 4.1.3).
fn check_audience(aud: Option<&Value>, want: &str) -> Result<(), Reject> {
    match aud {
        None | Some(Value::Null) => Err(Reject::WrongAudience),
        Some(Value::String(s)) => {
            if s == want {
                Ok(())
            } else {
                Err(Reject::WrongAudience)
            }
        }
        Some(Value::Array(items)) => {
            let mut found = false;
            for it in items {
                match it {
                    Value::String(s) => found |= s == want,
                    _ => return Err(bad_claim("aud must be a string or an array of strings")),
                }
            }
            if found {
                Ok(())
            } else {
                Err(Reject::WrongAudience)
            }
        }
        Some(_) => Err(bad_claim("aud must be a string or an array of strings")),
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const SECRET64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    // Test-only keys, generated with openssl for this file; never used outside tests.
    const RSA_PRIV: &str = "\
        -----BEGIN PRIVATE KEY-----\n\
        MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCj7+7GhokbnwDX\n\
        IWWnXao5N6BnyIIc19EfRFCBJK/YCGkYhjaCsDAPm656D+0Xa86kFJRdDxAIlkrg\n\
        zCPiCvyvfIESHnTRRW59SPPQQcwn+0iG4BVwAY4lAwNl2tytkBKJalZJ7Pv1Vm5k\n\
        YYRhcOGo4v7gG50vhpdHadcISiZ3knygL6rzQJrH2oPqhpgsRZo/1PclTOWn3L0b\n\
        S0V/s0Q4Z/AdUMT8sRNtYSbAzaRUw9LslEqTLTx2kXpJnV4mMxYwwzMYUsn1ltyx\n\
        Ml4/+d3iKaqg2BLXeohITmMXzwdmHCKO/xjK1ledm/qCUwxpgNqFrEhkblR2YfnC\n\
        9ODOk8X9AgMBAAECggEACurlJ3J5Og4uQ6V1PB6oQfQ66f5378zNn/vwMpGLZmM1\n\
        AI2bnrt2D+wJxBZAb2FeGx5FvSbOJgxAQ1VFBH4/0r4DaH3/wJoToCNWHWXsXzNE\n\
        YrsUomdwHHXlaYiYTrS8D0u2IGk4ZF/TrTqzUrvuQ02OtMUSBEK922Moj2REyIyt\n\
        F6yDmr0CPadHqFjHDpR0kj7rgF1lnKHKPpIYNnRhJ2jLTdi8Ij6ATUxCGLlboGst\n\
        2TQGvMpib7DXp1HO3xj7xzLR0TZJG3NYDUuc2T3gjUTmcTkQfRJT6eydjdJxOB69\n\
        flcHlWN05rD5vLlkY8Yvj9sP3yF6+1pT5+PSWhdPjwKBgQDN9qmlKZO/ZcV9MSYT\n\
        /ILoUKiiK6MUJ09X2QdcBRKodJR5IW6A2nfMtduTWNU7hH7WyhFfTBXrLIpHeKdG\n\
        PS2R6TNyhlnlsoPSAKtE9rVXjAEzBzn+HYpe+2YCtnGw6wRdh2DNDAhM+5PS7/Vk\n\
        QgOiVvxiF83quJDm1SiO8L7LHwKBgQDLw49kHqFkIL07EPtuFPvYdXbluB9OSgJF\n\
        4vXTVXbH8dCMgIessAOxMAZq9upXSe5z+VfIH+6Cd46zaHCzWgduJ+lRTLlR9mLA\n\
        +zcdOYFrulf+pWginp2a7ggNLopLZDDAApKZQ0ZifVIuc7YDlnXHpnQWYpoDVurl\n\
        dV2uonanYwKBgGEGVup4SKK8dalBMvftV1nLTXV/6wX+crEmiwH9Xcm/iYX6iszm\n\
        ndLwxKyIB4NPKlVSwZZMCHNN+yIqI1rCTSpUWikUQ1simlieehA1zD2etZ3tRJOC\n\
        JQITmf2jJrG6NMc+lApkJbDmPr/6zHXbZ0zdf21SW228Xn5vYfjcTnTvAoGBAIuY\n\
        JEow+dxA2aL3lWjrE0ZN4vCp3TijVz9Np5/qsv9z2K4I9+oEg+MFxb/N/OlkCuqE\n\
        7fB6f8n94lNiv6L/kIuU6DD8YRGXvDv9Xtq0pMeK1/Hqm5bsF4kmfXmaYsAXmZZR\n\
        rOE2x6d9t6l/ODjpATOQA4O6dUzIZRBiAZY8UxGFAoGAEBYy057uYdTHQ7lAVDFu\n\
        Sy6ecAJyhMpDqKQgbV9yqTddt+L7IjhgipC66bywephQDJwljewdpUfRhJtRJB+T\n\
        FFNjjLMoRBXJrPkKoiSJXLSKCQsRV9I2Bk+EeXH0jF1Dfzg/ZifOlAEK/b9pzHg3\n\
        255WhnzJpdO5Mj/lDMbgyNk=\n\
        -----END PRIVATE KEY-----\n\
    ";
    const RSA_PUB: &str = "\
        -----BEGIN PUBLIC KEY-----\n\
        MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAo+/uxoaJG58A1yFlp12q\n\
        OTegZ8iCHNfRH0RQgSSv2AhpGIY2grAwD5uueg/tF2vOpBSUXQ8QCJZK4Mwj4gr8\n\
        r3yBEh500UVufUjz0EHMJ/tIhuAVcAGOJQMDZdrcrZASiWpWSez79VZuZGGEYXDh\n\
        qOL+4BudL4aXR2nXCEomd5J8oC+q80Cax9qD6oaYLEWaP9T3JUzlp9y9G0tFf7NE\n\
        OGfwHVDE/LETbWEmwM2kVMPS7JRKky08dpF6SZ1eJjMWMMMzGFLJ9ZbcsTJeP/nd\n\
        4imqoNgS13qISE5jF88HZhwijv8YytZXnZv6glMMaYDahaxIZG5UdmH5wvTgzpPF\n\
        /QIDAQAB\n\
        -----END PUBLIC KEY-----\n\
    ";
    const RSA_PUB_PKCS1: &str = "\
        -----BEGIN RSA PUBLIC KEY-----\n\
        MIIBCgKCAQEAo+/uxoaJG58A1yFlp12qOTegZ8iCHNfRH0RQgSSv2AhpGIY2grAw\n\
        D5uueg/tF2vOpBSUXQ8QCJZK4Mwj4gr8r3yBEh500UVufUjz0EHMJ/tIhuAVcAGO\n\
        JQMDZdrcrZASiWpWSez79VZuZGGEYXDhqOL+4BudL4aXR2nXCEomd5J8oC+q80Ca\n\
        x9qD6oaYLEWaP9T3JUzlp9y9G0tFf7NEOGfwHVDE/LETbWEmwM2kVMPS7JRKky08\n\
        dpF6SZ1eJjMWMMMzGFLJ9ZbcsTJeP/nd4imqoNgS13qISE5jF88HZhwijv8YytZX\n\
        nZv6glMMaYDahaxIZG5UdmH5wvTgzpPF/QIDAQAB\n\
        -----END RSA PUBLIC KEY-----\n\
    ";
    const RSA1024_PUB: &str = "\
        -----BEGIN PUBLIC KEY-----\n\
        MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC6OvDS/eVHar2ULlc5pQ6Qyxva\n\
        zb4aAoJJz0QrTnZuzQxlx6Feibi+tsfmrActn0K0j86fz9fN1X3tS7qj9BeZ/nAP\n\
        nIeE965X3Bkq84gDoZ3bqGaAa5PzDUVyUxru/5+Zpu3aBsEnOJ8IARxCs2lHiCpH\n\
        zuy3rvfeEqw+rwbpFwIDAQAB\n\
        -----END PUBLIC KEY-----\n\
    ";
    const EC_PRIV: &str = "\
        -----BEGIN PRIVATE KEY-----\n\
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgtT7csiyPSlKYXghE\n\
        NJdT3cpu5YpDehpxgZwEC9xL85ehRANCAARv+uXsfHgbSl0xJ8/kdehyZ98HFH5p\n\
        mmL3QibVC3eWjvMW+xES5S0Oe45frsIw5Zo6apPIu7A/3/oiIujThRhx\n\
        -----END PRIVATE KEY-----\n\
    ";
    const EC_PUB: &str = "\
        -----BEGIN PUBLIC KEY-----\n\
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEb/rl7Hx4G0pdMSfP5HXocmffBxR+\n\
        aZpi90Im1Qt3lo7zFvsREuUtDnuOX67CMOWaOmqTyLuwP9/6IiLo04UYcQ==\n\
        -----END PUBLIC KEY-----\n\
    ";
    const EC384_PRIV: &str = "\
        -----BEGIN PRIVATE KEY-----\n\
        MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDAmiG/hlc7+klRwKSZ6\n\
        Qh54eOzrqrxyGRxQAdY4LPAZfmSW5nS0NY1rbAJEzeEjTbGhZANiAARtriHXb5YA\n\
        p8u5cZa5Ue2iu602Po8JTsg/pU+4fzBWcrcAVHX0Nwpmt/HCEbR1FFej6j5WV5Jq\n\
        S2W4n1bSQw+iTtvK9ejxzE3n3zrGhyMLM75Pj6azKwd84431iQutewY=\n\
        -----END PRIVATE KEY-----\n\
    ";
    const EC384_PUB: &str = "\
        -----BEGIN PUBLIC KEY-----\n\
        MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEba4h12+WAKfLuXGWuVHtorutNj6PCU7I\n\
        P6VPuH8wVnK3AFR19DcKZrfxwhG0dRRXo+o+VleSaktluJ9W0kMPok7byvXo8cxN\n\
        5986xocjCzO+T4+msysHfOON9YkLrXsG\n\
        -----END PUBLIC KEY-----\n\
    ";
    const ED_PRIV: &str = "\
        -----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIK9MHKk131Mk6U4dReINGvB5RQPTf+ZRa/IH5H/QAI1Q\n\
        -----END PRIVATE KEY-----\n\
    ";
    const ED_PUB: &str = "\
        -----BEGIN PUBLIC KEY-----\n\
        MCowBQYDK2VwAyEAZgxGISXRyLhUpqWoFPTyVw9pYJxmhieGusz8HFs760I=\n\
        -----END PUBLIC KEY-----\n\
    ";

    fn claims() -> Value {
        json!({"sub": "alice", "exp": NOW + 300, "iat": NOW - 10, "tenant_id": "t1", "jti": "j-1"})
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        encode(&h, claims, key).unwrap()
    }

    fn hs_key() -> Key {
        Key::from_material("hs", "HS256", SECRET).unwrap()
    }

    fn hs_token(c: &Value) -> String {
        sign(Algorithm::HS256, Some("hs"), c, &EncodingKey::from_secret(SECRET.as_bytes()))
    }

    fn v0() -> Validation {
        Validation::new(None, None, 0)
    }

    fn one(key: Key) -> impl Fn(&str) -> Option<Key> {
        move |kid: &str| {
            if kid == key.kid {
                Some(key.clone())
            } else {
                None
            }
        }
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s.as_bytes())
    }

    #[test]
    fn hs256_and_hs512_verify() {
        let r = verify(&hs_token(&claims()), &one(hs_key()), &v0(), NOW).unwrap();
        assert_eq!(r.subject.as_deref(), Some("alice"));
        assert_eq!(r.kid, "hs");
        assert_eq!(r.alg, Alg::HS256);
        assert_eq!(r.exp, NOW + 300);
        assert_eq!(r.jti.as_deref(), Some("j-1"));
        assert_eq!(r.claims["tenant_id"], "t1");

        let k = Key::from_material("h5", "HS512", SECRET64).unwrap();
        let t = sign(
            Algorithm::HS512,
            Some("h5"),
            &claims(),
            &EncodingKey::from_secret(SECRET64.as_bytes()),
        );
        assert_eq!(verify(&t, &one(k), &v0(), NOW).unwrap().alg, Alg::HS512);
    }

    #[test]
    fn rs256_ps256_verify_spki_and_pkcs1() {
        let ek = EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap();
        let k = Key::from_material("rsa", "RS256", RSA_PUB).unwrap();
        let t = sign(Algorithm::RS256, Some("rsa"), &claims(), &ek);
        assert!(verify(&t, &one(k), &v0(), NOW).is_ok());

        let k1 = Key::from_material("rsa", "RS256", RSA_PUB_PKCS1).unwrap();
        assert!(verify(&t, &one(k1), &v0(), NOW).is_ok());

        let kp = Key::from_material("ps", "PS256", RSA_PUB).unwrap();
        let tp = sign(Algorithm::PS256, Some("ps"), &claims(), &ek);
        assert_eq!(verify(&tp, &one(kp), &v0(), NOW).unwrap().alg, Alg::PS256);
    }

    #[test]
    fn es256_es384_eddsa_verify() {
        let k = Key::from_material("ec", "ES256", EC_PUB).unwrap();
        let t = sign(
            Algorithm::ES256,
            Some("ec"),
            &claims(),
            &EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
        );
        assert!(verify(&t, &one(k), &v0(), NOW).is_ok());

        let k = Key::from_material("ec3", "ES384", EC384_PUB).unwrap();
        let t = sign(
            Algorithm::ES384,
            Some("ec3"),
            &claims(),
            &EncodingKey::from_ec_pem(EC384_PRIV.as_bytes()).unwrap(),
        );
        assert!(verify(&t, &one(k), &v0(), NOW).is_ok());

        let k = Key::from_material("ed", "EdDSA", ED_PUB).unwrap();
        let t = sign(
            Algorithm::EdDSA,
            Some("ed"),
            &claims(),
            &EncodingKey::from_ed_pem(ED_PRIV.as_bytes()).unwrap(),
        );
        assert_eq!(verify(&t, &one(k), &v0(), NOW).unwrap().alg, Alg::EdDSA);
    }

    #[test]
    fn alg_none_rejected() {
        for alg in ["none", "None", "NONE"] {
            let h = b64(&format!(r#"{{"alg":"{alg}","kid":"hs","typ":"JWT"}}"#));
            let p = b64(&claims().to_string());
            for t in [format!("{h}.{p}."), format!("{h}.{p}.AAAA")] {
                assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::AlgNotAllowed));
            }
        }
        assert_eq!(Alg::parse("none"), None);
    }

    #[test]
    fn hs256_with_rsa_public_pem_as_secret_fails() {
        // Classic confusion: attacker HMACs with the public PEM text, kid points at the RSA key.
        let rsa = Key::from_material("rsa", "RS256", RSA_PUB).unwrap();
        let forged = sign(
            Algorithm::HS256,
            Some("rsa"),
            &claims(),
            &EncodingKey::from_secret(RSA_PUB.as_bytes()),
        );
        assert_eq!(verify(&forged, &one(rsa), &v0(), NOW), Err(Reject::AlgMismatch));
        // And the PEM can never be registered as an HMAC secret in the first place.
        assert_eq!(Key::from_material("x", "HS256", RSA_PUB).unwrap_err(), KeyError::PemAsSecret);
    }

    #[test]
    fn wrong_key_same_alg_fails() {
        let other = Key::from_material("hs", "HS256", "ffffffffffffffffffffffffffffffff").unwrap();
        assert_eq!(
            verify(&hs_token(&claims()), &one(other), &v0(), NOW),
            Err(Reject::BadSignature)
        );
    }

    #[test]
    fn tampered_payload_and_signature_fail() {
        let t = hs_token(&claims());
        let segs: Vec<&str> = t.split('.').collect();
        let mut evil = claims();
        evil["tenant_id"] = json!("t2");
        let t2 = format!("{}.{}.{}", segs[0], b64(&evil.to_string()), segs[2]);
        assert_eq!(verify(&t2, &one(hs_key()), &v0(), NOW), Err(Reject::BadSignature));

        // The first character holds six signature bits (the last one also holds padding
        // bits, which must stay zero).
        let sig = format!("{}{}", if segs[2].starts_with('A') { 'B' } else { 'A' }, &segs[2][1..]);
        let t3 = format!("{}.{}.{}", segs[0], segs[1], sig);
        assert_eq!(verify(&t3, &one(hs_key()), &v0(), NOW), Err(Reject::BadSignature));
        let t4 = format!("{}.{}.", segs[0], segs[1]);
        assert_eq!(verify(&t4, &one(hs_key()), &v0(), NOW), Err(Reject::BadSignature));
    }

    #[test]
    fn expiry_and_leeway() {
        let t = hs_token(&json!({"exp": NOW - 5}));
        assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::Expired));
        let t = hs_token(&json!({"exp": NOW}));
        assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::Expired));
        // within leeway
        let t = hs_token(&json!({"exp": NOW - 5}));
        let v = Validation::new(None, None, 10);
        let ok = verify(&t, &one(hs_key()), &v, NOW).unwrap();
        assert_eq!(ok.check_time(NOW, 10), Ok(()));
        assert_eq!(ok.check_time(NOW + 5, 10), Err(Reject::Expired));
        assert_eq!(ok.check_time(NOW + 5, 0), Err(Reject::Expired));
        // fractional exp rounds down
        let t = hs_token(&json!({"exp": (NOW as f64) + 0.9}));
        assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::Expired));
    }

    #[test]
    fn leeway_clamped_to_30() {
        assert_eq!(Validation::new(None, None, 3600).leeway_secs, 30);
        assert_eq!(Validation::new(None, None, 7).leeway_secs, 7);
        let t = hs_token(&json!({"exp": NOW - 100}));
        let v = Validation::new(None, None, u64::MAX);
        assert_eq!(verify(&t, &one(hs_key()), &v, NOW), Err(Reject::Expired));
        // even a hand-built struct is clamped at use
        let raw = Validation { issuer: None, audience: None, leeway_secs: 1000 };
        assert_eq!(verify(&t, &one(hs_key()), &raw, NOW), Err(Reject::Expired));
        let t = hs_token(&json!({"exp": NOW - 29}));
        assert!(verify(&t, &one(hs_key()), &raw, NOW).is_ok());
    }

    #[test]
    fn nbf_in_future_and_types() {
        let t = hs_token(&json!({"exp": NOW + 100, "nbf": NOW + 60}));
        assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::NotYetValid));
        let v = Validation::new(None, None, 30);
        assert_eq!(verify(&t, &one(hs_key()), &v, NOW), Err(Reject::NotYetValid));
        let t = hs_token(&json!({"exp": NOW + 100, "nbf": NOW + 20}));
        let ok = verify(&t, &one(hs_key()), &v, NOW).unwrap();
        assert_eq!(ok.nbf, Some(NOW + 20));
        let t = hs_token(&json!({"exp": NOW + 100, "nbf": "0"}));
        assert!(matches!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::BadClaim(_))));
        let t = hs_token(&json!({"exp": NOW + 100, "iat": "yesterday"}));
        assert!(matches!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::BadClaim(_))));
    }

    #[test]
    fn issuer_and_audience() {
        let c = json!({"exp": NOW + 100, "iss": "https://idp", "aud": "vecguard"});
        let t = hs_token(&c);
        let good = Validation::new(Some("https://idp".into()), Some("vecguard".into()), 0);
        assert!(verify(&t, &one(hs_key()), &good, NOW).is_ok());
        let bad_iss = Validation::new(Some("https://evil".into()), None, 0);
        assert_eq!(verify(&t, &one(hs_key()), &bad_iss, NOW), Err(Reject::WrongIssuer));
        let bad_aud = Validation::new(None, Some("other".into()), 0);
        assert_eq!(verify(&t, &one(hs_key()), &bad_aud, NOW), Err(Reject::WrongAudience));
        // missing iss/aud when configured
        let t0 = hs_token(&json!({"exp": NOW + 100}));
        assert_eq!(verify(&t0, &one(hs_key()), &good, NOW), Err(Reject::WrongIssuer));
        let aud_only = Validation::new(Some(String::new()), Some("vecguard".into()), 0);
        assert_eq!(aud_only.issuer, None);
        assert_eq!(verify(&t0, &one(hs_key()), &aud_only, NOW), Err(Reject::WrongAudience));
        // aud array
        let ta = hs_token(&json!({"exp": NOW + 100, "aud": ["x", "vecguard"]}));
        assert!(verify(&ta, &one(hs_key()), &aud_only, NOW).is_ok());
        let tb = hs_token(&json!({"exp": NOW + 100, "aud": ["x", "y"]}));
        assert_eq!(verify(&tb, &one(hs_key()), &aud_only, NOW), Err(Reject::WrongAudience));
        let tc = hs_token(&json!({"exp": NOW + 100, "aud": ["vecguard", 5]}));
        assert!(matches!(verify(&tc, &one(hs_key()), &aud_only, NOW), Err(Reject::BadClaim(_))));
        let td = hs_token(&json!({"exp": NOW + 100, "iss": 7}));
        assert!(matches!(verify(&td, &one(hs_key()), &v0(), NOW), Err(Reject::BadClaim(_))));
    }

    #[test]
    fn unknown_missing_and_revoked_kid() {
        let t = sign(
            Algorithm::HS256,
            Some("nope"),
            &claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        );
        assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::UnknownKey));
        let t =
            sign(Algorithm::HS256, None, &claims(), &EncodingKey::from_secret(SECRET.as_bytes()));
        assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::MissingKid));
        assert_eq!(header_kid(&t), Ok(None));
        let t = hs_token(&claims());
        assert_eq!(header_kid(&t), Ok(Some("hs".to_string())));
        let revoked = |_: &str| KeyLookup::Revoked;
        assert_eq!(verify_with(&t, &revoked, &v0(), NOW), Err(Reject::RevokedKey));
        let h = b64(r#"{"alg":"HS256","kid":42}"#);
        let t = format!("{h}.{}.AAAA", b64("{}"));
        assert_eq!(header_kid(&t), Err(Reject::BadHeader));
        assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::BadHeader));
    }

    #[test]
    fn exp_string_or_missing_rejected() {
        let t = hs_token(&json!({"exp": "9999999999"}));
        assert!(matches!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::BadClaim(_))));
        let t = hs_token(&json!({"sub": "alice"}));
        assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::MissingExp));
        let t = hs_token(&json!({"exp": null}));
        assert_eq!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::MissingExp));
        let t = hs_token(&json!({"exp": 1e300}));
        assert!(matches!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::BadClaim(_))));
        let t = hs_token(&json!({"exp": u64::MAX}));
        assert!(matches!(verify(&t, &one(hs_key()), &v0(), NOW), Err(Reject::BadClaim(_))));
        let t = hs_token(&json!({"exp": i64::MAX}));
        assert!(verify(&t, &one(hs_key()), &Validation::new(None, None, 30), i64::MAX - 1).is_ok());
        // non-object payloads: jsonwebtoken or our own check refuses them
        for p in [json!([1, 2, 3]), json!("s"), json!(5)] {
            let r = verify(&hs_token(&p), &one(hs_key()), &v0(), NOW);
            assert!(matches!(r, Err(Reject::Malformed) | Err(Reject::BadClaim(_))), "{r:?}");
        }
    }

    #[test]
    fn oversize_and_garbage() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(verify(&big, &one(hs_key()), &v0(), NOW), Err(Reject::TooLarge));
        let mut c = claims();
        c["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
        assert_eq!(verify(&hs_token(&c), &one(hs_key()), &v0(), NOW), Err(Reject::TooLarge));
        assert_eq!(header_kid(&big), Err(Reject::TooLarge));

        let t = hs_token(&claims());
        let segs: Vec<&str> = t.split('.').collect();
        for bad in [
            "".to_string(),
            "garbage".to_string(),
            "!!!.@@@.###".to_string(),
            format!("{}.{}", segs[0], segs[1]),
            format!("{}.{}.{}.{}", segs[0], segs[1], segs[2], segs[2]),
            format!("{}..{}", segs[0], segs[2]),
            format!("{}=.{}.{}", segs[0], segs[1], segs[2]),
            format!("A.{}.{}", segs[1], segs[2]),
            "....".to_string(),
            "é.é.é".to_string(),
        ] {
            assert_eq!(verify(&bad, &one(hs_key()), &v0(), NOW), Err(Reject::Malformed), "{bad}");
        }
        // valid base64url, but header is not a JSON object
        for h in ["not json", "[1,2]", "\"s\""] {
            let tok = format!("{}.{}.{}", b64(h), segs[1], segs[2]);
            assert_eq!(verify(&tok, &one(hs_key()), &v0(), NOW), Err(Reject::BadHeader));
        }
        // header without alg, and with an unsupported crit extension
        let tok = format!("{}.{}.{}", b64(r#"{"kid":"hs"}"#), segs[1], segs[2]);
        assert_eq!(verify(&tok, &one(hs_key()), &v0(), NOW), Err(Reject::BadHeader));
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("hs".into());
        h.crit = Some(vec!["exp".into()]);
        let tok = encode(&h, &claims(), &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
        assert_eq!(verify(&tok, &one(hs_key()), &v0(), NOW), Err(Reject::BadHeader));
        // payload that is validly signed but not JSON
        let hp = format!("{}.{}", segs[0], b64("not json"));
        let sig = jsonwebtoken::crypto::sign(
            hp.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(
            verify(&format!("{hp}.{sig}"), &one(hs_key()), &v0(), NOW),
            Err(Reject::Malformed)
        );
    }

    #[test]
    fn sql_metacharacters_are_plain_data() {
        let evil = "'; DROP TABLE x; --";
        let c = json!({"exp": NOW + 60, "sub": evil, "tenant_id": evil, "x\"y": "\\'"});
        let r = verify(&hs_token(&c), &one(hs_key()), &v0(), NOW).unwrap();
        assert_eq!(r.subject.as_deref(), Some(evil));
        assert_eq!(r.claims["tenant_id"], evil);
        assert_eq!(r.claims["x\"y"], "\\'");
    }

    #[test]
    fn reject_codes_and_messages_do_not_leak() {
        let t = hs_token(&json!({"exp": "SECRETVALUE"}));
        let e = verify(&t, &one(hs_key()), &v0(), NOW).unwrap_err();
        assert_eq!(e.code(), "bad_claim");
        assert!(!e.to_string().contains("SECRETVALUE"));
        assert_eq!(Reject::Expired.code(), "expired");
        assert_eq!(Reject::BadSignature.code(), "bad_signature");
        let all = [
            Reject::TooLarge,
            Reject::Malformed,
            Reject::BadHeader,
            Reject::AlgNotAllowed,
            Reject::MissingKid,
            Reject::UnknownKey,
            Reject::AlgMismatch,
            Reject::BadSignature,
            Reject::Expired,
            Reject::NotYetValid,
            Reject::MissingExp,
            Reject::BadClaim("x".into()),
            Reject::WrongIssuer,
            Reject::WrongAudience,
            Reject::RevokedKey,
        ];
        let codes: HashSet<&str> = all.iter().map(Reject::code).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        let err = Key::from_material("k", "HS256", "short-secret-XYZ").unwrap_err();
        assert!(!err.to_string().contains("XYZ"));
    }

    #[test]
    fn key_material_validation() {
        assert_eq!(
            Key::from_material("k", "HS256", "short").unwrap_err(),
            KeyError::WeakSecret { got: 5 }
        );
        assert!(Key::from_material("k", "HS256", SECRET).is_ok());
        assert!(Key::from_material("k", "HS512", SECRET).is_ok());
        assert!(matches!(
            Key::from_material("k", "none", SECRET),
            Err(KeyError::UnsupportedAlg(_))
        ));
        assert!(matches!(Key::from_material("", "HS256", SECRET), Err(KeyError::InvalidKid(_))));
        assert!(matches!(
            Key::from_material("a\nb", "HS256", SECRET),
            Err(KeyError::InvalidKid(_))
        ));
        assert!(matches!(
            Key::from_material(&"k".repeat(300), "HS256", SECRET),
            Err(KeyError::InvalidKid(_))
        ));
        // private keys refused, with the message saying so
        for (alg, pem) in [("RS256", RSA_PRIV), ("ES256", EC_PRIV), ("EdDSA", ED_PRIV)] {
            let e = Key::from_material("k", alg, pem).unwrap_err();
            assert_eq!(e, KeyError::PrivateKey);
            assert!(e.to_string().contains("private key"));
        }
        let both = format!("{RSA_PUB}\n{RSA_PRIV}");
        assert_eq!(Key::from_material("k", "RS256", &both).unwrap_err(), KeyError::PrivateKey);
        let pkcs1_priv = RSA_PRIV.replace("PRIVATE KEY", "RSA PRIVATE KEY");
        assert_eq!(
            Key::from_material("k", "RS256", &pkcs1_priv).unwrap_err(),
            KeyError::PrivateKey
        );
        // wrong families / curves
        assert!(matches!(
            Key::from_material("k", "RS256", EC_PUB),
            Err(KeyError::WrongKeyType { .. })
        ));
        assert!(matches!(
            Key::from_material("k", "ES256", RSA_PUB),
            Err(KeyError::WrongKeyType { .. })
        ));
        assert!(matches!(
            Key::from_material("k", "ES256", EC384_PUB),
            Err(KeyError::WrongKeyType { .. })
        ));
        assert!(matches!(
            Key::from_material("k", "ES384", EC_PUB),
            Err(KeyError::WrongKeyType { .. })
        ));
        assert!(matches!(
            Key::from_material("k", "EdDSA", EC_PUB),
            Err(KeyError::WrongKeyType { .. })
        ));
        assert!(matches!(
            Key::from_material("k", "ES256", RSA_PUB_PKCS1),
            Err(KeyError::WrongKeyType { .. })
        ));
        assert_eq!(
            Key::from_material("k", "RS256", RSA1024_PUB).unwrap_err(),
            KeyError::WeakRsa { bits: 1024 }
        );
        assert_eq!(Key::from_material("k", "RS256", "not a pem").unwrap_err(), KeyError::NotPem);
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(Key::from_material("k", "RS256", cert).unwrap_err(), KeyError::Certificate);
        let junk = "-----BEGIN PUBLIC KEY-----\nAAAA%%%%\n-----END PUBLIC KEY-----";
        assert!(Key::from_material("k", "RS256", junk).is_err());
        assert!(Key::from_material("k", "EdDSA", junk).is_err());
        // thumbprints only for asymmetric keys
        assert!(hs_key().thumbprint().is_none());
        assert!(Key::from_material("k", "RS256", RSA_PUB).unwrap().thumbprint().is_some());
        assert!(!format!("{:?}", hs_key()).contains(SECRET));
    }

    fn public_jwk(kid: &str, alg: Alg, pem: &str) -> Value {
        let k = Key::from_material(kid, alg.as_str(), pem).unwrap();
        let mut v =
            serde_json::to_value(Jwk::from_decoding_key(&k.decoding, None).unwrap()).unwrap();
        v["kid"] = json!(kid);
        v
    }

    #[test]
    fn jwk_and_jwks() {
        let rsa = public_jwk("r1", Alg::RS256, RSA_PUB);
        assert_eq!(rsa["kty"], "RSA");
        let k = Key::from_jwk(&rsa).unwrap();
        assert_eq!(k.alg, Alg::RS256); // inferred
        let t = sign(
            Algorithm::RS256,
            Some("r1"),
            &claims(),
            &EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
        );
        assert!(verify(&t, &one(k), &v0(), NOW).is_ok());

        let ec = public_jwk("e1", Alg::ES256, EC_PUB);
        let k = Key::from_jwk(&ec).unwrap();
        assert_eq!(k.alg, Alg::ES256);
        let t = sign(
            Algorithm::ES256,
            Some("e1"),
            &claims(),
            &EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
        );
        assert!(verify(&t, &one(k), &v0(), NOW).is_ok());

        let ed = public_jwk("d1", Alg::EdDSA, ED_PUB);
        let k = Key::from_jwk(&ed).unwrap();
        let t = sign(
            Algorithm::EdDSA,
            Some("d1"),
            &claims(),
            &EncodingKey::from_ed_pem(ED_PRIV.as_bytes()).unwrap(),
        );
        assert!(verify(&t, &one(k), &v0(), NOW).is_ok());

        let oct = json!({"kty": "oct", "kid": "o1", "alg": "HS384", "k": URL_SAFE_NO_PAD.encode(SECRET64)});
        let k = Key::from_jwk(&oct).unwrap();
        assert_eq!(k.alg, Alg::HS384);
        let t = sign(
            Algorithm::HS384,
            Some("o1"),
            &claims(),
            &EncodingKey::from_secret(SECRET64.as_bytes()),
        );
        assert!(verify(&t, &one(k), &v0(), NOW).is_ok());

        // negatives
        let mut no_kid = rsa.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        assert!(matches!(Key::from_jwk(&no_kid), Err(KeyError::InvalidJwk(_))));
        let mut private = ec.clone();
        private["d"] = json!("AAAA");
        assert_eq!(Key::from_jwk(&private).unwrap_err(), KeyError::PrivateKey);
        let mut enc = rsa.clone();
        enc["use"] = json!("enc");
        assert!(Key::from_jwk(&enc).is_err());
        let mut wrong = rsa.clone();
        wrong["alg"] = json!("ES256");
        assert!(matches!(Key::from_jwk(&wrong), Err(KeyError::WrongKeyType { .. })));
        let mut wrong_crv = ec.clone();
        wrong_crv["alg"] = json!("ES384");
        assert!(Key::from_jwk(&wrong_crv).is_err());
        let weak = json!({"kty": "oct", "kid": "o", "k": "c2hvcnQ"});
        assert_eq!(Key::from_jwk(&weak).unwrap_err(), KeyError::WeakSecret { got: 5 });
        assert!(Key::from_jwk(&json!({"kty": "XYZ", "kid": "a", "alg": "HS256"})).is_err());
        assert!(Key::from_jwk(&json!("string")).is_err());
        assert!(Key::from_jwk(&json!({"kty": "RSA", "kid": "a", "n": "!!", "e": "AQAB"})).is_err());
        assert!(
            Key::from_jwk(&json!({"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB"})).is_err()
        );
        assert!(Key::from_jwk(
            &json!({"kty": "EC", "kid": "a", "crv": "P-256", "x": "AA", "y": "AA"})
        )
        .is_err());

        // set: enc key skipped, order kept
        let mut enc_key = rsa.clone();
        enc_key["kid"] = json!("enc1");
        enc_key["use"] = json!("enc");
        let set = json!({"keys": [rsa, enc_key, ec, ed]}).to_string();
        let keys = parse_jwks(&set).unwrap();
        let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["r1", "e1", "d1"]);
        let dup = json!({"keys": [public_jwk("a", Alg::RS256, RSA_PUB), public_jwk("a", Alg::ES256, EC_PUB)]});
        assert!(parse_jwks(&dup.to_string()).is_err());
        assert!(parse_jwks("{\"keys\": []}").is_err());
        assert!(parse_jwks("{").is_err());
        assert!(parse_jwks("[]").is_err());
        let bad = json!({"keys": [public_jwk("a", Alg::RS256, RSA_PUB), {"kty": "RSA"}]});
        assert!(parse_jwks(&bad.to_string()).unwrap_err().to_string().contains("key #2"));
    }

    // Hand-built DER/PEM for keys no tool would emit (bodies below 64 KiB).
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let len = body.len();
        let mut out = match len {
            0..=0x7f => vec![tag, len as u8],
            0x80..=0xff => vec![tag, 0x81, len as u8],
            _ => vec![tag, 0x82, (len >> 8) as u8, len as u8],
        };
        out.extend_from_slice(body);
        out
    }

    fn to_pem(label: &str, der: &[u8]) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b.as_bytes().chunks(64).flat_map(std::str::from_utf8).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    // PKCS#1 RSAPublicKey; DER wants a zero byte before a high first byte, and only there.
    fn rsa_pkcs1(n: &[u8], e: &[u8]) -> String {
        let int = |v: &[u8]| match v.first() {
            Some(b) if b & 0x80 != 0 => tlv(2, &[&[0u8][..], v].concat()),
            _ => tlv(2, v),
        };
        to_pem("RSA PUBLIC KEY", &tlv(0x30, &[int(n), int(e)].concat()))
    }

    // An SPKI PEM with its trailing bytes (the EC point or Ed25519 key) replaced.
    fn with_point(pem: &str, point: &[u8]) -> String {
        let body: String = pem.lines().map(str::trim).filter(|l| !l.starts_with("-----")).collect();
        let mut der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        let at = der.len() - point.len();
        der[at..].copy_from_slice(point);
        to_pem("PUBLIC KEY", &der)
    }

    // Both registration paths must refuse the key, with `why` in the message.
    fn refused(jwk: Value, alg: Alg, pem: &str, why: &str) {
        for got in [Key::from_jwk(&jwk), Key::from_material("k", alg.as_str(), pem)] {
            let msg = got.unwrap_err().to_string();
            assert!(msg.contains(why), "{alg}: {msg:?} lacks {why:?}");
        }
    }

    #[test]
    fn keys_that_could_never_verify_are_refused() {
        let u = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let jwk_bytes =
            |v: &Value, m: &str| URL_SAFE_NO_PAD.decode(v[m].as_str().unwrap()).unwrap();
        let n = jwk_bytes(&public_jwk("k", Alg::RS256, RSA_PUB), "n");
        let mut even_n = n.clone();
        *even_n.last_mut().unwrap() ^= 1;
        let e65537: &[u8] = &[1, 0, 1];
        let odd_exp = "RSA public exponent must be an odd integer of at least 3";
        for (n, e, why) in [
            (&n[..], &[1u8][..], odd_exp),
            (&n[..], &[2][..], odd_exp),
            (&n[..], &[0][..], odd_exp),
            (&n[..], &[1, 0, 0][..], odd_exp),
            (&even_n[..], e65537, "RSA modulus must be odd"),
            (&n[..], &n[..], "smaller than the modulus"),
            (&n[..], &[1, 0, 0, 0, 0, 1][..], "at most 2^33-1"),
            (&[0xff; 1024][..], e65537, "larger than 4096 bits"),
            (&n[..128], e65537, "RSA key too small: 1024 bits"),
        ] {
            let jwk = json!({"kty": "RSA", "kid": "k", "n": u(n), "e": u(e)});
            refused(jwk, Alg::RS256, &rsa_pkcs1(n, e), why);
        }
        // The SPKI wrapping takes the same path (its DER ends with e = 65537).
        let spki_e65536 = with_point(RSA_PUB, &[1, 0, 0]);
        let e = Key::from_material("k", "RS256", &spki_e65536).unwrap_err();
        assert!(e.to_string().contains(odd_exp));
        // e = 3 is small but valid, and a leading zero byte in "n" is tolerated.
        assert!(Key::from_material("k", "PS256", &rsa_pkcs1(&n, &[3])).is_ok());
        let padded =
            json!({"kty": "RSA", "kid": "k", "n": u(&[&[0][..], &n].concat()), "e": "AQAB"});
        assert!(Key::from_jwk(&padded).is_ok());

        for (alg, pem, curve) in [(Alg::ES256, EC_PUB, "P-256"), (Alg::ES384, EC384_PUB, "P-384")] {
            let good = public_jwk("k", alg, pem);
            let (x, mut y) = (jwk_bytes(&good, "x"), jwk_bytes(&good, "y"));
            // Only y and p - y lie on the curve with this x, so y ^ 1 does not.
            *y.last_mut().unwrap() ^= 1;
            let zero = vec![0u8; x.len()];
            let above_p = vec![0xffu8; x.len()];
            for (x, y) in [(&x, &y), (&zero, &zero), (&above_p, &above_p), (&x, &above_p)] {
                let jwk = json!({"kty": "EC", "kid": "k", "crv": curve, "x": u(x), "y": u(y)});
                let point = [&[4u8][..], x, y].concat();
                refused(
                    jwk,
                    alg,
                    &with_point(pem, &point),
                    &format!("not a point on curve {curve}"),
                );
            }
            let mut short = good.clone();
            short["x"] = json!(u(&x[1..]));
            assert!(Key::from_jwk(&short).is_err());
            assert!(Key::from_jwk(&good).is_ok());
            assert!(Key::from_material("k", alg.as_str(), pem).is_ok());
        }

        let mut identity = [0u8; 32];
        identity[0] = 1;
        // y = 2 gives a non-square x^2 = (y^2 - 1) / (d y^2 + 1): no such point.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        for (x, why) in [(identity, "small-order point"), (off_curve, "not a point on the curve")] {
            let jwk = json!({"kty": "OKP", "kid": "k", "crv": "Ed25519", "x": u(&x)});
            refused(jwk, Alg::EdDSA, &with_point(ED_PUB, &x), why);
        }
        let ed = public_jwk("k", Alg::EdDSA, ED_PUB);
        assert!(Key::from_jwk(&ed).is_ok());
        assert!(Key::from_material("k", "EdDSA", ED_PUB).is_ok());
    }

    #[test]
    fn arbitrary_signatures_and_garbage_never_panic() {
        // Deterministic LCG so the test is reproducible without a rand dependency.
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let keys = [
            (Key::from_material("k", "HS256", SECRET).unwrap(), "HS256"),
            (Key::from_material("k", "RS256", RSA_PUB).unwrap(), "RS256"),
            (Key::from_material("k", "PS512", RSA_PUB).unwrap(), "PS512"),
            (Key::from_material("k", "ES256", EC_PUB).unwrap(), "ES256"),
            (Key::from_material("k", "ES384", EC384_PUB).unwrap(), "ES384"),
            (Key::from_material("k", "EdDSA", ED_PUB).unwrap(), "EdDSA"),
        ];
        let payload = b64(&claims().to_string());
        for (key, alg) in keys {
            let head = b64(&format!(r#"{{"alg":"{alg}","kid":"k"}}"#));
            for len in [1usize, 2, 31, 32, 63, 64, 65, 71, 72, 96, 104, 255, 256, 257, 512, 600] {
                let sig: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let t = format!("{head}.{payload}.{}", URL_SAFE_NO_PAD.encode(&sig));
                assert_eq!(
                    verify(&t, &one(key.clone()), &v0(), NOW),
                    Err(Reject::BadSignature),
                    "{alg} {len}"
                );
            }
        }
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_..=\"";
        for _ in 0..3000 {
            let len = next() % 120;
            let t: String = (0..len)
                .map(|_| alphabet.get(next() % alphabet.len()).copied().unwrap_or(b'A') as char)
                .collect();
            assert!(verify(&t, &one(hs_key()), &v0(), NOW).is_err());
            let _ = header_kid(&t);
        }
        // structurally valid header with hostile member types
        for h in [
            r#"{"alg":["HS256"],"kid":"hs"}"#,
            r#"{"alg":null,"kid":"hs"}"#,
            r#"{"alg":"HS256","kid":"hs","jwk":{"kty":"oct","k":"AAAA"}}"#,
            r#"{"alg":"HS256","kid":"hs","typ":7}"#,
        ] {
            let t = format!("{}.{}.{}", b64(h), payload, "AAAA");
            assert!(verify(&t, &one(hs_key()), &v0(), NOW).is_err(), "{h}");
        }
    }

    #[test]
    fn alg_roundtrip() {
        for a in [
            Alg::HS256,
            Alg::HS384,
            Alg::HS512,
            Alg::RS256,
            Alg::RS384,
            Alg::RS512,
            Alg::PS256,
            Alg::PS384,
            Alg::PS512,
            Alg::ES256,
            Alg::ES384,
            Alg::EdDSA,
        ] {
            assert_eq!(Alg::parse(a.as_str()), Some(a));
        }
        assert_eq!(Alg::parse("hs256"), None);
        assert_eq!(Alg::parse("ES512"), None);
    }
}
