//! Operator drains and overrides this member was told about, saved so they survive a restart of
//! every member: at start the member publishes them again into its gossip state.

use std::collections::BTreeMap;
use std::fs::TryLockError;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The lock file in `state_dir` that one process at a time holds.
pub const LOCK_FILE: &str = "geolb.lock";

/// Another process holds the state directory: two members saving drains (and a resolver its
/// view) in one directory would overwrite each other's files.
#[derive(Debug, thiserror::Error)]
#[error(
    "state_dir {} is in use by another geolb process (it holds {LOCK_FILE} there): give each program on this machine its own state_dir",
    dir.display()
)]
pub struct StateDirInUse {
    /// The directory.
    pub dir: PathBuf,
}

/// Drains this member wrote: node → (unix ms, drained).
#[derive(Debug)]
pub struct Drains {
    path: Option<PathBuf>,
    entries: Mutex<Saved>,
    /// The state directory's lock, held while this lives (see [`Drains::open`]).
    _lock: Option<std::fs::File>,
}

/// What is saved: drains, and overrides as their gossip key → value.
#[derive(Serialize, Deserialize, Default, Clone, Debug)]
struct Saved {
    drains: BTreeMap<String, (u64, bool)>,
    #[serde(default)]
    overrides: BTreeMap<String, String>,
}

impl Drains {
    /// Loads `path` (missing = none); `None` keeps drains in memory only.
    pub fn load(path: Option<PathBuf>) -> Drains {
        let entries = path
            .as_ref()
            .and_then(|p| match std::fs::read(p) {
                Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!(path = %p.display(), error = %e, "ignoring unreadable drains file");
                        None
                    }
                },
                Err(_) => None,
            })
            .unwrap_or_default();
        Drains { path, entries: Mutex::new(entries), _lock: None }
    }

    /// Locks `state_dir` for this process (an exclusive lock on its [`LOCK_FILE`], released
    /// when the returned value is dropped or the process exits) and loads its `drains.json`.
    /// Another process holding the lock is an error; a directory that cannot be created or
    /// locked at all (permissions) is logged, and drains then fail to save as before.
    pub fn open(state_dir: &Path) -> Result<Drains, StateDirInUse> {
        let lock = std::fs::create_dir_all(state_dir).and_then(|()| {
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(state_dir.join(LOCK_FILE))
        });
        let lock = match lock.map(|file| file.try_lock().map(|()| file)) {
            Ok(Ok(file)) => Some(file),
            Ok(Err(TryLockError::WouldBlock)) => return Err(StateDirInUse { dir: state_dir.to_path_buf() }),
            Ok(Err(TryLockError::Error(e))) | Err(e) => {
                tracing::warn!(dir = %state_dir.display(), error = %e, "cannot lock state_dir; drains may not be saved");
                None
            }
        };
        Ok(Drains { _lock: lock, ..Drains::load(Some(state_dir.join("drains.json"))) })
    }

    /// Every saved drain.
    pub fn entries(&self) -> BTreeMap<String, (u64, bool)> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).drains.clone()
    }

    /// Every saved override that still parses.
    pub fn overrides(&self) -> Vec<crate::gossip::keys::Override> {
        let saved = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        saved.overrides.iter().filter_map(|(k, v)| crate::gossip::keys::Override::parse(k, v)).collect()
    }

    /// Records a drain or undrain and saves the file (write then rename).
    pub fn set(&self, node: &str, drained: bool, now_ms: u64) -> std::io::Result<()> {
        self.save(|saved| {
            saved.drains.insert(node.to_owned(), (now_ms, drained));
        })
    }

    /// Records an override (a clear too: it must win over an older one after a restart) and
    /// saves the file.
    pub fn set_override(&self, o: &crate::gossip::keys::Override) -> std::io::Result<()> {
        self.save(|saved| {
            saved.overrides.insert(o.key(), o.encode());
        })
    }

    fn save(&self, change: impl FnOnce(&mut Saved)) -> std::io::Result<()> {
        // The lock is held across the write and the rename: concurrent calls can neither
        // interleave in the temporary file nor rename an older snapshot over a newer one.
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut entries);
        let Some(path) = &self.path else { return Ok(()) };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&*entries).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_at_a_time_holds_a_state_dir() {
        let dir = std::env::temp_dir().join(format!("geolb-state-lock-{}", std::process::id()));
        let first = Drains::open(&dir).unwrap();
        first.set("fra-1", true, 5).unwrap();
        let err = Drains::open(&dir).unwrap_err();
        assert!(err.to_string().contains("in use by another geolb process"), "{err}");
        drop(first);
        let again = Drains::open(&dir).unwrap();
        assert_eq!(again.entries().get("fra-1"), Some(&(5, true)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn drains_survive_a_reload() {
        let dir = std::env::temp_dir().join(format!("geolb-drains-{}", std::process::id()));
        let path = dir.join("drains.json");
        let d = Drains::load(Some(path.clone()));
        d.set("fra-1", true, 5).unwrap();
        d.set("fra-2", false, 6).unwrap();
        let o = crate::gossip::keys::Override {
            target: crate::gossip::keys::OverrideTarget::Node("fra-1".into()),
            action: crate::gossip::keys::OverrideAction::Down,
            at_ms: 7,
            until_ms: None,
            by: "admin".into(),
            why: "disk".into(),
        };
        d.set_override(&o).unwrap();
        let again = Drains::load(Some(path));
        assert_eq!(again.entries().get("fra-1"), Some(&(5, true)));
        assert_eq!(again.entries().len(), 2);
        assert_eq!(again.overrides(), vec![o]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_drains_are_all_saved() {
        let dir = std::env::temp_dir().join(format!("geolb-drains-conc-{}", std::process::id()));
        let path = dir.join("drains.json");
        let d = std::sync::Arc::new(Drains::load(Some(path.clone())));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let d = d.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        d.set(&format!("n{t}-{i}"), true, i).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Drains::load(Some(path)).entries().len(), 200);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
