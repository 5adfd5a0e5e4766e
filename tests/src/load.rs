//! A steady query load: a fixed rate of UDP questions to one server, each answer (or its
//! absence) recorded with the time it was asked, so a test or bench can say how many failed and
//! when.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::QueryOptions;

/// How a question ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR with at least one answer record.
    Answered,
    /// NOERROR with no answer.
    Empty,
    /// SERVFAIL: what PowerDNS answers while its backend is unreachable.
    ServFail,
    /// Another response code.
    Rcode(u8),
    /// No response within the timeout.
    Timeout,
}

/// One question of the load.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    /// Which of the load's questions it was.
    pub question: usize,
    /// How it ended.
    pub outcome: Outcome,
}

/// A running load; [`Load::stop`] returns every question's outcome in the order sent.
pub struct Load {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<Vec<Asked>>>,
    started: Instant,
}

impl Load {
    /// Asks `server` the `questions` round-robin at `rate` per second, each given `timeout`.
    pub async fn start(server: SocketAddr, questions: &[QueryOptions], rate: u32, timeout: Duration) -> Result<Load> {
        let encoded: Vec<Vec<u8>> =
            questions.iter().map(|q| crate::dns::build_query(q).map(|(_, m)| m)).collect::<Result<_>>()?;
        let bind: SocketAddr = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }.parse()?;
        let socket = Arc::new(UdpSocket::bind(bind).await.context("bind the load's socket")?);
        socket.connect(server).await?;
        let (stop, mut stopped) = watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(async move {
            // id → (index in `asked`), for the questions in flight.
            let mut in_flight: HashMap<u16, usize> = HashMap::new();
            let mut asked: Vec<Asked> = Vec::new();
            let mut sent_at: Vec<Instant> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut buf = vec![0u8; 4096];
            let mut next_id: u16 = 0;
            let mut stopping_since: Option<Instant> = None;
            loop {
                if let Some(since) = stopping_since
                    && (in_flight.is_empty() || since.elapsed() > timeout)
                {
                    break;
                }
                tokio::select! {
                    _ = tick.tick(), if stopping_since.is_none() => {
                        let question = asked.len() % encoded.len();
                        let mut message = encoded[question].clone();
                        next_id = next_id.wrapping_add(1);
                        message[..2].copy_from_slice(&next_id.to_be_bytes());
                        if let Some(old) = in_flight.insert(next_id, asked.len()) {
                            asked[old].outcome = Outcome::Timeout;
                        }
                        sent_at.push(Instant::now());
                        asked.push(Asked { at: started.elapsed(), question, outcome: Outcome::Timeout });
                        socket.send(&message).await.context("send a question")?;
                        expire(&mut in_flight, &sent_at, timeout);
                    }
                    received = socket.recv(&mut buf) => {
                        let Ok(n) = received else { continue };
                        if n < 12 || buf[2] & 0x80 == 0 {
                            continue;
                        }
                        let id = u16::from_be_bytes([buf[0], buf[1]]);
                        let Some(index) = in_flight.remove(&id) else { continue };
                        if sent_at[index].elapsed() > timeout {
                            continue;
                        }
                        let answers = u16::from_be_bytes([buf[6], buf[7]]);
                        asked[index].outcome = match buf[3] & 0x0f {
                            0 if answers > 0 => Outcome::Answered,
                            0 => Outcome::Empty,
                            2 => Outcome::ServFail,
                            rcode => Outcome::Rcode(rcode),
                        };
                    }
                    _ = stopped.changed(), if stopping_since.is_none() => stopping_since = Some(Instant::now()),
                    _ = tokio::time::sleep(Duration::from_millis(50)), if stopping_since.is_some() => {}
                }
            }
            Ok(asked)
        });
        Ok(Load { stop, task, started })
    }

    /// Time since the load started (the clock of [`Asked::at`]).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops sending, waits for the answers still in flight (up to the timeout) and returns
    /// every question's outcome.
    pub async fn stop(self) -> Result<Vec<Asked>> {
        let _ = self.stop.send(true);
        self.task.await.context("the load task")?
    }
}

/// Forgets questions older than `timeout` (they stay [`Outcome::Timeout`]).
fn expire(in_flight: &mut HashMap<u16, usize>, sent_at: &[Instant], timeout: Duration) {
    if in_flight.len() > 256 {
        in_flight.retain(|_, index| sent_at[*index].elapsed() <= timeout);
    }
}

/// The failed questions (SERVFAIL, another error code, or no answer) of `asked`.
pub fn failures(asked: &[Asked]) -> Vec<Asked> {
    asked
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::ServFail | Outcome::Rcode(_) | Outcome::Timeout))
        .copied()
        .collect()
}
