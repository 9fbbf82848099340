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

mod alg;
mod keys;
#[cfg(test)]
mod tests;

pub use alg::Alg;
pub use keys::{parse_jwks, Key, KeyError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use std::collections::HashSet;
use std::fmt;

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
/// signature, then claims against `now_unix`. `lookup` maps a kid to its key. The server
/// calls [`verify_with`], whose lookup can also answer "revoked".
#[cfg(test)]
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
