//! The alert rules that ship in `deploy/prometheus/`: valid for `promtool check rules`, and
//! firing (and not firing) as their `promtool test rules` files say.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use geolb_tests::workspace_root;

fn promtool(args: &[&str], file: &std::path::Path) -> Result<()> {
    let out = Command::new("promtool")
        .args(args)
        .arg(file)
        .current_dir(file.parent().context("no parent")?)
        .output()
        .context("promtool is not installed (scripts/setup.sh installs prometheus)")?;
    ensure!(
        out.status.success(),
        "promtool {args:?} {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn every_shipped_rule_file_checks_and_passes_its_unit_tests() -> Result<()> {
    let dir = workspace_root().join("deploy/prometheus");
    let mut rules = 0;
    let mut tests = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.ends_with(".rules.test.yml") {
            promtool(&["test", "rules"], &path)?;
            tests += 1;
        } else if name.ends_with(".rules.yml") {
            promtool(&["check", "rules"], &path)?;
            let test = path.with_file_name(name.replace(".rules.yml", ".rules.test.yml"));
            ensure!(test.is_file(), "{} has no unit tests ({})", path.display(), test.display());
            rules += 1;
        }
    }
    ensure!(rules >= 1 && tests == rules, "{rules} rule files, {tests} test files in {}", dir.display());
    Ok(())
}
