//! `geolbctl config`: show, edit, apply, diff, list and roll back the fleet document.
//!
//! Every write sends `If-Match` with the version it started from, so a write never silently
//! replaces someone else's: a 412 names who wrote first and shows what they changed. A refused
//! document (422) lists every problem the member found; an edit that was refused is kept in a
//! file so it can be fixed and applied.

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use geolb_config::FleetDocument;

use crate::client::{ApiError, Client, Fetched, VersionMeta, Written};
use crate::document::{self, Format};

/// The first characters of a hash, as shown.
pub(crate) fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The newest document and its version, or an error when there is none.
fn newest(client: &Client, toml: bool) -> Result<Fetched> {
    client.config(toml)?.with_context(|| {
        format!("{} has no fleet document yet: write the first with `geolbctl config apply FILE`", client.base())
    })
}

/// The document a member served.
fn served(text: &str, format: Format, client: &Client) -> Result<FleetDocument> {
    document::parse(text, format, &format!("the document {} served", client.base()))
}

/// `config get`.
pub(crate) fn get(client: &Client, toml: bool) -> Result<ExitCode> {
    let fetched = newest(client, toml)?;
    let mut out = std::io::stdout().lock();
    out.write_all(fetched.text.as_bytes())?;
    if !fetched.text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let hash = fetched.hash.as_deref().map(|h| format!(" ({})", short(h))).unwrap_or_default();
    if fetched.version == 0 {
        eprintln!("version 0{hash}: the member's own file ([fleet] store = \"file\"), not a stored version");
    } else {
        eprintln!("version {}{hash}", fetched.version);
    }
    Ok(ExitCode::SUCCESS)
}

/// `config edit`: the document in `$EDITOR` as TOML, written back as the next version.
pub(crate) fn edit(client: &Client, message: &str) -> Result<ExitCode> {
    let fetched = client.config(true)?;
    if fetched.as_ref().is_some_and(|f| f.version == 0) {
        // Only a member on the `file` store serves a document without a version.
        bail!(
            "{} takes its fleet document from its own file ([fleet] store = \"file\"): edit that file",
            client.base()
        );
    }
    let (version, text) = fetched.map_or((0, String::new()), |f| (f.version, f.text));
    let original = served(&text, Format::Toml, client)?;
    let mut file = tempfile::Builder::new()
        .prefix(&format!("geolb-config-v{version}-"))
        .suffix(".toml")
        .tempfile()
        .context("cannot create a file to edit")?;
    write!(
        file,
        "# The fleet document, version {version} of {}.\n# Save and quit to write it as the next version; leave it as it is to write nothing.\n\n{text}",
        client.base()
    )?;
    file.flush()?;
    let editor = std::env::var("EDITOR").ok().filter(|e| !e.trim().is_empty()).unwrap_or_else(|| "vi".to_owned());
    // Through the shell, as git does: EDITOR may carry arguments ("code --wait").
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .with_context(|| format!("cannot run the editor `{editor}`"))?;
    if !status.success() {
        bail!("the editor `{editor}` failed ({status}): nothing written");
    }
    let path = file.path().to_path_buf();
    let shown = path.display().to_string();
    let edited = std::fs::read_to_string(&path).with_context(|| format!("cannot read {shown}"))?;
    let edited = match document::parse(&edited, Format::Toml, &shown) {
        Ok(d) => d,
        Err(e) => {
            keep(file)?;
            eprintln!("Error: {e:#}");
            eprintln!(
                "your edit is kept in {shown}: fix it, then `geolbctl config apply {shown} --if-match {version}`"
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    if edited == original {
        println!("no changes: nothing written (still version {version})");
        return Ok(ExitCode::SUCCESS);
    }
    match client.put_config(version, edited.canonical(), message) {
        Ok(w) => {
            println!("{}", wrote(&w, message));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            keep(file)?;
            report(client, &e, Some(&original), Format::Toml);
            let next = match &e {
                ApiError::Invalid { .. } => {
                    format!("fix it, then `geolbctl config apply {shown} --if-match {version}`")
                }
                ApiError::Stale { .. } => format!(
                    "`geolbctl config edit` starts again from the newest version; `geolbctl config diff {shown}` shows yours against it; `geolbctl config apply {shown}` writes yours over it"
                ),
                _ => format!("`geolbctl config apply {shown} --if-match {version}` tries it again"),
            };
            eprintln!("your edit is kept in {shown}: {next}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Keeps the edited file after this program ends.
fn keep(file: tempfile::NamedTempFile) -> Result<()> {
    file.keep().map(drop).map_err(|e| anyhow::anyhow!("cannot keep {}: {}", e.file.path().display(), e.error))
}

/// `config apply FILE`.
pub(crate) fn apply(client: &Client, path: &Path, message: &str, if_match: Option<u64>) -> Result<ExitCode> {
    let document = document::read(path)?;
    let expected = match if_match {
        Some(n) => n,
        None => match client.config(false)? {
            Some(head) => {
                if served(&head.text, Format::Json, client)? == document {
                    println!("version {} is already this document: nothing written", head.version);
                    return Ok(ExitCode::SUCCESS);
                }
                head.version
            }
            None => 0,
        },
    };
    write(client, expected, if_match.is_some(), &document, message)
}

/// `config rollback N`: version N's document as the next version.
pub(crate) fn rollback(client: &Client, version: u64, message: &str, if_match: Option<u64>) -> Result<ExitCode> {
    let old = client.version(version)?;
    let document = served(&old.document, Format::Json, client)?;
    let m = &old.meta;
    let said = if m.message.is_empty() { String::new() } else { format!(" (\"{}\")", m.message) };
    eprintln!("version {} was written by {} at {}{said}", m.version, m.author, crate::utc(m.at_ms));
    let expected = match if_match {
        Some(n) => n,
        None => client.config(false)?.map_or(0, |f| f.version),
    };
    write(client, expected, if_match.is_some(), &document, message)
}

/// What a stored write prints.
pub(crate) fn wrote(w: &Written, message: &str) -> String {
    let said = if message.is_empty() { String::new() } else { format!(": {message}") };
    format!("wrote version {} ({}){said}", w.version, short(&w.hash))
}

/// PUTs `document` at `expected` (given by the user when `pinned`); reports a refusal.
fn write(client: &Client, expected: u64, pinned: bool, document: &FleetDocument, message: &str) -> Result<ExitCode> {
    match client.put_config(expected, document.canonical(), message) {
        Ok(w) => {
            println!("{}", wrote(&w, message));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let start = match &e {
                ApiError::Stale { expected, .. } if *expected > 0 => {
                    client.version(*expected).ok().and_then(|v| served(&v.document, Format::Json, client).ok())
                }
                _ => None,
            };
            report(client, &e, start.as_ref(), Format::Json);
            if let ApiError::Stale { head: Some(head), .. } = &e {
                if pinned {
                    eprintln!(
                        "without --if-match it is written over version {} (their change is then lost)",
                        head.version
                    );
                } else {
                    eprintln!("version {} was written while this ran: run it again to write over it", head.version);
                }
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints a refused write; for a 412, also what changed from `start` (the version the write
/// started from) to the newest version.
fn report(client: &Client, e: &ApiError, start: Option<&FleetDocument>, format: Format) {
    eprintln!("Error: {e}");
    if let ApiError::Stale { expected, head: Some(head), .. } = e {
        match conflict_diff(client, *expected, start, head, format) {
            Ok(Some(diff)) => eprintln!("what changed since version {expected}:\n{diff}"),
            Ok(None) => eprintln!("version {} has the same document as version {expected}", head.version),
            Err(e) => eprintln!("(cannot show what changed: {e:#})"),
        }
    }
}

/// The diff from `start` (version `expected`) to the newest version `head`.
fn conflict_diff(
    client: &Client,
    expected: u64,
    start: Option<&FleetDocument>,
    head: &VersionMeta,
    format: Format,
) -> Result<Option<String>> {
    let Some(start) = start else { bail!("version {expected} is not here to compare with") };
    let newest = client.version(head.version)?;
    let newest = served(&newest.document, Format::Json, client)?;
    let (old, new) = (document::render(start, format)?, document::render(&newest, format)?);
    let by = format!("version {} by {}", head.version, head.author);
    Ok(document::diff(&old, &new, &format!("version {expected}"), &by))
}

/// `config diff FILE`: 0 when the newest document is FILE's, 1 when not (the diff printed).
pub(crate) fn diff(client: &Client, path: &Path, toml: bool) -> Result<ExitCode> {
    let format = if toml { Format::Toml } else { Format::Json };
    let local = document::render(&document::read(path)?, format)?;
    let (current, name) = match client.config(false)? {
        Some(f) => {
            (document::render(&served(&f.text, Format::Json, client)?, format)?, format!("version {}", f.version))
        }
        None => (String::new(), "no document yet".to_owned()),
    };
    match document::diff(&current, &local, &name, &path.display().to_string()) {
        None => Ok(ExitCode::SUCCESS),
        Some(d) => {
            print!("{d}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `config history`: a table, newest first.
pub(crate) fn history(client: &Client) -> Result<ExitCode> {
    let versions = client.history()?;
    if versions.is_empty() {
        println!("no versions yet");
    } else {
        print!("{}", history_table(&versions));
    }
    Ok(ExitCode::SUCCESS)
}

/// The history as aligned columns.
fn history_table(versions: &[VersionMeta]) -> String {
    let printable = |s: &str| s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>();
    let header = ["VERSION", "TIME (UTC)", "AUTHOR", "HASH", "SUPERSEDED", "MESSAGE"].map(str::to_owned);
    let rows: Vec<[String; 6]> = versions
        .iter()
        .map(|v| {
            [
                v.version.to_string(),
                crate::utc(v.at_ms).trim_end_matches(" UTC").to_owned(),
                printable(&v.author),
                short(&v.hash).to_owned(),
                if v.superseded { "superseded" } else { "" }.to_owned(),
                printable(&v.message),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            match i {
                0 => line.push_str(&format!("{cell:>w$}")),
                5 => line.push_str(cell),
                _ => line.push_str(&format!("{cell:<w$}")),
            }
            if i < 5 {
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_a_table() {
        let v = |version, author: &str, message: &str, superseded| VersionMeta {
            version,
            hash: format!("{version}abcdef0123456789"),
            author: author.to_owned(),
            at_ms: 1_700_000_000_000 + version * 60_000,
            message: message.to_owned(),
            superseded,
        };
        let table = history_table(&[
            v(12, "admin", "rollback to version 1", false),
            v(11, "ci-bot", "", true),
            v(1, "file", "seeded from /etc/geolb/geolb.toml", false),
        ]);
        assert_eq!(
            table,
            "\
VERSION  TIME (UTC)           AUTHOR  HASH          SUPERSEDED  MESSAGE
     12  2023-11-14 22:25:20  admin   12abcdef0123              rollback to version 1
     11  2023-11-14 22:24:20  ci-bot  11abcdef0123  superseded
      1  2023-11-14 22:14:20  file    1abcdef01234              seeded from /etc/geolb/geolb.toml
"
        );
    }
}
