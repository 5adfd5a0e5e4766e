//! geolb configuration: the TOML schema, loading, and validation into a typed [`Config`].
//!
//! Loading is two steps, as in hickory and routinator: serde reads the file into `raw` structs
//! (`deny_unknown_fields` everywhere), then [`validate`](raw::RawConfig::validate) checks every
//! cross-reference and range and builds a [`Config`] whose invariants hold. Both steps collect
//! **every** problem they find, each with its key path and `line:column`, so an operator fixes a
//! broken file in one round. This crate reads files and nothing else: it opens no sockets and
//! does not look inside the GeoIP databases or zone files it names (the resolver does that).

mod error;
pub mod fleet;
pub mod health;
mod limits;
mod location;
mod model;
mod raw;
pub mod watch;

pub use error::{ConfigError, Problem};
pub use fleet::{FleetConfig, FleetDocument, FleetStore, Secret};
pub use limits::ConnectionLimits;
pub use model::{
    AllDownPolicy, Config, DefaultLocation, MAX_ANSWERS, Node, Override, OverrideTarget, Pop, PrimarySource,
    RESERVED_NODE_PREFIX, RecordTypes, ResolverConfig, Service, TsigKey, TsigSecret, ZoneFile,
};
pub use raw::{Fleet, NO_GEOIP, in_zone};

use std::path::{Path, PathBuf};

/// Reads, parses and validates the config file at `path`, with the fleet tables it holds.
///
/// Relative paths inside the file (GeoIP databases, zone files) are taken relative to the
/// directory that holds the config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    LocalFile::read(path)?.compose(Fleet::File)
}

/// Parses and validates config text; `base` is the directory relative paths are resolved against.
pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
    raw::parse(text, base, Fleet::File)
}

/// A member's local config file, read but not yet validated: composed with a fleet document
/// (or its own fleet tables) into a [`Config`].
#[derive(Debug, Clone)]
pub struct LocalFile {
    path: PathBuf,
    text: String,
}

impl LocalFile {
    /// Reads the file at `path`.
    pub fn read(path: &Path) -> Result<LocalFile, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Ok(LocalFile { path: path.to_path_buf(), text })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Validates the local tables with the fleet tables `fleet` gives, every problem of both
    /// reported at once: the local file's with their line, the document's with their key path.
    pub fn compose(&self, fleet: Fleet<'_>) -> Result<Config, ConfigError> {
        let base = self.path.parent().unwrap_or_else(|| Path::new("."));
        raw::parse(&self.text, base, fleet).map_err(|e| e.with_file(&self.path))
    }
}
