//! `config_toml`: a config file as an operator writes it, and a fleet document as the admin API
//! receives it, through `geolb_config`'s parse and validation.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use geolb_config::{Config, DefaultLocation, Fleet, FleetDocument, LocalFile, OverrideTarget};

use crate::fixture::{must, scratch_subdir};

/// The example files a config may name, copied beside the inputs (relative paths resolve
/// against the config's directory).
const FILES: &[&str] =
    &["cluster.key", "admin.token", "tsig-xfr.key", "example.net.zone", "prober-fra.toml", "resolver-member.toml"];

struct Fixture {
    dir: PathBuf,
    /// The local file fleet documents are composed with.
    local: LocalFile,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch_subdir("config");
        for name in FILES {
            must(std::fs::copy(crate::fixture::examples_dir().join(name), dir.join(name)), "copy an example file");
        }
        let local = must(LocalFile::read(&dir.join("resolver-member.toml")), "read resolver-member.toml");
        Fixture { dir, local }
    })
}

/// What validation promises of a config it accepts.
fn check_valid(config: &Config) {
    let pop = |id: &str| config.pops.iter().any(|p| p.id.as_str() == id);
    let node = |id: &str| config.nodes.iter().any(|n| n.id.as_str() == id);
    for p in &config.pops {
        assert!(p.location.is_valid(), "pop {} at {:?}", p.id, p.location);
    }
    for n in &config.nodes {
        assert!(pop(n.pop.as_str()), "node {} in unknown pop {}", n.id, n.pop);
        assert!((1..=1_000_000).contains(&n.weight), "node {} weight {}", n.id, n.weight);
    }
    for s in &config.services {
        assert!(s.name.ends_with('.') && s.name == s.name.to_ascii_lowercase(), "service name {:?}", s.name);
        assert!(s.tie_band_km.is_finite() && s.tie_band_km >= 0.0, "{}: tie_band_km {}", s.name, s.tie_band_km);
        assert!((1..=geolb_config::MAX_ANSWERS).contains(&s.answers), "{}: answers {}", s.name, s.answers);
        assert!(s.types.a || s.types.aaaa, "{} answers neither A nor AAAA", s.name);
        for id in &s.nodes {
            assert!(node(id.as_str()), "{}: unknown node {id}", s.name);
        }
        if let geolb_config::AllDownPolicy::FallbackPool(ids) = &s.all_down {
            assert!(ids.iter().all(|id| node(id.as_str())), "{}: unknown fallback node", s.name);
        }
    }
    match &config.default_location {
        DefaultLocation::Pop(id) => assert!(pop(id.as_str()), "default_location at unknown pop {id}"),
        DefaultLocation::Point(p) => assert!(p.is_valid(), "default_location {p:?}"),
    }
    for o in &config.overrides {
        match &o.target {
            OverrideTarget::Pop(id) => assert!(pop(id.as_str()), "override {} to unknown pop {id}", o.net),
            OverrideTarget::Point(p) => assert!(p.is_valid(), "override {} to {p:?}", o.net),
        }
        assert_eq!(o.net, o.net.trunc(), "override {} has host bits", o.net);
    }
    let q = &config.quorum;
    assert!(q.down_quorum.is_finite() && (0.0..=1.0).contains(&q.down_quorum), "down_quorum {}", q.down_quorum);
    for (id, w) in &q.weights {
        assert!(w.is_finite() && *w >= 0.0, "prober {id} weighs {w}");
    }
}

/// A document's canonical bytes read back as the same document.
fn check_canonical(document: &FleetDocument) {
    let again = must(FleetDocument::from_json(document.canonical()), "read a canonical document back");
    assert!(again == *document, "a document changed through its canonical bytes");
}

/// The target: `data` as a config file; and, when it is a JSON document, as a fleet document
/// composed with `config/examples/resolver-member.toml`.
pub fn config_toml(data: &[u8]) {
    let fx = fixture();
    if let Ok(text) = std::str::from_utf8(data) {
        match geolb_config::parse(text, &fx.dir) {
            Ok(config) => {
                check_valid(&config);
                check_canonical(&config.fleet.document);
                // The file's fleet tables seed the embedded store as a document: composed with the
                // same file, the document must give the same config.
                let path = fx.dir.join("fuzzed.toml");
                must(std::fs::write(&path, text), "write the input");
                let local = must(LocalFile::read(&path), "read the input back");
                let document = config.fleet.document.clone();
                match local.compose(Fleet::Document(&document)) {
                    Ok(again) => {
                        assert!(
                            again.pops == config.pops
                                && again.nodes == config.nodes
                                && again.services == config.services
                                && again.overrides == config.overrides
                                && again.default_location == config.default_location
                                && again.quorum == config.quorum,
                            "the file's fleet tables read as a fleet document give another config"
                        );
                    }
                    Err(e) => panic!("a valid file's fleet tables, as a fleet document, are refused: {e}"),
                }
            }
            Err(e) => {
                assert!(!e.problems().is_empty() || !e.to_string().is_empty(), "a refusal without a reason");
                let lines = text.lines().count().max(1) + 1;
                for p in e.problems() {
                    if let Some((line, _)) = p.position {
                        assert!(line >= 1 && line <= lines, "problem at line {line} of {lines}: {}", p.message);
                    }
                }
            }
        }
    }
    if let Ok(document) = FleetDocument::from_json(data) {
        check_canonical(&document);
        if let Ok(config) = fx.local.compose(Fleet::Document(&Arc::new(document))) {
            check_valid(&config);
        }
    }
}
