//! `[admin]`: token files as read at each load (a removed or emptied file revokes its token, an
//! unreadable or weak one refuses the config), and the listeners' connection limits.

use std::path::Path;
use std::time::Duration;

use geolb_config::ConnectionLimits;

/// The fleet tables, first: the top-level `default_location` must come before any table.
const FLEET: &str = r#"
default_location = { pop = "fra" }
[[pops]]
id = "fra"
lat = 50.11
lon = 8.68
"#;

fn parse(dir: &Path, local: &str) -> Result<geolb_config::Config, String> {
    geolb_config::parse(&format!("{FLEET}\n{local}"), dir).map_err(|e| e.to_string())
}

const TOKENS: &str = r#"
[admin]
token_file = "admin.token"
[[admin.tokens]]
name = "viewer"
file = "viewer.token"
access = "read-only"
"#;

#[test]
fn a_removed_or_emptied_token_file_revokes_its_token_and_keeps_it_watched() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("admin.token"), "0123456789abcdef-admin\n").expect("write");
    std::fs::write(dir.path().join("viewer.token"), "0123456789abcdef-viewer").expect("write");
    let config = parse(dir.path(), TOKENS).expect("valid");
    assert!(config.admin.token("0123456789abcdef-admin").is_some_and(|t| t.name == "admin" && t.write));
    assert!(config.admin.revoked.is_empty());

    // The file is deleted: the config still loads, and the token is gone.
    std::fs::remove_file(dir.path().join("admin.token")).expect("remove");
    let config = parse(dir.path(), TOKENS).expect("a missing token file does not refuse the config");
    assert!(config.admin.token("0123456789abcdef-admin").is_none(), "the removed token still works");
    assert!(config.admin.token("0123456789abcdef-viewer").is_some_and(|t| t.name == "viewer" && !t.write));
    assert_eq!(config.admin.revoked, [("admin".to_owned(), dir.path().join("admin.token"))]);
    assert!(
        config.warnings.iter().any(|w| w.contains("admin token `admin` is revoked") && w.contains("admin.token")),
        "{:?}",
        config.warnings
    );
    // Still watched: writing a secret into it brings the token back at the next reload.
    let watched: Vec<_> = config.admin.token_files().cloned().collect();
    assert_eq!(watched, [dir.path().join("viewer.token"), dir.path().join("admin.token")]);

    // Emptied (`: > viewer.token`) is revoked too.
    std::fs::write(dir.path().join("viewer.token"), " \n").expect("write");
    let config = parse(dir.path(), TOKENS).expect("valid");
    assert!(config.admin.tokens.is_empty(), "{:?}", config.admin.tokens);
    assert_eq!(config.admin.revoked.len(), 2);

    // A new secret in the file: the token is back.
    std::fs::write(dir.path().join("admin.token"), "fedcba9876543210-admin").expect("write");
    let config = parse(dir.path(), TOKENS).expect("valid");
    assert!(config.admin.token("fedcba9876543210-admin").is_some());
}

#[test]
fn an_unreadable_or_weak_token_file_refuses_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("admin.token"), "short").expect("write");
    std::fs::write(dir.path().join("viewer.token"), "0123456789abcdef-viewer").expect("write");
    let e = parse(dir.path(), TOKENS).expect_err("a short token is refused");
    assert!(e.contains("shorter than 16 characters"), "{e}");
    // A directory where the file should be cannot be read.
    std::fs::remove_file(dir.path().join("admin.token")).expect("remove");
    std::fs::create_dir(dir.path().join("admin.token")).expect("mkdir");
    let e = parse(dir.path(), TOKENS).expect_err("an unreadable token is refused");
    assert!(e.contains("cannot read admin token"), "{e}");
}

#[test]
fn a_revoked_token_keeps_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = r#"
[admin]
token_file = "gone.token"
[[admin.tokens]]
name = "admin"
file = "other.token"
access = "read-only"
"#;
    std::fs::write(dir.path().join("other.token"), "0123456789abcdef-other").expect("write");
    let e = parse(dir.path(), local).expect_err("two tokens named admin");
    assert!(e.contains("two tokens are named `admin`"), "{e}");
}

#[test]
fn connection_limits_are_read_with_their_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = parse(dir.path(), "").expect("valid");
    assert_eq!(config.admin.limits, ConnectionLimits::ADMIN);
    assert_eq!(config.resolver.limits, ConnectionLimits::HTTP);
    let local = r#"
[resolver]
header_timeout_ms = 500
idle_timeout_ms = 1500
max_connections = 7
[admin]
header_timeout_ms = 250
idle_timeout_ms = 250
max_connections = 3
"#;
    let config = parse(dir.path(), local).expect("valid");
    assert_eq!(
        config.resolver.limits,
        ConnectionLimits {
            header_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(1500),
            max_connections: 7
        }
    );
    assert_eq!(
        config.admin.limits,
        ConnectionLimits {
            header_timeout: Duration::from_millis(250),
            idle_timeout: Duration::from_millis(250),
            max_connections: 3
        }
    );
    let mut changed = config.resolver.clone();
    changed.limits.max_connections = 8;
    changed.limits.idle_timeout = Duration::from_secs(2);
    assert_eq!(config.resolver.changed_keys(&changed), ["idle_timeout_ms", "max_connections"]);

    let e = parse(dir.path(), "[admin]\nmax_connections = 0\nheader_timeout_ms = 20\n").expect_err("out of range");
    assert!(e.contains("admin.max_connections") && e.contains("outside 1 to 1000000"), "{e}");
    assert!(e.contains("admin.header_timeout_ms") && e.contains("outside 100 to 3600000"), "{e}");
    let e = parse(dir.path(), "[resolver]\nheader_timeout_ms = 20000\nidle_timeout_ms = 5000\n")
        .expect_err("idle < header");
    assert!(e.contains("resolver.idle_timeout_ms") && e.contains("shorter than header_timeout_ms 20000"), "{e}");
}
