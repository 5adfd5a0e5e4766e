//! The programs' logs as files and the journal get them: no terminal colours unless stderr is a
//! terminal, and one JSON object per line with `--log-format json`.

use std::time::Duration;

use anyhow::{Result, ensure};

async fn resolver_log(extra: &[&str]) -> Result<String> {
    let dir = geolb_tests::TestDir::new("geolb-logs")?;
    let config = geolb_tests::stack::world_config(&dir, "")?;
    let log = dir.join("stderr.log");
    let file = std::fs::File::create(&log)?;
    let mut child = tokio::process::Command::new(geolb_tests::workspace_bin("geolb-resolver")?)
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--socket"])
        .arg(dir.join("pdns.sock"))
        .args(extra)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()?;
    let started = geolb_tests::restart::wait_for_line(&log, 0, "listening on http://", Duration::from_secs(20)).await;
    child.start_kill()?;
    let _ = child.wait().await;
    started?;
    Ok(std::fs::read_to_string(&log)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_gets_no_terminal_colours() -> Result<()> {
    let text = resolver_log(&[]).await?;
    ensure!(!text.contains('\u{1b}'), "escape sequences in a log file:\n{text}");
    ensure!(text.contains(" INFO "), "no level in the lines:\n{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_object_per_line() -> Result<()> {
    let text = resolver_log(&["--log-format", "json"]).await?;
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{e}: {line}"))?;
        ensure!(value["level"].is_string() && value["fields"]["message"].is_string(), "not a log object: {line}");
        lines += 1;
    }
    ensure!(lines >= 2 && text.contains("listening on http://"), "{lines} lines:\n{text}");
    Ok(())
}
