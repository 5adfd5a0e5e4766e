//! `docs/config.md`, the configuration reference, checked against the code: every table lists
//! exactly the keys the parser accepts, and every default written as a TOML value is the one
//! the loader really uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A table of the reference: its key path (`resolver`, `nodes[]`, `nodes[].check`, or
/// `(top level)`) and its rows as (key, default cell).
#[derive(Debug)]
struct Section {
    path: String,
    rows: Vec<(String, String)>,
}

fn reference() -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

/// The first backticked token of `text`.
fn first_code(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(&text[start..start + len])
}

/// Splits a markdown table row into trimmed cells (an escaped `\|` stays inside its cell).
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                push(&mut out, '|');
            }
            '|' => out.push(String::new()),
            c => push(&mut out, c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

fn push(cells: &mut [String], c: char) {
    if let Some(cell) = cells.last_mut() {
        cell.push(c);
    }
}

fn sections(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            let path = first_code(heading).unwrap_or_else(|| panic!("heading without a key path: {line}"));
            sections.push(Section { path: path.to_owned(), rows: Vec::new() });
        } else if line.starts_with("## ") {
            // A level-2 heading ends the reference tables (e.g. "## Examples").
            if !sections.is_empty() {
                break;
            }
        } else if line.starts_with('|') {
            let Some(section) = sections.last_mut() else { continue };
            let row = cells(line);
            if row.first().is_some_and(|c| c.starts_with("---")) {
                continue;
            }
            if row.first().is_some_and(|c| c == "key") {
                assert_eq!(row, ["key", "type", "default", "meaning"], "{}: header row {line}", section.path);
                continue;
            }
            assert_eq!(row.len(), 4, "{} row must have 4 cells: {line}", section.path);
            let key = first_code(&row[0]).unwrap_or_else(|| panic!("row without a key: {line}"));
            section.rows.push((key.to_owned(), row[2].clone()));
        }
    }
    sections
}

/// The TOML table header of a key path: `[resolver]`, `[[nodes]]`, `[nodes.check]`; none for the
/// top level.
fn header(path: &str) -> String {
    match path {
        "(top level)" => String::new(),
        p if p.ends_with("[]") => format!("[[{}]]\n", p.trim_end_matches("[]")),
        p => format!("[{}]\n", p.replace("[]", "")),
    }
}

/// The keys the code accepts in `path`, read from its unknown-key error.
fn accepted_keys(path: &str) -> BTreeSet<String> {
    let mut text = String::new();
    // A table inside an array element (`nodes[].check`, `zones[].tsig`) needs the element first.
    if let Some((parent, _)) = path.rsplit_once('.') {
        text.push_str(&header(parent));
    }
    text.push_str(&header(path));
    text.push_str("zzz_not_a_key = 1\n");
    let error =
        geolb_config::parse(&text, Path::new("/nonexistent")).expect_err("an unknown key must fail").to_string();
    let line = error
        .lines()
        .find(|l| l.contains("zzz_not_a_key") && l.contains("expected"))
        .unwrap_or_else(|| panic!("no unknown-key problem for {path}:\n{error}"));
    let list = &line[line.find("expected ").unwrap_or(0) + "expected ".len()..];
    let list = list.strip_prefix("one of ").unwrap_or(list);
    list.split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|k| k.trim().trim_matches('`').to_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

#[test]
fn every_table_documents_exactly_the_keys_the_code_accepts() {
    let (file, text) = reference();
    let sections = sections(&text);
    let mut problems = Vec::new();
    for section in &sections {
        let documented: BTreeSet<String> = section.rows.iter().map(|(k, _)| k.clone()).collect();
        let accepted = accepted_keys(&section.path);
        let missing: Vec<_> = accepted.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&accepted).collect();
        if !missing.is_empty() || !extra.is_empty() {
            problems.push(format!("{}: undocumented {missing:?}, not accepted by the code {extra:?}", section.path));
        }
    }
    // Every table the code knows has a section; so has a node's inline `check`.
    let paths: BTreeSet<&str> = sections.iter().map(|s| s.path.as_str()).collect();
    for table in accepted_keys("(top level)").into_iter().chain(["nodes[].check".to_owned(), "zones[].tsig".to_owned()])
    {
        if !paths.contains(table.as_str()) && !paths.contains(format!("{table}[]").as_str()) {
            problems.push(format!("table `{table}` has no section"));
        }
    }
    assert!(paths.len() >= 16, "{} has only {} sections", file.display(), paths.len());
    assert!(problems.is_empty(), "{} disagrees with the code:\n{}", file.display(), problems.join("\n"));
}

/// A valid config to add one key to: sections in order, each (key path, lines). A prober's
/// keys are tried in a prober's config, every other key in a resolver's with `[member]`.
fn base(role: &str) -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(&str, Vec<&str>)> = vec![
        ("(top level)", vec![]),
        ("default_location", vec![r#"pop = "fra""#]),
        ("resolver", vec![]),
        ("checks", vec![]),
        (
            "cluster",
            vec![
                r#"id = "reference""#,
                r#"key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff""#,
                r#"seeds = ["127.0.0.1:7946"]"#,
            ],
        ),
        ("quorum", vec![]),
        ("admin", vec![]),
        ("fleet", vec![]),
        ("zones[]", vec![r#"origin = "example.net.""#, r#"file = "example.net.zone""#]),
        ("pops[]", vec![r#"id = "fra""#, "lat = 50.11", "lon = 8.68"]),
        ("nodes[]", vec![r#"id = "fra-1""#, r#"pop = "fra""#, r#"ipv4 = "192.0.2.1""#, r#"ipv6 = "2001:db8::1""#]),
        ("nodes[].check", vec![]),
        ("services[]", vec![r#"name = "cdn.example.net.""#]),
        ("overrides[]", vec![r#"cidr = "198.51.100.0/24""#, r#"pop = "fra""#]),
    ];
    match role {
        "prober" => {
            sections.push(("prober", vec![r#"id = "p""#, r#"pop = "fra""#, r#"gossip_listen = "127.0.0.1:7946""#]))
        }
        _ => sections.push(("member", vec![r#"id = "r""#, r#"gossip_listen = "127.0.0.1:7947""#])),
    }
    sections.into_iter().map(|(p, lines)| (p.to_owned(), lines.into_iter().map(String::from).collect())).collect()
}

fn render(sections: &[(String, Vec<String>)]) -> String {
    let mut text = String::new();
    for (path, lines) in sections {
        // An empty table still says something (`[cluster]` makes a cluster): leave it out.
        if lines.is_empty() {
            continue;
        }
        text.push_str(&header(path));
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

#[test]
fn documented_defaults_are_the_code_defaults() {
    let (file, text) = reference();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    let mut problems = Vec::new();
    for section in sections(&text) {
        for (key, default) in &section.rows {
            // Only a cell that is exactly one backticked value is a checkable default.
            let Some(value) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) else { continue };
            assert!(!value.contains('`'), "{}.{key}: default cell {default:?} is not one value", section.path);
            let role = if section.path == "prober" { "prober" } else { "member" };
            let without = base(role);
            let mut with = without.clone();
            match with.iter_mut().find(|(p, _)| *p == section.path) {
                Some((_, lines)) => lines.push(format!("{key} = {value}")),
                None => panic!("{}.{key}: no such table in the test's base config", section.path),
            }
            let load = |sections: &[(String, Vec<String>)]| {
                let text = render(sections);
                geolb_config::parse(&text, &examples).map_err(|e| format!("{e}\n--- config ---\n{text}"))
            };
            match (load(&with), load(&without)) {
                // The fleet document is the tables as written: it differs by the key itself.
                (Ok(a), Ok(b)) if a == geolb_config::Config { fleet: a.fleet.clone(), ..b.clone() } => checked += 1,
                (Ok(_), Ok(_)) => problems
                    .push(format!("{}.{key}: `{value}` is not what the code uses when it is omitted", section.path)),
                (Err(e), _) | (_, Err(e)) => problems.push(format!("{}.{key} = {value}: {e}", section.path)),
            }
        }
    }
    assert!(problems.is_empty(), "{} disagrees with the code:\n{}", file.display(), problems.join("\n"));
    assert!(checked >= 20, "only {checked} defaults in {} are written as checkable values", file.display());
}
