//! Operator drains and overrides this member was told about, saved so they survive a restart of
//! every member: at start the member publishes them again into its gossip state.

use std::collections::{BTreeMap, HashSet};
use std::fs::{OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::gossip::keys::{Override, OverrideTarget};
use crate::statefile;

/// The lock file in `state_dir` that one process at a time holds.
pub const LOCK_FILE: &str = "geolb.lock";
/// The file in `state_dir` the drains and overrides are saved in.
pub const FILE: &str = "drains.json";
/// Largest `drains.json` read at start, and written: 8 MiB. A drain takes about 40 bytes and an
/// override up to about 650 (its reason is at most 200 characters), so a few thousand
/// drained or overridden nodes stay far below it; a larger file is not this member's and is
/// left out whole (logged).
pub const MAX_FILE_BYTES: u64 = 8 << 20;
/// Most drains, and most overrides, kept: each is a gossip key of this member, and a member's
/// gossip state is capped ([`crate::gossip::keys::MAX_MEMBER_KEYS`]). Past it a new one is
/// refused; of a file holding more, [`Drains::prune`] keeps the newest.
pub const MAX_ENTRIES: usize = 16_384;

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

/// A drain or override that was not saved (and so not made).
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Writing the file failed.
    #[error("cannot save {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The limit of [`MAX_ENTRIES`] drains or overrides, or of [`MAX_FILE_BYTES`], is reached.
    #[error("cannot save {}: it would hold {drains} drains and {overrides} overrides in {bytes} bytes, over the limit of {MAX_ENTRIES} each in {MAX_FILE_BYTES} bytes", path.display())]
    Full {
        /// The file.
        path: PathBuf,
        /// Drains it would hold.
        drains: usize,
        /// Overrides it would hold.
        overrides: usize,
        /// Its size.
        bytes: usize,
    },
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

impl Saved {
    /// Keeps the newest [`MAX_ENTRIES`] drains and overrides; returns how many it dropped.
    fn cap(&mut self) -> usize {
        let before = self.drains.len() + self.overrides.len();
        if self.drains.len() > MAX_ENTRIES {
            let mut by_age: Vec<(u64, String)> = self.drains.iter().map(|(n, (at, _))| (*at, n.clone())).collect();
            by_age.sort_unstable_by(|a, b| b.cmp(a));
            for (_, node) in by_age.into_iter().skip(MAX_ENTRIES) {
                self.drains.remove(&node);
            }
        }
        if self.overrides.len() > MAX_ENTRIES {
            let mut by_age: Vec<(u64, String)> =
                self.overrides.iter().map(|(k, v)| (Override::parse(k, v).map_or(0, |o| o.at_ms), k.clone())).collect();
            by_age.sort_unstable_by(|a, b| b.cmp(a));
            for (_, key) in by_age.into_iter().skip(MAX_ENTRIES) {
                self.overrides.remove(&key);
            }
        }
        before - self.drains.len() - self.overrides.len()
    }
}

/// What [`Drains::prune`] left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Drains of nodes the config does not name.
    pub drains: usize,
    /// Overrides of nodes or PoPs the config does not name, and overrides that do not parse.
    pub overrides: usize,
    /// Drains and overrides beyond the newest [`MAX_ENTRIES`] of each.
    pub over_cap: usize,
}

impl Drains {
    /// Loads `path` (missing = none); `None` keeps drains in memory only. A file that is not a
    /// regular file, is over [`MAX_FILE_BYTES`] or does not parse is left out (logged, naming
    /// it): the member starts without its saved drains, and the next drain saved replaces it.
    pub fn load(path: Option<PathBuf>) -> Drains {
        let entries = path.as_deref().map(load_file).unwrap_or_default();
        Drains { path, entries: Mutex::new(entries), _lock: None }
    }

    /// Locks `state_dir` for this process (an exclusive lock on its [`LOCK_FILE`], released
    /// when the returned value is dropped or the process exits) and loads its `drains.json`.
    /// Another process holding the lock is an error; a directory that cannot be created or
    /// locked at all (permissions, or something other than a file at the lock's path) is
    /// logged, and drains then fail to save as before.
    pub fn open(state_dir: &Path) -> Result<Drains, StateDirInUse> {
        let lock = std::fs::create_dir_all(state_dir).and_then(|()| {
            let mut options = OpenOptions::new();
            options.create(true).truncate(false).write(true);
            Ok(statefile::open_regular(&state_dir.join(LOCK_FILE), &mut options)?)
        });
        let lock = match lock.map(|file| file.try_lock().map(|()| file)) {
            Ok(Ok(file)) => Some(file),
            Ok(Err(TryLockError::WouldBlock)) => return Err(StateDirInUse { dir: state_dir.to_path_buf() }),
            Ok(Err(TryLockError::Error(e))) | Err(e) => {
                tracing::warn!(dir = %state_dir.display(), error = %e, "cannot lock state_dir; drains may not be saved");
                None
            }
        };
        Ok(Drains { _lock: lock, ..Drains::load(Some(state_dir.join(FILE))) })
    }

    /// Forgets the drains of nodes and the overrides of nodes and PoPs that `config` does not
    /// name, and overrides that do not parse; then keeps the newest [`MAX_ENTRIES`] of each (in
    /// memory: the file follows at the next save). Called before the saved drains are published
    /// again at start, so a fleet that shrank does not carry its old nodes into every member's
    /// gossip state. A config still waiting for its fleet document names no node: then only the
    /// cap applies.
    pub fn prune(&self, config: &geolb_config::Config) -> Pruned {
        let nodes: HashSet<&str> = config.nodes.iter().map(|n| n.id.as_str()).collect();
        let pops: HashSet<&str> = config.pops.iter().map(|p| p.id.as_str()).collect();
        let pending = config.fleet.pending;
        let mut saved = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (drains, overrides) = (saved.drains.len(), saved.overrides.len());
        saved.drains.retain(|node, _| pending || nodes.contains(node.as_str()));
        saved.overrides.retain(|k, v| match Override::parse(k, v).map(|o| o.target) {
            Some(_) if pending => true,
            Some(OverrideTarget::Node(id)) => nodes.contains(id.as_str()),
            Some(OverrideTarget::Pop(id)) => pops.contains(id.as_str()),
            None => false,
        });
        let (drains, overrides) = (drains - saved.drains.len(), overrides - saved.overrides.len());
        Pruned { drains, overrides, over_cap: saved.cap() }
    }

    /// Every saved drain.
    pub fn entries(&self) -> BTreeMap<String, (u64, bool)> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).drains.clone()
    }

    /// Every saved override that still parses.
    pub fn overrides(&self) -> Vec<Override> {
        let saved = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        saved.overrides.iter().filter_map(|(k, v)| Override::parse(k, v)).collect()
    }

    /// Records a drain or undrain and saves the file (write then rename). On an error nothing
    /// changed, in memory or on disk.
    pub fn set(&self, node: &str, drained: bool, now_ms: u64) -> Result<(), SaveError> {
        self.save(|saved| {
            saved.drains.insert(node.to_owned(), (now_ms, drained));
        })
    }

    /// Records an override (a clear too: it must win over an older one after a restart) and
    /// saves the file. On an error nothing changed.
    pub fn set_override(&self, o: &Override) -> Result<(), SaveError> {
        self.save(|saved| {
            saved.overrides.insert(o.key(), o.encode());
        })
    }

    fn save(&self, change: impl FnOnce(&mut Saved)) -> Result<(), SaveError> {
        // The lock is held across the write and the rename: concurrent calls can neither
        // interleave in the temporary file nor rename an older snapshot over a newer one.
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = entries.clone();
        change(&mut next);
        if let Some(path) = &self.path {
            let bytes = serde_json::to_vec(&next)
                .map_err(|e| SaveError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
            let over = next.drains.len() > MAX_ENTRIES
                || next.overrides.len() > MAX_ENTRIES
                || bytes.len() as u64 > MAX_FILE_BYTES;
            if over {
                return Err(SaveError::Full {
                    path: path.clone(),
                    drains: next.drains.len(),
                    overrides: next.overrides.len(),
                    bytes: bytes.len(),
                });
            }
            statefile::replace(path, &bytes).map_err(|source| SaveError::Io { path: path.clone(), source })?;
        }
        *entries = next;
        Ok(())
    }
}

/// Reads a saved file; anything wrong with it is logged and reads as nothing saved.
fn load_file(path: &Path) -> Saved {
    let bytes = match statefile::read(path, MAX_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Saved::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "saved drains and overrides left out: {e}; this member starts without them, and the next drain saved here replaces the file");
            return Saved::default();
        }
    };
    match serde_json::from_slice::<Saved>(&bytes) {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable drains file");
            Saved::default()
        }
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

    /// Runs `f` on a thread and gives up after `within`: a load that blocks (a FIFO) fails
    /// the test instead of hanging it.
    fn within<T: Send + 'static>(within: std::time::Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(within).ok()
    }

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
    }

    #[test]
    fn a_fifo_for_drains_json_is_not_read_and_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        mkfifo(&dir.path().join("drains.json"));
        let state_dir = dir.path().to_path_buf();
        let opened = within(std::time::Duration::from_secs(3), move || Drains::open(&state_dir).map(|d| d.entries()));
        let entries = opened.expect("opening a state_dir whose drains.json is a FIFO blocked").unwrap();
        assert!(entries.is_empty());
    }

    #[test]
    fn a_fifo_for_the_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        mkfifo(&dir.path().join(LOCK_FILE));
        let state_dir = dir.path().to_path_buf();
        let opened = within(std::time::Duration::from_secs(3), move || Drains::open(&state_dir).is_ok());
        assert_eq!(opened, Some(true), "opening a state_dir whose lock file is a FIFO blocked");
    }

    #[test]
    fn only_configured_nodes_and_pops_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = geolb_config::Config::for_test();
        let node = config.nodes[0].id.to_string();
        let pop = config.pops[0].id.to_string();
        let o = |target: OverrideTarget| Override {
            target,
            action: crate::gossip::keys::OverrideAction::Drain,
            at_ms: 7,
            until_ms: None,
            by: "admin".into(),
            why: "x".into(),
        };
        let d = Drains::open(dir.path()).unwrap();
        d.set(&node, true, 5).unwrap();
        d.set("gone-1", true, 5).unwrap();
        for target in [
            OverrideTarget::Node(node.clone()),
            OverrideTarget::Node("gone-2".into()),
            OverrideTarget::Pop(pop.clone()),
            OverrideTarget::Pop("gone-pop".into()),
        ] {
            d.set_override(&o(target)).unwrap();
        }
        assert_eq!(d.prune(&config), Pruned { drains: 1, overrides: 2, over_cap: 0 });
        assert_eq!(d.entries().keys().collect::<Vec<_>>(), [&node]);
        let targets: Vec<OverrideTarget> = d.overrides().into_iter().map(|o| o.target).collect();
        assert_eq!(targets, [OverrideTarget::Node(node.clone()), OverrideTarget::Pop(pop)]);
        // The file follows at the next save.
        d.set(&node, false, 6).unwrap();
        drop(d);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("gone"), "{text}");
    }

    #[test]
    fn a_file_over_the_limits_is_cut_to_the_newest_or_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut saved = Saved::default();
        for i in 0..MAX_ENTRIES + 5 {
            saved.drains.insert(format!("n{i}"), (i as u64, true));
        }
        saved.overrides.insert("ovr:node:n1".into(), "not an override".into());
        std::fs::write(&path, serde_json::to_vec(&saved).unwrap()).unwrap();
        let d = Drains::load(Some(path.clone()));
        assert_eq!(d.entries().len(), MAX_ENTRIES + 5, "all read");
        // Pending (no node known yet): only the cap applies.
        let mut config = geolb_config::Config::for_test();
        config.fleet.pending = true;
        assert_eq!(d.prune(&config), Pruned { drains: 0, overrides: 1, over_cap: 5 });
        let entries = d.entries();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert!(!entries.contains_key("n4") && entries.contains_key("n5"), "the oldest go");
        assert!(d.overrides().is_empty());
        // Full: a new drain is refused, a change of one there is not.
        assert!(matches!(d.set("another", true, 1), Err(SaveError::Full { .. })));
        d.set("n5", false, 1).unwrap();
        // Over the byte limit: not read at all.
        let big = vec![b' '; usize::try_from(MAX_FILE_BYTES).unwrap() + 1];
        std::fs::write(&path, big).unwrap();
        assert!(Drains::load(Some(path)).entries().is_empty());
    }

    #[test]
    fn a_drain_that_cannot_be_saved_fails_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = Drains::open(dir.path()).unwrap();
        d.set("fra-1", true, 5).unwrap();
        // The temporary file cannot be written: as on a read-only state_dir (also for root).
        std::fs::create_dir(dir.path().join("drains.json.tmp")).unwrap();
        assert!(d.set("fra-2", true, 6).is_err(), "a drain that was not saved must fail");
        assert!(d.set("fra-1", false, 7).is_err());
        assert_eq!(d.entries(), BTreeMap::from([("fra-1".to_owned(), (5, true))]), "memory must match the file");
        std::fs::remove_dir(dir.path().join("drains.json.tmp")).unwrap();
        d.set("fra-3", true, 8).unwrap();
        drop(d);
        let again = Drains::open(dir.path()).unwrap().entries();
        assert_eq!(again.keys().collect::<Vec<_>>(), ["fra-1", "fra-3"]);
    }
}
