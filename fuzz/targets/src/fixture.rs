//! What the targets share: the repository's example files, a scratch directory per process and
//! a single-threaded runtime per target (its server tasks run only while an input is driven, so
//! an execution is one deterministic sequence).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `config/examples` of the repository.
pub(crate) fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples")
}

/// Reads an example file; the targets cannot run without them.
pub(crate) fn example(name: &str) -> String {
    let path = examples_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Prefix of the scratch directories in the system's temporary directory.
const SCRATCH_PREFIX: &str = "geolb-fuzz-";

/// This process's scratch directory, `$TMPDIR/geolb-fuzz-<pid>`: created at first use, with
/// those of processes that are gone (libFuzzer exits without running destructors) removed.
pub(crate) fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let pid = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX));
                if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        must(std::fs::create_dir_all(&dir), "create the scratch directory");
        dir
    })
}

/// A subdirectory of [`scratch`], created.
pub(crate) fn scratch_subdir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    must(std::fs::create_dir_all(&dir), "create a scratch directory");
    dir
}

/// A runtime whose tasks run on the thread that drives an input.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    must(tokio::runtime::Builder::new_current_thread().enable_all().build(), "start a runtime")
}

/// The value, or a panic naming what the fixture could not do (a broken setup, not a finding).
pub(crate) fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("fuzz fixture: cannot {what}: {e}"))
}

/// `bytes` as one JSON object, or why not.
pub(crate) fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("not an object: {other}")),
        Err(e) => Err(format!("not JSON ({e}): {}", String::from_utf8_lossy(bytes))),
    }
}

/// Writes `data` and closes the writing half while reading what comes back to its end. Errors
/// are moot: the server may close first (an over-long line), and what it did not read is lost.
pub(crate) async fn send_and_read(
    mut read: impl tokio::io::AsyncRead + Unpin,
    mut write: impl tokio::io::AsyncWrite + Unpin,
    data: &[u8],
) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let send = async {
        let _ = write.write_all(data).await;
        let _ = write.shutdown().await;
    };
    let receive = async {
        let mut got = Vec::new();
        let _ = read.read_to_end(&mut got).await;
        got
    };
    tokio::join!(send, receive).1
}
