//! The fleet configuration end to end: three probers and two resolvers (each behind a real
//! PowerDNS) keep the fleet document in the embedded store, seeded from their files. A change
//! made over one member's admin API reaches every PowerDNS answer; refusals store nothing; a
//! member that cannot apply a version keeps its last one and says why; a restart serves the
//! stored version at once; a corrupt stored version is fetched again from a peer.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use geolb_tests::cluster::{ADMIN_TOKEN, Cluster, VIEWER_TOKEN, http_request, start_two_pops_with, state};
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::time::Instant;

const FRA_CLIENT: &str = "198.51.100.0/24";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The JSON of an answer body (the part between the first `{`/`[` and the last `}`/`]`).
fn json_of(body: &str) -> Result<Value> {
    let start = body.find(['{', '[']).context("no JSON")?;
    let end = body.rfind(['}', ']']).context("no JSON")?;
    Ok(serde_json::from_str(&body[start..=end])?)
}

/// `GET /api/v1/config` with `token`: (status, ETag, document).
async fn get_config(admin: std::net::SocketAddr, token: &str) -> Result<(u16, String, Value)> {
    let auth = bearer(token);
    let (status, head, body) = http_request(admin, "GET", "/api/v1/config", &[("Authorization", &auth)], "").await?;
    let etag = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("etag:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let doc = if status == 200 { json_of(&body)? } else { Value::Null };
    Ok((status, etag, doc))
}

/// A write: (status, body as JSON).
async fn write(
    admin: std::net::SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Result<(u16, Value)> {
    let (status, _, text) = http_request(admin, method, "/api/v1/config", headers, &body.to_string()).await?;
    Ok((status, json_of(&text).unwrap_or(Value::Null)))
}

/// The fra client's answer from every resolver's PowerDNS.
async fn answers(cluster: &Cluster) -> Result<Vec<IpAddr>> {
    let net: IpNet = FRA_CLIENT.parse()?;
    let mut out = Vec::new();
    for r in &cluster.resolvers {
        let resp = r.pdns.as_ref().context("no pdns")?.query("cdn.example.net.", "A", Some(net)).await?;
        ensure!(resp.rcode == "NOERROR", "{resp}");
        out.push(*resp.addresses().first().with_context(|| format!("no address: {resp}"))?);
    }
    Ok(out)
}

/// Waits until every resolver's PowerDNS answers the fra client with one of `want`.
async fn until_answers(cluster: &Cluster, within: Duration, want: &[IpAddr]) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let a = answers(cluster).await?;
        if a.iter().all(|ip| want.contains(ip)) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("answers still {a:?} after {within:?}, want one of {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the member at `admin` says every live member applied `version`.
async fn until_in_step(admin: std::net::SocketAddr, version: u64, within: Duration) -> Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let s = state(admin).await?;
        let all = s["members"].as_array().context("members")?;
        if s["config"]["applied"]["version"] == version
            && all.iter().filter(|m| m["live"] == true).all(|m| m["config_applied"]["version"] == version)
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("members not all on version {version} within {within:?}: {:#}", s["members"]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn history_versions(history: &Value) -> Vec<u64> {
    history.as_array().map(|h| h.iter().filter_map(|v| v["version"].as_u64()).collect()).unwrap_or_default()
}

async fn history(admin: std::net::SocketAddr) -> Result<Value> {
    let auth = bearer(VIEWER_TOKEN);
    let (status, _, body) =
        http_request(admin, "GET", "/api/v1/config/history", &[("Authorization", &auth)], "").await?;
    ensure!(status == 200, "{status} {body}");
    json_of(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_on_any_member_reaches_every_answer_and_refusals_store_nothing() -> Result<()> {
    let (mut cluster, servers) =
        start_two_pops_with(3, None, FRA_CLIENT, Some("store = \"embedded\"".to_owned())).await?;
    let fra: Vec<IpAddr> = servers[..2].iter().map(|s| s.addr.ip()).collect();
    let syd: Vec<IpAddr> = servers[2..].iter().map(|s| s.addr.ip()).collect();
    until_answers(&cluster, Duration::from_secs(20), &fra).await?;

    // Every member seeded version 1 from the same tables: one hash, nothing to converge.
    let (admin_r0, admin_p0) = (cluster.resolvers[0].admin, cluster.probers[0].admin);
    let s = until_in_step(admin_r0, 1, Duration::from_secs(10)).await?;
    ensure!(s["config"]["store"] == "embedded" && s["config"]["in_step"] == true, "{:#}", s["config"]);
    let (status, etag, doc) = get_config(admin_r0, VIEWER_TOKEN).await?;
    ensure!(status == 200 && etag == "\"1\"", "{status} {etag}");
    ensure!(doc["pops"].as_array().map(Vec::len) == Some(2), "{doc:#}");
    ensure!(doc.get("cluster").is_none() && doc.get("member").is_none(), "local tables in the document: {doc:#}");

    // Refusals: no token, a read-only token, no If-Match, a stale If-Match, an invalid document.
    let admin_auth = bearer(ADMIN_TOKEN);
    let viewer_auth = bearer(VIEWER_TOKEN);
    let (status, _) = write(admin_p0, "PUT", &[("If-Match", "\"1\"")], &doc).await?;
    ensure!(status == 401, "no token: {status}");
    let (status, body) =
        write(admin_p0, "PUT", &[("Authorization", &viewer_auth), ("If-Match", "\"1\"")], &doc).await?;
    ensure!(status == 403 && body["error"].as_str().is_some_and(|e| e.contains("read-only")), "{status} {body}");
    let (status, _) = write(admin_p0, "PUT", &[("Authorization", &admin_auth)], &doc).await?;
    ensure!(status == 428, "no If-Match: {status}");
    let (status, body) = write(admin_p0, "PUT", &[("Authorization", &admin_auth), ("If-Match", "\"0\"")], &doc).await?;
    ensure!(status == 412 && body["head"]["version"] == 1 && body["head"]["author"] == "file", "{status} {body}");
    let mut bad = doc.clone();
    bad["nodes"][0]["pop"] = json!("ams");
    bad["nodes"][1]["weight"] = json!("heavy");
    bad["resolver"] = json!({ "threads": 2 });
    let (status, body) = write(admin_p0, "PUT", &[("Authorization", &admin_auth), ("If-Match", "\"1\"")], &bad).await?;
    ensure!(status == 422, "{status} {body}");
    let problems = body["problems"].to_string();
    ensure!(problems.contains("resolver"), "the local table in the document is named: {body:#}");
    bad.as_object_mut().context("object")?.remove("resolver");
    let (status, body) = write(admin_p0, "PUT", &[("Authorization", &admin_auth), ("If-Match", "\"1\"")], &bad).await?;
    let paths: Vec<&str> =
        body["problems"].as_array().context("problems")?.iter().filter_map(|p| p["path"].as_str()).collect();
    ensure!(
        status == 422 && paths.contains(&"nodes[0].pop") && paths.contains(&"nodes[1].weight"),
        "{status} {body:#}"
    );
    ensure!(history_versions(&history(admin_p0).await?) == [1], "a refused write was stored");

    // A merge patch on a prober moves the fra client's network to syd: every PowerDNS follows.
    let patch =
        json!({ "overrides": [{ "cidr": FRA_CLIENT, "pop": "syd" }, { "cidr": "203.0.113.0/24", "pop": "syd" }] });
    let started = Instant::now();
    let (status, body) = write(
        admin_p0,
        "PATCH",
        &[
            ("Authorization", &admin_auth),
            ("If-Match", "\"1\""),
            ("Content-Type", "application/merge-patch+json"),
            ("Geolb-Message", "move the fra client to syd"),
        ],
        &patch,
    )
    .await?;
    ensure!(status == 200 && body["version"] == 2, "{status} {body}");
    until_answers(&cluster, Duration::from_secs(10), &syd).await?;
    eprintln!("PATCH on a prober -> every PowerDNS answering with the change in {:?}", started.elapsed());
    let s = until_in_step(admin_r0, 2, Duration::from_secs(10)).await?;
    ensure!(s["config"]["head"]["hash"] == body["hash"], "{:#}", s["config"]);
    let h = history(cluster.resolvers[1].admin).await?;
    ensure!(history_versions(&h) == [2, 1], "{h:#}");
    ensure!(h[0]["author"] == "admin" && h[0]["message"] == "move the fra client to syd", "{h:#}");

    // A version prober-1 cannot apply (it stands in syd, which the version removes): the others
    // apply it, prober-1 keeps version 2 and says why.
    let (_, etag, mut doc) = get_config(admin_r0, VIEWER_TOKEN).await?;
    ensure!(etag == "\"2\"", "{etag}");
    doc["pops"] = json!([doc["pops"][0]]);
    doc["nodes"] =
        json!(doc["nodes"].as_array().context("nodes")?.iter().filter(|n| n["pop"] == "fra").collect::<Vec<_>>());
    doc["overrides"] = json!([{ "cidr": FRA_CLIENT, "pop": "fra" }]);
    let (status, body) = write(admin_r0, "PUT", &[("Authorization", &admin_auth), ("If-Match", &etag)], &doc).await?;
    ensure!(status == 200 && body["version"] == 3, "{status} {body}");
    until_answers(&cluster, Duration::from_secs(10), &fra).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let s = state(cluster.probers[1].admin).await?;
        if s["config"]["refused"]["version"] == 3 {
            break s;
        }
        ensure!(Instant::now() < deadline, "prober-1 does not say it refused version 3: {:#}", s["config"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(refused["config"]["applied"]["version"] == 2, "{:#}", refused["config"]);
    ensure!(
        refused["config"]["refused"]["error"].as_str().is_some_and(|e| e.contains("prober.pop")),
        "{:#}",
        refused["config"]
    );
    let s = state(admin_r0).await?;
    ensure!(s["config"]["in_step"] == false, "a member on another version is not shown: {:#}", s["config"]);

    // A restart serves the stored version before the gossip forms.
    cluster.resolvers[0].process.kill()?;
    let restarted = cluster.start_resolver(0).await?;
    cluster.resolvers[0] = restarted;
    let first = answers(&cluster).await?;
    ensure!(first.iter().all(|ip| fra.contains(ip)), "a restarted resolver's first answers: {first:?}");
    let log = cluster.resolvers[0].process.log();
    ensure!(log.contains("fleet document loaded from the store"), "{log}");

    // A stored version corrupted on disk is skipped with an error and fetched again from a peer.
    cluster.resolvers[1].process.kill()?;
    let store = cluster.dir.join("state-resolver-1").join("config-versions.jsonl");
    let text = std::fs::read_to_string(&store)?;
    let last = text.lines().last().context("empty store")?;
    ensure!(last.contains("\"version\":3"), "{last}");
    // One byte of the document changed: the line no longer matches its hash.
    let corrupt = text.replacen(last, &last.replacen("fra-1", "fra-X", 1), 1);
    ensure!(corrupt != text, "nothing to corrupt in {last}");
    std::fs::write(&store, corrupt)?;
    let restarted = cluster.start_resolver(1).await?;
    cluster.resolvers[1] = restarted;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = state(cluster.resolvers[1].admin).await?;
        if s["config"]["applied"]["version"] == 3 {
            break;
        }
        ensure!(Instant::now() < deadline, "the corrupt version was not fetched again: {:#}", s["config"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = cluster.resolvers[1].process.log();
    ensure!(log.contains("fleet document fetched"), "{log}");
    ensure!(log.to_lowercase().contains("hash") || log.contains("skipped"), "the corrupt line is reported: {log}");
    until_answers(&cluster, Duration::from_secs(10), &fra).await?;
    Ok(())
}

/// PUTs `document` on `admin` at `if_match` until the member takes writes again (or `within`).
async fn put_when_writable(
    admin: std::net::SocketAddr,
    if_match: &str,
    document: &Value,
    within: Duration,
) -> Result<Value> {
    let auth = bearer(ADMIN_TOKEN);
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = write(admin, "PUT", &[("Authorization", &auth), ("If-Match", if_match)], document).await?;
        if status == 200 {
            return Ok(body);
        }
        ensure!(status == 503 && Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_takes_one_writer_and_members_serve_through_its_outage() -> Result<()> {
    let mut pg = geolb_tests::postgres::Postgres::start().await?;
    let fleet = format!("store = \"postgres\"\npostgres = \"{}\"", pg.conninfo());
    let (mut cluster, servers) = start_two_pops_with(2, None, FRA_CLIENT, Some(fleet)).await?;
    let fra: Vec<IpAddr> = servers[..2].iter().map(|s| s.addr.ip()).collect();
    let syd: Vec<IpAddr> = servers[2..].iter().map(|s| s.addr.ip()).collect();
    let admin_r0 = cluster.resolvers[0].admin;
    // The members seed the empty table once, compare-and-swap, and all apply it.
    until_in_step(admin_r0, 1, Duration::from_secs(20)).await?;
    until_answers(&cluster, Duration::from_secs(20), &fra).await?;
    ensure!(pg.psql("SELECT count(*), max(author) FROM geolb_config_versions")? == "1|file");

    // Two members accept a write on version 1 at once: the database takes exactly one.
    let (_, _, doc) = get_config(admin_r0, VIEWER_TOKEN).await?;
    let mut to_syd = doc.clone();
    to_syd["overrides"] = json!([{ "cidr": FRA_CLIENT, "pop": "syd" }]);
    let mut to_syd_ttl = to_syd.clone();
    to_syd_ttl["services"][0]["ttl"] = json!(7);
    let auth = bearer(ADMIN_TOKEN);
    let headers = [("Authorization", auth.as_str()), ("If-Match", "\"1\"")];
    let (a, b) = tokio::join!(
        write(cluster.probers[0].admin, "PUT", &headers, &to_syd),
        write(admin_r0, "PUT", &headers, &to_syd_ttl)
    );
    let mut statuses = [a?.0, b?.0];
    statuses.sort_unstable();
    ensure!(statuses == [200, 412], "two writers of version 2: {statuses:?}");
    ensure!(pg.psql("SELECT count(*) FROM geolb_config_versions")? == "2");
    let moved = until_answers(&cluster, Duration::from_secs(10), &syd).await?;
    eprintln!("PUT into PostgreSQL -> every PowerDNS answering with the change in {moved:?}");
    until_in_step(admin_r0, 2, Duration::from_secs(10)).await?;

    // The database goes away: members keep serving version 2 and say so; writes answer 503.
    pg.stop().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = state(admin_r0).await?;
        if s["config"]["database"]["up"] == false {
            break;
        }
        ensure!(Instant::now() < deadline, "the outage is not shown: {:#}", s["config"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, etag, _) = get_config(admin_r0, VIEWER_TOKEN).await?;
    ensure!(status == 200 && etag == "\"2\"", "GET during the outage: {status} {etag}");
    let (status, body) = write(admin_r0, "PUT", &[("Authorization", &auth), ("If-Match", "\"2\"")], &doc).await?;
    ensure!(status == 503, "a write during the outage: {status} {body}");
    let (status, _, ready) = http_request(admin_r0, "GET", "/readyz", &[], "").await?;
    ensure!(
        status == 200 && ready.contains("config database is unreachable") && ready.contains("version 2"),
        "{status} {ready}"
    );
    // A restart during the outage serves the mirrored version at once.
    cluster.resolvers[0].process.kill()?;
    let restarted = cluster.start_resolver(0).await?;
    cluster.resolvers[0] = restarted;
    let first = answers(&cluster).await?;
    ensure!(first.iter().all(|ip| syd.contains(ip)), "answers after a restart without the database: {first:?}");

    // Back: writes work again and reach every answer.
    pg.resume().await?;
    let body = put_when_writable(cluster.resolvers[0].admin, "\"2\"", &doc, Duration::from_secs(15)).await?;
    ensure!(body["version"] == 3, "{body}");
    until_answers(&cluster, Duration::from_secs(10), &fra).await?;
    ensure!(pg.psql("SELECT count(*) FROM geolb_config_versions")? == "3");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_document_of_10000_names_works_end_to_end() -> Result<()> {
    let (cluster, servers) = start_two_pops_with(2, None, FRA_CLIENT, Some("store = \"embedded\"".to_owned())).await?;
    let fra: Vec<IpAddr> = servers[..2].iter().map(|s| s.addr.ip()).collect();
    until_answers(&cluster, Duration::from_secs(20), &fra).await?;
    let (_, etag, mut doc) = get_config(cluster.resolvers[0].admin, VIEWER_TOKEN).await?;
    let mut template = doc["services"][0].clone();
    let nodes: Vec<Value> = doc["nodes"].as_array().context("nodes")?.iter().map(|n| n["id"].clone()).collect();
    template["nodes"] = json!(nodes);
    let services: Vec<Value> = (0..10_000)
        .map(|i| {
            let mut s = template.clone();
            s["name"] = json!(format!("name-{i:05}.example.net."));
            s["tie_band_km"] = json!(25.5);
            s
        })
        .chain(std::iter::once(template.clone()))
        .collect();
    doc["services"] = json!(services);
    let text = doc.to_string();
    ensure!(text.len() > 1_000_000, "{} bytes", text.len());
    let auth = bearer(ADMIN_TOKEN);
    let (status, _, body) = http_request(
        cluster.probers[0].admin,
        "PUT",
        "/api/v1/config",
        &[("Authorization", &auth), ("If-Match", &etag)],
        &text,
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    // Every member applies it (before a query: PowerDNS would cache the NXDOMAIN of a name asked
    // too early for the zone's negative TTL).
    let s = until_in_step(cluster.resolvers[1].admin, 2, Duration::from_secs(30)).await?;
    ensure!(s["config"]["refused"].is_null(), "{:#}", s["config"]);
    let net: IpNet = FRA_CLIENT.parse()?;
    for r in &cluster.resolvers {
        let resp = r.pdns.as_ref().context("no pdns")?.query("name-09999.example.net.", "A", Some(net)).await?;
        ensure!(resp.addresses().first().is_some_and(|ip| fra.contains(ip)), "the last of 10,000 names: {resp}");
    }
    Ok(())
}
