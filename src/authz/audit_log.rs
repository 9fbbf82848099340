//! The audit log on disk: `$PGDATA/pg_vecguard/audit.log` (sealed JSON lines, see
//! `audit`) plus `audit.head`, the anchor holding the last hash and the log's length.
//!
//! Size budget: once the log reaches `vecguard.audit_max_size`, the next writer renames it
//! to `audit.log.1` (replacing the one before) and starts a new log whose first record
//! continues the old one's chain. The head remembers where the current log's chain starts
//! (`start_prev`) and where the rotated one's did, so both files still verify, and the
//! rotated file must end exactly where the current one begins.
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

fn rotated_path() -> PathBuf {
    dir().join("audit.log.1")
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Head {
    last_hash: String,
    bytes: u64,
    /// `prev` of the current log's first record (GENESIS for a log never rotated).
    #[serde(default = "genesis")]
    start_prev: String,
    /// `prev` of the rotated log's first record, when there is one.
    #[serde(default)]
    rotated_start_prev: Option<String>,
}

fn genesis() -> String {
    audit::GENESIS.to_string()
}

fn max_bytes() -> u64 {
    u64::try_from(super::guc::AUDIT_MAX_SIZE.get()).unwrap_or(0) * 1024
}

// Opens the log and takes its exclusive lock, making sure the file locked is still the one
// at the log's path (another writer may have rotated it while we waited for the lock).
fn open_locked() -> io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let f = open_log(false)?;
        let same = fs::metadata(log_path())
            .is_ok_and(|m| f.metadata().is_ok_and(|fm| fm.ino() == m.ino() && fm.dev() == m.dev()));
        if same {
            return Ok(f);
        }
        f.unlock()?;
    }
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
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir())?;
    let mut f = open_locked()?;
    let mut len = f.metadata()?.len();
    let mut head = read_head();
    let limit = max_bytes();
    if limit > 0 && len >= limit {
        // Rotate under the lock: later writers find the new file (see open_locked).
        let last = last_line_hash(&mut f, len)?
            .or_else(|| head.as_ref().map(|h| h.last_hash.clone()))
            .unwrap_or_else(genesis);
        fs::rename(log_path(), rotated_path())?;
        let rotated_start = head.as_ref().map_or_else(genesis, |h| h.start_prev.clone());
        let new = open_log(true)?;
        f.unlock()?;
        f = new;
        len = 0;
        head = Some(Head {
            last_hash: last.clone(),
            bytes: 0,
            start_prev: last,
            rotated_start_prev: Some(rotated_start),
        });
        write_head(head.as_ref().expect("just set"))?;
    }
    let start_prev = head.as_ref().map_or_else(genesis, |h| h.start_prev.clone());
    let prev = if len == 0 {
        start_prev.clone()
    } else {
        // An unreadable tail (corruption) continues from the anchor, so verification
        // reports the damaged line rather than this new one.
        match last_line_hash(&mut f, len)? {
            Some(h) => h,
            None => read_head().map(|h| h.last_hash).unwrap_or_else(|| audit::GENESIS.to_string()),
        }
    };
    let line = audit::seal(rec, &prev);
    let hash = audit::last_hash(&line).unwrap_or_default();
    let mut bytes = line.into_bytes();
    bytes.push(b'\n');
    f.write_all(&bytes)?;
    f.sync_data()?;
    write_head(&Head {
        last_hash: hash,
        bytes: len + bytes.len() as u64,
        start_prev,
        rotated_start_prev: head.and_then(|h| h.rotated_start_prev),
    })?;
    f.unlock()?;
    Ok(())
}

// The log at its path for appending, exclusively locked: the existing one (created when
// missing), or with `new_only` a new, empty one.
fn open_log(new_only: bool) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(!new_only)
        .create_new(new_only)
        .mode(0o600)
        .open(log_path())?;
    f.lock()?;
    Ok(f)
}

// Written via a temporary file and rename so a crash never leaves half an anchor.
fn write_head(head: &Head) -> io::Result<()> {
    let tmp = dir().join("audit.head.tmp");
    {
        let mut h =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        h.write_all(serde_json::to_string(head).unwrap_or_default().as_bytes())?;
        h.sync_data()?;
    }
    fs::rename(&tmp, head_path())
}

/// The rotated log, then the current one (the records in the order they were written).
pub fn read_all() -> io::Result<String> {
    let mut text = read_file(&rotated_path())?;
    text.push_str(&read_file(&log_path())?);
    Ok(text)
}

// One file, read under a shared lock (empty when it does not exist).
fn read_file(path: &std::path::Path) -> io::Result<String> {
    let mut f = match File::open(path) {
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

/// Verifies the chain (the rotated log, then the current one) and compares its end with
/// the head anchor.
pub fn verify() -> io::Result<ChainReport> {
    let head = read_head();
    let start = head.as_ref().map_or_else(genesis, |h| h.start_prev.clone());
    let rotated = read_file(&rotated_path())?;
    let mut before = 0;
    if !rotated.is_empty() {
        let from = head.as_ref().and_then(|h| h.rotated_start_prev.clone()).unwrap_or_else(genesis);
        let r = audit::verify_chain_from(rotated.split('\n'), &from);
        if !r.ok || r.last_hash.as_deref() != Some(start.as_str()) {
            let mut r = r;
            if r.ok {
                r.ok = false;
                r.reason = Some("the rotated log does not end where the current log begins".into());
                r.first_bad_line = Some(r.records + 1);
            }
            return Ok(r);
        }
        before = r.records;
    }
    let text = read_file(&log_path())?;
    let mut report = audit::verify_chain_from(text.split('\n'), &start);
    report.records += before;
    if let Some(l) = report.first_bad_line.as_mut() {
        *l += rotated.split('\n').filter(|l| !l.is_empty()).count() as u64;
    }
    if !report.ok {
        return Ok(report);
    }
    let len = text.len() as u64;
    // A log just rotated and not yet written to ends where it starts.
    let last = report.last_hash.clone().or_else(|| (len == 0 && head.is_some()).then_some(start));
    let mismatch = match (&head, &last) {
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
