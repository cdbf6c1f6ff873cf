//! [`PasswordChecks`]: every password check of the server — `/api/login`, the
//! `/remote` hello, the admin credential (Bearer and console sign-in) — goes through
//! here, so that guessing is slow and no client can make the server spend unbounded
//! CPU or memory on argon2id (19 MiB and ~20 ms of a core per check).
//!
//! - **Bounded work**: checks run on a small pool of dedicated threads (one per core),
//!   behind a short queue; when the queue is full the request is answered at once
//!   ([`Refusal::Busy`], 503 with `Retry-After`). At most one argon2 hash per core is
//!   in memory at any time, whatever the number of clients.
//! - **Failures counted after the check**, per (client address, user name) and per
//!   address overall, in a window ([`WINDOW`]): past [`MAX_USER_FAILURES`] for a user
//!   from an address, that pair is refused ([`Refusal::TooManyAttempts`], 429) without
//!   a check until the window ends; past [`MAX_ADDRESS_FAILURES`] for an address,
//!   every user of that address is refused except those who logged in from it in the
//!   window. A success resets only that user's count, so a correct login never unlocks
//!   guessing for another name, and correct logins are never refused for a neighbour's
//!   failures below the address budget. At most [`MAX_IN_FLIGHT`] checks of one pair
//!   run at once, so a burst cannot slip many guesses past the count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;
use sessiond::ApiError;
use sessiond::error::ErrorCode;
use sessiond_core::Timestamp;

/// Failed checks allowed per (client address, user name) and window.
pub const MAX_USER_FAILURES: u32 = 10;
/// Failed checks allowed per client address (all user names) and window.
pub const MAX_ADDRESS_FAILURES: u32 = 100;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Checks of one (address, user) pair running at once.
pub const MAX_IN_FLIGHT: u32 = 64;
/// Checks waiting for a worker, per worker.
pub const QUEUE_PER_WORKER: usize = 32;
/// Entries tracked at most (expired windows are dropped first past this).
const MAX_TRACKED: usize = 100_000;

/// Why a check was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures: retry after this long.
    TooManyAttempts(Duration),
    /// Every worker is busy and the queue is full: retry in a moment.
    Busy,
}

#[derive(Debug, Default)]
struct Count {
    failures: u32,
    since: Timestamp,
    in_flight: u32,
    /// A success in this window (address entries of a user: known good there).
    succeeded: bool,
}

impl Count {
    fn refresh(&mut self, now: Timestamp) {
        if now >= self.since.plus(WINDOW) {
            self.failures = 0;
            self.succeeded = false;
            self.since = now;
        }
    }

    fn wait(&self, now: Timestamp) -> Duration {
        self.since.plus(WINDOW).since(now)
    }
}

/// Failure counts. A blocking mutex: held only for map lookups, never across an
/// `.await`.
#[derive(Debug, Default)]
struct Counts {
    pairs: HashMap<(Option<IpAddr>, Box<str>), Count>,
    addresses: HashMap<Option<IpAddr>, Count>,
}

impl Counts {
    fn forget_old(&mut self, now: Timestamp) {
        if self.pairs.len() + self.addresses.len() >= MAX_TRACKED {
            let live = |c: &Count| c.in_flight > 0 || now < c.since.plus(WINDOW);
            self.pairs.retain(|_, c| live(c));
            self.addresses.retain(|_, c| live(c));
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Password checks: the limiter and the worker pool.
pub struct PasswordChecks {
    counts: Mutex<Counts>,
    jobs: mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for PasswordChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChecks").finish_non_exhaustive()
    }
}

impl Default for PasswordChecks {
    /// One worker per core, [`QUEUE_PER_WORKER`] waiting checks per worker.
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(workers, workers * QUEUE_PER_WORKER)
    }
}

impl PasswordChecks {
    /// `workers` threads, `queue` checks waiting at most.
    pub fn new(workers: usize, queue: usize) -> Self {
        let (jobs, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            // The threads end when the sender (this value) is dropped.
            let _ = std::thread::Builder::new()
                .name(format!("sessiond-password-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
        }
        Self {
            counts: Mutex::new(Counts::default()),
            jobs,
        }
    }

    /// Runs `check` for `user` from `client` — a CPU-heavy password verification that
    /// answers whether the password was right (`None`: no verdict, e.g. the users file
    /// could not be read) and a value — unless the limits refuse it.
    pub async fn check<T: Send + 'static>(
        &self,
        client: Option<IpAddr>,
        user: &str,
        now: Timestamp,
        check: impl FnOnce() -> (Option<bool>, T) + Send + 'static,
    ) -> Result<T, Refusal> {
        self.begin(client, user, now)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(check());
        });
        if self.jobs.try_send(job).is_err() {
            self.finish(client, user, None, now);
            return Err(Refusal::Busy);
        }
        let Ok((verdict, value)) = rx.await else {
            self.finish(client, user, None, now);
            return Err(Refusal::Busy);
        };
        self.finish(client, user, verdict, now);
        Ok(value)
    }

    fn begin(&self, client: Option<IpAddr>, user: &str, now: Timestamp) -> Result<(), Refusal> {
        let mut counts = self.counts.lock();
        counts.forget_old(now);
        let key = (client, Box::<str>::from(user));
        let pair = counts.pairs.entry(key.clone()).or_default();
        pair.refresh(now);
        if pair.failures >= MAX_USER_FAILURES {
            return Err(Refusal::TooManyAttempts(pair.wait(now)));
        }
        if pair.in_flight >= MAX_IN_FLIGHT {
            return Err(Refusal::Busy);
        }
        let known_good = pair.succeeded;
        let address = counts.addresses.entry(client).or_default();
        address.refresh(now);
        if address.failures >= MAX_ADDRESS_FAILURES && !known_good {
            return Err(Refusal::TooManyAttempts(address.wait(now)));
        }
        counts
            .pairs
            .get_mut(&key)
            .expect("inserted above")
            .in_flight += 1;
        Ok(())
    }

    /// Ends a check begun: `Some(success)`, or `None` when it did not run.
    fn finish(&self, client: Option<IpAddr>, user: &str, outcome: Option<bool>, now: Timestamp) {
        let mut counts = self.counts.lock();
        let Counts { pairs, addresses } = &mut *counts;
        let Some(pair) = pairs.get_mut(&(client, Box::<str>::from(user))) else {
            return;
        };
        pair.in_flight = pair.in_flight.saturating_sub(1);
        match outcome {
            Some(true) => {
                pair.failures = 0;
                pair.succeeded = true;
            }
            Some(false) => {
                pair.refresh(now);
                pair.failures += 1;
                let address = addresses.entry(client).or_default();
                address.refresh(now);
                address.failures += 1;
            }
            None => {}
        }
    }
}

impl From<Refusal> for ApiError {
    /// A password check refused by [`PasswordChecks`]: 429
    /// `too_many_attempts` after repeated failures, 503 `busy` when every worker is
    /// taken; both with `Retry-After`.
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::TooManyAttempts(wait) => ApiError::new(
                ErrorCode::TooManyAttempts,
                format!(
                    "too many failed attempts; try again in {} s",
                    wait.as_secs().max(1)
                ),
            )
            .retry_after(wait.as_secs()),
            Refusal::Busy => ApiError::new(
                ErrorCode::Busy,
                "too many password checks at once; retry in a moment",
            )
            .retry_after(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, n])
    }

    async fn attempt(
        c: &PasswordChecks,
        client: IpAddr,
        user: &str,
        ok: bool,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        c.check(Some(client), user, now, move || (Some(ok), ()))
            .await
    }

    #[tokio::test]
    async fn a_user_is_blocked_after_its_budget_and_a_success_resets_only_that_user() {
        let c = PasswordChecks::new(1, 8);
        let t0 = Timestamp(1_000_000);
        for round in 0..3 {
            for _ in 0..3 {
                attempt(&c, ip(1), "bob", false, t0).await.unwrap();
            }
            attempt(&c, ip(1), "ann", true, t0).await.unwrap();
            assert!(round < 3);
        }
        // 9 failures of bob so far, whatever ann did: one more, then refused.
        attempt(&c, ip(1), "bob", false, t0).await.unwrap();
        assert_eq!(
            attempt(&c, ip(1), "bob", true, t0).await,
            Err(Refusal::TooManyAttempts(WINDOW)),
            "even the right password waits for the window"
        );
        attempt(&c, ip(1), "ann", true, t0).await.unwrap();
        attempt(&c, ip(2), "bob", true, t0).await.unwrap();
        attempt(&c, ip(1), "bob", true, t0.plus(WINDOW))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_address_spraying_names_is_blocked_but_not_for_its_known_users() {
        let c = PasswordChecks::new(1, 8);
        let t0 = Timestamp(1_000_000);
        attempt(&c, ip(1), "ann", true, t0).await.unwrap();
        for i in 0..MAX_ADDRESS_FAILURES {
            attempt(&c, ip(1), &format!("user{i}"), false, t0)
                .await
                .unwrap();
        }
        assert!(matches!(
            attempt(&c, ip(1), "someone", true, t0).await,
            Err(Refusal::TooManyAttempts(_))
        ));
        attempt(&c, ip(1), "ann", true, t0).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_answers_busy_at_once() {
        let c = Arc::new(PasswordChecks::new(1, 1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running_now) = std::sync::mpsc::channel::<()>();
        let held = {
            let c = c.clone();
            tokio::spawn(async move {
                c.check(Some(ip(1)), "x", Timestamp(0), move || {
                    let _ = started.send(());
                    let _ = wait.recv();
                    (Some(true), ())
                })
                .await
            })
        };
        // The worker holds the first check; a second job fills the queue of one.
        running_now.recv().unwrap();
        assert!(c.jobs.try_send(Box::new(|| {})).is_ok());
        assert_eq!(
            attempt(&c, ip(9), "x", true, Timestamp(0)).await,
            Err(Refusal::Busy)
        );
        release.send(()).unwrap();
        assert_eq!(held.await.unwrap(), Ok(()));
        // Once the worker is free again, checks run.
        let mut again = Err(Refusal::Busy);
        for _ in 0..100 {
            again = attempt(&c, ip(9), "x", true, Timestamp(0)).await;
            if again.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(again, Ok(()));
    }
}
