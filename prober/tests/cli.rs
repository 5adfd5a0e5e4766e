//! The `geolb-prober` binary's config checks and exit codes.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::Command;

fn check(example: &str) -> std::process::Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples").join(example);
    Command::new(env!("CARGO_BIN_EXE_geolb-prober")).arg("--config").arg(path).arg("--check-config").output().unwrap()
}

#[test]
fn the_prober_example_passes_and_a_config_without_prober_is_refused() {
    let ok = check("prober-fra.toml");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("config ok: 4 nodes to check"));
    // prober-fra.toml has no [geoip]: the prober places no client, so it does not warn.
    assert!(!stdout.contains("GeoIP"), "{stdout}");
    let no_prober = check("world.toml");
    assert_eq!(no_prober.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_prober.stderr).contains("a prober needs [prober] and [cluster]"));
}
