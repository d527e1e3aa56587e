//! The ledger: one JSON line per accepted application (id, status token, what it must become),
//! appended the moment the 202 arrives, so even a load run that dies half-way leaves a record
//! that `loadtest reconcile` can check against the system later.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::plan::{AppKind, Expected};

/// An accepted application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub application_id: Uuid,
    pub status_token: String,
    pub expected: Expected,
    pub kind: AppKind,
    /// Registry resident id of the child (synthetic data), for "two coupons for one child".
    pub child: String,
    pub idempotency_key: String,
    /// For a second application for the same child: the id the duplicate must point at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<Uuid>,
    pub visitor: usize,
    /// Seconds since the start of the run when the 202 arrived.
    pub accepted_at_s: f64,
}

/// Appends entries as JSON lines, flushing each so the file is whole up to the last acceptance.
pub struct LedgerWriter {
    out: BufWriter<File>,
}

impl LedgerWriter {
    pub fn create(path: &Path) -> anyhow::Result<LedgerWriter> {
        let file = File::create(path).with_context(|| format!("creating ledger {}", path.display()))?;
        Ok(LedgerWriter { out: BufWriter::new(file) })
    }

    pub fn append(&mut self, entry: &LedgerEntry) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, entry)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}

/// Reads a ledger; a line that is not an entry is an error naming the line (a torn last line from
/// a killed run is skipped, since that entry's 202 was being written when the run died).
pub fn read(path: &Path) -> anyhow::Result<Vec<LedgerEntry>> {
    let file = File::open(path).with_context(|| format!("opening ledger {}", path.display()))?;
    let lines: Vec<String> = BufReader::new(file).lines().collect::<Result<_, _>>().with_context(|| format!("reading {}", path.display()))?;
    let last = lines.len();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<LedgerEntry>(line) {
            Ok(e) => out.push(e),
            Err(_) if i + 1 == last && !line.ends_with('}') => {}
            Err(e) => anyhow::bail!("{} line {}: not a ledger entry: {e}", path.display(), i + 1),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> LedgerEntry {
        LedgerEntry {
            application_id: Uuid::from_bytes([n; 16]),
            status_token: format!("tok{n}"),
            expected: Expected::Duplicate,
            kind: AppKind::SecondForChild,
            child: "12345678901".into(),
            idempotency_key: format!("key-0000{n}"),
            duplicate_of: Some(Uuid::from_bytes([9; 16])),
            visitor: 4,
            accepted_at_s: 1.5,
        }
    }

    #[test]
    fn round_trips_and_tolerates_only_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.jsonl");
        let mut w = LedgerWriter::create(&path).expect("create");
        w.append(&entry(1)).expect("append");
        w.append(&entry(2)).expect("append");
        drop(w);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("\"expected\":\"duplicate\""), "{text}");
        assert_eq!(read(&path).expect("read"), vec![entry(1), entry(2)]);

        std::fs::write(&path, format!("{text}{{\"application_id\":\"01")).expect("write");
        assert_eq!(read(&path).expect("torn tail skipped").len(), 2);
        std::fs::write(&path, format!("garbage\n{text}")).expect("write");
        let err = read(&path).expect_err("garbage refused").to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
