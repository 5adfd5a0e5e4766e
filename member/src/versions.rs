//! The fleet document's versions, kept by every member in its `state_dir` (the embedded store).
//!
//! One append-only file, `config-versions.jsonl`: a line per event, written whole and synced
//! before the call returns. A version line carries the document and its SHA-256; a later
//! `superseded` line marks a version that lost a conflict (it stays in the history: nothing is
//! lost silently). Nothing is ever rewritten in place, so a crash can only leave a torn last
//! line: [`VersionStore::open`] cuts it off and keeps every version before it. A line that does
//! not parse, or whose document does not match its hash (a flipped bit), is skipped and reported
//! in [`Opened::problems`]; the version it held can be fetched again from a peer.
//!
//! Versions are numbered from 1. Writes are compare-and-swap on the head's number
//! ([`VersionStore::append`]). Versions learned from peers ([`VersionStore::insert`]) may
//! conflict with one written here during a partition: two documents under one number. Every
//! member picks the same winner by [`wins`] — the smaller hash — whatever order it heard
//! them in, and marks the other superseded.
//!
//! Documents are read back from the file when asked for ([`VersionStore::document`]); only the
//! history (numbers, hashes, authors, where each line is) stays in memory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file in `state_dir` that holds the versions.
pub const FILE: &str = "config-versions.jsonl";

/// A document's SHA-256, lower-case hex.
pub fn hash(document: &[u8]) -> String {
    hex::encode(Sha256::digest(document))
}

/// Of two documents under one version number, whether the one hashed `a` wins over `b`: the
/// smaller hash, so that every member picks the same one without asking anyone.
pub fn wins(a: &str, b: &str) -> bool {
    a < b
}

/// One version in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// From 1, one more than the version it replaced.
    pub version: u64,
    /// The document's SHA-256 ([`hash`]).
    pub hash: String,
    /// Who wrote it (the API token's name, or `file` for the local file).
    pub author: String,
    /// Unix ms it was written, on the writer's clock.
    pub at_ms: u64,
    /// What the writer said the change was.
    pub message: String,
    /// Lost a conflict with another document under the same number.
    #[serde(default)]
    pub superseded: bool,
}

/// A line of the file.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    /// A version and its document.
    Version {
        #[serde(flatten)]
        meta: Version,
        document: String,
    },
    /// A version that lost a conflict.
    Superseded { version: u64, hash: String },
}

/// A version and where its line is in the file.
#[derive(Debug, Clone)]
struct Entry {
    meta: Version,
    offset: u64,
    len: u64,
}

/// Why a write or an insert was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The head is not the version the writer started from.
    #[error("the head is version {head}, not {expected}: reload the document and apply the change to it")]
    Stale {
        /// The version the writer expected.
        expected: u64,
        /// The current head.
        head: u64,
    },
    /// A document from a peer does not match the hash it was announced with.
    #[error("document for version {version} hashes to {actual}, not the announced {announced}")]
    HashMismatch {
        /// The version.
        version: u64,
        /// The hash it was announced with.
        announced: String,
        /// The hash of the bytes received.
        actual: String,
    },
    /// A document must be UTF-8 text (JSON or TOML).
    #[error("a document must be UTF-8 text")]
    NotText,
    /// Versions are numbered from 1.
    #[error("version 0 does not exist: versions are numbered from 1")]
    NoVersion,
    /// Reading or writing the file failed.
    #[error("config version store {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// A store just opened, with what it skipped.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub store: VersionStore,
    /// Lines skipped (torn, unparsable, or failing their hash), one message each.
    pub problems: Vec<String>,
}

/// The versions of the fleet document this member knows, oldest first.
#[derive(Debug)]
pub struct VersionStore {
    path: PathBuf,
    file: File,
    entries: Vec<Entry>,
}

impl VersionStore {
    /// Opens (or creates) the store in `state_dir`. Cuts off a torn last line; skips and reports
    /// lines that do not parse or whose document fails its hash.
    pub fn open(state_dir: &Path) -> Result<Opened, StoreError> {
        let path = state_dir.join(FILE);
        let io = |source| StoreError::Io { path: path.clone(), source };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        // A regular file only, opened without blocking: a FIFO there would hold the start for good.
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).read(true).append(true);
        let mut file = crate::statefile::open_regular(&path, &mut options).map_err(|e| io(e.into()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut problems = Vec::new();
        // Everything after the last newline is a write that never completed.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            problems.push(format!(
                "{}: cut off a torn last line ({} bytes) left by an interrupted write",
                path.display(),
                bytes.len() - complete
            ));
            file.set_len(complete as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let mut store = VersionStore { path: path.clone(), file, entries: Vec::new() };
        let mut offset = 0u64;
        for (number, line) in bytes[..complete].split_inclusive(|&b| b == b'\n').enumerate() {
            let len = line.len() as u64;
            match serde_json::from_slice::<Line>(line) {
                Ok(Line::Version { meta, document }) => {
                    let actual = hash(document.as_bytes());
                    if actual == meta.hash {
                        // Only a `superseded` line marks a version superseded.
                        let meta = Version { superseded: false, ..meta };
                        store.remember(Entry { meta, offset, len });
                    } else {
                        problems.push(format!(
                            "{} line {}: version {} does not match its hash (skipped; a peer has it)",
                            path.display(),
                            number + 1,
                            meta.version
                        ));
                    }
                }
                Ok(Line::Superseded { version, hash }) => store.mark_superseded(version, &hash),
                Err(e) => problems.push(format!("{} line {}: {e} (skipped)", path.display(), number + 1)),
            }
            offset += len;
        }
        Ok(Opened { store, problems })
    }

    /// The version every member applies: the highest number, and under it the document that
    /// [`wins`] (also when a crash came between a rival and its `superseded` line).
    pub fn head(&self) -> Option<&Version> {
        let top = self.entries.iter().filter(|e| !e.meta.superseded).map(|e| e.meta.version).max()?;
        self.winner(top)
    }

    /// The winner under each version number (see [`VersionStore::winner`]), newest first.
    pub fn winners(&self) -> Vec<&Version> {
        let mut numbers: Vec<u64> =
            self.entries.iter().filter(|e| !e.meta.superseded).map(|e| e.meta.version).collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        numbers.dedup();
        numbers.into_iter().filter_map(|n| self.winner(n)).collect()
    }

    /// The document under `version` that [`wins`] among those not marked superseded.
    pub fn winner(&self, version: u64) -> Option<&Version> {
        self.entries
            .iter()
            .map(|e| &e.meta)
            .filter(|m| m.version == version && !m.superseded)
            .reduce(|best, m| if wins(&m.hash, &best.hash) { m } else { best })
    }

    /// Every version known, in the order this member learned them.
    pub fn history(&self) -> impl Iterator<Item = &Version> {
        self.entries.iter().map(|e| &e.meta)
    }

    /// Writes `document` as the version after `expected` (0 when there is none yet). Refused
    /// with [`StoreError::Stale`] unless `expected` is the highest version number known.
    pub fn append(
        &mut self,
        expected: u64,
        document: &[u8],
        author: &str,
        message: &str,
        at_ms: u64,
    ) -> Result<Version, StoreError> {
        // The highest number known, superseded or not: a head that fell back (its winner's line
        // was corrupt) must not be written over with a second document under a known number.
        let head = self.entries.iter().map(|e| e.meta.version).max().unwrap_or(0);
        if head != expected {
            return Err(StoreError::Stale { expected, head });
        }
        let version = head.checked_add(1).ok_or(StoreError::Stale { expected, head })?;
        let meta = Version {
            version,
            hash: hash(document),
            author: author.to_owned(),
            at_ms,
            message: message.to_owned(),
            superseded: false,
        };
        self.write_version(meta.clone(), document)?;
        Ok(meta)
    }

    /// Keeps a version learned from a peer, after checking the document against its hash. A
    /// version already known is a no-op; a second document under a known number is kept too,
    /// and the one that loses ([`wins`]) is marked superseded. Returns whether anything changed.
    pub fn insert(&mut self, meta: Version, document: &[u8]) -> Result<bool, StoreError> {
        if meta.version == 0 {
            return Err(StoreError::NoVersion);
        }
        let actual = hash(document);
        if actual != meta.hash {
            return Err(StoreError::HashMismatch { version: meta.version, announced: meta.hash, actual });
        }
        if self.entries.iter().any(|e| e.meta.version == meta.version && e.meta.hash == meta.hash) {
            return Ok(false);
        }
        // The current winner under that number (also when a crash left a loser unmarked).
        let rival = self.winner(meta.version).map(|w| w.hash.clone());
        let meta = Version { superseded: false, ..meta };
        self.write_version(meta.clone(), document)?;
        if let Some(rival) = rival {
            let loser = if wins(&meta.hash, &rival) { rival } else { meta.hash };
            self.write_superseded(meta.version, &loser)?;
        }
        Ok(true)
    }

    /// The document of `version` under `hash`, read back from the file and checked again.
    pub fn document(&self, version: u64, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(entry) = self.entries.iter().find(|e| e.meta.version == version && e.meta.hash == hash) else {
            return Ok(None);
        };
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(entry.offset)).map_err(io)?;
        let mut line = vec![0u8; usize::try_from(entry.len).unwrap_or(usize::MAX)];
        file.read_exact(&mut line).map_err(io)?;
        match serde_json::from_slice::<Line>(&line) {
            Ok(Line::Version { meta, document })
                if meta.version == version && meta.hash == hash && self::hash(document.as_bytes()) == hash =>
            {
                Ok(Some(document.into_bytes()))
            }
            // Changed on disk since it was opened: treat it as missing, a peer has it.
            _ => Ok(None),
        }
    }

    fn remember(&mut self, entry: Entry) {
        let (version, hash) = (entry.meta.version, entry.meta.hash.clone());
        if !self.entries.iter().any(|e| e.meta.version == version && e.meta.hash == hash) {
            self.entries.push(entry);
        }
    }

    fn mark_superseded(&mut self, version: u64, hash: &str) {
        for e in self.entries.iter_mut().filter(|e| e.meta.version == version && e.meta.hash == hash) {
            e.meta.superseded = true;
        }
    }

    fn write_version(&mut self, meta: Version, document: &[u8]) -> Result<(), StoreError> {
        let document = std::str::from_utf8(document).map_err(|_| StoreError::NotText)?.to_owned();
        let line = Line::Version { meta: meta.clone(), document };
        let (offset, len) = self.write_line(&line)?;
        self.remember(Entry { meta, offset, len });
        Ok(())
    }

    fn write_superseded(&mut self, version: u64, hash: &str) -> Result<(), StoreError> {
        self.write_line(&Line::Superseded { version, hash: hash.to_owned() })?;
        self.mark_superseded(version, hash);
        Ok(())
    }

    /// Appends one line and syncs it; returns where it is.
    fn write_line(&mut self, line: &Line) -> Result<(u64, u64), StoreError> {
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        let mut bytes = serde_json::to_vec(line).map_err(|e| io(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        let offset = self.file.seek(SeekFrom::End(0)).map_err(io)?;
        // One write of the whole line: a crash leaves at most a torn last line, which `open`
        // cuts off. A write that fails here (a full disk) is cut off at once, so that the next
        // line does not land after its fragment and both are lost at the next open.
        let written = self.file.write_all(&bytes).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            if let Err(undo) = self.file.set_len(offset).and_then(|()| self.file.sync_data()) {
                tracing::error!(path = %self.path.display(), error = %undo, "cannot cut off a failed config version write");
            }
            return Err(io(e));
        }
        Ok((offset, bytes.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn versions_are_compare_and_swap_and_survive_a_reopen() {
        let d = dir();
        let mut store = VersionStore::open(d.path()).unwrap().store;
        assert_eq!(store.head(), None);
        let v1 = store.append(0, b"{\"a\":1}", "ops", "first", 10).unwrap();
        assert_eq!((v1.version, v1.hash.as_str()), (1, hash(b"{\"a\":1}").as_str()));
        // A writer that started from nothing, or from a version that is no longer the head.
        assert!(matches!(store.append(0, b"{}", "ops", "", 11), Err(StoreError::Stale { expected: 0, head: 1 })));
        let v2 = store.append(1, b"{\"a\":2}", "ci", "second", 12).unwrap();
        assert!(matches!(store.append(1, b"{}", "ops", "", 13), Err(StoreError::Stale { expected: 1, head: 2 })));
        drop(store);

        let opened = VersionStore::open(d.path()).unwrap();
        assert!(opened.problems.is_empty(), "{:?}", opened.problems);
        let store = opened.store;
        assert_eq!(store.head(), Some(&v2));
        assert_eq!(store.history().cloned().collect::<Vec<_>>(), vec![v1.clone(), v2.clone()]);
        assert_eq!(store.document(1, &v1.hash).unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(store.document(2, &v2.hash).unwrap().as_deref(), Some(&b"{\"a\":2}"[..]));
        assert_eq!(store.document(2, &v1.hash).unwrap(), None);
    }

    #[test]
    fn a_fifo_for_the_store_is_an_error_not_a_hang() {
        let d = dir();
        let path = d.path().join(FILE);
        assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        let (tx, rx) = std::sync::mpsc::channel();
        let state_dir = d.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(VersionStore::open(&state_dir).map(|_| ()).map_err(|e| e.to_string()));
        });
        let opened = rx.recv_timeout(std::time::Duration::from_secs(3)).expect("opening a FIFO store blocked");
        let err = opened.unwrap_err();
        assert!(err.contains("not a regular file but a FIFO") && err.contains(FILE), "{err}");
    }

    #[test]
    fn a_torn_last_write_loses_only_itself() {
        let d = dir();
        let mut store = VersionStore::open(d.path()).unwrap().store;
        let v1 = store.append(0, b"one", "ops", "", 1).unwrap();
        drop(store);
        // A crash in the middle of writing version 2.
        let path = d.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(br#"{"kind":"version","version":2,"hash":"ab"#);
        std::fs::write(&path, &bytes).unwrap();

        let opened = VersionStore::open(d.path()).unwrap();
        assert_eq!(opened.problems.len(), 1, "{:?}", opened.problems);
        assert!(opened.problems[0].contains("torn last line"), "{:?}", opened.problems);
        let mut store = opened.store;
        assert_eq!(store.head(), Some(&v1));
        // The next write lands on a line of its own, and all of it reads back.
        let v2 = store.append(1, b"two", "ops", "", 2).unwrap();
        drop(store);
        let opened = VersionStore::open(d.path()).unwrap();
        assert!(opened.problems.is_empty(), "{:?}", opened.problems);
        assert_eq!(opened.store.head(), Some(&v2));
        assert_eq!(opened.store.document(2, &v2.hash).unwrap().as_deref(), Some(&b"two"[..]));
    }

    #[test]
    fn a_corrupt_version_is_skipped_and_reported_the_rest_kept() {
        let d = dir();
        let mut store = VersionStore::open(d.path()).unwrap().store;
        let v1 = store.append(0, b"aaaa", "ops", "", 1).unwrap();
        store.append(1, b"bbbb", "ops", "", 2).unwrap();
        drop(store);
        // A flipped byte inside version 2's document, and a line that is not JSON at all.
        let path = d.path().join(FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("bbbb", "bbcb") + "not json\n";
        std::fs::write(&path, text).unwrap();

        let opened = VersionStore::open(d.path()).unwrap();
        assert_eq!(opened.problems.len(), 2, "{:?}", opened.problems);
        assert!(opened.problems[0].contains("line 2: version 2 does not match its hash"), "{:?}", opened.problems);
        assert!(opened.problems[1].contains("line 3"), "{:?}", opened.problems);
        assert_eq!(opened.store.head(), Some(&v1));
    }

    #[test]
    fn conflicting_versions_converge_on_one_winner_in_any_order() {
        let (a, b) = (b"{\"from\":\"a\"}".as_slice(), b"{\"from\":\"b\"}".as_slice());
        let meta = |doc: &[u8], author: &str| Version {
            version: 1,
            hash: hash(doc),
            author: author.to_owned(),
            at_ms: 5,
            message: String::new(),
            superseded: false,
        };
        let winner = if wins(&hash(a), &hash(b)) { hash(a) } else { hash(b) };
        let mut heads = Vec::new();
        for (first, second) in [((a, "a"), (b, "b")), ((b, "b"), (a, "a"))] {
            let d = dir();
            let mut store = VersionStore::open(d.path()).unwrap().store;
            assert!(store.insert(meta(first.0, first.1), first.0).unwrap());
            assert!(store.insert(meta(second.0, second.1), second.0).unwrap());
            // Hearing a version again changes nothing.
            assert!(!store.insert(meta(second.0, second.1), second.0).unwrap());
            assert_eq!(store.head().map(|h| h.hash.clone()), Some(winner.clone()));
            // The loser stays in the history, marked, and so after a reopen.
            drop(store);
            let store = VersionStore::open(d.path()).unwrap().store;
            let history: Vec<_> = store.history().map(|v| (v.hash.clone(), v.superseded)).collect();
            assert_eq!(history.len(), 2);
            assert!(history.iter().all(|(h, superseded)| *superseded == (*h != winner)), "{history:?}");
            // A write must start from the highest number known.
            let mut store = store;
            assert!(matches!(store.append(0, b"c", "ops", "", 6), Err(StoreError::Stale { expected: 0, head: 1 })));
            heads.push(store.head().cloned());
        }
        assert_eq!(heads[0].as_ref().map(|h| &h.hash), heads[1].as_ref().map(|h| &h.hash));
    }

    #[test]
    fn a_crash_before_the_superseded_mark_still_heads_the_winner() {
        let (a, b) = (b"A".as_slice(), b"B".as_slice());
        let d = dir();
        let mut store = VersionStore::open(d.path()).unwrap().store;
        for doc in [a, b] {
            let meta = Version {
                version: 1,
                hash: hash(doc),
                author: "peer".into(),
                at_ms: 1,
                message: String::new(),
                superseded: false,
            };
            store.insert(meta, doc).unwrap();
        }
        drop(store);
        // Drop the `superseded` line, as if the process died right after the rival's line.
        let path = d.path().join(FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String =
            text.lines().filter(|l| !l.contains("\"kind\":\"superseded\"")).map(|l| format!("{l}\n")).collect();
        assert_eq!(kept.lines().count(), 2, "{text}");
        std::fs::write(&path, kept).unwrap();
        let store = VersionStore::open(d.path()).unwrap().store;
        let winner = if wins(&hash(a), &hash(b)) { hash(a) } else { hash(b) };
        assert_eq!(store.head().map(|h| h.hash.clone()), Some(winner));
    }

    #[test]
    fn a_document_that_does_not_match_its_hash_is_refused() {
        let d = dir();
        let mut store = VersionStore::open(d.path()).unwrap().store;
        let meta = Version {
            version: 1,
            hash: hash(b"announced"),
            author: "peer".into(),
            at_ms: 1,
            message: String::new(),
            superseded: false,
        };
        assert!(matches!(store.insert(meta.clone(), b"received"), Err(StoreError::HashMismatch { version: 1, .. })));
        let zero = Version { version: 0, hash: hash(b"x"), ..meta };
        assert!(matches!(store.insert(zero, b"x"), Err(StoreError::NoVersion)));
        assert_eq!(store.head(), None);
        assert!(matches!(store.append(0, &[0xff, 0xfe], "ops", "", 1), Err(StoreError::NotText)));
        assert_eq!(store.history().count(), 0);
    }
}
