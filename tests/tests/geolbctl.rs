//! `geolbctl` end to end: the real binary against a real cluster (two probers and a resolver
//! behind a real PowerDNS) keeping its fleet document in the embedded store. Reads (JSON and
//! TOML), diffs, applies that move a PowerDNS answer, the history, a rollback, node changes and
//! drains, and every refusal the API gives a writer: a stale version (412, naming who wrote
//! first and what they changed), an invalid document (422, every problem's path), a read-only
//! token (403), and usage errors. A member on the `file` store is read but never written (409).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use geolb_tests::cluster::{Cluster, ClusterSpec, NodeServer, state, two_pops};
use geolb_tests::{unique_loopback, workspace_bin};
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::time::Instant;

const FRA_CLIENT: &str = "198.51.100.0/24";

/// How one run of geolbctl ended.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// geolbctl pointed at one member with the admin token (`GEOLB_URL`, `GEOLB_TOKEN_FILE`).
struct Ctl {
    bin: PathBuf,
    url: String,
    token_file: PathBuf,
}

impl Ctl {
    async fn run(&self, args: &[&str]) -> Result<Run> {
        self.run_with(args, &[]).await
    }

    /// Runs geolbctl with `args` and extra environment (an empty value removes the variable;
    /// the caller's GEOLB_TOKEN and EDITOR never reach it).
    async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Run> {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env_remove("GEOLB_TOKEN")
            .env_remove("EDITOR")
            .env("GEOLB_URL", &self.url)
            .env("GEOLB_TOKEN_FILE", &self.token_file)
            .env("GEOLBCTL", &self.bin)
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            if v.is_empty() {
                command.env_remove(k);
            } else {
                command.env(k, v);
            }
        }
        let output = tokio::task::spawn_blocking(move || command.output()).await??;
        Ok(Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// `config get`: the document and the version on stderr.
    async fn document(&self) -> Result<(Value, u64)> {
        let r = self.run(&["config", "get"]).await?;
        ensure!(r.code == 0, "{r}");
        let version = r
            .stderr
            .trim()
            .strip_prefix("version ")
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no version on stderr: {r}"))?;
        Ok((serde_json::from_str(&r.stdout)?, version))
    }
}

/// A run that succeeded; its stdout.
fn ok(r: Run) -> Result<String> {
    ensure!(r.code == 0, "{r}");
    Ok(r.stdout)
}

/// The fra client's answer from the resolver's PowerDNS.
async fn answer(cluster: &Cluster) -> Result<IpAddr> {
    let net: IpNet = FRA_CLIENT.parse()?;
    let pdns = cluster.resolvers[0].pdns.as_ref().context("no pdns")?;
    let resp = pdns.query("cdn.example.net.", "A", Some(net)).await?;
    ensure!(resp.rcode == "NOERROR", "{resp}");
    resp.addresses().first().copied().with_context(|| format!("no address: {resp}"))
}

/// Waits until the fra client is answered with one of `want`.
async fn until_answer(cluster: &Cluster, want: &[IpAddr]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = answer(cluster).await?;
        if want.contains(&a) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the answer is still {a}, want one of {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the resolver's state shows `node` drained (or not).
async fn until_drained(cluster: &Cluster, node: &str, drained: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = state(cluster.resolvers[0].admin).await?;
        if s["nodes"][node]["drained"] == drained {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{node} drained is not {drained}: {:#}", s["nodes"][node]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The line of `text` that starts (after spaces) with `version`.
fn row(text: &str, version: u64) -> Option<&str> {
    text.lines().find(|l| l.trim_start().starts_with(&format!("{version} ")))
}

/// The path in "your edit is kept in PATH: …".
fn kept(stderr: &str) -> Result<PathBuf> {
    let rest = stderr.split("your edit is kept in ").nth(1).context("no kept file named")?;
    let path = rest.split(": ").next().context("no path")?;
    Ok(PathBuf::from(path))
}

/// An editor: a shell script run as `EDITOR`.
fn editor(dir: &Path, name: &str, body: &str) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geolbctl_reads_writes_diffs_rolls_back_and_reports_every_refusal() -> Result<()> {
    let (spec, servers) = two_pops(None, FRA_CLIENT, Some("store = \"embedded\"".to_owned())).await?;
    let cluster = Cluster::start(spec, 2, 1).await?;
    let fra: Vec<IpAddr> = servers[..2].iter().map(|s| s.addr.ip()).collect();
    let syd: Vec<IpAddr> = servers[2..].iter().map(|s| s.addr.ip()).collect();
    until_answer(&cluster, &fra).await?;
    let started = Instant::now();

    let ctl = Ctl {
        bin: workspace_bin("geolbctl")?,
        url: format!("http://{}", cluster.resolvers[0].admin),
        token_file: cluster.dir.join("admin.token"),
    };
    let files = cluster.dir.path();

    // Usage errors exit 2.
    for args in [&["config", "frobnicate"][..], &["nodes", "add", "x", "--pop", "fra"], &["nodes", "weight", "x", "y"]]
    {
        let r = ctl.run(args).await?;
        ensure!(r.code == 2, "{args:?}: {r}");
    }

    // get: JSON, and the same document as TOML; version 1, seeded from the members' files.
    let (v1, version) = ctl.document().await?;
    ensure!(version == 1 && v1["pops"].as_array().map(Vec::len) == Some(2), "{version} {v1:#}");
    let toml_text = ok(ctl.run(&["config", "get", "--toml"]).await?)?;
    let from_toml = serde_json::to_value(toml::from_str::<toml::Table>(&toml_text)?)?;
    ensure!(from_toml == v1, "TOML and JSON differ:\n{toml_text}\n{v1:#}");

    // diff: the same document (as TOML) exits 0; a changed one exits 1 with a unified diff.
    let same = files.join("same.toml");
    std::fs::write(&same, &toml_text)?;
    let r = ctl.run(&["config", "diff", same.to_str().context("path")?]).await?;
    ensure!(r.code == 0 && r.stdout.is_empty(), "{r}");
    let mut moved = v1.clone();
    moved["overrides"] = json!([{ "cidr": FRA_CLIENT, "pop": "syd" }, { "cidr": "203.0.113.0/24", "pop": "syd" }]);
    let moved_toml = files.join("moved.toml");
    std::fs::write(&moved_toml, toml::to_string(&moved)?)?;
    let moved_path = moved_toml.to_str().context("path")?;
    let r = ctl.run(&["config", "diff", moved_path]).await?;
    ensure!(r.code == 1, "{r}");
    ensure!(r.stdout.starts_with("--- version 1\n+++ ") && r.stdout.contains("\n-      \"pop\": \"fra\""), "{r}");
    ensure!(r.stdout.contains("\n+      \"pop\": \"syd\""), "{r}");

    // apply: a TOML file moves the fra client to syd in PowerDNS's answer.
    let out = ok(ctl.run(&["config", "apply", moved_path, "-m", "move the fra client to syd"]).await?)?;
    ensure!(out.starts_with("wrote version 2 "), "{out}");
    until_answer(&cluster, &syd).await?;
    let (now, version) = ctl.document().await?;
    ensure!(version == 2 && now == moved, "{version} {now:#}");
    let r = ctl.run(&["config", "diff", moved_path]).await?;
    ensure!(r.code == 0, "{r}");
    let out = ok(ctl.run(&["config", "apply", moved_path]).await?)?;
    ensure!(out.contains("already this document: nothing written"), "{out}");

    // history: author and message of each version.
    let out = ok(ctl.run(&["config", "history"]).await?)?;
    ensure!(out.starts_with("VERSION  TIME (UTC)"), "{out}");
    let two = row(&out, 2).context("no version 2")?;
    ensure!(two.contains(" admin ") && two.ends_with("move the fra client to syd"), "{out}");
    ensure!(row(&out, 1).is_some_and(|l| l.contains(" file ") && l.contains("seeded from")), "{out}");

    // rollback: version 1's document again, as version 3; the answer comes back to fra.
    let out = ok(ctl.run(&["config", "rollback", "1"]).await?)?;
    ensure!(out.starts_with("wrote version 3 ") && out.contains("rollback to version 1"), "{out}");
    until_answer(&cluster, &fra).await?;
    let (now, version) = ctl.document().await?;
    ensure!(version == 3 && now == v1, "{version} {now:#}");
    let out = ok(ctl.run(&["config", "history"]).await?)?;
    ensure!(row(&out, 3).is_some_and(|l| l.ends_with("rollback to version 1")), "{out}");

    // nodes: add, a duplicate, reweight, an unknown node, remove.
    let spare = unique_loopback().to_string();
    let out = ok(ctl.run(&["nodes", "add", "fra-3", "--pop", "fra", "--ipv4", &spare, "--weight", "50"]).await?)?;
    ensure!(out.starts_with("wrote version 4 ") && out.contains("add node fra-3 at PoP fra"), "{out}");
    let (now, _) = ctl.document().await?;
    ensure!(now["nodes"][4] == json!({ "id": "fra-3", "pop": "fra", "ipv4": spare, "weight": 50 }), "{now:#}");
    let r = ctl.run(&["nodes", "add", "fra-3", "--pop", "syd", "--ipv4", &spare]).await?;
    ensure!(r.code == 1 && r.stderr.contains("node `fra-3` already exists"), "{r}");
    let out = ok(ctl.run(&["nodes", "weight", "fra-3", "200"]).await?)?;
    ensure!(out.starts_with("wrote version 5 "), "{out}");
    let (now, _) = ctl.document().await?;
    ensure!(now["nodes"][4]["weight"] == 200, "{now:#}");
    let r = ctl.run(&["nodes", "weight", "nope", "3"]).await?;
    ensure!(r.code == 1 && r.stderr.contains("unknown node `nope`"), "{r}");
    let out = ok(ctl.run(&["nodes", "remove", "fra-3"]).await?)?;
    ensure!(out.starts_with("wrote version 6 "), "{out}");
    let (now, version) = ctl.document().await?;
    ensure!(version == 6 && now == v1, "{version} {now:#}");

    // 422 from a node change: every problem by its path; nothing stored.
    let r = ctl.run(&["nodes", "weight", "fra-1", "0"]).await?;
    ensure!(r.code == 1 && r.stderr.contains("nothing was stored") && r.stderr.contains("nodes[0].weight: "), "{r}");
    // 422 from a file, with two problems.
    let mut bad = v1.clone();
    bad["nodes"][0]["pop"] = json!("ams");
    bad["nodes"][1]["weight"] = json!("heavy");
    let bad_json = files.join("bad.json");
    std::fs::write(&bad_json, bad.to_string())?;
    let r = ctl.run(&["config", "apply", bad_json.to_str().context("path")?]).await?;
    ensure!(r.code == 1 && r.stderr.contains("  nodes[0].pop: ") && r.stderr.contains("  nodes[1].weight: "), "{r}");
    ensure!(ctl.document().await?.1 == 6, "a refused write was stored");

    // drain and undrain, through another member: the answer leaves fra while both are drained.
    let prober = format!("http://{}", cluster.probers[0].admin);
    for node in ["fra-1", "fra-2"] {
        let out = ok(ctl.run(&["--url", &prober, "nodes", "drain", node]).await?)?;
        ensure!(out.starts_with(&format!("node {node} drained at ")), "{out}");
    }
    until_drained(&cluster, "fra-1", true).await?;
    until_answer(&cluster, &syd).await?;
    for node in ["fra-1", "fra-2"] {
        ok(ctl.run(&["--url", &prober, "nodes", "undrain", node]).await?)?;
    }
    until_drained(&cluster, "fra-1", false).await?;
    until_answer(&cluster, &fra).await?;
    let r = ctl.run(&["nodes", "drain", "nope"]).await?;
    ensure!(r.code == 1 && r.stderr.contains("unknown node `nope`"), "{r}");

    // 412: a write pinned to an old version names who wrote since and shows what changed.
    ok(ctl.run(&["nodes", "weight", "fra-2", "30", "-m", "lighter fra-2"]).await?)?;
    let r = ctl.run(&["config", "apply", moved_path, "--if-match", "1"]).await?;
    ensure!(r.code == 1, "{r}");
    ensure!(
        r.stderr.contains("the document changed since version 1: admin wrote version 7 at ")
            && r.stderr.contains("(\"lighter fra-2\")"),
        "{r}"
    );
    ensure!(
        r.stderr.contains("--- version 1\n+++ version 7 by admin") && r.stderr.contains("+      \"weight\": 30"),
        "{r}"
    );

    // edit: unchanged writes nothing; a change is written; TOML round trip.
    let r = ctl.run_with(&["config", "edit"], &[("EDITOR", "true")]).await?;
    ensure!(r.code == 0 && r.stdout.contains("no changes: nothing written (still version 7)"), "{r}");
    let ttl9 = editor(files, "ttl9.sh", "sed -i 's/^ttl = 5$/ttl = 9/' \"$1\"")?;
    let out = ok(ctl.run_with(&["config", "edit", "-m", "ttl 9"], &[("EDITOR", &ttl9)]).await?)?;
    ensure!(out.starts_with("wrote version 8 "), "{out}");
    let (now, _) = ctl.document().await?;
    ensure!(now["services"][0]["ttl"] == 9, "{now:#}");

    // edit, while someone else writes: 412 naming them, the diff of their change as TOML, and
    // the edit kept in a file that can be applied over their version.
    let racing = editor(
        files,
        "racing.sh",
        "\"$GEOLBCTL\" nodes weight syd-1 40 -m 'concurrent change' >/dev/null\nsed -i 's/^ttl = 9$/ttl = 11/' \"$1\"",
    )?;
    let r = ctl.run_with(&["config", "edit"], &[("EDITOR", &racing)]).await?;
    ensure!(r.code == 1, "{r}");
    ensure!(r.stderr.contains("admin wrote version 9 at ") && r.stderr.contains("(\"concurrent change\")"), "{r}");
    ensure!(r.stderr.contains("+++ version 9 by admin") && r.stderr.contains("\n+weight = 40"), "{r}");
    let kept_file = kept(&r.stderr)?;
    ensure!(std::fs::read_to_string(&kept_file)?.contains("ttl = 11"), "{}", kept_file.display());
    let out = ok(ctl.run(&["config", "apply", kept_file.to_str().context("path")?]).await?)?;
    ensure!(out.starts_with("wrote version 10 "), "{out}");
    let (now, _) = ctl.document().await?;
    ensure!(now["services"][0]["ttl"] == 11, "{now:#}");
    std::fs::remove_file(&kept_file)?;

    // edit into an invalid document: 422 with every problem's path; the edit is kept.
    let ams = editor(files, "ams.sh", "sed -i 's/^pop = \"fra\"$/pop = \"ams\"/' \"$1\"")?;
    let r = ctl.run_with(&["config", "edit"], &[("EDITOR", &ams)]).await?;
    ensure!(r.code == 1 && r.stderr.contains("  nodes[0].pop: ") && r.stderr.contains("  nodes[1].pop: "), "{r}");
    let kept_file = kept(&r.stderr)?;
    ensure!(r.stderr.contains("--if-match 10") && kept_file.is_file(), "{r}");
    std::fs::remove_file(&kept_file)?;

    // Tokens: a read-only token reads but may not write; no token is told how to give one.
    let viewer = cluster.dir.join("viewer.token");
    let viewer = viewer.to_str().context("path")?;
    ok(ctl.run(&["--token-file", viewer, "config", "history"]).await?)?;
    let r = ctl.run(&["--token-file", viewer, "nodes", "weight", "fra-1", "3"]).await?;
    ensure!(r.code == 1 && r.stderr.contains("token `viewer` is read-only"), "{r}");
    let r = ctl.run_with(&["config", "get"], &[("GEOLB_TOKEN_FILE", "")]).await?;
    ensure!(r.code == 1 && r.stderr.contains("missing or wrong bearer token (no token given"), "{r}");
    ensure!(ctl.document().await?.1 == 10, "a refused write was stored");

    eprintln!("geolbctl steps took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_on_the_file_store_is_read_but_never_written() -> Result<()> {
    let server = NodeServer::start().await?;
    let spec = ClusterSpec {
        pops: vec![("fra", 50.11, 8.68, "eu")],
        nodes: vec![("fra-1".into(), "fra", server.addr)],
        overrides: vec![],
        blind_prober: None,
        fleet: None,
    };
    let cluster = Cluster::start(spec, 1, 0).await?;
    let ctl = Ctl {
        bin: workspace_bin("geolbctl")?,
        url: format!("http://{}", cluster.probers[0].admin),
        token_file: cluster.dir.join("admin.token"),
    };
    let r = ctl.run(&["config", "get"]).await?;
    ensure!(r.code == 0 && r.stderr.contains("version 0 (") && r.stderr.contains("store = \"file\""), "{r}");
    let r = ctl.run_with(&["config", "edit"], &[("EDITOR", "false")]).await?;
    ensure!(r.code == 1 && r.stderr.contains("takes its fleet document from its own file"), "{r}");
    let r = ctl.run(&["nodes", "weight", "fra-1", "3"]).await?;
    ensure!(r.code == 1 && r.stderr.contains("comes from its local file ([fleet] store = \"file\")"), "{r}");
    Ok(())
}
