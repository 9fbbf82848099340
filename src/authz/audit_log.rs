//! The audit log on disk: `$PGDATA/pg_vecguard/audit.log` (sealed JSON lines, see
//! `audit`) plus `audit.head`, the anchor holding the last hash and the log's length.
//!
//! Why a file and not a table: records must survive the rollback of the transaction that
//! caused them (a rejected token usually ends in an error), and the roles they describe must
//! not be able to change them. Only the server's OS user can touch files under the data
//! directory; ordinary roles cannot read or write server files.
//!
//! Concurrency: every writer takes an exclusive `flock` on the log for read-tail, append,
//! fsync and head update, so concurrent backends extend one chain. The head anchor makes
//! tail truncation detectable, which a hash chain alone cannot show.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::audit::{self, ChainReport, Record};

/// Bytes read from the end of the log to find the previous hash.
const TAIL_WINDOW: u64 = 256 * 1024;

fn dir() -> PathBuf {
    // SAFETY: DataDir is set by the postmaster before any backend runs and never changes
    // afterwards; it is a NUL-terminated C string.
    let data = unsafe {
        let p = pgrx::pg_sys::DataDir;
        if p.is_null() {
            String::from(".")
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    PathBuf::from(data).join("pg_vecguard")
}

/// Path of the log file.
pub fn log_path() -> PathBuf {
    dir().join("audit.log")
}

fn head_path() -> PathBuf {
    dir().join("audit.head")
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Head {
    last_hash: String,
    bytes: u64,
}

fn read_head() -> Option<Head> {
    let text = fs::read_to_string(head_path()).ok()?;
    serde_json::from_str(text.trim()).ok()
}

// Hash of the last complete line, so the new record continues the chain.
fn last_line_hash(f: &mut File, len: u64) -> io::Result<Option<String>> {
    let start = len.saturating_sub(TAIL_WINDOW);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(len - start).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    Ok(last.and_then(audit::last_hash))
}

/// Appends one record under the exclusive lock and fsyncs it; updates the head anchor.
pub fn append(rec: &Record) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir())?;
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(log_path())?;
    f.lock()?;
    let len = f.metadata()?.len();
    let prev = if len == 0 {
        audit::GENESIS.to_string()
    } else {
        // An unreadable tail (corruption) continues from the anchor, so verification
        // reports the damaged line rather than this new one.
        match last_line_hash(&mut f, len)? {
            Some(h) => h,
            None => read_head()
                .map(|h| h.last_hash)
                .unwrap_or_else(|| audit::GENESIS.to_string()),
        }
    };
    let line = audit::seal(rec, &prev);
    let hash = audit::last_hash(&line).unwrap_or_default();
    let mut bytes = line.into_bytes();
    bytes.push(b'\n');
    f.write_all(&bytes)?;
    f.sync_data()?;
    let head = Head {
        last_hash: hash,
        bytes: len + bytes.len() as u64,
    };
    // Written via a temporary file and rename so a crash never leaves half an anchor.
    let tmp = dir().join("audit.head.tmp");
    {
        let mut h = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        h.write_all(serde_json::to_string(&head).unwrap_or_default().as_bytes())?;
        h.sync_data()?;
    }
    fs::rename(&tmp, head_path())?;
    f.unlock()?;
    Ok(())
}

/// The whole log, read under a shared lock (empty when there is no log yet).
pub fn read_all() -> io::Result<String> {
    let mut f = match File::open(log_path()) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    f.lock_shared()?;
    let mut s = String::new();
    let mut raw = Vec::new();
    f.read_to_end(&mut raw)?;
    f.unlock()?;
    s.push_str(&String::from_utf8_lossy(&raw));
    Ok(s)
}

/// Verifies the chain and compares its end with the head anchor.
pub fn verify() -> io::Result<ChainReport> {
    let text = read_all()?;
    let mut report = audit::verify_chain(text.split('\n'));
    if !report.ok {
        return Ok(report);
    }
    let head = read_head();
    let len = text.len() as u64;
    let mismatch = match (&head, &report.last_hash) {
        (None, None) => None,
        (None, Some(_)) => Some("the head anchor (audit.head) is missing"),
        (Some(h), last) => {
            if last.as_deref() != Some(h.last_hash.as_str()) || h.bytes != len {
                Some("the log does not end where the head anchor says: records were truncated or rewritten")
            } else {
                None
            }
        }
    };
    if let Some(why) = mismatch {
        report.ok = false;
        report.reason = Some(why.to_string());
        report.first_bad_line = Some(report.records + 1);
    }
    Ok(report)
}
