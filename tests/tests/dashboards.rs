//! The Grafana dashboards against a real Prometheus (Debian `prometheus`): it scrapes a live
//! stack — three probers checking stand-in nodes, two resolvers each behind a real PowerDNS —
//! and every query of every panel of every dashboard in `dashboards/` must parse and return
//! data. A panel naming a metric the code does not export fails here.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use geolb_tests::cluster::{Cluster, http, start_two_pops};
use geolb_tests::{KillOnDrop, unique_loopback, workspace_root};
use ipnet::IpNet;
use tokio::time::Instant;

/// Scrape interval of the test's Prometheus.
const SCRAPE_S: u64 = 1;
/// What Grafana's `$__rate_interval` becomes here: four scrapes and then some.
const RATE_INTERVAL: &str = "10s";

/// Every panel query of a dashboard: (panel title, expression with Grafana's interval
/// variables replaced).
fn panel_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$__rate_interval", RATE_INTERVAL)
                    .replace("$__interval", RATE_INTERVAL)
                    .replace("$__range", "1h");
                out.push((title.clone(), expr));
            }
        }
    }
    out
}

/// `s` percent-encoded for a URL query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` on Prometheus's API, as JSON.
async fn api(prometheus: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let (status, body) = http(prometheus, "GET", path, None).await?;
    let start = body.find('{').with_context(|| format!("HTTP {status}, no JSON: {body}"))?;
    let end = body.rfind('}').context("no JSON")?;
    serde_json::from_str(&body[start..=end]).with_context(|| format!("HTTP {status}: {body}"))
}

/// Starts Prometheus scraping `targets` (admin APIs) every second, on its own loopback address.
async fn start_prometheus(cluster: &Cluster, targets: &[SocketAddr]) -> Result<(KillOnDrop, SocketAddr)> {
    let listen = SocketAddr::from((unique_loopback(), 9090));
    let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    let config = format!(
        "global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\nscrape_configs:\n  - job_name: geolb\n    static_configs:\n      - targets: [{list}]\n"
    );
    let path = cluster.dir.join("prometheus.yml");
    std::fs::write(&path, config)?;
    let process = KillOnDrop::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!("--storage.tsdb.path={}", cluster.dir.join("prometheus-data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn"),
        cluster.dir.path(),
    )
    .context("is Debian's prometheus installed? scripts/setup.sh installs it")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http(listen, "GET", "/-/ready", None).await {
            return Ok((process, listen));
        }
        if Instant::now() > deadline {
            bail!("prometheus not ready in 30 s:\n{}", process.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_query_returns_data_on_a_real_prometheus() -> Result<()> {
    let (cluster, _servers) = start_two_pops(3, None, "198.51.100.0/24").await?;
    let targets: Vec<SocketAddr> = cluster.probers.iter().chain(&cluster.resolvers).map(|m| m.admin).collect();
    let (_prometheus, prometheus) = start_prometheus(&cluster, &targets).await?;

    // Traffic while Prometheus scrapes: lookups through every PowerDNS.
    let client: IpNet = "198.51.100.0/24".parse()?;
    let queries = {
        let pdns: Vec<_> = cluster.resolvers.iter().filter_map(|r| r.pdns.as_ref()).collect();
        ensure!(pdns.len() == 2, "a resolver without PowerDNS");
        async move {
            for _ in 0..40 {
                for p in &pdns {
                    p.query("cdn.example.net.", "A", Some(client)).await?;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            anyhow::Ok(())
        }
    };
    // Meanwhile: every target up, then enough samples for the rate windows.
    let scraped = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = api(prometheus, &format!("/api/v1/query?query={}", encode("sum(up)"))).await?;
            let n = up["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            if n as usize == targets.len() {
                break;
            }
            ensure!(Instant::now() < deadline, "targets not all up in 30 s: {up}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(8)).await;
        anyhow::Ok(())
    };
    let (queried, scraped) = tokio::join!(queries, scraped);
    queried?;
    scraped?;

    let mut checked = 0;
    let mut failures = Vec::new();
    let dir = workspace_root().join("dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    ensure!(files.len() >= 3, "expected the overview, health and cluster dashboards in {}", dir.display());
    for file in &files {
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file)?)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        let queries = panel_queries(&dashboard);
        ensure!(!queries.is_empty(), "{}: no panel queries", file.display());
        for (title, expr) in queries {
            checked += 1;
            let reply = api(prometheus, &format!("/api/v1/query?query={}", encode(&expr))).await?;
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if reply["status"] != "success" {
                failures.push(format!("{name} / {title}: {expr}: {}", reply["error"]));
            } else if reply["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                failures.push(format!("{name} / {title}: {expr}: no data"));
            }
        }
    }
    ensure!(failures.is_empty(), "{} of {checked} panel queries failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{checked} panel queries of {} dashboards returned data", files.len());
    Ok(())
}
