//! Finding bearer tokens in statement and log text, so they can be masked before
//! PostgreSQL shows that text to other sessions (pg_stat_activity), writes it to the server
//! log (log_statement, errors) or keeps it (pg_stat_statements).
//!
//! A token is a JWS in compact form: three base64url segments joined by dots whose first
//! segment encodes a JSON object, so it starts with `eyJ` (`{"`). Masking keeps the text's
//! length, so statement locations that other code stores as byte offsets stay right.

/// The mask character.
const MASK: u8 = b'*';

/// Shortest run of characters worth treating as a token (a header alone is ~20).
const MIN_TOKEN_LEN: usize = 24;

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `text` with every compact-JWS-shaped token replaced by `*`s of the same length, or None
/// when there is none (the common case, answered without allocating).
pub fn mask_tokens(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while let Some(off) = find(&bytes[i..], b"eyJ") {
        let start = i + off;
        // A token starts at a segment boundary, not inside a longer base64 run.
        if start > 0 && (is_b64url(bytes[start - 1]) || bytes[start - 1] == b'.') {
            i = start + 3;
            continue;
        }
        let end = token_end(bytes, start);
        match end {
            Some(end) if end - start >= MIN_TOKEN_LEN => {
                let o = out.get_or_insert_with(|| bytes.to_vec());
                o[start..end].fill(MASK);
                i = end;
            }
            _ => i = start + 3,
        }
    }
    // Masking replaces ASCII with ASCII, so the bytes stay valid UTF-8.
    out.map(|o| String::from_utf8(o).unwrap_or_default())
}

// End of `seg.seg.seg` starting at `start` (the third segment may be empty, as in an
// unsigned token), or None when the shape does not match.
fn token_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut pos = start;
    for segment in 0..3 {
        let seg_start = pos;
        while pos < bytes.len() && is_b64url(bytes[pos]) {
            pos += 1;
        }
        if segment < 2 {
            if pos == seg_start || pos >= bytes.len() || bytes[pos] != b'.' {
                return None;
            }
            pos += 1;
        }
    }
    Some(pos)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOK: &str = "eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIn0.c2lnbmF0dXJlLWJ5dGVz";

    #[test]
    fn masks_tokens_in_statements_keeping_length() {
        let q = format!("SET vecguard.jwt = '{TOK}'");
        let m = mask_tokens(&q).expect("masked");
        assert_eq!(m.len(), q.len());
        assert!(!m.contains("eyJ"));
        assert!(m.starts_with("SET vecguard.jwt = '*"));
        assert!(m.ends_with("*'"));
        let two = format!("SELECT set_config('vecguard.jwt', '{TOK}', true), '{TOK}'");
        assert_eq!(mask_tokens(&two).expect("masked").matches('*').count(), 2 * TOK.len());
    }

    #[test]
    fn unsigned_tokens_are_masked_too() {
        let t = "eyJhbGciOiJub25lIn0.eyJ0ZW5hbnRfaWQiOiJ4In0.";
        assert_eq!(mask_tokens(t).expect("masked"), "*".repeat(t.len()));
    }

    #[test]
    fn leaves_other_text_alone() {
        assert_eq!(mask_tokens("SELECT 1"), None);
        assert_eq!(mask_tokens("SELECT 'eyJ'"), None);
        assert_eq!(mask_tokens("SELECT 'eyJabc.def'"), None);
        // inside a longer base64 run: not a token boundary
        assert_eq!(mask_tokens(&format!("x{TOK}")), None);
        assert_eq!(mask_tokens("über eyJ"), None);
    }
}
