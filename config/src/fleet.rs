//! The two halves of a configuration: the fleet document and the local file.
//!
//! The *fleet document* holds what must be the same on every member: the tables named in
//! [`FLEET_TABLES`]. The *local file* holds what belongs to one machine (listeners, sockets,
//! `state_dir`, key and token files, GeoIP paths, zone files, this member's identity) and says
//! in `[fleet] store` where the fleet document comes from:
//!
//! - `file` (the default): the fleet tables are in the local file itself, as they always were.
//! - `embedded`: the members keep the document's versions in their `state_dir` and change it
//!   over the admin API; fleet tables in the local file only seed the first version.
//!
//! A document is JSON. Its canonical form ([`FleetDocument::canonical`]: keys sorted, no
//! white space, no `null`) is what is hashed, stored and served, so the same tables give the
//! same bytes on every member whether they came from TOML or JSON.

use serde_json::{Map, Value};

use crate::error::{ConfigError, Problem};
use crate::location::line_col;

/// The top-level tables of the fleet document.
pub const FLEET_TABLES: &[&str] = &["checks", "quorum", "default_location", "pops", "nodes", "services", "overrides"];

/// The top-level tables only the local file holds.
pub(crate) const LOCAL_TABLES: &[&str] =
    &["resolver", "geoip", "zones", "cluster", "prober", "member", "admin", "fleet"];

/// Where a member's fleet document comes from (`[fleet] store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetStore {
    /// The fleet tables of the local file.
    #[default]
    File,
    /// Versions kept by every member in its `state_dir`, changed over the admin API.
    Embedded,
    /// Versions in a PostgreSQL (or CockroachDB) table: one linearizable writer; each member
    /// mirrors them in its `state_dir`.
    Postgres,
}

impl FleetStore {
    /// The name used in the config and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FleetStore::File => "file",
            FleetStore::Embedded => "embedded",
            FleetStore::Postgres => "postgres",
        }
    }
}

/// The fleet half of a [`crate::Config`].
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// Where the document comes from.
    pub store: FleetStore,
    /// The document the config was built from (for `file`, the local file's fleet tables).
    pub document: std::sync::Arc<FleetDocument>,
    /// No document yet (a new member of an embedded store with nothing to seed from): the
    /// fleet tables are empty until one arrives from a peer.
    pub pending: bool,
    /// The document's version in the store; 0 for the `file` store and while pending. Set by
    /// whoever composed the config from a stored version.
    pub version: u64,
    /// The SHA-256 of the document's canonical bytes, hex; set with `version`.
    pub hash: String,
    /// The connection string of the `postgres` store (libpq key/value or URL form). Secret:
    /// it may hold a password.
    pub postgres: Option<Secret>,
}

/// A string that is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A fleet document: a JSON object holding only [`FLEET_TABLES`], in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetDocument {
    value: Map<String, Value>,
    canonical: Vec<u8>,
}

impl Default for FleetDocument {
    fn default() -> Self {
        FleetDocument::from_map(Map::new())
    }
}

impl FleetDocument {
    /// Reads a document from JSON text: an object whose keys are fleet tables. Only the shape
    /// is checked here; [`crate::LocalFile::compose`] validates the tables.
    pub fn from_json(text: &[u8]) -> Result<FleetDocument, ConfigError> {
        let value: Value = serde_json::from_slice(text).map_err(|e| {
            let text = String::from_utf8_lossy(text);
            let position = (e.line() > 0).then(|| {
                let offset = text.split_inclusive('\n').take(e.line() - 1).map(str::len).sum::<usize>();
                line_col(&text, offset + e.column().saturating_sub(1))
            });
            invalid(vec![Problem { path: String::new(), position, message: format!("not JSON: {e}") }])
        })?;
        FleetDocument::from_value(value)
    }

    /// A document from a JSON value (see [`FleetDocument::from_json`]).
    pub fn from_value(value: Value) -> Result<FleetDocument, ConfigError> {
        let Value::Object(map) = value else {
            return Err(invalid(vec![problem(
                "",
                format!("the fleet document must be a JSON object, not {}", kind(&value)),
            )]));
        };
        let problems: Vec<Problem> =
            map.keys().filter(|k| !FLEET_TABLES.contains(&k.as_str())).map(|k| misplaced(k)).collect();
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        Ok(FleetDocument::from_map(map))
    }

    /// The fleet tables of a TOML table (the local file's), as a document.
    pub(crate) fn from_toml(table: &toml::Table) -> FleetDocument {
        let map = table
            .iter()
            .filter(|(k, _)| FLEET_TABLES.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.clone(), serde_json::to_value(v).ok()?)))
            .collect();
        FleetDocument::from_map(map)
    }

    fn from_map(map: Map<String, Value>) -> FleetDocument {
        let mut value = Value::Object(map);
        strip_nulls(&mut value);
        let Value::Object(map) = value else { unreachable!("an object stays an object") };
        // serde_json's Map is a BTreeMap (the `preserve_order` feature is off): keys come out
        // sorted, so equal tables serialize to equal bytes.
        let canonical = serde_json::to_vec(&map).unwrap_or_default();
        FleetDocument { value: map, canonical }
    }

    /// The canonical bytes: compact JSON, keys sorted, no `null`.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }

    /// The tables.
    pub fn tables(&self) -> &Map<String, Value> {
        &self.value
    }

    /// The document as a JSON value.
    pub fn to_value(&self) -> Value {
        Value::Object(self.value.clone())
    }

    /// Whether it has no tables at all.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// The document as TOML text, in the shape of the fleet tables of a config file.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(&self.value).map_err(|e| e.to_string())
    }
}

/// Removes every `null` member of every object (JSON Merge Patch deletes with `null`; in a
/// document it means "not given").
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn misplaced(key: &str) -> Problem {
    let message = if LOCAL_TABLES.contains(&key) {
        format!("`{key}` belongs in each member's local file, not in the fleet document")
    } else {
        format!("unknown key `{key}`, expected one of {}", FLEET_TABLES.join(", "))
    };
    problem(key, message)
}

fn problem(path: &str, message: String) -> Problem {
    Problem { path: path.to_owned(), position: None, message }
}

fn invalid(problems: Vec<Problem>) -> ConfigError {
    ConfigError::Invalid { file: None, problems }
}

/// A JSON value's kind, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_and_drops_nulls() {
        let a =
            FleetDocument::from_json(br#"{"pops":[{"lon":1.5,"id":"x","lat":2,"region":null}],"checks":{}}"#).unwrap();
        let b =
            FleetDocument::from_json(b"{ \"checks\": {},\n \"pops\": [ {\"id\": \"x\", \"lat\": 2, \"lon\": 1.5} ] }")
                .unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(
            std::str::from_utf8(a.canonical()).unwrap(),
            r#"{"checks":{},"pops":[{"id":"x","lat":2,"lon":1.5}]}"#
        );
    }

    #[test]
    fn toml_and_json_of_the_same_tables_are_the_same_bytes() {
        let table: toml::Table =
            toml::from_str("[resolver]\nthreads = 2\n[[pops]]\nid = \"x\"\nlat = 2\nlon = 1.5\n").unwrap();
        let from_toml = FleetDocument::from_toml(&table);
        let from_json = FleetDocument::from_json(br#"{"pops":[{"id":"x","lat":2,"lon":1.5}]}"#).unwrap();
        assert_eq!(from_toml.canonical(), from_json.canonical());
        let again: toml::Table = toml::from_str(&from_json.to_toml().unwrap()).unwrap();
        assert_eq!(FleetDocument::from_toml(&again), from_json);
    }

    #[test]
    fn shape_errors_name_the_key() {
        let e = FleetDocument::from_json(br#"{"resolver":{},"services":[],"colour":1}"#).unwrap_err();
        let messages: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "colour: unknown key `colour`, expected one of checks, quorum, default_location, pops, nodes, services, overrides",
                "resolver: `resolver` belongs in each member's local file, not in the fleet document",
            ]
        );
        let e = FleetDocument::from_json(b"[1]").unwrap_err();
        assert_eq!(e.problems()[0].message, "the fleet document must be a JSON object, not an array");
        let e = FleetDocument::from_json(b"{\n  \"pops\": [,]\n}").unwrap_err();
        assert_eq!(e.problems()[0].position, Some((2, 12)));
    }
}
