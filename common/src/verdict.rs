//! What one prober says about one node, and its compact text form for gossip values.
//!
//! A prober publishes one [`Verdict`] per node under a gossip key that changes only on transitions
//! (see docs/architecture.md, "The health path"), and every member folds those verdicts into one view
//! ([`crate::quorum`]). This module owns the value and its encoding; it knows nothing about keys,
//! versions or how verdicts are counted.
//!
//! # Encoding
//!
//! Four comma-separated fields, at most [`MAX_ENCODED_LEN`] bytes (46 in practice):
//!
//! ```text
//! U,1732380000123,1520,ok              up since that unix ms, last RTT 1.52 ms, last check passed
//! D,1732380000999,2000000,timeout      down, last check timed out after 2 s
//! D,1732380000999,8300,status:503      down, last check got HTTP 503
//! ```
//!
//! 1. `U` or `D`: the prober's verdict after hysteresis (rise/fall), i.e. its vote.
//! 2. `since_ms`: unix milliseconds of the prober's last transition.
//! 3. `rtt_us`: duration of the last check in microseconds.
//! 4. the [`Reason`] the *last check* ended as it did: `ok`, `timeout`, `refused`, `status:<code>`,
//!    `body`, `tls`, `dns`, `other`.
//!
//! The verdict and the last check's reason are independent on purpose: a node can be `U` with
//! `timeout` (one failed check, `fall` not reached yet) or `D` with `ok` (recovering, `rise` not
//! reached yet).
//!
//! Numbers are plain ASCII decimal without sign or leading zeros, so every [`Verdict`] has exactly
//! one encoding. [`Verdict::decode`] never panics and rejects any input over [`MAX_ENCODED_LEN`]
//! bytes, any field count other than four, and any malformed number, state or reason. One
//! deliberate leniency keeps mixed-version clusters working during a rolling upgrade: a reason
//! word this version does not know (lower-case `[a-z][a-z0-9_]*`, optionally followed by
//! `:[a-z0-9_]+`) decodes as [`Reason::Other`], so a newer prober's *vote* still counts on an older
//! reader. Anything else that changes the layout needs a new gossip key, not a new value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Upper bound of an encoded verdict in bytes; [`Verdict::decode`] refuses longer input unread.
pub const MAX_ENCODED_LEN: usize = 64;

/// Why a prober's last check of a node ended as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The check passed.
    Ok,
    /// No complete answer within the check's timeout.
    Timeout,
    /// The connection was refused or reset.
    Refused,
    /// An HTTP answer with an unexpected status code.
    Status(u16),
    /// An HTTP answer whose body did not match the expected content.
    BodyMismatch,
    /// The TLS handshake or certificate validation failed.
    Tls,
    /// The node's name could not be resolved.
    Dns,
    /// Anything else, including reasons from a newer geolb this version does not know.
    Other,
}

impl Reason {
    /// The reason's word without detail (`status` for [`Reason::Status`]), e.g. for a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Timeout => "timeout",
            Reason::Refused => "refused",
            Reason::Status(_) => "status",
            Reason::BodyMismatch => "body",
            Reason::Tls => "tls",
            Reason::Dns => "dns",
            Reason::Other => "other",
        }
    }

    /// Parses the reason field of an encoded verdict.
    fn decode(s: &str) -> Result<Reason, VerdictError> {
        let bad = || VerdictError::Reason { found: s.to_owned() };
        let (word, detail) = match s.split_once(':') {
            Some((word, detail)) => (word, Some(detail)),
            None => (s, None),
        };
        if !is_word(word) {
            return Err(bad());
        }
        match (word, detail) {
            ("status", Some(code)) => {
                parse_decimal(code).and_then(|c| u16::try_from(c).ok()).map(Reason::Status).ok_or_else(bad)
            }
            ("status", None) => Err(bad()),
            (_, Some(detail)) if !is_detail(detail) => Err(bad()),
            ("ok", None) => Ok(Reason::Ok),
            ("timeout", None) => Ok(Reason::Timeout),
            ("refused", None) => Ok(Reason::Refused),
            ("body", None) => Ok(Reason::BodyMismatch),
            ("tls", None) => Ok(Reason::Tls),
            ("dns", None) => Ok(Reason::Dns),
            ("other", None) => Ok(Reason::Other),
            // A well-formed reason from a newer version (or a known word with a detail this
            // version does not expect): keep the vote, lose the detail.
            _ => Ok(Reason::Other),
        }
    }
}

impl fmt::Display for Reason {
    /// Writes the reason as it appears in an encoded verdict, e.g. `timeout` or `status:503`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Status(code) => write!(f, "status:{code}"),
            other => f.write_str(other.label()),
        }
    }
}

/// One prober's current verdict on one node, as gossiped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Verdict {
    /// The prober's vote after hysteresis: `true` = Up, `false` = Down.
    pub up: bool,
    /// Unix milliseconds of the prober's last transition of `up`.
    pub since_ms: u64,
    /// Duration of the last check in microseconds.
    pub rtt_us: u32,
    /// Why the last check ended as it did (not necessarily why `up` is what it is).
    pub reason: Reason,
}

impl Verdict {
    /// The compact gossip form, e.g. `U,1732380000123,1520,ok`; never longer than [`MAX_ENCODED_LEN`].
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// Parses the compact gossip form. Never panics; see the module docs for what is refused.
    pub fn decode(s: &str) -> Result<Verdict, VerdictError> {
        if s.len() > MAX_ENCODED_LEN {
            return Err(VerdictError::TooLong { len: s.len() });
        }
        let fields: Vec<&str> = s.split(',').collect();
        let [state, since, rtt, reason] = fields[..] else {
            return Err(VerdictError::FieldCount { found: fields.len() });
        };
        let up = match state {
            "U" => true,
            "D" => false,
            _ => return Err(VerdictError::State { found: state.to_owned() }),
        };
        let since_ms =
            parse_decimal(since).ok_or_else(|| VerdictError::Number { field: "since_ms", found: since.to_owned() })?;
        let rtt_us = parse_decimal(rtt)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| VerdictError::Number { field: "rtt_us", found: rtt.to_owned() })?;
        let reason = Reason::decode(reason)?;
        Ok(Verdict { up, since_ms, rtt_us, reason })
    }
}

impl fmt::Display for Verdict {
    /// Writes the compact gossip form (the same as [`Verdict::encode`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.up { 'U' } else { 'D' };
        write!(f, "{state},{},{},{}", self.since_ms, self.rtt_us, self.reason)
    }
}

impl FromStr for Verdict {
    type Err = VerdictError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verdict::decode(s)
    }
}

/// Why a gossip value is not a verdict. Every variant carries the offending (short) input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    /// The value is longer than any verdict can be; it was not parsed.
    #[error("verdict of {len} bytes is longer than {MAX_ENCODED_LEN}")]
    TooLong {
        /// Length of the refused value in bytes.
        len: usize,
    },
    /// The value does not have exactly four comma-separated fields.
    #[error("verdict has {found} comma-separated fields, expected 4")]
    FieldCount {
        /// How many fields were found.
        found: usize,
    },
    /// The first field is neither `U` nor `D`.
    #[error("verdict state {found:?} is neither \"U\" nor \"D\"")]
    State {
        /// The first field as found.
        found: String,
    },
    /// A numeric field is not a canonical decimal number that fits its type.
    #[error("verdict {field} {found:?} is not a decimal number in range")]
    Number {
        /// Which field: `since_ms` or `rtt_us`.
        field: &'static str,
        /// The field as found.
        found: String,
    },
    /// The reason field is not a well-formed reason.
    #[error("verdict reason {found:?} is malformed")]
    Reason {
        /// The reason field as found.
        found: String,
    },
}

/// Parses canonical unsigned decimal: ASCII digits only, no sign, no leading zero (except `0`).
fn parse_decimal(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// `[a-z][a-z0-9_]*`: the word of a reason, known or not.
fn is_word(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `[a-z0-9_]+`: the detail after `:` in a reason this version does not know.
fn is_detail(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn verdict(up: bool, since_ms: u64, rtt_us: u32, reason: Reason) -> Verdict {
        Verdict { up, since_ms, rtt_us, reason }
    }

    #[test]
    fn encodes_the_documented_examples() {
        assert_eq!(verdict(true, 1732380000123, 1520, Reason::Ok).encode(), "U,1732380000123,1520,ok");
        assert_eq!(
            verdict(false, 1732380000999, 2_000_000, Reason::Timeout).encode(),
            "D,1732380000999,2000000,timeout"
        );
        assert_eq!(verdict(false, 7, 8300, Reason::Status(503)).encode(), "D,7,8300,status:503");
        assert_eq!(verdict(false, 0, 0, Reason::BodyMismatch).encode(), "D,0,0,body");
    }

    #[test]
    fn decodes_every_reason() {
        for (text, reason) in [
            ("ok", Reason::Ok),
            ("timeout", Reason::Timeout),
            ("refused", Reason::Refused),
            ("status:0", Reason::Status(0)),
            ("status:65535", Reason::Status(65535)),
            ("body", Reason::BodyMismatch),
            ("tls", Reason::Tls),
            ("dns", Reason::Dns),
            ("other", Reason::Other),
        ] {
            let v = Verdict::decode(&format!("U,1,2,{text}")).expect(text);
            assert_eq!(v, verdict(true, 1, 2, reason));
            assert_eq!(v.encode(), format!("U,1,2,{text}"));
        }
    }

    #[test]
    fn longest_verdict_fits() {
        let longest = verdict(false, u64::MAX, u32::MAX, Reason::Status(u16::MAX)).encode();
        assert!(longest.len() <= MAX_ENCODED_LEN, "{longest}");
        assert_eq!(Verdict::decode(&longest).ok(), Some(verdict(false, u64::MAX, u32::MAX, Reason::Status(u16::MAX))));
    }

    #[test]
    fn unknown_reason_words_keep_the_vote() {
        assert_eq!(Verdict::decode("D,5,6,connect_reset").map(|v| (v.up, v.reason)), Ok((false, Reason::Other)));
        assert_eq!(Verdict::decode("D,5,6,alpn:h2").map(|v| v.reason), Ok(Reason::Other));
        assert_eq!(Verdict::decode("U,5,6,tls:expired").map(|v| v.reason), Ok(Reason::Other));
    }

    #[test]
    fn rejects_malformed_values() {
        let too_long = format!("U,1,2,{}", "o".repeat(64));
        for bad in [
            "",
            "U",
            "U,1,2",
            "U,1,2,ok,extra",
            "X,1,2,ok",
            "u,1,2,ok",
            "UP,1,2,ok",
            "U,,2,ok",
            "U,01,2,ok",
            "U,+1,2,ok",
            "U,-1,2,ok",
            "U, 1,2,ok",
            "U,1,2 ,ok",
            "U,18446744073709551616,2,ok",
            "U,1,4294967296,ok",
            "U,1,2,",
            "U,1,2,OK",
            "U,1,2,status",
            "U,1,2,status:",
            "U,1,2,status:65536",
            "U,1,2,status:0503",
            "U,1,2,status:abc",
            "U,1,2,9lives",
            "U,1,2,new:",
            "U,1,2,new:a:b",
            "U,1,2,new:A",
            "U,1,2,ok\n",
            "U,1,2,é",
            too_long.as_str(),
        ] {
            assert!(Verdict::decode(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn errors_name_the_offending_input() {
        assert_eq!(
            Verdict::decode("U,01,2,ok").map_err(|e| e.to_string()),
            Err("verdict since_ms \"01\" is not a decimal number in range".to_owned())
        );
        assert_eq!(Verdict::decode(&"x".repeat(65)), Err(VerdictError::TooLong { len: 65 }));
    }

    fn any_reason() -> impl Strategy<Value = Reason> {
        prop_oneof![
            Just(Reason::Ok),
            Just(Reason::Timeout),
            Just(Reason::Refused),
            any::<u16>().prop_map(Reason::Status),
            Just(Reason::BodyMismatch),
            Just(Reason::Tls),
            Just(Reason::Dns),
            Just(Reason::Other),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(up: bool, since_ms: u64, rtt_us: u32, reason in any_reason()) {
            let v = verdict(up, since_ms, rtt_us, reason);
            let encoded = v.encode();
            prop_assert!(encoded.len() <= MAX_ENCODED_LEN);
            prop_assert_eq!(Verdict::decode(&encoded), Ok(v));
        }

        #[test]
        fn random_strings_never_panic(s in ".{0,80}") {
            let _ = Verdict::decode(&s);
        }

        #[test]
        fn verdict_like_strings_decode_canonically(s in "[UDX],[0-9+]{0,21},[0-9]{0,11},[a-z_:0-9]{0,14}") {
            // Whatever decodes re-encodes to itself, except unknown reasons, which become `other`.
            if let Ok(v) = Verdict::decode(&s) {
                let encoded = v.encode();
                let unknown_reason = v.reason == Reason::Other && !s.ends_with(",other");
                prop_assert!(encoded == s || unknown_reason, "{} -> {}", s, encoded);
            }
        }
    }
}
