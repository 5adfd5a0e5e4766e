//! The local file composed with a fleet document: one validator for both halves.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::sync::Arc;

use geolb_config::{Fleet, FleetDocument, FleetStore, LocalFile};

const LOCAL: &str = r#"
[fleet]
store = "embedded"
[cluster]
id = "t"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[member]
id = "r1"
gossip_listen = "127.0.0.1:7947"
"#;

const DOCUMENT: &str = r#"{
  "default_location": {"pop": "fra"},
  "pops": [{"id": "fra", "lat": 50.11, "lon": 8.68}, {"id": "syd", "lat": -33.87, "lon": 151.21}],
  "nodes": [{"id": "fra-1", "pop": "fra", "ipv4": "192.0.2.1"}, {"id": "syd-1", "pop": "syd", "ipv4": "192.0.2.11", "weight": 5}],
  "services": [{"name": "cdn.example.net", "ttl": 20, "types": ["A"]}]
}"#;

fn local(dir: &tempfile::TempDir, text: &str) -> LocalFile {
    let path = dir.path().join("geolb.toml");
    std::fs::write(&path, text).unwrap();
    LocalFile::read(&path).unwrap()
}

fn document(text: &str) -> Arc<FleetDocument> {
    Arc::new(FleetDocument::from_json(text.as_bytes()).unwrap())
}

#[test]
fn a_document_fills_the_fleet_tables() {
    let dir = tempfile::tempdir().unwrap();
    let config = local(&dir, LOCAL).compose(Fleet::Document(&document(DOCUMENT))).unwrap();
    assert_eq!(config.fleet.store, FleetStore::Embedded);
    assert_eq!(config.pops.len(), 2);
    assert_eq!(config.node("syd-1").unwrap().weight, 5);
    assert_eq!(config.services[0].name, "cdn.example.net.");
    assert_eq!(config.services[0].ttl, 20);
    assert_eq!(config.member.as_ref().unwrap().id, "r1");
}

#[test]
fn the_same_tables_in_toml_and_json_make_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    let doc = document(DOCUMENT);
    let from_json = local(&dir, LOCAL).compose(Fleet::Document(&doc)).unwrap();
    let toml_text = format!("{}\n{}", doc.to_toml().unwrap(), LOCAL);
    let from_toml = local(&dir, &toml_text).compose(Fleet::File).unwrap();
    assert_eq!(from_toml.fleet.document.canonical(), doc.canonical());
    assert_eq!(from_toml, geolb_config::Config { warnings: from_toml.warnings.clone(), ..from_json });
}

#[test]
fn document_problems_carry_their_json_path_and_local_ones_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = document(
        r#"{"default_location": {"pop": "ams"}, "pops": [{"id": "fra", "lat": 95, "lon": 8}],
            "nodes": [{"id": "n", "pop": "fra", "ipv4": "192.0.2.1", "weight": "heavy"}],
            "services": [{"name": "a..b"}]}"#,
    );
    let text = format!("{LOCAL}[resolver]\nthreads = 0\n");
    let e = local(&dir, &text).compose(Fleet::Document(&bad)).unwrap_err();
    let got: Vec<(String, Option<(usize, usize)>)> =
        e.problems().iter().map(|p| (p.path.clone(), p.position)).collect();
    // The local file's problem first, with its line; then the document's, with key paths only.
    assert_eq!(got[0].0, "resolver.threads");
    assert!(got[0].1.is_some(), "{e}");
    let document_paths: Vec<&str> = got[1..].iter().map(|(p, _)| p.as_str()).collect();
    for want in ["pops[0].lat", "nodes[0].weight", "services[0].name", "default_location.pop"] {
        assert!(document_paths.contains(&want), "{want} missing from {document_paths:?}");
    }
    assert!(got[1..].iter().all(|(_, pos)| pos.is_none()), "{got:?}");
}

#[test]
fn a_member_without_a_document_is_pending_and_a_fleet_table_in_its_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{LOCAL}[[pops]]\nid = \"x\"\nlat = 1\nlon = 2\n");
    let file = local(&dir, &text);
    let pending = file.compose(Fleet::Pending).unwrap();
    assert!(pending.fleet.pending && pending.pops.is_empty() && pending.services.is_empty());
    assert!(pending.warnings.iter().any(|w| w.contains("pops in this file are not read")), "{:?}", pending.warnings);
    // Its own tables, as a seed.
    let seed = file.compose(Fleet::File).unwrap_err();
    assert!(seed.to_string().contains("default_location"), "{seed}");
}

#[test]
fn the_embedded_store_needs_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let e = local(&dir, "[fleet]\nstore = \"embedded\"\n").compose(Fleet::Document(&document(DOCUMENT))).unwrap_err();
    assert!(e.problems().iter().any(|p| p.path == "fleet.store"), "{e}");
}
