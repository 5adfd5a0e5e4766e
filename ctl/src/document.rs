//! Fleet documents on this side: reading them from TOML or JSON text, writing them in one
//! normalized form, and the unified diff of two of them.
//!
//! A document read here goes through [`FleetDocument`], as on the members: the same shape check
//! (only fleet tables) and the same canonical form (keys sorted, no `null`), so two texts of
//! the same tables compare equal and render the same. The tables themselves are validated by
//! the member a document is written to.

use std::path::Path;

use anyhow::{Context, Result, bail};
use geolb_config::FleetDocument;

/// How a document is written out (and read in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Pretty JSON, keys sorted.
    Json,
    /// TOML, in the shape of a config file's fleet tables.
    Toml,
}

impl Format {
    /// The format a file's extension names: `.toml` or `.json`.
    pub(crate) fn of_path(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("toml") => Ok(Format::Toml),
            Some("json") => Ok(Format::Json),
            _ => bail!("{}: the file name must end in .toml or .json", path.display()),
        }
    }
}

/// Reads the document in the file at `path` (TOML or JSON by its extension).
pub(crate) fn read(path: &Path) -> Result<FleetDocument> {
    let format = Format::of_path(path)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text, format, &path.display().to_string())
}

/// The document in `text`; `origin` names the text in errors.
pub(crate) fn parse(text: &str, format: Format, origin: &str) -> Result<FleetDocument> {
    let parsed = match format {
        Format::Json => FleetDocument::from_json(text.as_bytes()),
        Format::Toml => {
            let table: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: not TOML: {e}"))?;
            let value = serde_json::to_value(table).with_context(|| format!("{origin}: not a fleet document"))?;
            FleetDocument::from_value(value)
        }
    };
    parsed.map_err(|e| {
        let mut message = format!("{origin}: not a fleet document");
        for p in e.problems() {
            message.push_str(&format!("\n  {origin}:{p}"));
        }
        anyhow::anyhow!(message)
    })
}

/// The document in `format`: pretty JSON with sorted keys and a final newline, or TOML.
pub(crate) fn render(document: &FleetDocument, format: Format) -> Result<String> {
    match format {
        Format::Json => {
            // The document's map is ordered by key (serde_json without `preserve_order`, as its
            // canonical form needs): the pretty form is sorted too.
            let mut text = serde_json::to_string_pretty(&document.to_value())?;
            text.push('\n');
            Ok(text)
        }
        Format::Toml => document.to_toml().map_err(|e| anyhow::anyhow!("cannot write the document as TOML: {e}")),
    }
}

/// The unified diff from `old` to `new` (3 lines of context), or `None` when they are equal.
pub(crate) fn diff(old: &str, new: &str, old_name: &str, new_name: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let diff = similar::TextDiff::from_lines(old, new);
    Some(diff.unified_diff().context_radius(3).header(old_name, new_name).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "[[pops]]\nid = \"fra\"\nlat = 50.11\nlon = 8.68\n\n[[nodes]]\nid = \"fra-1\"\npop = \"fra\"\nipv4 = \"192.0.2.1\"\ncheck = { port = 8080 }\n";

    #[test]
    fn toml_and_json_of_the_same_tables_are_one_document() {
        let json = r#"{"nodes":[{"check":{"port":8080},"id":"fra-1","ipv4":"192.0.2.1","pop":"fra","weight":null}],
                       "pops":[{"id":"fra","lon":8.68,"lat":50.11}]}"#;
        let a = parse(TOML, Format::Toml, "a.toml").unwrap();
        let b = parse(json, Format::Json, "b.json").unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(render(&a, Format::Json).unwrap(), render(&b, Format::Json).unwrap());
        let pretty = render(&a, Format::Json).unwrap();
        assert!(pretty.starts_with("{\n  \"nodes\": [\n    {\n      \"check\""), "{pretty}");
        // TOML written out reads back as the same document.
        let again = parse(&render(&a, Format::Toml).unwrap(), Format::Toml, "again").unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn errors_name_the_file_and_the_place() {
        let e = parse("[[pops]\n", Format::Toml, "x.toml").unwrap_err().to_string();
        assert!(e.starts_with("x.toml: not TOML:"), "{e}");
        let e = parse("{\n \"pops\": [,]\n}", Format::Json, "x.json").unwrap_err().to_string();
        assert!(e.starts_with("x.json: not a fleet document\n  x.json:2:"), "{e}");
        let e = parse("[resolver]\nthreads = 2\n", Format::Toml, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml:resolver: `resolver` belongs in each member's local file"), "{e}");
        assert!(Format::of_path(Path::new("fleet.yaml")).is_err());
        assert_eq!(Format::of_path(Path::new("a/fleet.TOML")).unwrap(), Format::Toml);
    }

    #[test]
    fn diff_is_unified_and_none_when_equal() {
        assert_eq!(diff("a\nb\n", "a\nb\n", "x", "y"), None);
        let d = diff("a\nb\nc\n", "a\nB\nc\n", "version 1", "new.toml").unwrap();
        assert_eq!(d, "--- version 1\n+++ new.toml\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
    }
}
