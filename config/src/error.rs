//! Config errors: every problem found, each with where it is.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `nodes[3].pop`; empty for problems of the whole document.
    pub path: String,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// What is wrong, lower-case, naming the offending value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.position {
            write!(f, "{line}:{col}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("failed to read config {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config; every problem found is listed.
    #[error("{}", render_invalid(file.as_ref(), problems))]
    Invalid {
        /// The config file, when known.
        file: Option<PathBuf>,
        /// Every problem, in file order where known.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub(crate) fn with_file(self, path: &std::path::Path) -> Self {
        match self {
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid { file: Some(path.to_path_buf()), problems },
            other => other,
        }
    }

    /// The problems, for an invalid config; empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn render_invalid(file: Option<&PathBuf>, problems: &[Problem]) -> String {
    let name = file.map_or_else(|| "config".to_owned(), |f| f.display().to_string());
    let mut out = format!("invalid config {name}: {} problem(s)", problems.len());
    for p in problems {
        out.push_str("\n  ");
        match (file, p.position) {
            (Some(f), Some(_)) => out.push_str(&format!("{}:{p}", f.display())),
            _ => out.push_str(&p.to_string()),
        }
    }
    out
}
