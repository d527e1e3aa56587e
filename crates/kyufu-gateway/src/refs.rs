//! One place per applicant reference number (optional). Where the program has issued reference
//! numbers, a visitor may give theirs at join; a second join with the same reference gets the same
//! sequence number back instead of a second place in line.
//!
//! Only a keyed hash of the reference is kept (SHA-256 over a key and the normalised reference,
//! 128 bits), never the reference itself, and never logged. Memory is bounded: once `capacity`
//! references are remembered, further references join like anyone else (not deduplicated). On a
//! node of its own the book lives in the process (a restart starts a new epoch anyway) with a
//! random key; nodes sharing a queue keep it in the queue state (`QueueState::reference`), keyed
//! by a key derived from the shared ticket keys, so a reference gets one place on every node.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Longest accepted reference, characters.
pub(crate) const MAX_REFERENCE_CHARS: usize = 64;

/// The reference is unusable (empty after trimming, too long, or not `A-Za-z0-9-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadReference;

/// What the book says about a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Seen before: the sequence number and join time it got.
    Known { seq: u64, jat: u64 },
    /// Not seen; remember it with `remember` once it has a number.
    New([u8; 16]),
    /// Not seen and the book is full: join without deduplication.
    Full,
}

#[derive(Debug)]
pub(crate) struct ReferenceBook {
    key: [u8; 32],
    capacity: usize,
    /// Keyed hash -> (epoch, seq, join time).
    seen: Mutex<HashMap<[u8; 16], (u32, u64, u64)>>,
}

impl ReferenceBook {
    pub(crate) fn new(capacity: usize) -> Self {
        Self::with_key(capacity, rand::random())
    }

    /// A book whose hashes other nodes with the same `key` reproduce.
    pub(crate) fn with_key(capacity: usize, key: [u8; 32]) -> Self {
        ReferenceBook { key, capacity, seen: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Normalises (trim, ASCII upper case, hyphens dropped) and hashes a reference.
    pub(crate) fn hash(&self, reference: &str) -> Result<[u8; 16], BadReference> {
        let r = reference.trim();
        if r.is_empty() || r.chars().count() > MAX_REFERENCE_CHARS || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(BadReference);
        }
        let normal: String = r.chars().filter(|&c| c != '-').map(|c| c.to_ascii_uppercase()).collect();
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(normal.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize()[..16]);
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], (u32, u64, u64)>> {
        // Whole entries are inserted at once; a panic elsewhere leaves the map usable.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks a reference up within queue `epoch`.
    pub(crate) fn lookup(&self, hash: [u8; 16], epoch: u32) -> Lookup {
        let seen = self.lock();
        match seen.get(&hash) {
            Some(&(ep, seq, jat)) if ep == epoch => Lookup::Known { seq, jat },
            Some(_) => Lookup::New(hash),
            None if seen.len() >= self.capacity => Lookup::Full,
            None => Lookup::New(hash),
        }
    }

    /// Remembers the number a new reference got. If a concurrent join with the same reference was
    /// quicker, its number wins and is returned (this join's number then stays unused).
    pub(crate) fn remember(&self, hash: [u8; 16], epoch: u32, seq: u64, jat: u64) -> (u64, u64) {
        let mut seen = self.lock();
        match seen.get(&hash) {
            Some(&(ep, first, first_jat)) if ep == epoch => (first, first_jat),
            _ => {
                seen.insert(hash, (epoch, seq, jat));
                (seq, jat)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_reference_same_number_bounded_memory() {
        let book = ReferenceBook::new(2);
        let a = book.hash(" ab-12 ").expect("valid");
        assert_eq!(book.hash("AB12"), Ok(a), "case, spaces and hyphens do not make a new reference");
        assert_eq!(book.lookup(a, 1), Lookup::New(a));
        assert_eq!(book.remember(a, 1, 7, 100), (7, 100));
        assert_eq!(book.lookup(a, 1), Lookup::Known { seq: 7, jat: 100 });
        assert_eq!(book.remember(a, 1, 9, 120), (7, 100), "the first number wins a race");
        assert_eq!(book.lookup(a, 2), Lookup::New(a), "another epoch is another queue");
        let b = book.hash("CD34").expect("valid");
        book.remember(b, 1, 8, 100);
        let c = book.hash("EF56").expect("valid");
        assert_eq!(book.lookup(c, 1), Lookup::Full, "bounded: the third reference is not remembered");
        for bad in ["", "   ", "ab 12", "番号", &"A".repeat(65)] {
            assert_eq!(book.hash(bad), Err(BadReference), "{bad:?}");
        }
        // Another process (another key) hashes differently: the hash says nothing outside it.
        assert_ne!(ReferenceBook::new(2).hash("AB12"), Ok(a));
    }
}
