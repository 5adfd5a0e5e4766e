//! The README's demo, run as a user runs it: the real `geolb-demo` binary with the real
//! `geolb-prober`s and `geolb-resolver` (built by `cargo build --bins`), and PowerDNS when it is
//! installed. It must play the failover scene, take commands on stdin, and stop everything it
//! started on Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// The demo's stdout, line by line, from a reader thread.
struct Output {
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Output {
    /// Reads lines until one contains `pattern`; returns it.
    fn until(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        loop {
            match self.lines.recv_timeout(timeout) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(pattern) {
                        return Ok(line);
                    }
                }
                Err(e) => bail!("no line with {pattern:?} ({e}); output so far:\n{}", self.seen.join("\n")),
            }
        }
    }
}

fn send(stdin: &mut ChildStdin, command: &str) -> Result<()> {
    writeln!(stdin, "{command}")?;
    stdin.flush()?;
    Ok(())
}

fn pids(lines: &[String]) -> Vec<u32> {
    lines.iter().filter_map(|l| l.split_once(" pid ")?.1.split_whitespace().next()?.parse().ok()).collect()
}

fn kill_children(child: &mut Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
}

#[test]
fn the_demo_moves_answers_takes_commands_and_stops_everything_on_ctrl_c() -> Result<()> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_geolb-demo"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start geolb-demo")?;
    let result = drive(&mut child);
    if result.is_err() {
        kill_children(&mut child);
    }
    result
}

fn drive(child: &mut Child) -> Result<()> {
    let stdout = child.stdout.take().context("no stdout")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo| {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = Output { lines: rx, seen: Vec::new() };
    let startup = Duration::from_secs(60);

    let files = out.until("files in ", startup)?;
    let dir = files.split_once("files in ").and_then(|(_, r)| r.strip_suffix("):")).context("no directory")?.to_owned();
    out.until("All 8 nodes are up", startup)?;
    let table = out.until("Tokyo", startup)?;
    ensure!(table.contains("PoP nrt"), "Tokyo's clients should get the nrt PoP: {table}");
    if geolb_tests::pdns_installed() {
        ensure!(out.seen.iter().any(|l| l.contains("asked from PowerDNS")), "PowerDNS is installed but not asked");
    }
    let london = out.seen.iter().find(|l| l.trim_start().starts_with("London")).context("no London row")?.clone();
    ensure!(london.contains("PoP lhr"), "London's clients should get the lhr PoP: {london}");

    // The scene: London moves within lhr, then to another PoP, then back to lhr.
    let within = out.until("   London → ", startup)?;
    ensure!(within.contains("PoP lhr"), "after one lhr node stops, London stays at lhr: {within}");
    let away = out.until("   London → ", startup)?;
    ensure!(!away.contains("PoP lhr") && away.contains("PoP fra"), "with lhr empty, London goes to fra: {away}");
    let back = out.until("   London → ", startup)?;
    ensure!(back.contains("PoP lhr"), "London comes back to lhr: {back}");
    // A change of the fleet configuration on a prober's API moves London at the resolver, and
    // its rollback brings it back.
    let placed = out.until("   London → ", startup)?;
    ensure!(placed.contains("PoP fra"), "the fleet change places London at fra: {placed}");
    let rolled = out.until("   London → ", startup)?;
    ensure!(rolled.contains("PoP lhr"), "the rollback brings London back to lhr: {rolled}");
    out.until("Commands here:", startup)?;
    let started = pids(&out.seen);
    ensure!(started.len() >= 4, "the demo should list its processes with pids: {started:?}");

    // Commands on stdin.
    send(&mut stdin, "launch missiles")?;
    out.until("error: unknown command", startup)?;
    send(&mut stdin, "stop nrt-1")?;
    out.until("ok", startup)?;
    send(&mut stdin, "stop nrt-9")?;
    let unknown = out.until("error:", startup)?;
    ensure!(unknown.contains("nrt-1") && unknown.contains("nrt-2"), "an unknown node lists the nodes: {unknown}");

    // Ctrl-C stops every process the demo started and removes its directory.
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status()?;
    ensure!(status.success(), "kill -INT failed");
    out.until("Stopped ", Duration::from_secs(20))?;
    let exit = child.wait()?;
    ensure!(exit.success(), "the demo exited with {exit} after Ctrl-C");
    for pid in started {
        ensure!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} is still running after Ctrl-C");
    }
    ensure!(!Path::new(&dir).exists(), "{dir} is left behind");
    Ok(())
}
