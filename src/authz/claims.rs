//! Claim accessors: turning a verified JWT payload into the few facts
//! vecguard's policies use (subject, tenants, clearance, roles).
//!
//! Why this is strict
//! ------------------
//! The values read here end up as arguments to row-level-security checks
//! (`tenant_id = ANY(vecguard.tenants())`, `clearance <= vecguard.clearance()`).
//! A lenient reader is an authorization bug: if `{"tenant_id": {"$ne": 0}}`
//! or `"clearance": "99"` were coerced into something usable, an identity
//! provider misconfiguration or a claim-mapping mistake would silently widen
//! access. So every accessor returns `None` for any shape it does not fully
//! understand, and the glue treats `None` as "no access for this dimension".
//! All-or-nothing for lists: one bad element voids the whole claim rather
//! than keeping the elements that happen to parse.
//!
//! Claim names come from settings and may be dotted paths
//! (`app_metadata.tenant_id`) walked through nested objects. Providers such
//! as Auth0 require namespaced claims that are URLs and contain dots
//! (`https://example.com/tenant`), so an exact top-level match is tried
//! first and only then the dotted path.
//!
//! Everything here is pure and infallible: no panics, no allocation beyond
//! the returned values, input is only ever read.

use serde_json::{Number, Value};

/// Which claims carry subject, tenant, clearance and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    pub subject: String,
    pub tenant: String,
    pub clearance: String,
    pub roles: String,
}

impl Default for ClaimNames {
    // The defaults match common IdP conventions and the extension's GUC defaults.
    fn default() -> Self {
        ClaimNames {
            subject: "sub".to_string(),
            tenant: "tenant_id".to_string(),
            clearance: "clearance".to_string(),
            roles: "roles".to_string(),
        }
    }
}

/// Resolve a claim name: exact top-level key first, then a dotted path
/// through nested objects. Empty names and empty path segments resolve to
/// nothing, so a typo like "a..b" cannot match by accident.
pub fn lookup<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if name.is_empty() {
        return None;
    }
    let obj = claims.as_object()?;
    if let Some(v) = obj.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    let mut cur = claims;
    for seg in name.split('.') {
        if seg.is_empty() {
            return None;
        }
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

/// The subject: a non-empty string, or an integer (rendered as digits)
/// because some providers use numeric user ids in custom subject claims.
pub fn subject(c: &Value, n: &ClaimNames) -> Option<String> {
    match lookup(c, &n.subject)? {
        Value::String(s) if usable(s) => Some(s.clone()),
        Value::Number(num) => integral_number(num),
        _ => None,
    }
}

/// All tenants of the caller: a string or integer gives one element, an
/// array of strings/integers gives all of them (deduplicated, order kept).
/// Objects, booleans, null, empty strings, non-integral numbers, an empty
/// array, or an array with any non-scalar element give `None`.
pub fn tenants(c: &Value, n: &ClaimNames) -> Option<Vec<String>> {
    match lookup(c, &n.tenant)? {
        Value::Array(items) => {
            if items.is_empty() {
                return None;
            }
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for it in items {
                let t = scalar_tenant(it)?;
                if !out.contains(&t) {
                    out.push(t);
                }
            }
            Some(out)
        }
        other => scalar_tenant(other).map(|t| vec![t]),
    }
}

/// The single tenant, when the caller has exactly one (after
/// deduplication); `None` for zero, several, or malformed.
pub fn tenant(c: &Value, n: &ClaimNames) -> Option<String> {
    let mut ts = tenants(c, n)?;
    if ts.len() == 1 {
        ts.pop()
    } else {
        None
    }
}

/// Clearance level: only a JSON integer that fits in i32. Strings ("3"),
/// fractions (2.5), floats written as 3.0, and anything else give `None`,
/// since a coerced clearance would be an escalation path.
pub fn clearance(c: &Value, n: &ClaimNames) -> Option<i32> {
    match lookup(c, &n.clearance)? {
        Value::Number(num) => num.as_i64().and_then(|i| i32::try_from(i).ok()),
        _ => None,
    }
}

/// Roles: an array of strings (possibly empty) or a single string. Any
/// non-string element voids the claim.
pub fn roles(c: &Value, n: &ClaimNames) -> Option<Vec<String>> {
    match lookup(c, &n.roles)? {
        Value::String(s) if !s.contains('\0') => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|it| it.as_str().filter(|s| !s.contains('\0')).map(str::to_string))
            .collect::<Option<Vec<String>>>(),
        _ => None,
    }
}

// A string claim value SQL can carry: not empty, and without NUL, which a text value cannot
// hold (PostgreSQL would cut "42\u0000x" in JSON to "42", a different tenant).
fn usable(s: &str) -> bool {
    !s.is_empty() && !s.contains('\0')
}

// A tenant scalar: a usable string, or an integral number as digits.
fn scalar_tenant(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if usable(s) => Some(s.clone()),
        Value::Number(num) => integral_number(num),
        _ => None,
    }
}

// Render integral numbers without a fraction ("7", not "7.0"). Floats are
// accepted only when exactly integral and within 2^53, where f64 is exact,
// so 1e20 cannot silently become a different tenant id.
fn integral_number(num: &Number) -> Option<String> {
    if let Some(i) = num.as_i64() {
        return Some(i.to_string());
    }
    if let Some(u) = num.as_u64() {
        return Some(u.to_string());
    }
    let f = num.as_f64()?;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT {
        // Exact conversion: |f| <= 2^53 and integral.
        return Some((f as i64).to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names() -> ClaimNames {
        ClaimNames::default()
    }

    #[test]
    fn defaults() {
        let n = names();
        assert_eq!(
            (n.subject.as_str(), n.tenant.as_str(), n.clearance.as_str(), n.roles.as_str()),
            ("sub", "tenant_id", "clearance", "roles")
        );
    }

    #[test]
    fn nul_in_a_string_claim_voids_it() {
        let n = ClaimNames::default();
        let c = serde_json::json!({"sub": "a\u{0}b", "tenant_id": "42\u{0}x", "roles": ["r", "x\u{0}"]});
        assert_eq!(subject(&c, &n), None);
        assert_eq!(tenants(&c, &n), None);
        assert_eq!(roles(&c, &n), None);
        let arr = serde_json::json!({"tenant_id": ["1", "2\u{0}"]});
        assert_eq!(tenants(&arr, &n), None);
    }

    #[test]
    fn subject_shapes() {
        let n = names();
        assert_eq!(subject(&json!({"sub": "alice"}), &n).as_deref(), Some("alice"));
        assert_eq!(subject(&json!({"sub": 42}), &n).as_deref(), Some("42"));
        assert_eq!(subject(&json!({"sub": ""}), &n), None);
        assert_eq!(subject(&json!({"sub": null}), &n), None);
        assert_eq!(subject(&json!({"sub": ["a"]}), &n), None);
        assert_eq!(subject(&json!({"sub": {"id": "a"}}), &n), None);
        assert_eq!(subject(&json!({"sub": true}), &n), None);
        assert_eq!(subject(&json!({}), &n), None);
        assert_eq!(subject(&json!("sub"), &n), None);
        assert_eq!(
            subject(&json!({"sub": "'; DROP TABLE x; --"}), &n).as_deref(),
            Some("'; DROP TABLE x; --")
        );
    }

    #[test]
    fn tenants_shapes() {
        let n = names();
        assert_eq!(tenants(&json!({"tenant_id": "t1"}), &n), Some(vec!["t1".to_string()]));
        assert_eq!(tenants(&json!({"tenant_id": 7}), &n), Some(vec!["7".to_string()]));
        assert_eq!(tenants(&json!({"tenant_id": -7}), &n), Some(vec!["-7".to_string()]));
        assert_eq!(tenants(&json!({"tenant_id": 7.0}), &n), Some(vec!["7".to_string()]));
        assert_eq!(tenants(&json!({"tenant_id": u64::MAX}), &n), Some(vec![u64::MAX.to_string()]));
        assert_eq!(
            tenants(&json!({"tenant_id": ["a", 2, "a", "b"]}), &n),
            Some(vec!["a".to_string(), "2".to_string(), "b".to_string()])
        );
        for bad in [
            json!({"tenant_id": {"$ne": 0}}),
            json!({"tenant_id": true}),
            json!({"tenant_id": null}),
            json!({"tenant_id": []}),
            json!({"tenant_id": ["a", ["b"]]}),
            json!({"tenant_id": ["a", {"x": 1}]}),
            json!({"tenant_id": ["a", null]}),
            json!({"tenant_id": ["a", true]}),
            json!({"tenant_id": ""}),
            json!({"tenant_id": ["a", ""]}),
            json!({"tenant_id": 1.5}),
            json!({"tenant_id": 1e20}),
            json!({}),
            json!([1]),
        ] {
            assert_eq!(tenants(&bad, &n), None, "{bad}");
        }
    }

    #[test]
    fn single_tenant() {
        let n = names();
        assert_eq!(tenant(&json!({"tenant_id": "t1"}), &n).as_deref(), Some("t1"));
        assert_eq!(tenant(&json!({"tenant_id": ["t1"]}), &n).as_deref(), Some("t1"));
        assert_eq!(tenant(&json!({"tenant_id": ["t1", "t1"]}), &n).as_deref(), Some("t1"));
        assert_eq!(tenant(&json!({"tenant_id": ["t1", "t2"]}), &n), None);
        assert_eq!(tenant(&json!({"tenant_id": {}}), &n), None);
    }

    #[test]
    fn clearance_shapes() {
        let n = names();
        assert_eq!(clearance(&json!({"clearance": 3}), &n), Some(3));
        assert_eq!(clearance(&json!({"clearance": -1}), &n), Some(-1));
        assert_eq!(clearance(&json!({"clearance": i32::MAX}), &n), Some(i32::MAX));
        for bad in [
            json!({"clearance": "3"}),
            json!({"clearance": 3.0}),
            json!({"clearance": 2.5}),
            json!({"clearance": i64::from(i32::MAX) + 1}),
            json!({"clearance": i64::from(i32::MIN) - 1}),
            json!({"clearance": u64::MAX}),
            json!({"clearance": [3]}),
            json!({"clearance": null}),
            json!({"clearance": true}),
            json!({}),
        ] {
            assert_eq!(clearance(&bad, &n), None, "{bad}");
        }
    }

    #[test]
    fn roles_shapes() {
        let n = names();
        assert_eq!(
            roles(&json!({"roles": ["a", "b"]}), &n),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(roles(&json!({"roles": "admin"}), &n), Some(vec!["admin".to_string()]));
        assert_eq!(roles(&json!({"roles": []}), &n), Some(vec![]));
        assert_eq!(roles(&json!({"roles": ["a", 1]}), &n), None);
        assert_eq!(roles(&json!({"roles": {"a": 1}}), &n), None);
        assert_eq!(roles(&json!({"roles": 5}), &n), None);
        assert_eq!(roles(&json!({}), &n), None);
    }

    #[test]
    fn dotted_paths_and_namespaced_names() {
        let c = json!({
            "app_metadata": {"tenant_id": "t9", "level": {"clearance": 4}, "roles": ["r"]},
            "https://example.com/tenant": "ns-tenant",
            "a": {"b": 1},
            "a.b": "literal"
        });
        let n = ClaimNames {
            subject: "https://example.com/tenant".into(),
            tenant: "app_metadata.tenant_id".into(),
            clearance: "app_metadata.level.clearance".into(),
            roles: "app_metadata.roles".into(),
        };
        assert_eq!(tenant(&c, &n).as_deref(), Some("t9"));
        assert_eq!(clearance(&c, &n), Some(4));
        assert_eq!(roles(&c, &n), Some(vec!["r".to_string()]));
        assert_eq!(subject(&c, &n).as_deref(), Some("ns-tenant"));
        // exact key wins over the path
        assert_eq!(lookup(&c, "a.b"), Some(&json!("literal")));
        assert_eq!(lookup(&c, "app_metadata..tenant_id"), None);
        assert_eq!(lookup(&c, "app_metadata.tenant_id.x"), None);
        assert_eq!(lookup(&c, "app_metadata.missing"), None);
        assert_eq!(lookup(&c, ""), None);
        assert_eq!(lookup(&c, "."), None);
    }
}
