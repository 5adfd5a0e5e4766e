//! A real BIND `named` (Debian bookworm's 9.18) as the hidden primary of one zone: its options
//! ([`NamedOptions`], with an optional [`TsigKey`]), the `named.conf` and zone file written for
//! it, and the running server ([`Named`]) whose zone a test rewrites to make it send NOTIFYs
//! and serve IXFR.
//!
//! It owns the loopback alias `named` needs and the `dig` runs against it; not the process
//! plumbing (`process.rs`) nor the DNS client its readiness probe uses (`dns.rs`). PowerDNS as
//! its secondary is `pdns.rs` ([`crate::PdnsOptions::secondary_zone`]).
//!
//! What BIND 9.18 does here, as checked by `tests/tests/named_harness.rs`:
//!
//! - **Addresses**: `named` listens only on addresses configured on an interface (`listen-on`
//!   filters the interface list, it does not bind what it is given). Linux routes all of
//!   `127.0.0.0/8` to `lo`, but only `127.0.0.1` is *on* `lo`, so [`Named::start`] first adds
//!   its [`unique_loopback`] address to `lo` (`ip addr add 127.A.B.C/32 dev lo`, which needs
//!   root) and removes it on drop. Being on `lo` also makes that address the kernel's source
//!   for packets to it.
//! - **NOTIFY**: `also-notify { 127.A.B.C port 5354; }` is accepted and the NOTIFY goes to that
//!   port; `also-notify { 127.A.B.C port 5354 key "name"; }` sends it TSIG-signed with that key.
//!   PowerDNS refuses a signed NOTIFY whose key it does not know ("can't find TSIG key with name
//!   …") and accepts it once the key is imported ([`crate::PdnsOptions::tsig_key`]). `named`
//!   sends from `notify-source`, set here to its own address: PowerDNS takes a NOTIFY only from
//!   a primary of the zone. The first NOTIFY goes out right after the zone loads, then one per
//!   new serial (`notify-delay 0`), retried a few times while the target does not answer.
//! - **Transfers**: `ixfr-from-differences yes` makes `named` keep a journal (`zone.db.jnl`) of
//!   the differences between successive zone files, so `IXFR=<old serial>` gets an incremental
//!   answer (new SOA, old SOA, deletions, new SOA, additions, new SOA).
//! - **Reload**: `SIGHUP` reloads the configuration and every zone whose file changed.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use domain::base::iana::Rtype;
use domain::rdata::ZoneRecordData;
use domain::zonefile::inplace::{Entry, Zonefile};
use tokio::time::{Instant, sleep};

use crate::dns::{QueryOptions, Rr, query_with};
use crate::process::{KillOnDrop, TestDir, find_program, run_tool, unique_loopback};

/// The port every `named` of the tests listens on (each on its own loopback address).
pub const NAMED_PORT: u16 = 5300;

/// How long [`Named::start`], [`Named::start_again`] and [`Named::set_zone`] wait for `named` to
/// serve the zone's SOA serial, unless [`NamedOptions::startup_timeout`] says otherwise. A start
/// normally takes well under a second.
pub const NAMED_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`Named::set_zone`] repeats the `SIGHUP` while the new serial is not served (a zone
/// file rewritten within the timestamp resolution of the last load looks unchanged to `named`).
const RELOAD_RETRY: Duration = Duration::from_secs(1);

/// Whether BIND's `named` and `dig` are installed.
pub fn named_installed() -> bool {
    find_program("named", "bind9").is_ok() && find_program("dig", "bind9-dnsutils").is_ok()
}

/// A TSIG key (RFC 8945) as `named.conf`, `dig -y` and `pdnsutil import-tsig-key` take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name, e.g. `xfr-key` (a domain name; no quotes, spaces or semicolons).
    pub name: String,
    /// The algorithm, e.g. `hmac-sha256`.
    pub algorithm: String,
    /// The secret in base64.
    pub secret: String,
}

impl TsigKey {
    /// An `hmac-sha256` key named `name` with a fresh random 32-byte secret (from
    /// `/dev/urandom`).
    pub fn generate(name: &str) -> Result<TsigKey> {
        let mut bytes = [0_u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("failed to read 32 random bytes from /dev/urandom")?;
        let key = TsigKey { name: name.to_owned(), algorithm: "hmac-sha256".to_owned(), secret: encode_base64(&bytes) };
        key.check()?;
        Ok(key)
    }

    /// The argument of `dig -y`: `hmac-sha256:name:secret`.
    pub fn dig_arg(&self) -> String {
        format!("{}:{}:{}", self.algorithm, self.name, self.secret)
    }

    /// The `key "name" { algorithm …; secret "…"; };` statement of `named.conf`.
    pub fn named_conf_statement(&self) -> String {
        format!("key \"{}\" {{ algorithm {}; secret \"{}\"; }};\n", self.name, self.algorithm, self.secret)
    }

    /// Rejects names, algorithms and secrets that would break the configuration files.
    pub(crate) fn check(&self) -> Result<()> {
        let ok = |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || "\"';{}:".contains(c));
        ensure!(
            ok(&self.name) && ok(&self.algorithm) && ok(&self.secret),
            "bad TSIG key {:?} / {:?} (no quotes, spaces, colons, braces or semicolons)",
            self.name,
            self.algorithm
        );
        Ok(())
    }
}

/// Standard base64 with padding.
fn encode_base64(bytes: &[u8]) -> String {
    domain::utils::base64::encode_string(bytes)
}

/// How to run one `named`; see [`Named::start`].
#[derive(Clone, Debug)]
pub struct NamedOptions {
    /// The zone's origin, e.g. `example.net.`.
    pub origin: String,
    /// The zone file (BIND format). Its SOA serial is what [`Named::start`] waits for.
    pub zone_text: String,
    /// A TSIG key: declared in `named.conf`, allowed to transfer the zone, and signing every
    /// NOTIFY to [`NamedOptions::also_notify`].
    pub tsig: Option<TsigKey>,
    /// Where `named` sends NOTIFY for every new serial (`also-notify { ip port p [key k]; }`).
    pub also_notify: Vec<SocketAddr>,
    /// Addresses allowed to transfer the zone without a key (e.g. a PowerDNS secondary's
    /// address: it sends from there with `query-local-address`). With neither these nor a key,
    /// nobody may transfer.
    pub allow_transfer_ips: Vec<IpAddr>,
    /// Address to listen on; `None` takes a fresh [`unique_loopback`] address. It is added to
    /// `lo` while `named` runs.
    pub address: Option<Ipv4Addr>,
    /// How long to wait for the zone's SOA serial to be served.
    pub startup_timeout: Duration,
}

impl NamedOptions {
    /// Options for zone `origin` (e.g. `example.net.`) with the zone file `zone_text`; no key,
    /// no NOTIFY targets, no transfers allowed.
    pub fn new(origin: &str, zone_text: impl Into<String>) -> NamedOptions {
        NamedOptions {
            origin: origin.to_owned(),
            zone_text: zone_text.into(),
            tsig: None,
            also_notify: Vec::new(),
            allow_transfer_ips: Vec::new(),
            address: None,
            startup_timeout: NAMED_STARTUP_TIMEOUT,
        }
    }

    /// Sets [`NamedOptions::tsig`].
    pub fn tsig(mut self, key: TsigKey) -> NamedOptions {
        self.tsig = Some(key);
        self
    }

    /// Adds a NOTIFY target ([`NamedOptions::also_notify`]).
    pub fn also_notify(mut self, target: SocketAddr) -> NamedOptions {
        self.also_notify.push(target);
        self
    }

    /// Allows unsigned transfers from `ip` ([`NamedOptions::allow_transfer_ips`]).
    pub fn allow_transfer_ip(mut self, ip: IpAddr) -> NamedOptions {
        self.allow_transfer_ips.push(ip);
        self
    }
}

/// A running `named` serving one zone as primary, killed on drop (its log is then printed, see
/// [`KillOnDrop`]), with its own [`TestDir`] holding `named.conf`, `zone.db`, the journal
/// `zone.db.jnl` and `named.log` (`named -g` logs to stderr).
#[derive(Debug)]
pub struct Named {
    // Declared first so that the server dies before its address and directory go.
    process: KillOnDrop,
    addr: SocketAddr,
    origin: String,
    /// The serial of the zone file as last written.
    serial: u32,
    startup_timeout: Duration,
    startup_time: Duration,
    _alias: LoopbackAlias,
    dir: TestDir,
}

impl Named {
    /// Writes `named.conf` and the zone file, adds the address to `lo`, starts
    /// `named -g -4 -n 1 -c named.conf` (as the current user, root: `ip addr add` needs it) and
    /// waits until it answers the zone's SOA with the zone file's serial, failing with its log
    /// if it exits or does not within [`NamedOptions::startup_timeout`].
    ///
    /// The configuration: `directory` is the test directory, no pid file, no session key, no
    /// `controls` (no rndc), `listen-on port 5300 { <addr>; }`, no IPv6, `recursion no`,
    /// `dnssec-validation no`, queries and NOTIFYs allowed from anyone, `notify explicit` (only
    /// the `also-notify` targets, not the zone's NS), `notify-source`/`transfer-source` the
    /// server's own address; the zone is `type primary` with `ixfr-from-differences yes`,
    /// `notify-delay 0` and `allow-transfer { key …; ip; … }`.
    pub async fn start(options: NamedOptions) -> Result<Named> {
        let named = find_program("named", "bind9")?;
        let NamedOptions { origin, zone_text, tsig, also_notify, allow_transfer_ips, address, startup_timeout } =
            options;
        ensure!(
            !origin.is_empty() && !origin.contains(|c: char| c.is_whitespace() || "\"';{}".contains(c)),
            "bad zone origin {origin:?}"
        );
        let origin = if origin.ends_with('.') { origin } else { format!("{origin}.") };
        if let Some(key) = &tsig {
            key.check()?;
        }
        let serial = soa_serial(&origin, &zone_text)?;
        let ip = address.unwrap_or_else(unique_loopback);
        ensure!(ip.is_loopback(), "named must listen on a loopback address, not {ip}");
        let dir = TestDir::new("named")?;
        let zone_path = dir.join("zone.db");
        fs::write(&zone_path, &zone_text).with_context(|| format!("failed to write {}", zone_path.display()))?;
        let conf = named_conf(dir.path(), ip, &origin, tsig.as_ref(), &also_notify, &allow_transfer_ips)?;
        let conf_path = dir.join("named.conf");
        fs::write(&conf_path, conf).with_context(|| format!("failed to write {}", conf_path.display()))?;
        let alias = LoopbackAlias::add(ip)?;
        let addr = SocketAddr::new(ip.into(), NAMED_PORT);
        let started = Instant::now();
        let process = KillOnDrop::spawn("named", &mut named_command(&named, dir.path()), dir.path())?;
        let mut server =
            Named { process, addr, origin, serial, startup_timeout, startup_time: Duration::ZERO, _alias: alias, dir };
        if let Err(e) = server.wait_serial(serial, None).await {
            // The error quotes the log already.
            server.process.print_log = false;
            return Err(e.context(format!("failed to start named (config {})", conf_path.display())));
        }
        server.startup_time = started.elapsed();
        Ok(server)
    }

    /// The address `named` answers DNS on (UDP and TCP, port [`NAMED_PORT`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The zone's origin with its trailing dot.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The directory holding `named.conf`, `zone.db`, the journal and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server process (log, signals, exit status); after [`Named::stop`] a dead one.
    pub fn process(&self) -> &KillOnDrop {
        &self.process
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// How long the last start took until the zone was served.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// The SOA serial `named` serves now (asked over UDP).
    pub async fn serial(&self) -> Result<u32> {
        served_serial(self.addr, &self.origin, Duration::from_secs(1), 3).await
    }

    /// Replaces the zone file with `zone_text`, sends `SIGHUP` and waits until `named` serves
    /// the new file's SOA serial, which it returns. `named` then sends NOTIFY to its
    /// `also-notify` targets by itself, and keeps the difference in its journal for IXFR.
    pub async fn set_zone(&mut self, zone_text: &str) -> Result<u32> {
        let serial = soa_serial(&self.origin, zone_text)?;
        let zone_path = self.dir.join("zone.db");
        fs::write(&zone_path, zone_text).with_context(|| format!("failed to write {}", zone_path.display()))?;
        self.serial = serial;
        self.process.signal("HUP")?;
        self.wait_serial(serial, Some(RELOAD_RETRY)).await?;
        Ok(serial)
    }

    /// Kills `named` (`SIGKILL`); its directory, zone file and journal stay for
    /// [`Named::start_again`].
    pub fn stop(&self) -> Result<()> {
        self.process.kill()?;
        Ok(())
    }

    /// Starts `named` again (killing it first if it still runs) with the same configuration,
    /// address and zone file, waiting as [`Named::start`] does. Its log continues in the same
    /// file.
    pub async fn start_again(&mut self) -> Result<()> {
        self.process.kill()?;
        let named = find_program("named", "bind9")?;
        let started = Instant::now();
        // The old value is dropped here: it is already dead, and its log is printed then.
        self.process = KillOnDrop::spawn("named", &mut named_command(&named, self.dir.path()), self.dir.path())?;
        if let Err(e) = self.wait_serial(self.serial, None).await {
            self.process.print_log = false;
            return Err(e.context("failed to start named again"));
        }
        self.startup_time = started.elapsed();
        Ok(())
    }

    /// Runs `dig @<addr> -p 5300 <args>` and returns its output, e.g.
    /// `["example.net.", "AXFR", "-y", &key.dig_arg()]`.
    pub async fn dig(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(find_program("dig", "bind9-dnsutils")?);
        command.arg(format!("@{}", self.addr.ip())).args(["-p", &self.addr.port().to_string()]).args(args);
        run_tool("dig", &mut command, self.dir.path()).await
    }

    /// Transfers the zone with `dig`: `request` is `AXFR` or `IXFR=<serial>`, signed with `key`
    /// if given. Returns the records in the order received (an incremental answer starts with
    /// the new SOA and then the old one), without the TSIG records, or an error quoting dig's output when the transfer
    /// failed (e.g. refused).
    pub async fn transfer(&self, request: &str, key: Option<&TsigKey>) -> Result<Vec<Rr>> {
        let mut args = vec![self.origin.clone(), request.to_owned(), "+nocomments".to_owned(), "+nosplit".to_owned()];
        if let Some(key) = key {
            args.extend(["-y".to_owned(), key.dig_arg()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.dig(&args).await?;
        ensure!(
            !output.contains("Transfer failed"),
            "{request} of {} from {} failed:\n{output}",
            self.origin,
            self.addr
        );
        // dig prints the TSIG records of a signed transfer among the others.
        let records: Vec<Rr> = dig_records(&output)?.into_iter().filter(|rr| rr.rtype != "TSIG").collect();
        ensure!(!records.is_empty(), "{request} of {} from {} returned no records:\n{output}", self.origin, self.addr);
        Ok(records)
    }

    /// Waits until `named` serves `serial`, sending `SIGHUP` again every `rehup` if given;
    /// fails with the log if it exits or the timeout passes.
    async fn wait_serial(&self, serial: u32, rehup: Option<Duration>) -> Result<()> {
        let started = Instant::now();
        let deadline = started + self.startup_timeout;
        let mut next_hup = rehup.map(|every| started + every);
        loop {
            if let Some(status) = self.process.try_wait()? {
                bail!("named exited ({status}) before serving serial {serial}; {}", self.process.log_tail());
            }
            let last = match served_serial(self.addr, &self.origin, Duration::from_millis(250), 1).await {
                Ok(served) if served == serial => return Ok(()),
                Ok(served) => format!("it serves serial {served}"),
                Err(e) => format!("last error: {e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "named on {} did not serve SOA {} serial {serial} within {:?} ({last}); {}",
                    self.addr,
                    self.origin,
                    self.startup_timeout,
                    self.process.log_tail()
                );
            }
            if let (Some(at), Some(every)) = (next_hup, rehup)
                && Instant::now() >= at
            {
                self.process.signal("HUP")?;
                next_hup = Some(Instant::now() + every);
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}

fn named_command(named: &Path, dir: &Path) -> Command {
    let mut command = Command::new(named);
    // -g: foreground, log to stderr; -4: IPv4 only; -n 1: one worker thread.
    command.args(["-g", "-4", "-n", "1", "-c"]).arg(dir.join("named.conf"));
    command
}

/// The `named.conf` of [`Named::start`].
fn named_conf(
    dir: &Path,
    ip: Ipv4Addr,
    origin: &str,
    tsig: Option<&TsigKey>,
    also_notify: &[SocketAddr],
    allow_transfer_ips: &[IpAddr],
) -> Result<String> {
    let dir = dir.to_str().context("the test directory's path is not UTF-8")?;
    ensure!(!dir.contains(['"', '\n']), "test directory {dir:?} cannot be quoted in named.conf");
    let mut conf = String::from("// written by geolb-tests\n");
    let key_clause = tsig.map(|key| format!(" key \"{}\"", key.name)).unwrap_or_default();
    if let Some(key) = tsig {
        conf.push_str(&key.named_conf_statement());
    }
    let mut notify = String::new();
    for target in also_notify {
        write!(notify, " {} port {}{key_clause};", target.ip(), target.port())?;
    }
    let mut transfer = String::new();
    if let Some(key) = tsig {
        write!(transfer, " key \"{}\";", key.name)?;
    }
    for ip in allow_transfer_ips {
        write!(transfer, " {ip};")?;
    }
    if transfer.is_empty() {
        transfer.push_str(" none;");
    }
    let zone = origin.trim_end_matches('.');
    write!(
        conf,
        r#"options {{
    directory "{dir}";
    pid-file none;
    session-keyfile none;
    listen-on port {NAMED_PORT} {{ {ip}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify explicit;
    notify-source {ip};
    transfer-source {ip};
    allow-query {{ any; }};
    allow-notify {{ any; }};
    allow-transfer {{ none; }};
}};
controls {{ }};
zone "{zone}" {{
    type primary;
    file "{dir}/zone.db";
    ixfr-from-differences yes;
    notify-delay 0;
    also-notify {{{notify} }};
    allow-transfer {{{transfer} }};
}};
"#
    )?;
    Ok(conf)
}

/// The SOA serial served by `server` for `origin` (authoritative NOERROR answers only).
async fn served_serial(server: SocketAddr, origin: &str, timeout: Duration, attempts: u32) -> Result<u32> {
    let response = query_with(server, &QueryOptions::new(origin, "SOA").timeout(timeout).attempts(attempts)).await?;
    ensure!(response.rcode == "NOERROR" && response.aa, "SOA {origin} from {server}:\n{response}");
    let soa = response.answers_of("SOA");
    let data = soa.first().map(|rr| rr.data.as_str()).with_context(|| format!("no SOA in:\n{response}"))?;
    data.split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no serial in SOA {data:?} from {server}"))
}

/// The serial of the SOA record in a BIND zone file for `origin` (parsed with `domain`).
pub(crate) fn soa_serial(origin: &str, zone_text: &str) -> Result<u32> {
    let mut zonefile = Zonefile::new();
    zonefile.extend_from_slice(format!("$ORIGIN {origin}\n").as_bytes());
    zonefile.extend_from_slice(zone_text.as_bytes());
    zonefile.extend_from_slice(b"\n");
    while let Some(entry) = zonefile.next_entry().map_err(|e| anyhow!("bad zone file for {origin}: {e}"))? {
        if let Entry::Record(record) = entry
            && record.rtype() == Rtype::SOA
            && let ZoneRecordData::Soa(soa) = record.data()
        {
            return Ok(soa.serial().into_int());
        }
    }
    bail!("the zone file for {origin} has no SOA record")
}

/// The records in `dig` output (lines that are neither empty nor `;` comments), parsed as
/// `name ttl class type data…`; the data's fields are joined by single spaces.
fn dig_records(output: &str) -> Result<Vec<Rr>> {
    let mut records = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(';')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(fields.len() >= 4, "unexpected line in dig output: {line:?}");
        let (name, ttl, rtype, data) = match fields[2] {
            "IN" | "ANY" | "CH" | "NONE" => (fields[0], fields[1], fields[3], &fields[4..]),
            _ => (fields[0], fields[1], fields[2], &fields[3..]),
        };
        records.push(Rr {
            name: name.to_ascii_lowercase(),
            rtype: rtype.to_owned(),
            ttl: ttl.parse().with_context(|| format!("bad TTL in dig output line {line:?}"))?,
            data: data.join(" "),
        });
    }
    Ok(records)
}

/// A loopback address added to `lo` (`ip addr add <ip>/32 dev lo`) and removed on drop.
#[derive(Debug)]
struct LoopbackAlias {
    ip: Ipv4Addr,
    /// False when the address was on `lo` already (then it is left there).
    added: bool,
}

impl LoopbackAlias {
    fn add(ip: Ipv4Addr) -> Result<LoopbackAlias> {
        let ip_tool = find_program("ip", "iproute2")?;
        let output = Command::new(&ip_tool)
            .args(["-4", "addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("failed to run {}", ip_tool.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            Ok(LoopbackAlias { ip, added: true })
        } else if stderr.contains("File exists") {
            Ok(LoopbackAlias { ip, added: false })
        } else {
            bail!(
                "`ip addr add {ip}/32 dev lo` failed ({}): {}; named listens only on addresses \
                 configured on an interface, and adding one needs root (CAP_NET_ADMIN)",
                output.status,
                stderr.trim()
            )
        }
    }
}

impl Drop for LoopbackAlias {
    fn drop(&mut self) {
        if !self.added {
            return;
        }
        let result = find_program("ip", "iproute2").and_then(|ip_tool| {
            let output = Command::new(ip_tool)
                .args(["-4", "addr", "del", &format!("{}/32", self.ip), "dev", "lo"])
                .stdin(Stdio::null())
                .output()?;
            ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr).trim());
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("geolb-tests: failed to remove {}/32 from lo: {e:#}", self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "$TTL 300\n@ IN SOA ns1 hostmaster (\n  2026112301 ; serial\n  3600 600 604800 300 )\n\
                        @ IN NS ns1\nns1 IN A 192.0.2.53\n";

    #[test]
    fn finds_the_soa_serial() {
        assert_eq!(soa_serial("example.net.", ZONE).ok(), Some(2026112301));
        assert!(soa_serial("example.net.", "@ 300 IN A 192.0.2.1\n").is_err());
    }

    #[test]
    fn generated_keys_are_32_random_bytes() {
        let a = TsigKey::generate("xfr").expect("key");
        let b = TsigKey::generate("xfr").expect("key");
        assert_eq!(a.algorithm, "hmac-sha256");
        assert_eq!(a.secret.len(), 44);
        assert!(a.secret.ends_with('='));
        assert_ne!(a.secret, b.secret);
        assert!(a.dig_arg().starts_with("hmac-sha256:xfr:"));
    }

    #[test]
    fn named_conf_lists_notify_targets_and_transfer_peers() {
        let key = TsigKey { name: "xfr".into(), algorithm: "hmac-sha256".into(), secret: "c2VjcmV0".into() };
        let notify = ["127.9.9.10:5354".parse().expect("addr")];
        let transfer = [IpAddr::from([127, 9, 9, 11])];
        let conf = named_conf(
            Path::new("/tmp/x"),
            Ipv4Addr::new(127, 9, 9, 9),
            "example.net.",
            Some(&key),
            &notify,
            &transfer,
        )
        .expect("conf");
        assert!(conf.contains("key \"xfr\" { algorithm hmac-sha256; secret \"c2VjcmV0\"; };"), "{conf}");
        assert!(conf.contains("also-notify { 127.9.9.10 port 5354 key \"xfr\"; };"), "{conf}");
        assert!(conf.contains("allow-transfer { key \"xfr\"; 127.9.9.11; };"), "{conf}");
        assert!(conf.contains("zone \"example.net\" {"), "{conf}");
        let conf =
            named_conf(Path::new("/tmp/x"), Ipv4Addr::new(127, 9, 9, 9), "example.net.", None, &[], &[]).expect("conf");
        assert!(conf.contains("also-notify { };") && conf.contains("allow-transfer { none; };"), "{conf}");
    }

    #[test]
    fn parses_dig_transfer_output() {
        let output = "; <<>> DiG 9.18 <<>> example.net AXFR\n;; global options: +cmd\n\
                      example.net.\t300\tIN\tSOA\tns1.example.net. hostmaster.example.net. 2 3600 600 604800 300\n\
                      static.example.net. 300 IN A 192.0.2.80\n;; XFR size: 2 records\n";
        let records = dig_records(output).expect("parses");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].rtype, "SOA");
        assert_eq!(records[0].data, "ns1.example.net. hostmaster.example.net. 2 3600 600 604800 300");
        assert_eq!(records[1].to_string(), "static.example.net. 300 IN A 192.0.2.80");
    }
}
