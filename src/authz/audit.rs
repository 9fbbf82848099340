//! Tamper-evident audit log records, as a SHA-256 hash chain of JSON lines.
//!
//! Why a hash chain
//! ----------------
//! Authorization decisions (token accepted/rejected, keys added/revoked,
//! tables protected) must be reviewable after the fact, including by people
//! who do not trust the database administrator who could edit the log. The
//! glue appends one JSON object per line to a file; each line carries
//! `prev` (the previous line's `hash`, or [`GENESIS`] for the first) and
//! `hash = sha256_hex(prev || canonical_json(record))`. Editing a field
//! breaks that line's hash; recomputing the hash breaks the next line's
//! `prev`; deleting, inserting or reordering lines breaks `prev` where the
//! sequence is disturbed. [`verify_chain_from`] reports the first bad line.
//!
//! What a chain cannot show on its own is truncation (dropping the newest
//! lines) or a complete rewrite from some point on. For that, keep the
//! latest hash somewhere the log writer cannot silently change (a table, a
//! separate system) and compare it with [`ChainReport::last_hash`].
//!
//! Canonical form: the record is serialised by serde_json with the fields
//! in declaration order, absent values as `null` (never omitted), default
//! escaping, no whitespace. The sealed line is that object with `"prev"`
//! and `"hash"` appended as the last two members. Verification recomputes
//! the exact line and compares it byte for byte, so even changes that do
//! not alter the meaning (extra members, whitespace, different escapes) are
//! reported. Because serde_json escapes control characters, a value that
//! contains a newline (say a hostile `sub` claim) can never split a record
//! into two lines.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the first record in a log: 64 zero hex digits.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event. Field order here IS the canonical order: do not reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339 timestamp in UTC, e.g. "2024-01-15T07:00:00.000000Z".
    pub ts: String,
    pub db_role: String,
    /// token_accepted, token_rejected, key_added, key_revoked, protect,
    /// unprotect, setting_changed.
    pub event: String,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub kid: Option<String>,
    pub jti: Option<String>,
    /// allow, deny or change.
    pub decision: String,
    pub reason: Option<String>,
    pub policy: Option<String>,
    pub detail: Option<String>,
}

impl Record {
    /// A record with the four mandatory fields and every optional one unset.
    pub fn new(ts: &str, db_role: &str, event: &str, decision: &str) -> Record {
        Record {
            ts: ts.to_string(),
            db_role: db_role.to_string(),
            event: event.to_string(),
            subject: None,
            tenant: None,
            kid: None,
            jti: None,
            decision: decision.to_string(),
            reason: None,
            policy: None,
            detail: None,
        }
    }
}

/// Format a timestamp the way `Record::ts` expects (RFC 3339, UTC, "Z",
/// microseconds like PostgreSQL's timestamptz).
pub fn rfc3339_utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

// Parsing shape of a sealed line: the record's fields plus prev/hash, with
// unknown members refused so nothing can be smuggled in beside the record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    ts: String,
    db_role: String,
    event: String,
    subject: Option<String>,
    tenant: Option<String>,
    kid: Option<String>,
    jti: Option<String>,
    decision: String,
    reason: Option<String>,
    policy: Option<String>,
    detail: Option<String>,
    prev: String,
    hash: String,
}

/// Result of checking a log. `records` counts records verified before the
/// first problem (all of them when `ok`); `last_hash` is the hash of the
/// last verified record, to compare with an externally kept anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub records: u64,
    pub ok: bool,
    pub first_bad_line: Option<u64>,
    pub reason: Option<String>,
    pub last_hash: Option<String>,
}

// Canonical JSON of the record alone. Serialising plain strings and
// options cannot fail; the empty fallback would only make the line fail
// verification, never panic.
fn canonical(rec: &Record) -> String {
    serde_json::to_string(rec).unwrap_or_default()
}

// hash = sha256(prev_hex_bytes || canonical_json_bytes), lowercase hex.
fn chain_hash(prev_hex: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hex.as_bytes());
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Seal a record onto the chain: returns the complete JSON line (no
/// trailing newline) with `prev` and `hash` appended. Pass [`GENESIS`] for
/// the first record and [`last_hash`] of the previous line otherwise.
pub fn seal(rec: &Record, prev_hash_hex: &str) -> String {
    let body = canonical(rec);
    let hash = chain_hash(prev_hash_hex, &body);
    let open = body.strip_suffix('}').unwrap_or(&body);
    // prev is JSON-escaped in case a caller passes something that is not hex.
    let prev_json = serde_json::to_string(prev_hash_hex).unwrap_or_default();
    format!("{open},\"prev\":{prev_json},\"hash\":\"{hash}\"}}")
}

/// Parse one sealed line into (record, prev, hash). `None` for invalid
/// JSON, missing or unknown members, or prev/hash that are not 64
/// lowercase hex digits. Does not check the hash; see [`verify_chain_from`].
pub fn parse_line(line: &str) -> Option<(Record, String, String)> {
    let line = line.trim_end_matches(['\r', '\n']);
    let s: Sealed = serde_json::from_str(line).ok()?;
    if !is_hash_hex(&s.prev) || !is_hash_hex(&s.hash) {
        return None;
    }
    let rec = Record {
        ts: s.ts,
        db_role: s.db_role,
        event: s.event,
        subject: s.subject,
        tenant: s.tenant,
        kid: s.kid,
        jti: s.jti,
        decision: s.decision,
        reason: s.reason,
        policy: s.policy,
        detail: s.detail,
    };
    Some((rec, s.prev, s.hash))
}

/// The `hash` of a sealed line, to continue the chain after restart.
/// `None` if the line does not parse.
pub fn last_hash(line: &str) -> Option<String> {
    parse_line(line).map(|(_, _, h)| h)
}

/// Verify a whole log that starts at [`GENESIS`]. Lines are numbered from
/// 1 as in the file; blank lines are skipped (they carry nothing, and a
/// removed record still breaks the chain). An empty log is ok. The server verifies with
/// [`verify_chain_from`], since a rotated log starts from the previous file's last hash.
#[cfg(test)]
pub fn verify_chain<'a>(lines: impl Iterator<Item = &'a str>) -> ChainReport {
    verify_chain_from(lines, GENESIS)
}

/// Verify a log segment whose first record continues from `start_prev`,
/// e.g. a rotated file that continues the previous file's last hash.
pub fn verify_chain_from<'a>(
    lines: impl Iterator<Item = &'a str>,
    start_prev: &str,
) -> ChainReport {
    let mut expected_prev = start_prev.to_string();
    let mut records: u64 = 0;
    let mut last: Option<String> = None;
    let fail = |line_no: u64, records: u64, last: Option<String>, why: &str| ChainReport {
        records,
        ok: false,
        first_bad_line: Some(line_no),
        reason: Some(why.to_string()),
        last_hash: last,
    };
    for (idx, raw) in lines.enumerate() {
        let line_no = idx as u64 + 1;
        let line = raw.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            continue;
        }
        let Some((rec, prev, hash)) = parse_line(line) else {
            return fail(line_no, records, last, "not a valid audit record");
        };
        if prev != expected_prev {
            return fail(
                line_no,
                records,
                last,
                "prev does not match the preceding record's hash (a record was deleted, inserted or reordered)",
            );
        }
        if chain_hash(&prev, &canonical(&rec)) != hash {
            return fail(line_no, records, last, "hash mismatch: the record was modified");
        }
        if seal(&rec, &prev) != line {
            return fail(
                line_no,
                records,
                last,
                "record is not in canonical form: the line was modified",
            );
        }
        records += 1;
        expected_prev = hash.clone();
        last = Some(hash);
    }
    ChainReport { records, ok: true, first_bad_line: None, reason: None, last_hash: last }
}

/// Per-backend bound on audit volume: at most `per_minute` records in each window of 60
/// seconds. What is over the bound is counted, announced once when it starts, and summed
/// up in one record when the next window opens, so the log shows that records are
/// missing and how many, without letting one session fill the disk or serialise every
/// other writer on the log's lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    window_start: i64,
    written: u32,
    suppressed: u64,
}

/// What to do with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Write it; first write a summary of this many records suppressed in the last window.
    Write { suppressed_before: Option<u64> },
    /// Drop it; `first` when it is the first dropped in this window (announce that).
    Suppress { first: bool },
}

/// Length of a rate window, in seconds.
pub const RATE_WINDOW_SECS: i64 = 60;

impl RateLimit {
    /// Decides for a record at `now` (Unix seconds); `per_minute = 0` means no bound.
    pub fn admit(&mut self, now: i64, per_minute: u32) -> Admission {
        let mut suppressed_before = None;
        if now - self.window_start >= RATE_WINDOW_SECS || now < self.window_start {
            if self.suppressed > 0 {
                suppressed_before = Some(self.suppressed);
            }
            *self = RateLimit { window_start: now, written: 0, suppressed: 0 };
        }
        if per_minute == 0 || self.written < per_minute {
            self.written = self.written.saturating_add(1);
            Admission::Write { suppressed_before }
        } else {
            self.suppressed += 1;
            Admission::Suppress { first: self.suppressed == 1 }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rate_limit_counts_and_summarises_what_it_drops() {
        let mut r = super::RateLimit::default();
        let w = |s| super::Admission::Write { suppressed_before: s };
        assert_eq!(r.admit(1000, 2), w(None));
        assert_eq!(r.admit(1001, 2), w(None));
        assert_eq!(r.admit(1002, 2), super::Admission::Suppress { first: true });
        assert_eq!(r.admit(1003, 2), super::Admission::Suppress { first: false });
        assert_eq!(r.admit(1059, 2), super::Admission::Suppress { first: false });
        // next window: the 3 dropped ones are summarised before the first write
        assert_eq!(r.admit(1060, 2), w(Some(3)));
        assert_eq!(r.admit(1061, 2), w(None));
        // no bound
        let mut r = super::RateLimit::default();
        assert!((0..10_000).all(|i| r.admit(5, 0) == w(None) || i == 0));
    }

    use super::*;
    use chrono::TimeZone;

    fn rec(i: usize) -> Record {
        let mut r = Record::new(
            &format!("2024-01-15T07:00:{:02}.000000Z", i % 60),
            "app_user",
            if i.is_multiple_of(3) { "token_rejected" } else { "token_accepted" },
            if i.is_multiple_of(3) { "deny" } else { "allow" },
        );
        r.subject = Some(format!("user-{i}"));
        r.tenant = Some("t1".into());
        r.kid = Some("k1".into());
        r.jti = if i.is_multiple_of(2) { Some(format!("j{i}")) } else { None };
        r.reason = if i.is_multiple_of(3) { Some("expired".into()) } else { None };
        r
    }

    fn chain(n: usize) -> Vec<String> {
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for i in 0..n {
            let line = seal(&rec(i), &prev);
            prev = last_hash(&line).unwrap();
            out.push(line);
        }
        out
    }

    fn check(lines: &[String]) -> ChainReport {
        verify_chain(lines.iter().map(String::as_str))
    }

    #[test]
    fn genesis_and_line_shape() {
        assert_eq!(GENESIS.len(), 64);
        assert!(is_hash_hex(GENESIS));
        let line =
            seal(&Record::new("2024-01-15T07:00:00.000000Z", "r", "protect", "change"), GENESIS);
        assert!(line.starts_with(r#"{"ts":"2024-01-15T07:00:00.000000Z","db_role":"r","event":"protect","subject":null,"tenant":null,"kid":null,"jti":null,"decision":"change","reason":null,"policy":null,"detail":null,"prev":"0000"#));
        assert!(line.ends_with("\"}"));
        assert!(!line.contains('\n'));
        let (r, p, h) = parse_line(&line).unwrap();
        assert_eq!(r.event, "protect");
        assert_eq!(p, GENESIS);
        let expect = hex::encode(Sha256::digest(format!("{GENESIS}{}", canonical(&r)).as_bytes()));
        assert_eq!(h, expect);
        assert_eq!(
            rfc3339_utc(Utc.with_ymd_and_hms(2024, 1, 15, 7, 0, 0).unwrap()),
            "2024-01-15T07:00:00.000000Z"
        );
    }

    #[test]
    fn chain_of_100_verifies() {
        let lines = chain(100);
        let r = check(&lines);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.records, 100);
        assert_eq!(r.first_bad_line, None);
        assert_eq!(r.last_hash, last_hash(&lines[99]));
        // as one file text with a trailing newline and CRLF endings
        let text = lines.join("\r\n") + "\r\n";
        let r2 = verify_chain(text.lines());
        assert!(r2.ok && r2.records == 100);
    }

    #[test]
    fn empty_log_is_ok() {
        let r = verify_chain(std::iter::empty());
        assert_eq!(
            r,
            ChainReport {
                records: 0,
                ok: true,
                first_bad_line: None,
                reason: None,
                last_hash: None
            }
        );
        assert!(verify_chain("\n\n".lines()).ok);
    }

    #[test]
    fn edited_field_detected_at_its_line() {
        let mut lines = chain(100);
        lines[49] = lines[49].replacen("\"decision\":\"allow\"", "\"decision\":\"deny\"", 1);
        let r = check(&lines);
        assert!(!r.ok);
        assert_eq!(r.first_bad_line, Some(50));
        assert_eq!(r.records, 49);
        assert!(r.reason.unwrap().contains("modified"));
    }

    #[test]
    fn edited_and_rehashed_detected_at_next_line() {
        let mut lines = chain(100);
        let (mut r, prev, _) = parse_line(&lines[49]).unwrap();
        r.tenant = Some("t2".into());
        lines[49] = seal(&r, &prev);
        let rep = check(&lines);
        assert_eq!(rep.first_bad_line, Some(51));
        assert!(rep.reason.unwrap().contains("prev"));
    }

    #[test]
    fn deleted_line_detected() {
        let mut lines = chain(100);
        lines.remove(49);
        let r = check(&lines);
        assert_eq!(r.first_bad_line, Some(50));
        // deleting the first line: the new first line does not start at GENESIS
        let mut lines = chain(10);
        lines.remove(0);
        assert_eq!(check(&lines).first_bad_line, Some(1));
    }

    #[test]
    fn reordered_lines_detected() {
        let mut lines = chain(100);
        lines.swap(29, 30);
        let r = check(&lines);
        assert_eq!(r.first_bad_line, Some(30));
        assert_eq!(r.records, 29);
    }

    #[test]
    fn inserted_or_duplicated_line_detected() {
        let mut lines = chain(20);
        let dup = lines[5].clone();
        lines.insert(6, dup);
        assert_eq!(check(&lines).first_bad_line, Some(7));
    }

    #[test]
    fn bad_json_and_non_canonical_detected() {
        let mut lines = chain(20);
        lines[9] = "{not json".into();
        assert_eq!(check(&lines).first_bad_line, Some(10));

        let mut lines = chain(20);
        lines[4] = lines[4].replacen("\"ts\":", "\"ts\": ", 1); // whitespace only
        let r = check(&lines);
        assert_eq!(r.first_bad_line, Some(5));
        assert!(r.reason.unwrap().contains("canonical"));

        let mut lines = chain(20);
        lines[4] = lines[4].replacen("{", "{\"extra\":1,", 1); // smuggled member
        assert_eq!(check(&lines).first_bad_line, Some(5));

        let mut lines = chain(20);
        lines[4] =
            lines[4].replacen("\"db_role\":\"app_user\"", "\"db_role\":\"\\u0061pp_user\"", 1); // same value, other escape
        assert_eq!(check(&lines).first_bad_line, Some(5));

        let mut lines = chain(3);
        lines[1] = lines[1].replacen(",\"detail\":null", "", 1); // dropped member
        assert_eq!(check(&lines).first_bad_line, Some(2));
    }

    #[test]
    fn hostile_values_stay_on_one_line() {
        let mut r = Record::new("2024-01-15T07:00:00.000000Z", "r", "token_rejected", "deny");
        r.subject = Some("evil\n{\"ts\":\"x\"}\r\n'; DROP TABLE x; --".into());
        r.detail = Some("\u{0}\u{7}\"\\".into());
        let line = seal(&r, GENESIS);
        assert_eq!(line.lines().count(), 1);
        let (back, _, _) = parse_line(&line).unwrap();
        assert_eq!(back, r);
        assert!(verify_chain(std::iter::once(line.as_str())).ok);
    }

    #[test]
    fn parse_line_rejects_bad_hashes_and_rotation_works() {
        let line = seal(&rec(1), "not-hex");
        assert!(parse_line(&line).is_none());
        assert_eq!(last_hash("garbage"), None);
        let upper = seal(&rec(1), &GENESIS.replace('0', "A"));
        assert!(parse_line(&upper).is_none());

        let lines = chain(10);
        let anchor = last_hash(&lines[4]).unwrap();
        let tail: Vec<&str> = lines[5..].iter().map(String::as_str).collect();
        assert!(verify_chain_from(tail.iter().copied(), &anchor).ok);
        assert!(!verify_chain(tail.iter().copied()).ok);
        // truncation is invisible to the chain itself but visible against an anchor
        let full_anchor = last_hash(&lines[9]).unwrap();
        let truncated = check(&lines[..8]);
        assert!(truncated.ok);
        assert_ne!(truncated.last_hash.as_deref(), Some(full_anchor.as_str()));
    }
}
