//! Connections that have not logged in yet, counted globally and per
//! source address.
//!
//! Before login a client is nobody, yet each of its connections holds a
//! descriptor, buffers and a TLS state for up to the login timeout. Without
//! a cap, a few thousand half-sent logins take memory and descriptors from
//! everyone (10,000 half-sent 60 KB password messages once added 756 MiB).
//! Every adapter takes a [`PreAuthPermit`] at accept and drops it once the
//! client is admitted or gone; a connection over a cap is closed at once,
//! before anything is read from it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many connections may be logging in at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreAuthLimits {
    /// Over every source address and protocol.
    pub global: usize,
    /// From one source address.
    pub per_address: usize,
}

impl Default for PreAuthLimits {
    fn default() -> Self {
        Self {
            global: 2048,
            per_address: 512,
        }
    }
}

/// Which cap a refused connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PreAuthFull {
    /// Too many connections logging in overall.
    #[error("too many connections are logging in")]
    Global,
    /// Too many connections logging in from this address.
    #[error("too many connections are logging in from this address")]
    PerAddress,
}

/// The gate every adapter's accept loop passes connections through.
#[derive(Debug, Clone, Default)]
pub struct PreAuthGate {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// What it guards, for metrics and logs (`login`, `api`).
    guards: &'static str,
    limits: PreAuthLimits,
    counts: Mutex<Counts>,
    refusals: LogEvery,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Lets a repeated warning through at most once per period, with the
/// count of those held back since: a flood (of refused connections, of
/// failed accepts) must not become a flood of log lines.
#[derive(Debug, Default)]
pub struct LogEvery {
    last: Mutex<(Option<Instant>, u64)>,
}

impl LogEvery {
    /// `Some(held back since the last one)` when this occurrence should be
    /// logged, `None` when it is only counted.
    pub fn due(&self, period: Duration) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0.is_none_or(|t| t.elapsed() >= period) {
            let held = last.1;
            *last = (Some(Instant::now()), 0);
            Some(held)
        } else {
            last.1 += 1;
            None
        }
    }
}

/// How often refusals and failed accepts are logged.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Held while a connection logs in; dropping it frees its place.
#[derive(Debug)]
pub struct PreAuthPermit {
    gate: PreAuthGate,
    address: IpAddr,
}

impl PreAuthGate {
    /// A gate with `limits` for connections logging in.
    pub fn new(limits: PreAuthLimits) -> Self {
        Self::guarding("login", limits)
    }

    /// A gate with `limits` for what `guards` names (`api`: connections
    /// to the API port, held for as long as they are open).
    pub fn guarding(guards: &'static str, limits: PreAuthLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                guards,
                limits,
                ..Inner::default()
            }),
        }
    }

    /// A place for a connection from `address`, or which cap it met (the
    /// refusal is counted in a metric and logged, rate-limited).
    pub fn enter(&self, address: IpAddr) -> Result<PreAuthPermit, PreAuthFull> {
        let address = canonical(address);
        let refused = {
            let mut counts = self.lock();
            let from_here = counts.by_address.get(&address).copied().unwrap_or(0);
            if counts.total >= self.inner.limits.global {
                Some(PreAuthFull::Global)
            } else if from_here >= self.inner.limits.per_address {
                Some(PreAuthFull::PerAddress)
            } else {
                counts.total += 1;
                *counts.by_address.entry(address).or_default() += 1;
                None
            }
        };
        match refused {
            None => {
                metrics::gauge!("portcullis_connections_held", "for" => self.inner.guards)
                    .increment(1.0);
                Ok(PreAuthPermit {
                    gate: self.clone(),
                    address,
                })
            }
            Some(full) => {
                self.note_refusal(full, address);
                Err(full)
            }
        }
    }

    /// Connections logging in now.
    pub fn logging_in(&self) -> usize {
        self.lock().total
    }

    fn note_refusal(&self, full: PreAuthFull, address: IpAddr) {
        let cap = match full {
            PreAuthFull::Global => "global",
            PreAuthFull::PerAddress => "per_address",
        };
        let guards = self.inner.guards;
        metrics::counter!("portcullis_connections_refused_total", "for" => guards, "cap" => cap)
            .increment(1);
        if let Some(held) = self.inner.refusals.due(LOG_EVERY) {
            tracing::warn!(
                %address,
                reason = %full,
                listener = guards,
                also_refused_since_last_report = held,
                "connection closed at accept"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PreAuthPermit {
    fn drop(&mut self) {
        let mut counts = self.gate.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&self.address);
            }
        }
        metrics::gauge!("portcullis_connections_held", "for" => self.gate.inner.guards)
            .decrement(1.0);
    }
}

/// An IPv4 client reached over an IPv6 socket counts as itself.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_globally_and_per_address_and_free_on_drop() {
        let gate = PreAuthGate::new(PreAuthLimits {
            global: 3,
            per_address: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let p1 = gate.enter(a).unwrap();
        let _p2 = gate.enter(mapped).unwrap();
        assert_eq!(gate.enter(a).unwrap_err(), PreAuthFull::PerAddress);
        let _p3 = gate.enter(b).unwrap();
        assert_eq!(gate.enter(b).unwrap_err(), PreAuthFull::Global);
        drop(p1);
        assert_eq!(gate.logging_in(), 2);
        assert!(gate.enter(a).is_ok());
    }
}
