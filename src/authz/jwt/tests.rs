//! Unit tests of JWT verification and key registration. The test keys in `testdata/` were
//! generated with openssl for these tests and are used nowhere else.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const NOW: i64 = 1_700_000_000;
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const SECRET64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// Test-only keys, generated with openssl for this file; never used outside tests.
const RSA_PRIV: &str = include_str!("testdata/rsa-priv.pem");
const RSA_PUB: &str = include_str!("testdata/rsa-pub.pem");
const RSA_PUB_PKCS1: &str = include_str!("testdata/rsa-pub-pkcs1.pem");
const RSA1024_PUB: &str = include_str!("testdata/rsa1024-pub.pem");
const EC_PRIV: &str = include_str!("testdata/ec-priv.pem");
const EC_PUB: &str = include_str!("testdata/ec-pub.pem");
const EC384_PRIV: &str = include_str!("testdata/ec384-priv.pem");
const EC384_PUB: &str = include_str!("testdata/ec384-pub.pem");
const ED_PRIV: &str = include_str!("testdata/ed-priv.pem");
const ED_PUB: &str = include_str!("testdata/ed-pub.pem");

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
    assert_eq!(verify(&hs_token(&claims()), &one(other), &v0(), NOW), Err(Reject::BadSignature));
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
    let t = sign(Algorithm::HS256, None, &claims(), &EncodingKey::from_secret(SECRET.as_bytes()));
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
    assert_eq!(verify(&format!("{hp}.{sig}"), &one(hs_key()), &v0(), NOW), Err(Reject::Malformed));
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
    assert!(matches!(Key::from_material("k", "none", SECRET), Err(KeyError::UnsupportedAlg(_))));
    assert!(matches!(Key::from_material("", "HS256", SECRET), Err(KeyError::InvalidKid(_))));
    assert!(matches!(Key::from_material("a\nb", "HS256", SECRET), Err(KeyError::InvalidKid(_))));
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
    assert_eq!(Key::from_material("k", "RS256", &pkcs1_priv).unwrap_err(), KeyError::PrivateKey);
    // wrong families / curves
    assert!(matches!(Key::from_material("k", "RS256", EC_PUB), Err(KeyError::WrongKeyType { .. })));
    assert!(matches!(
        Key::from_material("k", "ES256", RSA_PUB),
        Err(KeyError::WrongKeyType { .. })
    ));
    assert!(matches!(
        Key::from_material("k", "ES256", EC384_PUB),
        Err(KeyError::WrongKeyType { .. })
    ));
    assert!(matches!(Key::from_material("k", "ES384", EC_PUB), Err(KeyError::WrongKeyType { .. })));
    assert!(matches!(Key::from_material("k", "EdDSA", EC_PUB), Err(KeyError::WrongKeyType { .. })));
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
    let mut v = serde_json::to_value(Jwk::from_decoding_key(&k.decoding, None).unwrap()).unwrap();
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

    let oct =
        json!({"kty": "oct", "kid": "o1", "alg": "HS384", "k": URL_SAFE_NO_PAD.encode(SECRET64)});
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
    assert!(Key::from_jwk(&json!({"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB"})).is_err());
    assert!(Key::from_jwk(&json!({"kty": "EC", "kid": "a", "crv": "P-256", "x": "AA", "y": "AA"}))
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
    let jwk_bytes = |v: &Value, m: &str| URL_SAFE_NO_PAD.decode(v[m].as_str().unwrap()).unwrap();
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
    let padded = json!({"kty": "RSA", "kid": "k", "n": u(&[&[0][..], &n].concat()), "e": "AQAB"});
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
            refused(jwk, alg, &with_point(pem, &point), &format!("not a point on curve {curve}"));
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
