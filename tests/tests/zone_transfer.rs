//! End to end: the zone comes from a hidden primary. A real BIND `named` is the primary (TSIG,
//! NOTIFY, IXFR from its journal); a real PowerDNS runs `launch=remote,lmdb` as its secondary
//! (the settings of `config/examples/pdns-lmdb.conf`, AXFR into lmdb, live-signing with keys in
//! lmdb) and asks the real `geolb-resolver` binary, which follows the same primary with a
//! `primary` source. `delv` validates the signed answers and denials.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use domain::base::iana::{Rcode, Rtype};
use domain::base::{Message, MessageBuilder, Name, Serial, Ttl};
use domain::rdata::{A, Cname, Soa};
use geolb_tests::cluster::{http, http_with_body};
use geolb_tests::stack::{addresses_of, world_example};
use geolb_tests::{
    Denial, KillOnDrop, Launch, Named, NamedOptions, Pdns, PdnsOptions, QueryOptions, TestDir, TsigKey, delv,
    query_with, unique_loopback, workspace_bin, workspace_root,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const ORIGIN: &str = "example.net.";
const CLUSTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const LONDON: &str = "81.2.69.0/24";

/// The primary's zone at `serial`, with `extra` records. `cdn` has a placeholder A/AAAA (the
/// geo answers replace them; DNSSEC needs the name in the signed zone) and the records geolb
/// must answer beside its own.
fn zone(serial: u32, extra: &str) -> String {
    format!(
        "$TTL 300\n@ IN SOA ns1.example.net. hostmaster.example.net. {serial} 3600 600 86400 300\n\
         @ IN NS ns1.example.net.\nns1 IN A 192.0.2.53\n@ IN MX 10 mail.example.net.\nmail IN A 192.0.2.25\n\
         cdn IN A 192.0.2.1\ncdn IN AAAA 2001:db8::1\ncdn IN MX 10 mail.example.net.\n\
         cdn IN RP m\\;x.example.net. sp\\032ace.example.net.\n\
         cdn IN TXT \"v=spf1 -all\"\ncdn IN CAA 0 issue \"letsencrypt.org\"\nwww IN A 192.0.2.80\n{extra}"
    )
}

/// How one test resolver is set up.
struct GeolbOptions {
    /// The `[[zones]]` lines after `origin` (`primary = …`, `tsig = …`, `file = …`).
    zone: String,
    /// Where NOTIFY is taken (`[resolver] notify_listen`).
    notify: Option<SocketAddr>,
    /// Join a cluster of its own, for the admin API (`/api/v1/state`, `/readyz`).
    member: bool,
}

/// A `geolb-resolver` process on the world example, restartable in the same directory.
struct Geolb {
    process: Option<KillOnDrop>,
    config: PathBuf,
    socket: PathBuf,
    http: SocketAddr,
    admin: Option<SocketAddr>,
    dir: TestDir,
}

impl Geolb {
    async fn start(options: GeolbOptions) -> Result<Geolb> {
        let dir = TestDir::new("geolb-xfr")?;
        let mut text = world_example(&options.zone)?;
        if let Some(notify) = options.notify {
            ensure!(text.contains("listen = \"127.0.0.1:5380\"\n"), "world.toml's [resolver] listen changed");
            text = text.replace(
                "listen = \"127.0.0.1:5380\"\n",
                &format!("listen = \"127.0.0.1:5380\"\nnotify_listen = \"{notify}\"\n"),
            );
        }
        if options.member {
            let ip = unique_loopback();
            text.push_str(&format!(
                "\n[cluster]\nid = \"xfr\"\nkey = \"{CLUSTER_KEY}\"\nseeds = []\n[member]\nid = \"dns-1\"\ngossip_listen = \"{ip}:7946\"\nadmin_listen = \"{ip}:0\"\nstate_dir = {:?}\n",
                dir.join("state")
            ));
        }
        let config = dir.join("geolb.toml");
        std::fs::write(&config, text)?;
        let socket = dir.join("pdns.sock");
        let mut geolb = Geolb { process: None, config, socket, http: "127.0.0.1:0".parse()?, admin: None, dir };
        geolb.spawn(options.member).await?;
        Ok(geolb)
    }

    async fn spawn(&mut self, member: bool) -> Result<()> {
        let bin = workspace_bin("geolb-resolver")?;
        let mut command = Command::new(bin);
        command.arg("--config").arg(&self.config).args(["--listen", "127.0.0.1:0", "--socket"]).arg(&self.socket);
        let process = KillOnDrop::spawn("geolb-resolver", &mut command, self.dir.path())?;
        self.http = process.wait_for_socket_addr("listening on http://", Duration::from_secs(10)).await?;
        process.wait_for_log_line("listening on unix:", Duration::from_secs(10)).await?;
        if member {
            self.admin =
                Some(process.wait_for_socket_addr("admin listening on http://", Duration::from_secs(10)).await?);
        }
        self.process = Some(process);
        Ok(())
    }

    /// Stops the process (SIGTERM) and starts it again on the same config and state.
    async fn restart(&mut self) -> Result<()> {
        self.restart_with(|| Ok(())).await
    }

    /// [`Geolb::restart`], doing `between` while it is stopped.
    async fn restart_with(&mut self, between: impl FnOnce() -> Result<()>) -> Result<()> {
        let member = self.admin.is_some();
        if let Some(process) = self.process.take() {
            process.signal("TERM")?;
            process.wait_exit(Duration::from_secs(10)).await?;
        }
        between()?;
        self.spawn(member).await
    }

    fn log(&self) -> String {
        self.process.as_ref().map(KillOnDrop::log).unwrap_or_default()
    }

    /// `(qtype, content)` of geolb's answer for `qname` from a London client, as PowerDNS asks.
    async fn lookup(&self, qname: &str) -> Result<Option<Vec<(String, String)>>> {
        let body = format!(
            r#"{{"method":"lookup","parameters":{{"qtype":"ANY","qname":"{qname}","remote":"127.0.0.1","real-remote":"{LONDON}","zone-id":1}}}}"#
        );
        let (status, reply) = http_with_body(self.http, "POST", "/dns", None, &body).await?;
        ensure!(status == 200, "lookup {qname}: {status} {reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply)?;
        let Some(records) = reply["result"].as_array() else { return Ok(None) };
        Ok(Some(
            records
                .iter()
                .map(|r| {
                    (
                        r["qtype"].as_str().unwrap_or_default().to_owned(),
                        r["content"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
        ))
    }

    /// One sample of a metric from the HTTP connector's `/metrics` (`name{labels}` as written).
    async fn metric(&self, series: &str) -> Result<Option<f64>> {
        let (_, text) = http(self.http, "GET", "/metrics", None).await?;
        Ok(text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()))
    }

    /// Waits until the served serial of the zone is `serial`.
    async fn wait_serial(&self, serial: u32, within: Duration) -> Result<Duration> {
        let started = Instant::now();
        let series = format!("geolb_zone_serial{{zone=\"{ORIGIN}\"}}");
        loop {
            if self.metric(&series).await? == Some(f64::from(serial)) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                bail!("serial {serial} not served within {within:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn has(records: &[(String, String)], qtype: &str, content: &str) -> bool {
    records.iter().any(|(t, c)| t == qtype && c == content)
}

/// Polls geolb's answer for `cdn` until it holds `TXT content`; how long that took.
async fn wait_txt(geolb: &Geolb, content: &str, started: Instant, within: Duration) -> Result<Duration> {
    loop {
        if geolb.lookup("cdn.example.net.").await?.is_some_and(|r| has(&r, "TXT", content)) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("TXT {content} not in geolb's answer within {within:?}; log:\n{}", geolb.log());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The settings of `config/examples/pdns-lmdb.conf` for a secondary of `primary` asking `geolb`.
fn secondary_options(geolb: &Geolb, primary: SocketAddr, key: &TsigKey, address: IpAddr) -> Result<PdnsOptions> {
    let example = std::fs::read_to_string(workspace_root().join("config/examples/pdns-lmdb.conf"))?;
    let mut options =
        PdnsOptions::new(Launch::RemoteLmdb).secondary_zone(ORIGIN, primary).tsig_key(key.clone()).dnssec(true);
    options.address = Some(address);
    let mut launch = None;
    for line in example.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line.split_once('=').context("pdns-lmdb.conf line without =")?;
        match key {
            "launch" => launch = Some(value.to_owned()),
            // The harness keeps lmdb in its own directory.
            "lmdb-filename" => {}
            "remote-connection-string" => {
                ensure!(value.contains("/run/geolb/pdns.sock"), "pdns-lmdb.conf connection string changed: {value}");
                options = options.remote(value.replace("/run/geolb/pdns.sock", &geolb.socket.display().to_string()));
            }
            _ => options = options.setting(key, value),
        }
    }
    ensure!(launch.as_deref() == Some("remote,lmdb"), "pdns-lmdb.conf launches {launch:?}");
    // This test watches geolb follow the primary: PowerDNS's caches would hide that for their TTL.
    Ok(options.setting("cache-ttl", 0).setting("query-cache-ttl", 0).setting("negquery-cache-ttl", 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geolb_follows_the_hidden_primary_behind_an_lmdb_secondary_and_its_answers_validate() -> Result<()> {
    geolb_tests::quiet_logs();
    let key = TsigKey::generate("geolb-xfr")?;
    let (notify_a, notify_b) =
        (SocketAddr::new(unique_loopback().into(), 5354), SocketAddr::new(unique_loopback().into(), 5354));
    let pdns_ip: IpAddr = unique_loopback().into();
    let mut named = Named::start(
        NamedOptions::new(ORIGIN, zone(1, ""))
            .tsig(key.clone())
            .also_notify(notify_a)
            .also_notify(notify_b)
            .also_notify(SocketAddr::new(pdns_ip, geolb_tests::PDNS_PORT)),
    )
    .await?;
    let tsig =
        format!("tsig = {{ name = \"{}\", algorithm = \"{}\", secret = \"{}\" }}", key.name, key.algorithm, key.secret);
    let primary = format!("primary = [\"{}\"]\n{tsig}", named.addr());
    // A: takes the primary's NOTIFY; its copy goes to state_dir (the default `file`). PowerDNS
    // asks it for the zone's metadata, so the key PowerDNS signs its own AXFRs with is mirrored
    // there (only signed transfers are allowed).
    let zone_a = format!("{primary}\nmetadata = {{ AXFR-MASTER-TSIG = [\"{}\"] }}", key.name);
    let mut a = Geolb::start(GeolbOptions { zone: zone_a, notify: Some(notify_a), member: true }).await?;
    // B: NOTIFY "blocked" (taken only from another address), so it has only its 2 s poll.
    let zone_b =
        format!("{primary}\nallow_notify = [\"127.0.0.2\"]\nrefresh_ms = 2000\nfile = \"copy/example.net.zone\"");
    let b = Geolb::start(GeolbOptions { zone: zone_b, notify: Some(notify_b), member: false }).await?;
    a.wait_serial(1, Duration::from_secs(10)).await?;
    b.wait_serial(1, Duration::from_secs(10)).await?;
    let pdns = Pdns::start(secondary_options(&a, named.addr(), &key, pdns_ip)?).await?;

    // The geo answer and the zone's other records of the name, through the secondary.
    let config = geolb_config::load(&a.config)?;
    let london = QueryOptions::new("cdn.example.net.", "A").ecs(Some(LONDON.parse()?));
    let r = query_with(pdns.addr(), &london).await?;
    ensure!(r.addresses().first().is_some_and(|ip| addresses_of(&config, "lhr").contains(ip)), "London got:\n{r}");
    for (qtype, want) in
        [("MX", "10 mail.example.net."), ("TXT", "\"v=spf1 -all\""), ("CAA", "0 issue \"letsencrypt.org\"")]
            .into_iter()
            // Names with a zone file's comment character and a space arrive whole (BIND's
            // check-names keeps them out of MX targets).
            .chain([("RP", "m;x.example.net. sp\\ ace.example.net.")])
    {
        let r =
            query_with(pdns.addr(), &QueryOptions::new("cdn.example.net.", qtype).ecs(Some(LONDON.parse()?))).await?;
        ensure!(r.answers_of(qtype).iter().any(|rr| rr.data == want), "cdn {qtype}: want {want}:\n{r}");
    }

    // Signed by the secondary with its own keys: a geo answer, a NODATA and an NXDOMAIN validate.
    let anchor = pdns.trust_anchor(ORIGIN).await?;
    let answer = delv(pdns.addr(), ORIGIN, &anchor, "cdn.example.net.", "A").await?;
    let node_addrs: Vec<String> = config.nodes.iter().filter_map(|n| n.ipv4).map(|ip| ip.to_string()).collect();
    ensure!(
        !answer.negative && answer.data("A").iter().all(|a| node_addrs.contains(a)) && !answer.data("A").is_empty(),
        "{answer}"
    );
    let txt = delv(pdns.addr(), ORIGIN, &anchor, "cdn.example.net.", "TXT").await?;
    ensure!(txt.data("TXT").iter().any(|t| t.contains("v=spf1 -all")), "{txt}");
    let nodata = delv(pdns.addr(), ORIGIN, &anchor, "cdn.example.net.", "SRV").await?;
    ensure!(nodata.denial == Some(Denial::NoData), "{nodata}");
    let nxdomain = delv(pdns.addr(), ORIGIN, &anchor, "nope.example.net.", "A").await?;
    ensure!(nxdomain.denial == Some(Denial::NxDomain), "{nxdomain}");

    // A record added on the primary: NOTIFY → IXFR → in A's answer (and through PowerDNS)
    // within 2 s; B, without NOTIFY, within its refresh interval.
    let changed = Instant::now();
    named.set_zone(&zone(2, "cdn IN TXT \"added in serial 2\"\nstatic IN A 192.0.2.81\n")).await?;
    let via_notify = wait_txt(&a, "\"added in serial 2\"", changed, Duration::from_secs(2)).await?;
    let via_poll = wait_txt(&b, "\"added in serial 2\"", changed, Duration::from_millis(2_000 + 500)).await?;
    let q = QueryOptions::new("cdn.example.net.", "TXT").ecs(Some(LONDON.parse()?));
    let r = query_with(pdns.addr(), &q).await?;
    ensure!(r.answers_of("TXT").iter().any(|rr| rr.data == "\"added in serial 2\""), "through PowerDNS:\n{r}");
    println!("record added on the primary → in geolb's answer: {via_notify:?} by NOTIFY, {via_poll:?} by a 2 s poll");
    ensure!(
        b.metric("geolb_zone_notifies_total{result=\"unknown_source\"}").await?.unwrap_or(0.0) >= 1.0,
        "B counted no foreign NOTIFY"
    );
    ensure!(
        a.metric("geolb_zone_notifies_total{result=\"accepted\"}").await?.unwrap_or(0.0) >= 1.0,
        "A accepted no NOTIFY"
    );
    let admin = a.admin.context("A has an admin API")?;
    let (_, state) = http(admin, "GET", "/api/v1/state", None).await?;
    let state: serde_json::Value = serde_json::from_str(&state)?;
    let zone_state = &state["zones"][ORIGIN];
    ensure!(
        zone_state["serial"] == 2 && zone_state["last_transfer"] == "ixfr" && zone_state["last_error"].is_null(),
        "state: {zone_state}"
    );
    // A flood of signed NOTIFYs from the primary's address while the serial changes once: every
    // one is answered, and geolb transfers once.
    let accepted = "geolb_zone_notifies_total{result=\"accepted\"}";
    let applied = format!("geolb_zone_transfers_total{{result=\"applied\",zone=\"{ORIGIN}\"}}");
    let (accepted_before, applied_before) = (a.metric(accepted).await?.unwrap_or(0.0), a.metric(&applied).await?);
    named.set_zone(&zone(3, "cdn IN TXT \"added in serial 2\"\nstatic IN A 192.0.2.81\n")).await?;
    let answered = notify_flood(named.addr().ip(), notify_a, &key, 300).await?;
    a.wait_serial(3, Duration::from_secs(2)).await?;
    let accepted_now = a.metric(accepted).await?.unwrap_or(0.0) - accepted_before;
    ensure!(
        answered >= 250 && accepted_now >= answered as f64,
        "{answered} of 300 NOTIFYs answered, {accepted_now} accepted"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        a.metric(&applied).await? == applied_before.map(|n| n + 1.0),
        "one transfer for one new serial:\n{}",
        a.log()
    );
    // At most one IXFR each to A and B (B may not have polled yet).
    let to_3 = named.log().lines().filter(|l| l.contains("IXFR started") && l.contains("(serial 2 -> 3)")).count();
    ensure!((1..=2).contains(&to_3), "{to_3} IXFRs from serial 2:\n{}", named.log());

    // The static name is the secondary's own (lmdb), from the same primary.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = query_with(pdns.addr(), &QueryOptions::new("static.example.net.", "A")).await?;
        if r.addresses() == ["192.0.2.81".parse::<IpAddr>()?] {
            break;
        }
        ensure!(Instant::now() < deadline, "the secondary did not follow the primary:\n{r}\n{}", pdns.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new record validates too.
    let added = delv(pdns.addr(), ORIGIN, &anchor, "cdn.example.net.", "TXT").await?;
    ensure!(added.data("TXT").iter().any(|t| t.contains("added in serial 2")), "{added}");

    // The primary stopped: the last good zone is served, also across a geolb restart.
    named.stop()?;
    a.restart().await?;
    a.wait_serial(3, Duration::from_secs(2)).await?;
    ensure!(
        a.lookup("cdn.example.net.").await?.is_some_and(|r| has(&r, "TXT", "\"added in serial 2\"")),
        "after the restart:\n{}",
        a.log()
    );
    a.process
        .as_ref()
        .context("running")?
        .wait_for_log_line("zone check or transfer failed", Duration::from_secs(10))
        .await?;
    let (_, state) = http(a.admin.context("admin")?, "GET", "/api/v1/state", None).await?;
    let state: serde_json::Value = serde_json::from_str(&state)?;
    ensure!(
        state["zones"][ORIGIN]["serial"] == 3 && state["zones"][ORIGIN]["last_error"].is_string(),
        "state: {state}"
    );
    // PowerDNS finds its connection to geolb gone and reconnects; then it answers from the copy.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = query_with(pdns.addr(), &q).await?;
        if r.answers_of("TXT").iter().any(|rr| rr.data == "\"added in serial 2\"") {
            break;
        }
        ensure!(Instant::now() < deadline, "through PowerDNS after geolb's restart:\n{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Back up: it follows again, by IXFR from the copy it saved before the restart.
    named.start_again().await?;
    named.set_zone(&zone(4, "cdn IN TXT \"added in serial 4\"\n")).await?;
    wait_txt(&a, "\"added in serial 4\"", Instant::now(), Duration::from_secs(5)).await?;
    let (_, state) = http(a.admin.context("admin")?, "GET", "/api/v1/state", None).await?;
    let state: serde_json::Value = serde_json::from_str(&state)?;
    ensure!(state["zones"][ORIGIN]["last_transfer"] == "ixfr", "after the restart: {}", state["zones"]);

    // A copy cut short (a full disk, an editor): left out at start, and transferred in full.
    let copy = a.dir.join("state/zones/example.net.zone");
    let text = std::fs::read_to_string(&copy)?;
    a.restart_with(|| Ok(std::fs::write(&copy, &text[..text.len() - 40])?)).await?;
    wait_txt(&a, "\"added in serial 4\"", Instant::now(), Duration::from_secs(5)).await?;
    let (_, state) = http(a.admin.context("admin")?, "GET", "/api/v1/state", None).await?;
    let state: serde_json::Value = serde_json::from_str(&state)?;
    ensure!(state["zones"][ORIGIN]["last_transfer"] == "axfr", "after a cut copy: {}", state["zones"]);
    ensure!(std::fs::read_to_string(&copy)?.ends_with(" records\n"), "the copy is whole again");
    Ok(())
}

/// Sends `count` NOTIFYs for the zone, signed with `key`, from `source` to `target` as fast as
/// they go, and counts the answers that come back within a second of the last.
async fn notify_flood(source: IpAddr, target: SocketAddr, key: &TsigKey, count: u16) -> Result<usize> {
    use domain::base::iana::Opcode;
    use domain::rdata::tsig::Time48;
    // The key as geolb builds it from its config.
    let tsig = geolb_resolver::transfer::tsig_key(&geolb_config::TsigKey {
        name: key.name.clone(),
        algorithm: key.algorithm.clone(),
        secret: geolb_config::TsigSecret::Inline(key.secret.clone()),
    })
    .map_err(anyhow::Error::msg)?;
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(source, 0)).await?;
    for id in 0..count {
        let mut builder = MessageBuilder::new_vec();
        builder.header_mut().set_opcode(Opcode::NOTIFY);
        builder.header_mut().set_id(id);
        builder.header_mut().set_aa(true);
        let mut builder = builder.question();
        builder.push((ORIGIN.parse::<Name<Vec<u8>>>()?, Rtype::SOA))?;
        let mut builder = builder.additional();
        domain::tsig::ClientTransaction::request(tsig.clone(), &mut builder, Time48::now())?;
        socket.send_to(&builder.finish(), target).await?;
    }
    let mut answers = 0;
    let mut buf = [0u8; 1024];
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await {
        answers += 1;
    }
    Ok(answers)
}

/// How the hand-made primary of [`broken_transfers_are_refused_and_the_served_zone_kept`] answers
/// a transfer.
const TRUNCATED: u8 = 0;
const INVALID: u8 = 1;

/// A primary that answers the SOA with serial 5 and every transfer broken, as `mode` says: the
/// stream cut off before its closing SOA, or a zone with a CNAME beside other data.
async fn broken_primary(mode: Arc<AtomicU8>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(unique_loopback().into(), 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mode = mode.load(Ordering::Relaxed);
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                while stream.read_exact(&mut len).await.is_ok() {
                    let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if stream.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    let Ok(reply) = broken_reply(&request, mode) else { return };
                    let framed = [&(reply.len() as u16).to_be_bytes()[..], &reply].concat();
                    if stream.write_all(&framed).await.is_err() {
                        return;
                    }
                    if mode == TRUNCATED && reply.len() > 100 {
                        // Cut off: the closing SOA never comes.
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn broken_reply(request: &[u8], mode: u8) -> Result<Vec<u8>> {
    let request = Message::from_octets(Bytes::copy_from_slice(request))?;
    let qtype = request.sole_question()?.qtype();
    let zone: Name<Vec<u8>> = ORIGIN.parse()?;
    let t = Ttl::from_secs(300);
    let soa = Soa::new(zone.clone(), zone.clone(), Serial(5), t, t, t, t);
    let mut answer = MessageBuilder::new_vec().start_answer(&request, Rcode::NOERROR)?.answer();
    answer.push((&zone, 300, soa.clone()))?;
    if qtype != Rtype::SOA {
        let cdn: Name<Vec<u8>> = "cdn.example.net.".parse()?;
        answer.push((&cdn, 300, A::from_octets(192, 0, 2, 1)))?;
        if mode == INVALID {
            answer.push((&cdn, 300, Cname::new("www.example.net.".parse::<Name<Vec<u8>>>()?)))?;
        }
        // Padding so the truncated stream's first message is recognisably the long one.
        for i in 0..4u8 {
            answer.push((
                &format!("pad{i}.example.net.").parse::<Name<Vec<u8>>>()?,
                300,
                A::from_octets(192, 0, 2, i),
            ))?;
        }
        if mode != TRUNCATED {
            answer.push((&zone, 300, soa))?;
        }
    }
    Ok(answer.finish())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_transfers_are_refused_and_the_served_zone_kept() -> Result<()> {
    geolb_tests::quiet_logs();
    // The last good copy, as a previous run of geolb left it; its SOA expire is 1 s.
    let seed = zone(1, "cdn IN TXT \"the good copy\"\n").replace(" 3600 600 86400 300", " 3600 600 1 300");
    ensure!(seed.contains(" 3600 600 1 300"), "the seed's SOA");
    let mode = Arc::new(AtomicU8::new(TRUNCATED));
    let fake = broken_primary(mode.clone()).await?;
    // The copy must be in place before the start: in a directory of our own, `file` names it.
    let copies = TestDir::new("geolb-xfr-copy")?;
    let file = copies.join("example.net.zone");
    std::fs::write(&file, &seed)?;
    let zone_lines = format!("primary = [\"{fake}\"]\nrefresh_ms = 1000\nfile = {file:?}");
    let geolb = Geolb::start(GeolbOptions { zone: zone_lines, notify: None, member: false }).await?;
    // Served from the copy at once, while the primary's transfers fail.
    geolb.wait_serial(1, Duration::from_secs(2)).await?;
    let refused = "geolb_zone_transfers_total{result=\"refused\",zone=\"example.net.\"}";
    let geolb = &geolb;
    let wait_refused = |at_least: f64| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if geolb.metric(refused).await?.unwrap_or(0.0) >= at_least {
                return Ok::<(), anyhow::Error>(());
            }
            ensure!(Instant::now() < deadline, "not refused {at_least} times; log:\n{}", geolb.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_refused(1.0).await?;
    let log = geolb.process.as_ref().context("running")?;
    log.wait_for_log_line("truncated", Duration::from_secs(5)).await?;
    mode.store(INVALID, Ordering::Relaxed);
    let before = geolb.metric(refused).await?.unwrap_or(0.0);
    wait_refused(before + 1.0).await?;
    log.wait_for_log_line("has a cname and other data", Duration::from_secs(5)).await?;
    // Still the good copy: its serial, its records, its file.
    geolb.wait_serial(1, Duration::ZERO).await?;
    let answer = geolb.lookup("cdn.example.net.").await?.context("cdn answered")?;
    ensure!(has(&answer, "TXT", "\"the good copy\"") && !answer.iter().any(|(t, _)| t == "CNAME"), "{answer:?}");
    ensure!(std::fs::read_to_string(&file)? == seed, "the saved copy was replaced");
    ensure!(geolb.metric("geolb_zone_transfers_total{result=\"applied\",zone=\"example.net.\"}").await? == Some(0.0));

    // A real primary, but geolb holds the wrong TSIG secret: refused, the copy kept.
    let key = TsigKey::generate("geolb-xfr")?;
    let named = Named::start(NamedOptions::new(ORIGIN, zone(7, "")).tsig(key.clone())).await?;
    let wrong = TsigKey::generate("geolb-xfr")?;
    let wrong_lines = format!(
        "primary = [\"{}\"]\nrefresh_ms = 1000\nfile = {file:?}\ntsig = {{ name = \"{}\", secret = \"{}\" }}",
        named.addr(),
        wrong.name,
        wrong.secret
    );
    let wrong_key = Geolb::start(GeolbOptions { zone: wrong_lines, notify: None, member: true }).await?;
    wrong_key.wait_serial(1, Duration::from_secs(2)).await?;
    let p = wrong_key.process.as_ref().context("running")?;
    let line = p.wait_for_log_line("zone check or transfer failed", Duration::from_secs(10)).await?;
    ensure!(line.contains("NOTAUTH") || line.to_lowercase().contains("tsig"), "why: {line}");
    ensure!(wrong_key.lookup("cdn.example.net.").await?.is_some_and(|r| has(&r, "TXT", "\"the good copy\"")));
    // Its primary never answers it: past the SOA expire the copy is still served, and it says so.
    let expired = "geolb_zone_expired{zone=\"example.net.\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while wrong_key.metric(expired).await? != Some(1.0) {
        ensure!(Instant::now() < deadline, "not expired; log:\n{}", wrong_key.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.wait_for_log_line("longer than its soa expire", Duration::from_secs(1)).await?;
    let (_, why) = http(wrong_key.admin.context("admin")?, "GET", "/readyz", None).await?;
    ensure!(
        why.contains(
            "zone example.net.: the primary has not answered for longer than the soa expire (1 s); serving serial 1"
        ),
        "{why}"
    );
    ensure!(wrong_key.lookup("cdn.example.net.").await?.is_some_and(|r| has(&r, "TXT", "\"the good copy\"")));
    // The hand-made primary answers the SOA queries: not expired there, only refused transfers.
    ensure!(geolb.metric(expired).await? == Some(0.0), "answered SOA queries count as contact");

    // No copy and no primary: the managed name falls through, and /readyz says why.
    let dead = SocketAddr::new(unique_loopback().into(), 5300);
    let nothing =
        Geolb::start(GeolbOptions { zone: format!("primary = [\"{dead}\"]"), notify: None, member: true }).await?;
    ensure!(nothing.lookup("cdn.example.net.").await?.is_none(), "no copy: cdn must fall through");
    ensure!(nothing.metric("geolb_zone_missing{zone=\"example.net.\"}").await? == Some(1.0));
    let (status, why) = http(nothing.admin.context("admin")?, "GET", "/readyz", None).await?;
    ensure!(status == 503 && why.contains("zone example.net.: no copy from its primary yet"), "{status} {why}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geolb_follows_a_powerdns_primary_across_serial_changes() -> Result<()> {
    geolb_tests::quiet_logs();
    // PowerDNS as the hidden primary (bind backend): it sends the first SOA of a transfer in a
    // message of its own and answers an IXFR with the whole zone.
    let dir = TestDir::new("pdns-primary")?;
    let file = dir.join("example.net.zone");
    std::fs::write(&file, zone(1, ""))?;
    let notify = SocketAddr::new(unique_loopback().into(), 5354);
    let ip: IpAddr = unique_loopback().into();
    let mut options = PdnsOptions::new(Launch::Bind)
        .zone(ORIGIN, &file)
        .setting("primary", "yes")
        .setting("also-notify", notify)
        // NOTIFY only the test's resolver, never the zone's NS addresses, and from this address.
        .setting("only-notify", "127.0.0.0/8")
        .setting("query-local-address", ip);
    options.address = Some(ip);
    let primary = Pdns::start(options).await?;
    let geolb = Geolb::start(GeolbOptions {
        zone: format!("primary = [\"{}\"]\nfile = \"copy/example.net.zone\"", primary.addr()),
        notify: Some(notify),
        member: false,
    })
    .await?;
    geolb.wait_serial(1, Duration::from_secs(10)).await?;
    for serial in [2, 3] {
        let txt = format!("\"serial {serial} from powerdns\"");
        std::fs::write(&file, zone(serial, &format!("cdn IN TXT {txt}\n")))?;
        primary.control(&["bind-reload-now", "example.net"]).await?;
        let changed = Instant::now();
        primary.control(&["notify", "example.net"]).await?;
        let took = wait_txt(&geolb, &txt, changed, Duration::from_secs(2)).await?;
        println!("PowerDNS primary, serial {serial}: in geolb's answer {took:?} after the NOTIFY");
    }
    let applied = "geolb_zone_transfers_total{result=\"applied\",zone=\"example.net.\"}";
    ensure!(geolb.metric(applied).await? == Some(3.0), "three transfers:\n{}", geolb.log());
    ensure!(geolb.log().contains("ixfr refused; trying an axfr"), "the IXFR fallback:\n{}", geolb.log());

    // The zone served from its copy as a plain file from now on: a reload stops its follower and
    // its reports, and the resolver goes on.
    let text = std::fs::read_to_string(&geolb.config)?;
    let without = text.replace(&format!("primary = [\"{}\"]\n", primary.addr()), "");
    ensure!(without != text, "the primary line");
    std::fs::write(&geolb.config, without)?;
    let process = geolb.process.as_ref().context("running")?;
    process.signal("HUP")?;
    process.wait_for_log_line("zone no longer followed from a primary", Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(process.try_wait()?.is_none(), "the resolver stopped:\n{}", geolb.log());
    ensure!(geolb.metric("geolb_zone_serial{zone=\"example.net.\"}").await?.is_none(), "still reported");
    let answer = geolb.lookup("cdn.example.net.").await?.context("cdn answered")?;
    ensure!(has(&answer, "TXT", "\"serial 3 from powerdns\""), "{answer:?}");
    Ok(())
}
