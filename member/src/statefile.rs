//! Opening, reading and replacing the files a member keeps in its `state_dir` without trusting
//! what is there: `drains.json`, the resolver's `view.json`, the lock file, the fleet versions.
//!
//! Whatever sits at such a path may not be what this member wrote: a FIFO, a device or a
//! directory, or a file far larger than any this member writes. So every state file is
//! - opened with `O_NONBLOCK`: opening a FIFO for reading would otherwise wait for a writer (and
//!   one for writing for a reader), holding the calling thread, often the only runtime thread
//!   before anything else runs, for good;
//! - checked to be a regular file on the open descriptor (`fstat`, no race with a rename): a
//!   FIFO, socket, device or directory is [`StateFileError::NotRegular`], naming the path;
//! - read only up to a limit the caller gives (what this member could have written, with room
//!   to spare): a larger one is [`StateFileError::TooLarge`] and is not read at all.
//!
//! `O_NONBLOCK` changes nothing for a regular file: reads and writes block on the disk as
//! usual. Callers decide what a refused file means; `drains.json` and `view.json` are then
//! left out (logged) and the member starts without them.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Why a state file was not read.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Opening or reading it failed (`NotFound` included: see [`StateFileError::is_not_found`]).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Something other than a regular file is at the path.
    #[error("{} is not a regular file but a {kind}; it is not read", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is: `FIFO`, `socket`, `block device`, `character device`, `directory`.
        kind: &'static str,
    },
    /// The file is larger than the caller's limit.
    #[error("{} is {len} bytes, over the {max}-byte limit for this file; it is not read", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length (at least; it may still be growing).
        len: u64,
        /// The limit.
        max: u64,
    },
}

impl StateFileError {
    /// Whether the file does not exist (the usual first start, not a problem).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StateFileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl From<StateFileError> for io::Error {
    fn from(e: StateFileError) -> io::Error {
        let kind = match &e {
            StateFileError::Io { source, .. } => source.kind(),
            StateFileError::NotRegular { .. } | StateFileError::TooLarge { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

fn kind_of(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_fifo() {
        Some("FIFO")
    } else if file_type.is_socket() {
        Some("socket")
    } else if file_type.is_block_device() {
        Some("block device")
    } else if file_type.is_char_device() {
        Some("character device")
    } else if file_type.is_dir() {
        Some("directory")
    } else {
        Some("special file")
    }
}

/// Opens `path` with `options` plus `O_NONBLOCK` and checks on the open file that it is a
/// regular file.
pub fn open_regular(path: &Path, options: &mut OpenOptions) -> Result<File, StateFileError> {
    let io = |source| StateFileError::Io { path: path.to_path_buf(), source };
    let file = options.custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| match e.raw_os_error() {
        // A FIFO opened for writing with no reader.
        Some(libc::ENXIO) => StateFileError::NotRegular { path: path.to_path_buf(), kind: "FIFO" },
        // Opening a directory for writing.
        Some(libc::EISDIR) => StateFileError::NotRegular { path: path.to_path_buf(), kind: "directory" },
        _ => io(e),
    })?;
    let meta = file.metadata().map_err(io)?;
    match kind_of(meta.file_type()) {
        None => Ok(file),
        Some(kind) => Err(StateFileError::NotRegular { path: path.to_path_buf(), kind }),
    }
}

/// Reads all of the regular file at `path` if it holds at most `max` bytes.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, StateFileError> {
    let file = open_regular(path, OpenOptions::new().read(true))?;
    let io = |source| StateFileError::Io { path: path.to_path_buf(), source };
    let len = file.metadata().map_err(io)?.len();
    if len > max {
        return Err(StateFileError::TooLarge { path: path.to_path_buf(), len, max });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // One byte more than the limit shows a file that grew since the length was read.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(StateFileError::TooLarge { path: path.to_path_buf(), len: bytes.len() as u64, max });
    }
    Ok(bytes)
}

/// Replaces `path` with `bytes`: written to `<path>.tmp` (a new file: whatever was at that name
/// is removed first, so a FIFO or a link there is not followed), then renamed over `path`.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot remove {}: {e}", tmp.display()))),
    }
    let mut file = open_regular(&tmp, OpenOptions::new().write(true).create_new(true))?;
    file.write_all(bytes).map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", tmp.display())))?;
    drop(file);
    std::fs::rename(&tmp, path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot rename {} over {}: {e}", tmp.display(), path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
    }

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        let err = read(&path, 10).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read(&path, 10).unwrap(), b"0123456789");
        let err = read(&path, 9).unwrap_err();
        assert!(matches!(err, StateFileError::TooLarge { len: 10, max: 9, .. }), "{err}");
        assert!(err.to_string().contains("f.json is 10 bytes, over the 9-byte limit"), "{err}");

        let fifo = dir.path().join("fifo.json");
        mkfifo(&fifo);
        let err = read(&fifo, 10).unwrap_err();
        assert!(err.to_string().contains("fifo.json is not a regular file but a FIFO"), "{err}");
        let err = open_regular(&fifo, OpenOptions::new().write(true)).unwrap_err();
        assert!(matches!(err, StateFileError::NotRegular { kind: "FIFO", .. }), "{err}");
        let err = read(dir.path(), 10).unwrap_err();
        assert!(matches!(err, StateFileError::NotRegular { kind: "directory", .. }), "{err}");
        let err = read(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(matches!(err, StateFileError::NotRegular { kind: "character device", .. }), "{err}");
    }

    #[test]
    fn replace_writes_a_new_file_whatever_was_at_the_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drains.json");
        // A FIFO at the temporary name would block a plain write for good.
        mkfifo(&dir.path().join("drains.json.tmp"));
        replace(&path, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        replace(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        std::fs::create_dir(dir.path().join("drains.json.tmp")).unwrap();
        let err = replace(&path, b"three").unwrap_err();
        assert!(err.to_string().contains("drains.json.tmp"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"two", "the old file stays");
    }
}
