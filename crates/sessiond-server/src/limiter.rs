//! [`FailureLimiter`]: slows password guessing. After [`MAX_FAILURES`]
//! unsuccessful attempts from one client address within [`WINDOW`], further attempts from it are
//! answered 429 until the window ends — whatever the password — so that a guess costs
//! the attacker time and the server no argon2 verification.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;
use sessiond_core::Timestamp;

/// Failed attempts allowed per client address and window.
pub const MAX_FAILURES: u32 = 10;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Addresses tracked at most (the oldest windows are dropped first past this).
const MAX_TRACKED: usize = 100_000;

/// Failed attempts per client address. A blocking mutex: held only for a map
/// lookup, never across an `.await`.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    failures: Mutex<HashMap<Option<IpAddr>, (u32, Timestamp)>>,
}

impl FailureLimiter {
    /// Counts an attempt from `client` before its password is checked, or refuses it
    /// (`Err(wait)`) when the client used up its budget. Counting first means that
    /// concurrent attempts cannot all slip through before any of them failed.
    pub fn begin(&self, client: Option<IpAddr>, now: Timestamp) -> Result<(), Duration> {
        let mut map = self.failures.lock();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, start)| now < start.plus(WINDOW));
        }
        let entry = map.entry(client).or_insert((0, now));
        if now >= entry.1.plus(WINDOW) {
            *entry = (0, now);
        }
        if entry.0 >= MAX_FAILURES {
            return Err(entry.1.plus(WINDOW).since(now));
        }
        entry.0 += 1;
        Ok(())
    }

    /// The attempt succeeded: the client's count starts over.
    pub fn succeeded(&self, client: Option<IpAddr>) {
        self.failures.lock().remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_budget_until_the_window_ends() {
        let l = FailureLimiter::default();
        let ip = Some("203.0.113.7".parse().unwrap());
        let other = Some("203.0.113.8".parse().unwrap());
        let t0 = Timestamp(1_000_000);
        for _ in 0..MAX_FAILURES {
            assert!(l.begin(ip, t0).is_ok());
        }
        assert_eq!(l.begin(ip, t0), Err(WINDOW));
        assert!(l.begin(other, t0).is_ok(), "other clients are not affected");
        assert!(l.begin(ip, t0.plus(WINDOW)).is_ok(), "a new window");
        l.succeeded(ip);
        assert!(l.begin(ip, t0.plus(WINDOW)).is_ok());
    }
}
