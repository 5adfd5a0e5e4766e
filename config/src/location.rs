//! Key paths and where they are in the file.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `nodes[3].pop`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Seg>);

impl KeyPath {
    pub(crate) fn key(&self, k: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }

    pub(crate) fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// Appends the steps of a serde_path_to_error path.
    pub(crate) fn join_serde(&self, path: &serde_path_to_error::Path) -> KeyPath {
        let mut p = self.clone();
        for seg in path.iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => p.0.push(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => p.0.push(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => p.0.push(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Finds the span of the deepest existing value along `path` (a missing key points at its
/// parent table, which is where it should have been written).
pub(crate) fn span_of(root: &DeTable<'_>, root_span: Range<usize>, path: &KeyPath) -> Range<usize> {
    let mut span = root_span;
    let mut table = Some(root);
    let mut array: Option<&[toml::Spanned<DeValue<'_>>]> = None;
    for seg in &path.0 {
        let next = match seg {
            Seg::Key(k) => table.and_then(|t| t.get(k.as_str())),
            Seg::Index(i) => array.and_then(|a| a.get(*i)),
        };
        let Some(value) = next else { break };
        span = value.span();
        table = value.get_ref().as_table();
        array = value.get_ref().as_array().map(|a| &a[..]);
    }
    span
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| before[nl + 1..].chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 8), (2, 3));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn span_of_walks_tables_and_arrays() {
        let text = "[[nodes]]\nid = \"a\"\n[[nodes]]\nid = \"b\"\npop = \"x\"\n";
        let (root, errors) = DeTable::parse_recoverable(text);
        assert!(errors.is_empty());
        let path = KeyPath::default().key("nodes").index(1).key("pop");
        let span = span_of(root.get_ref(), root.span(), &path);
        assert_eq!(&text[span], "\"x\"");
        // A missing key points at its table.
        let path = KeyPath::default().key("nodes").index(0).key("weight");
        let span = span_of(root.get_ref(), root.span(), &path);
        assert_eq!(line_col(text, span.start).0, 1);
        assert_eq!(path.to_string(), "nodes[0].weight");
    }
}
