//! `geolbctl`: the command line over a geolb member's admin API.
//!
//! It reads and changes the fleet document (`config get|edit|apply|diff|history|rollback`),
//! changes nodes in it (`nodes add|weight|remove`, read-modify-write with `If-Match`, retried
//! when someone else wrote first) and drains nodes (`nodes drain|undrain`). Every member serves
//! the same API; point `--url` at any one of them.
//!
//! Exit codes: 0 ok (and `config diff`: no difference), 1 a failure (and `config diff`: a
//! difference), 2 a usage error.
//!
//! Layout: `client.rs` speaks HTTP to the API; `document.rs` reads, normalizes and diffs
//! documents; `config.rs` and `nodes.rs` are the commands.

mod client;
mod config;
mod document;
mod nodes;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::client::{Client, MAX_MESSAGE_CHARS};

/// Reads and changes a geolb cluster's fleet configuration over any member's admin API.
#[derive(Debug, Parser)]
#[command(name = "geolbctl", version, about)]
struct Cli {
    /// The member's admin API.
    #[arg(long, global = true, env = "GEOLB_URL", default_value = "http://127.0.0.1:9101")]
    url: String,
    /// The bearer token (a command-line --token-file beats a GEOLB_TOKEN from the environment).
    #[arg(long, global = true, env = "GEOLB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token (e.g. /etc/geolb/admin.token).
    #[arg(long, global = true, env = "GEOLB_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The fleet document: show, edit, apply, diff, history, rollback.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Nodes: add, reweight or remove one in the document; drain or undrain one.
    #[command(subcommand)]
    Nodes(NodesCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Prints the newest document (JSON; --toml for TOML), its version on stderr.
    Get {
        /// Print TOML, in the shape of a config file's fleet tables.
        #[arg(long)]
        toml: bool,
    },
    /// Opens the document as TOML in $EDITOR (else vi) and writes it back as the next version.
    Edit {
        /// The change message recorded in the history.
        #[arg(short, long, value_parser = parse_message)]
        message: Option<String>,
    },
    /// Writes FILE (.toml or .json) as the next version.
    Apply {
        /// The document.
        file: PathBuf,
        /// The change message recorded in the history.
        #[arg(short, long, value_parser = parse_message)]
        message: Option<String>,
        /// Write only if the newest version is still N (default: the newest when asked).
        #[arg(long, value_name = "N")]
        if_match: Option<u64>,
    },
    /// Unified diff of the newest document against FILE; exit 0 when the same, 1 when not.
    Diff {
        /// The document (.toml or .json).
        file: PathBuf,
        /// Compare as TOML rather than pretty JSON.
        #[arg(long)]
        toml: bool,
    },
    /// Every version: number, time, author, hash, whether superseded, message.
    History,
    /// Writes version N's document again, as the next version.
    Rollback {
        /// The version to go back to.
        version: u64,
        /// The change message (default "rollback to version N").
        #[arg(short, long, value_parser = parse_message)]
        message: Option<String>,
        /// Write only if the newest version is still this one.
        #[arg(long, value_name = "N")]
        if_match: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum NodesCommand {
    /// Adds a node to the document.
    #[command(group = clap::ArgGroup::new("address").required(true).multiple(true))]
    Add {
        /// Its id, unique in the document.
        id: String,
        /// The PoP it stands in.
        #[arg(long)]
        pop: String,
        /// Its IPv4 address (answered for A).
        #[arg(long, group = "address")]
        ipv4: Option<Ipv4Addr>,
        /// Its IPv6 address (answered for AAAA).
        #[arg(long, group = "address")]
        ipv6: Option<Ipv6Addr>,
        /// Its share of the traffic (default 100).
        #[arg(long)]
        weight: Option<u32>,
        /// The change message (default "add node ID at PoP P").
        #[arg(short, long, value_parser = parse_message)]
        message: Option<String>,
    },
    /// Sets a node's weight in the document.
    Weight {
        /// The node.
        id: String,
        /// Its new weight.
        weight: u32,
        /// The change message (default "set node ID weight to W").
        #[arg(short, long, value_parser = parse_message)]
        message: Option<String>,
    },
    /// Removes a node from the document.
    Remove {
        /// The node.
        id: String,
        /// The change message (default "remove node ID").
        #[arg(short, long, value_parser = parse_message)]
        message: Option<String>,
    },
    /// Drains a node on every member (it leaves the answers, whatever its checks say).
    Drain {
        /// The node.
        id: String,
    },
    /// Ends a node's drain.
    Undrain {
        /// The node.
        id: String,
    },
}

/// A change message as the `Geolb-Message` header carries it. The API takes UTF-8 on one line;
/// this client sends header values as visible ASCII only, so anything else is refused here.
fn parse_message(text: &str) -> Result<String, String> {
    if let Some(c) = text.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return Err(format!("{c:?} cannot be sent: the message must be printable ASCII on one line"));
    }
    let count = text.chars().count();
    if count > MAX_MESSAGE_CHARS {
        return Err(format!("{count} characters is over the API's {MAX_MESSAGE_CHARS}"));
    }
    Ok(text.to_owned())
}

/// `ms` (unix) as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| format!("{ms} ms"), |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// The bearer token: `--token`, else the contents of `--token-file`; a value given on the
/// command line beats one from the environment.
fn token(cli: &Cli, matches: &ArgMatches) -> Result<Option<String>> {
    let on_line = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let use_file = match (&cli.token, &cli.token_file) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(_), Some(_)) => on_line("token_file") && !on_line("token"),
    };
    let Some(path) = cli.token_file.as_ref().filter(|_| use_file) else {
        return Ok(cli.token.clone());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(Some(token.to_owned()))
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    let client = Client::new(&cli.url, token(&cli, matches)?);
    match cli.command {
        Command::Config(c) => match c {
            ConfigCommand::Get { toml } => config::get(&client, toml),
            ConfigCommand::Edit { message } => config::edit(&client, message.as_deref().unwrap_or("")),
            ConfigCommand::Apply { file, message, if_match } => {
                config::apply(&client, &file, message.as_deref().unwrap_or(""), if_match)
            }
            ConfigCommand::Diff { file, toml } => config::diff(&client, &file, toml),
            ConfigCommand::History => config::history(&client),
            ConfigCommand::Rollback { version, message, if_match } => {
                let message = message.unwrap_or_else(|| format!("rollback to version {version}"));
                config::rollback(&client, version, &message, if_match)
            }
        },
        Command::Nodes(n) => match n {
            NodesCommand::Add { id, pop, ipv4, ipv6, weight, message } => {
                let edit = nodes::Edit::Add { id, pop, ipv4, ipv6, weight };
                nodes::edit(&client, &edit, message)
            }
            NodesCommand::Weight { id, weight, message } => {
                nodes::edit(&client, &nodes::Edit::Weight { id, weight }, message)
            }
            NodesCommand::Remove { id, message } => nodes::edit(&client, &nodes::Edit::Remove { id }, message),
            NodesCommand::Drain { id } => nodes::drain(&client, &id, true),
            NodesCommand::Undrain { id } => nodes::drain(&client, &id, false),
        },
    }
}

fn main() -> ExitCode {
    // Parsed from matches (not `Cli::parse`) to learn where --token and --token-file came from.
    // A usage error exits 2 (clap's own).
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Cli, ArgMatches), clap::Error> {
        let matches = Cli::command().try_get_matches_from(args)?;
        Ok((Cli::from_arg_matches(&matches)?, matches))
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            &["geolbctl", "config", "bogus"][..],
            &["geolbctl", "nodes", "add", "x", "--pop", "fra"],
            &["geolbctl", "nodes", "weight", "x", "heavy"],
            &["geolbctl", "config", "apply", "f.toml", "-m", "caf\u{e9}"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        let (cli, _) = parse(&["geolbctl", "nodes", "add", "x", "--pop", "fra", "--ipv6", "2001:db8::1"]).unwrap();
        assert!(matches!(cli.command, Command::Nodes(NodesCommand::Add { ipv6: Some(_), ipv4: None, .. })));
    }

    #[test]
    fn a_token_on_the_command_line_beats_one_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "from-file-0123456789\n").unwrap();
        let file = file.to_str().unwrap();
        let (cli, m) = parse(&["geolbctl", "--token", "from-flag", "config", "get"]).unwrap();
        assert_eq!(token(&cli, &m).unwrap().as_deref(), Some("from-flag"));
        let (cli, m) = parse(&["geolbctl", "config", "get", "--token-file", file]).unwrap();
        assert_eq!(token(&cli, &m).unwrap().as_deref(), Some("from-file-0123456789"));
        // Both on the line: --token wins.
        let (cli, m) = parse(&["geolbctl", "--token-file", file, "--token", "from-flag", "config", "get"]).unwrap();
        assert_eq!(token(&cli, &m).unwrap().as_deref(), Some("from-flag"));
    }

    #[test]
    fn messages_and_times() {
        assert_eq!(parse_message("move fra to syd").unwrap(), "move fra to syd");
        assert!(parse_message("two\nlines").is_err());
        assert!(parse_message(&"x".repeat(1001)).is_err());
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
    }
}
