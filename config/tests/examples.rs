//! Every example config parses, and broken configs report every problem with its place.

use std::path::{Path, PathBuf};

use geolb_config::{AllDownPolicy, ConfigError, DefaultLocation, OverrideTarget};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn the_demo_config_loads_as_the_docs_suggest() {
    // docs/config.md suggests --check-config on demo/demo.toml: its key, token and zone files
    // are beside it (links to the examples the demo embeds).
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/demo.toml");
    let config = geolb_config::load(&demo).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.cluster.is_some() && !config.services.is_empty());
}

#[test]
fn world_example_uses_the_socket_its_pdns_conf_names() {
    let world = geolb_config::load(&examples_dir().join("world.toml")).unwrap_or_else(|e| panic!("{e}"));
    let pdns = std::fs::read_to_string(examples_dir().join("pdns.conf")).unwrap();
    let socket = world.resolver.socket.expect("world.toml sets [resolver] socket");
    let line = pdns.lines().find(|l| l.starts_with("remote-connection-string=")).unwrap();
    assert!(line.contains(&format!("unix:path={},", socket.display())), "{line} vs {}", socket.display());
}

#[test]
fn every_example_parses() {
    let mut count = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = geolb_config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.services.is_empty(), "{}", path.display());
            count += 1;
        }
    }
    assert!(count >= 1, "no example configs found");
}

#[test]
fn world_example_has_what_the_docs_promise() {
    let config = geolb_config::load(&examples_dir().join("world.toml")).unwrap();
    let ids: Vec<&str> = config.pops.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["fra", "lhr", "iad", "sjc", "gru", "sin", "nrt", "syd"]);
    assert_eq!(config.nodes.len(), 16);
    let svc = &config.services[0];
    assert_eq!(svc.name, "cdn.example.net.");
    assert!(svc.types.a && svc.types.aaaa);
    assert_eq!(svc.ttl, 30);
    assert_eq!(svc.nodes.len(), 16);
    assert_eq!(svc.all_down, AllDownPolicy::FailOpen);
    assert_eq!(config.default_location, DefaultLocation::Pop("fra".into()));
    assert_eq!(config.overrides[0].target, OverrideTarget::Pop("sin".into()));
    // Relative paths are resolved against the config's directory.
    assert!(config.zones[0].file.ends_with("examples/example.net.zone"));
    assert!(config.zones[0].file.is_absolute());
    assert!(config.geoip[0].is_absolute());
}

/// Hickory's mutation test: an unknown key anywhere is an error naming it and its line.
#[test]
fn unknown_key_in_every_table_is_rejected() {
    let path = examples_dir().join("world.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut tried = 0;
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with('[') {
            continue;
        }
        let mut mutated: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        mutated.insert(i + 1, "bogus_key = 1".to_owned());
        let err = geolb_config::parse(&mutated.join("\n"), examples_dir().as_path()).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 1, "{err}");
        assert!(problems[0].message.contains("bogus_key"), "{err}");
        assert_eq!(problems[0].position.map(|p| p.0), Some(i + 2), "{err}");
        tried += 1;
    }
    assert!(tried > 10);
    // And at the top level.
    let err = geolb_config::parse(&format!("bogus_top = 1\n{text}"), &examples_dir()).unwrap_err();
    assert!(err.to_string().contains("unknown key `bogus_top`"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once_with_its_place() {
    let text = r#"
default_location = { pop = "nowhere" }
[[pops]]
id = "fra"
lat = 95.0
lon = 8.68
[[pops]]
id = "fra"
lat = 50.0
lon = 8.0
[[nodes]]
id = "n1"
pop = "ams"
ipv4 = "192.0.2.1"
[[nodes]]
id = "n2"
pop = "fra"
ipv4 = "not-an-ip"
[[nodes]]
id = "n3"
pop = "fra"
weight = 0
[[services]]
name = "cdn..example.net"
[[services]]
name = "www.example.net"
types = ["AAAA"]
answers = 9
all_down = "fallback_pool"
[[overrides]]
cidr = "198.51.100.7/24"
pop = "fra"
"#;
    let err = geolb_config::parse(text, Path::new("/etc/geolb")).unwrap_err();
    let rendered = err.to_string();
    let expect = [
        (2, "default_location.pop", "unknown pop `nowhere`"),
        (5, "pops[0].lat", "latitude 95 is outside"),
        (8, "pops[1].id", "duplicate pop id `fra`"),
        (13, "nodes[0].pop", "unknown pop `ams`"),
        (18, "nodes[1].ipv4", "invalid"),
        (19, "nodes[2]", "neither `ipv4` nor `ipv6`"),
        (22, "nodes[2].weight", "weight 0 is outside"),
        (24, "services[0].name", "empty label"),
        (27, "services[1].types", "answers AAAA but none of its nodes has `ipv6`"),
        (28, "services[1].answers", "answers 9 is outside"),
        (29, "services[1].all_down", "needs a non-empty `fallback_pool`"),
        (31, "overrides[0].cidr", "host bits set; did you mean `198.51.100.0/24`"),
    ];
    let problems = err.problems();
    for (line, path, msg) in expect {
        assert!(
            problems.iter().any(|p| p.path == path && p.position.map(|p| p.0) == Some(line) && p.message.contains(msg)),
            "missing {line} {path} {msg} in\n{rendered}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{rendered}");
}

#[test]
fn syntax_errors_have_positions() {
    let err = geolb_config::parse("[[pops]\nid = 1\n", Path::new("/")).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }));
    assert_eq!(err.problems()[0].position.map(|p| p.0), Some(1), "{err}");
}

#[test]
fn read_error_names_the_file() {
    let err = geolb_config::load(Path::new("/nonexistent/geolb.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/geolb.toml"), "{err}");
}

#[test]
fn for_test_is_valid() {
    let config = geolb_config::Config::for_test();
    assert_eq!(config.nodes.len(), 4);
}

#[test]
fn health_sections_merge_defaults_and_report_problems() {
    let dir = std::env::temp_dir().join(format!("geolb-config-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.key"), "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n")
        .unwrap();
    let base = r#"
default_location = { pop = "fra" }
[checks]
kind = "http"
path = "/health"
interval_ms = 500
timeout_ms = 400
[cluster]
id = "test"
key_file = "cluster.key"
seeds = ["127.0.0.1:7946"]
[prober]
id = "p1"
pop = "fra"
gossip_listen = "127.0.0.1:7946"
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
[[nodes]]
id = "fra-1"
pop = "fra"
ipv4 = "192.0.2.1"
[[nodes]]
id = "fra-2"
pop = "fra"
ipv4 = "192.0.2.2"
check = { kind = "tcp", port = 443, rise = 3, connection_reuse = 1 }
[[services]]
name = "cdn.example.net"
types = ["A"]
"#;
    let config = geolb_config::parse(base, &dir).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (&config.nodes[0].check, &config.nodes[1].check);
    assert_eq!((a.kind, a.port, a.path.as_str(), a.rise), (geolb_config::health::CheckKind::Http, 80, "/health", 2));
    assert_eq!((b.kind, b.port, b.rise), (geolb_config::health::CheckKind::Tcp, 443, 3));
    assert_eq!(b.interval, std::time::Duration::from_millis(500), "the node inherits [checks]");
    assert_eq!((a.connection_reuse, b.connection_reuse), (geolb_config::health::DEFAULT_CONNECTION_REUSE, 1));
    assert_eq!(config.cluster.as_ref().unwrap().key.len(), 32);
    assert_eq!(config.prober.as_ref().unwrap().pop, "fra");

    let broken = base
        .replace("timeout_ms = 400", "timeout_ms = 900\nconnection_reuse = 0")
        .replace("key_file = \"cluster.key\"", "key = \"abcd\"")
        .replace("pop = \"fra\"\ngossip_listen", "pop = \"ams\"\ngossip_listen");
    let err = geolb_config::parse(&broken, &dir).unwrap_err();
    let text = err.to_string();
    for want in [
        "checks.timeout_ms",
        "below interval_ms 500",
        "checks.connection_reuse",
        "connection_reuse 0 is outside 1..=10000",
        "cluster.key",
        "use at least 32",
        "prober.pop",
        "unknown pop `ams`",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A valid config: one PoP, three nodes inheriting an HTTP `[checks]`, a prober.
const THREE_NODES: &str = r#"
default_location = { pop = "fra" }
[checks]
kind = "http"
interval_ms = 500
timeout_ms = 400
[cluster]
id = "test"
key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
[prober]
id = "p1"
pop = "fra"
gossip_listen = "127.0.0.1:7946"
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
[[nodes]]
id = "fra-1"
pop = "fra"
ipv4 = "192.0.2.1"
[[nodes]]
id = "fra-2"
pop = "fra"
ipv4 = "192.0.2.2"
[[nodes]]
id = "fra-3"
pop = "fra"
ipv4 = "192.0.2.3"
[[services]]
name = "cdn.example.net"
types = ["A"]
"#;

#[test]
fn inherited_check_problems_are_reported_once_and_check_rules_hold() {
    let base = THREE_NODES;
    geolb_config::parse(base, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    let problems = |text: &str| geolb_config::parse(text, Path::new("/")).unwrap_err().problems().to_vec();

    // Three nodes inherit one bad [checks] value: one problem, at [checks].
    let found = problems(&base.replace("timeout_ms = 400", "timeout_ms = 900"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].path.as_str(), found[0].position.map(|p| p.0)), ("checks.timeout_ms", Some(6)));

    for (bad, path, message) in [
        ("expect_status = []", "checks.expect_status", "expect_status is empty"),
        ("expect_status = [200, 700]", "checks.expect_status", "expect_status 700 is not an HTTP status"),
    ] {
        let found = problems(&base.replace("timeout_ms = 400", &format!("timeout_ms = 400\n{bad}")));
        assert_eq!(found.len(), 1, "{bad}: {found:#?}");
        assert_eq!(found[0].path, path, "{bad}");
        assert!(found[0].message.contains(message), "{bad}: {found:#?}");
    }
    // A TCP check has no status to expect.
    geolb_config::parse(&base.replace("kind = \"http\"", "kind = \"tcp\"\nexpect_status = []"), Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}"));

    let found = problems(&base.replace("id = \"fra-3\"", "id = \"canary:fra-3\""));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "nodes[2].id");
    assert!(found[0].message.contains("keeps for its canaries"), "{found:#?}");

    let found = problems(&format!("{base}[quorum]\nstale_after_ms = 0\n"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "quorum.stale_after_ms");
    let quorum = geolb_config::parse(&format!("{base}[quorum]\nstale_after_ms = 1\ngrace_ms = 0\n"), Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}"))
        .quorum;
    assert_eq!((quorum.stale_after.as_millis(), quorum.grace.as_millis()), (1, 0), "grace 0 fails open at once");
}

#[test]
fn resolver_keys_changed_by_a_reload_are_named() {
    let old = geolb_config::Config::for_test().resolver;
    assert!(old.changed_keys(&old.clone()).is_empty());
    let mut new = old.clone();
    new.socket = Some("/run/geolb/other.sock".into());
    new.threads = old.threads + 1;
    assert_eq!(old.changed_keys(&new), ["socket", "threads"]);
}

#[test]
fn prober_keys_changed_by_a_reload_are_named() {
    let text = THREE_NODES;
    let prober =
        |text: &str| geolb_config::parse(text, Path::new("/")).unwrap_or_else(|e| panic!("{e}")).prober.unwrap();
    let old = prober(text);
    // Canaries follow reloads and the listen addresses may come from the command line.
    let same = prober(&text.replace(
        "gossip_listen = \"127.0.0.1:7946\"",
        "gossip_listen = \"127.0.0.1:7947\"\nadmin_listen = \"127.0.0.1:9000\"\ncanaries = [\"127.0.0.1:443\"]",
    ));
    assert!(old.changed_keys(&same).is_empty(), "{:?}", old.changed_keys(&same));
    let new = prober(
        &text.replace("pop = \"fra\"\ngossip_listen", "pop = \"fra\"\nmax_in_flight = 7\nthreads = 2\ngossip_listen"),
    );
    assert_eq!(old.changed_keys(&new), ["max_in_flight", "threads"]);
}

#[test]
fn prober_weights_default_to_one_and_must_be_numbers_above_zero() {
    let base = "default_location = { pop = \"fra\" }\n[[pops]]\nid = \"fra\"\nlat = 50.11\nlon = 8.68\n[[nodes]]\nid = \"fra-1\"\npop = \"fra\"\nipv4 = \"192.0.2.1\"\n";
    let config = geolb_config::parse(
        &format!("{base}[quorum.weights]\n\"prober-fra\" = 2.5\n\"prober-syd\" = 0.25\n"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(config.quorum.weight("prober-fra"), 2.5);
    assert_eq!(config.quorum.weight("prober-syd"), 0.25);
    assert_eq!(config.quorum.weight("prober-iad"), 1.0, "a prober not named weighs 1");

    let err = geolb_config::parse(
        &format!("{base}[quorum]\nweights = {{ a = -1.0, b = nan, c = inf, d = 0 }}\n"),
        Path::new("/"),
    )
    .unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 4, "{err}");
    for (p, prober) in problems.iter().zip(["a", "b", "c", "d"]) {
        assert_eq!(p.path, "quorum.weights", "{err}");
        assert!(p.message.contains(&format!("prober `{prober}`")) && p.message.contains("above 0"), "{err}");
    }
    let err = geolb_config::parse(&format!("{base}[quorum.weights]\np = \"heavy\"\n"), Path::new("/")).unwrap_err();
    assert!(err.to_string().contains("quorum.weights.p"), "{err}");
}
