//! How stale two nodes sharing one store can be: the measurement behind the near-cache's
//! bound, shared by its test and by `sessiond-bench` (R3).

use std::time::{Duration, Instant};

use sessiond_core::{Clock as _, SessionPolicy, SessionRecord, SystemClock};

use crate::SessionStore;

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct Staleness {
    /// Per trial, from the acknowledgement on node A until node B first refused the
    /// old rights, sorted.
    pub waits: Vec<Duration>,
    /// Trials where a read on B right after the acknowledgement still saw them.
    pub stale_at_once: usize,
}

impl Staleness {
    /// The `permille`‰ quantile of the waits.
    pub fn quantile(&self, permille: usize) -> Duration {
        self.waits[(self.waits.len() - 1) * permille.min(1000) / 1000]
    }
}

/// `trials` times: a session with `WebAdmin` is created on `a` and read (cached) on
/// `b`; then `a` lowers its privileges (even trials) or drops it (odd ones), and `b` is
/// read every 0.1 ms until it refuses the old rights. Panics if that takes 2 s.
pub async fn measure(a: &dyn SessionStore, b: &dyn SessionStore, trials: usize) -> Staleness {
    let policy = SessionPolicy::default();
    let roles =
        sessiond_core::Roles::parse(r#"{"privileges":[{"privilege":"WebAdmin"}]}"#, "roles.json")
            .expect("valid roles");
    let mut waits = Vec::with_capacity(trials);
    let mut stale_at_once = 0;
    for trial in 0..trials {
        let now = SystemClock.now();
        let mut r = SessionRecord::new_web(now, &policy, None);
        let input = sessiond_core::PrivilegeInput {
            privileges: vec!["WebAdmin".into()],
            ..sessiond_core::PrivilegeInput::default()
        };
        r.set_privileges(&roles, &input, &policy);
        let id = r.id();
        a.insert(r, now).await.expect("insert on A");
        let cached = b.get(&id, now).await.expect("read on B");
        assert!(cached.is_some(), "B reads the new session");
        let drop = trial % 2 == 1;
        if drop {
            a.remove(&id).await.expect("drop on A");
        } else {
            let mut lower = |r: &mut SessionRecord| {
                r.clear_privileges(&policy);
                Ok(())
            };
            a.update(&id, now, &mut lower).await.expect("lowering on A");
        }
        let acknowledged = Instant::now();
        let mut first = true;
        loop {
            let old = match b.get(&id, now).await.expect("read on B") {
                None => !drop,
                Some(s) => !s.record.privileges().is_empty(),
            };
            if !old {
                break;
            }
            if first {
                stale_at_once += 1;
                first = false;
            }
            assert!(
                acknowledged.elapsed() < Duration::from_secs(2),
                "trial {trial}: node B still serves the old rights after 2 s"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        waits.push(acknowledged.elapsed());
    }
    waits.sort();
    Staleness {
        waits,
        stale_at_once,
    }
}
