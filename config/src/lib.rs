//! geolb configuration: the TOML schema, loading, and validation into a typed [`Config`].
//!
//! Loading is two steps, as in hickory and routinator: serde reads the file into `raw` structs
//! (`deny_unknown_fields` everywhere), then [`validate`](raw::RawConfig::validate) checks every
//! cross-reference and range and builds a [`Config`] whose invariants hold. Both steps collect
//! **every** problem they find, each with its key path and `line:column`, so an operator fixes a
//! broken file in one round. This crate reads files and nothing else: it opens no sockets and
//! does not look inside the GeoIP databases or zone files it names (the resolver does that).

mod error;
pub mod health;
mod location;
mod model;
mod raw;
pub mod watch;

pub use error::{ConfigError, Problem};
pub use model::{
    AllDownPolicy, Config, DefaultLocation, MAX_ANSWERS, Node, Override, OverrideTarget, Pop, RESERVED_NODE_PREFIX,
    RecordTypes, ResolverConfig, Service, ZoneFile,
};

use std::path::Path;

/// Reads, parses and validates the config file at `path`.
///
/// Relative paths inside the file (GeoIP databases, zone files) are taken relative to the
/// directory that holds the config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, base).map_err(|e| e.with_file(path))
}

/// Parses and validates config text; `base` is the directory relative paths are resolved against.
pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
    raw::parse(text, base)
}
