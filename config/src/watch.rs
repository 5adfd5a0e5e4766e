//! Telling a running program that its config changed: file changes (the config and the files it
//! names that a reload re-reads: zone files, GeoIP databases, the admin token) and SIGHUP.
//!
//! Directories are watched, not files: editors, package managers and `mv` replace files, and a
//! watch on the old inode would miss the new one. Events are debounced (300 ms) and filtered to
//! the files of interest; reading a file is not a change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// Why a reload is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A watched file was created, written, renamed or removed.
    FileChanged,
    /// SIGHUP.
    Hangup,
}

/// Watches a set of files and SIGHUP. Create it inside a tokio runtime.
pub struct ConfigWatcher {
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
    files: Vec<PathBuf>,
    debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher").field("files", &self.files).finish_non_exhaustive()
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || (a.file_name() == b.file_name()
            && a.parent().and_then(|p| p.canonicalize().ok()) == b.parent().and_then(|p| p.canonicalize().ok()))
}

impl ConfigWatcher {
    /// Starts watching `files` (absolute paths) and SIGHUP. Failures to watch are logged, not
    /// fatal: SIGHUP still works.
    pub fn new(files: Vec<PathBuf>) -> ConfigWatcher {
        let (tx, rx) = mpsc::channel(1);
        let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        };
        let mut w = ConfigWatcher { tx, rx, files: Vec::new(), debouncer: None, hup };
        w.set_files(files);
        w
    }

    /// Watches `files` from now on (after a reload named other files); a no-op when unchanged.
    pub fn set_files(&mut self, files: Vec<PathBuf>) {
        if files == self.files && self.debouncer.is_some() {
            return;
        }
        self.debouncer = None;
        let tx = self.tx.clone();
        let wanted = files.clone();
        let debouncer = new_debouncer(Duration::from_millis(300), None, move |res: DebounceEventResult| {
            if let Ok(events) = res
                && events
                    .iter()
                    .filter(|e| e.kind.is_create() || e.kind.is_modify() || e.kind.is_remove())
                    .any(|e| e.paths.iter().any(|p| wanted.iter().any(|w| same_file(p, w))))
            {
                // A full channel already holds a pending reload.
                let _ = tx.try_send(());
            }
        });
        match debouncer {
            Ok(mut d) => {
                let mut dirs: Vec<&Path> = files
                    .iter()
                    .map(|f| f.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
                    .collect();
                dirs.sort();
                dirs.dedup();
                for dir in dirs {
                    if let Err(e) = d.watch(dir, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for changes; reload with SIGHUP");
                    }
                }
                self.debouncer = Some(d);
            }
            Err(e) => tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP"),
        }
        self.files = files;
    }

    /// Waits for the next reason to reload.
    pub async fn next(&mut self) -> Trigger {
        let hup = async {
            match self.hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = self.rx.recv() => Trigger::FileChanged,
            _ = hup => Trigger::Hangup,
        }
    }
}
