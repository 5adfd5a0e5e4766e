//! Every file of `fuzz/corpus/<target>/` through its target: the inputs the fuzzer kept, and
//! those that once found a bug, stay passing.

use std::path::Path;

fn replay(target: &str) {
    let (_, run) = geolb_fuzz_targets::TARGETS.iter().find(|(name, _)| *name == target).expect("a target of that name");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty: the target would replay nothing", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
            let why =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("{} fails {target}: {}", path.display(), why.unwrap_or_default());
        }
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn every_target_has_a_test_here() {
    let names: Vec<&str> = geolb_fuzz_targets::TARGETS.iter().map(|(name, _)| *name).collect();
    let source = include_str!("corpus.rs");
    for name in names {
        assert!(source.contains(&format!("fn {name}()")), "no replay test for {name}");
    }
}

#[test]
fn remote_backend_unix() {
    replay("remote_backend_unix");
}

#[test]
fn remote_backend_http() {
    replay("remote_backend_http");
}

#[test]
fn config_toml() {
    replay("config_toml");
}

#[test]
fn gossip_frame() {
    replay("gossip_frame");
}

#[test]
fn zone_file() {
    replay("zone_file");
}

#[test]
fn admin_bodies() {
    replay("admin_bodies");
}
