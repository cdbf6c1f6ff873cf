//! What a presented cookie value or OTP opens: `Sessions::resolve_cookie`,
//! `Sessions::resolve_token` and `Sessions::restore_otp` over `MemoryStore`s.
//!
//! Two fixtures: A stores every guest (`lazy_guests` off) and holds one web session
//! with a cookie token and an OTP; B has lazy guests (the default): its guests are
//! unstored until they hold something, and their cookies are guest tickets (64
//! characters: id, secret derived from the guest key, creation and last activity, and
//! a MAC of the id and the two times).
//!
//! Input: first byte = mode, rest = text or edits `(position, byte)`:
//! - 0: the text itself, as a cookie value (A and B) and as an OTP (A);
//! - 1: edits of A's real cookie value;
//! - 2: edits of A's real OTP;
//! - 3: edits of a live guest ticket of B;
//! - 4: a guest of B (stored first when bit 3 of the mode is set) ends; the clock
//!   moves on by 1 + the first 3 bytes (seconds, up to ~194 days); then the guest's
//!   ticket is presented with a creation and a last activity the client chose (the
//!   next 2 × 4 bytes: seconds before and after now), written over the ticket's bytes
//!   as a client can (keeping the MAC, which it cannot compute).
//!
//! Properties: only the real secret opens a session (spellings of the real OTP
//! restore it); a guest ticket with the key's secret opens its guest; a guest that
//! ended never comes back, whatever its ticket says (docs: "an ended guest leaves an
//! empty, token-less record until its tickets have expired, so its id never comes
//! back").
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sessiond_core::{
    CookieToken, GuestKey, ManualClock, OtpToken, Roles, SessionId, SessionPolicy, Timestamp,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sessiond_fuzz::{block_on, edit};
use sessiond_store::{MemoryStore, Resolved, Sessions};

const START: Timestamp = Timestamp(1_700_000_000_000);
/// Where guest ticket times count from (2020-01-01T00:00:00Z).
const TICKET_EPOCH_MS: u64 = 1_577_836_800_000;

struct Stored {
    sessions: Sessions,
    cookie: CookieToken,
    otp: OtpToken,
}

struct Lazy {
    sessions: Sessions,
    clock: ManualClock,
    key: GuestKey,
    ticket: CookieToken,
}

struct Fixture {
    a: Stored,
    b: Lazy,
}

fn sessions(clock: &ManualClock, lazy: bool) -> Sessions {
    Sessions::new(
        Arc::new(MemoryStore::new()),
        Arc::new(Roles::default()),
        Arc::new(clock.clone()),
        SessionPolicy {
            lazy_guests: lazy,
            ..SessionPolicy::default()
        },
    )
}

fn seed(sessions: &Sessions) -> (CookieToken, OtpToken) {
    block_on(async {
        let (snapshot, cookie) = sessions.create_web(None).await.unwrap();
        let otp = sessions
            .create_otp(&snapshot.record.id, None)
            .await
            .unwrap()
            .expect("a web session creates OTPs");
        (cookie, otp)
    })
}

fn lazy() -> Lazy {
    let clock = ManualClock::new(START);
    let key = GuestKey::from_bytes([7; 32]);
    let sessions = sessions(&clock, true).with_guest_key(key.clone());
    let (_, ticket) = block_on(sessions.create_web(None)).unwrap();
    assert!(ticket.stamp().is_some() && key.recognizes(&ticket));
    Lazy {
        sessions,
        clock,
        key,
        ticket,
    }
}

fn fixture() -> Fixture {
    let a = sessions(&ManualClock::new(START), false);
    let (cookie, otp) = seed(&a);
    Fixture {
        a: Stored {
            sessions: a,
            cookie,
            otp,
        },
        b: lazy(),
    }
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(fixture());
}

/// The session `r` opens, if any.
fn opened(r: &Resolved) -> Option<SessionId> {
    match r {
        Resolved::Open(s, _) | Resolved::Unstored { snapshot: s, .. } => Some(s.record.id),
        Resolved::Ended | Resolved::Unknown => None,
    }
}

/// Whether `text` carries `real`'s id and secret (guest tickets: whatever the stamps).
fn same_secret(text: &str, real: &CookieToken) -> bool {
    text.parse::<CookieToken>()
        .is_ok_and(|t| t.session_id() == real.session_id() && t.hash().ct_eq(&real.hash()))
}

fn check_stored(a: &mut Stored, text: &str) {
    let restored = block_on(async {
        let r = a.sessions.resolve_cookie(text).await.unwrap();
        assert!(
            !matches!(r, Resolved::Ended),
            "no raise happened, yet a token is ended"
        );
        match opened(&r) {
            Some(id) => {
                assert_eq!(id, a.cookie.session_id());
                assert!(same_secret(text, &a.cookie), "{text:?} opened the session");
            }
            None => assert!(
                !same_secret(text, &a.cookie),
                "the real cookie did not open its session"
            ),
        }
        let is_real_otp = text.trim().parse::<OtpToken>().is_ok_and(|t| t == a.otp);
        match a.sessions.restore_otp(text).await.unwrap() {
            Ok((snapshot, cookie)) => {
                assert!(is_real_otp, "{text:?} restored the session");
                assert_eq!(snapshot.record.id, a.cookie.session_id());
                assert_eq!(cookie.session_id(), a.cookie.session_id());
                true
            }
            Err(_) => {
                assert!(
                    !is_real_otp,
                    "a spelling of the real OTP was refused: {text:?}"
                );
                false
            }
        }
    });
    if restored {
        // The OTP is spent and the session has one more client: a new session.
        block_on(async {
            assert!(a.sessions.remove(&a.cookie.session_id()).await.unwrap());
        });
        (a.cookie, a.otp) = seed(&a.sessions);
    }
}

fn check_lazy(b: &Lazy, text: &str) {
    let r = block_on(b.sessions.resolve_cookie(text)).unwrap();
    match opened(&r) {
        Some(id) => {
            assert_eq!(id, b.ticket.session_id());
            assert!(same_secret(text, &b.ticket), "{text:?} opened a guest");
            let t: CookieToken = text.parse().unwrap();
            assert!(b.key.recognizes(&t));
        }
        None => {
            // A ticket of the key (secret and times' MAC) that says its guest is live.
            if let Ok(t) = text.parse::<CookieToken>() {
                assert!(
                    !(same_secret(text, &b.ticket) && b.key.recognizes(&t)) || expired(b, &t),
                    "a live guest's ticket {text:?} did not open it"
                );
            }
        }
    }
}

/// Whether a ticket's own stamps say it expired (a guest's idle timeout: 60 min).
fn expired(b: &Lazy, t: &CookieToken) -> bool {
    let (_, last) = t.stamp().unwrap();
    b.sessions.now().since(last) >= Duration::from_secs(3600)
}

fn ended_guest(b: &Lazy, mode: u8, rest: &[u8]) {
    let mut bytes = [0u8; 11];
    for (d, s) in bytes.iter_mut().zip(rest) {
        *d = *s;
    }
    let wait = 1 + u64::from(u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]));
    let created_before = u64::from(u32::from_be_bytes(bytes[3..7].try_into().unwrap()));
    let last_after = i64::from(i32::from_be_bytes(bytes[7..11].try_into().unwrap()));
    block_on(async {
        let s = &b.sessions;
        let (snapshot, ticket) = s.create_web(None).await.unwrap();
        let id = snapshot.record.id;
        if mode & 8 == 8 {
            // Holding something (an OTP) stores it.
            s.create_otp(&id, None).await.unwrap();
        }
        assert!(s.remove(&id).await.unwrap(), "a live guest ends");
        assert!(
            opened(&s.resolve_token(&ticket).await.unwrap()).is_none(),
            "an ended guest opened"
        );
        b.clock.advance(Duration::from_secs(wait));
        let now = s.now();
        s.store().purge_expired(now).await.unwrap();
        let created = Timestamp(now.0.saturating_sub(created_before * 1000));
        let last = Timestamp(now.0.saturating_add_signed(last_after * 1000));
        // The ticket as the client rewrote its times (bytes 32..40: seconds since
        // 2020-01-01), its MAC unchanged.
        let seconds = |t: Timestamp| {
            let s = t.0.saturating_sub(TICKET_EPOCH_MS) / 1000;
            u32::try_from(s).unwrap_or(u32::MAX).to_be_bytes()
        };
        let mut raw = URL_SAFE_NO_PAD.decode(ticket.encode()).unwrap();
        raw[32..36].copy_from_slice(&seconds(created));
        raw[36..40].copy_from_slice(&seconds(last));
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        assert!(same_secret(&forged, &ticket));
        let r = s.resolve_cookie(&forged).await.unwrap();
        assert!(
            opened(&r).is_none(),
            "guest {id} ended, and {wait} s later its ticket with rewritten times (created {created:?}, last activity {last:?}, now {now:?}) opens it again"
        );
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    FIXTURE.with_borrow_mut(|f| match mode % 5 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                check_stored(&mut f.a, text);
                check_lazy(&f.b, text);
            }
        }
        1 => {
            if let Some(text) = edit(&f.a.cookie.encode(), rest) {
                check_stored(&mut f.a, &text);
            }
        }
        2 => {
            if let Some(text) = edit(&f.a.otp.to_string(), rest) {
                check_stored(&mut f.a, &text);
            }
        }
        3 => {
            if let Some(text) = edit(&f.b.ticket.encode(), rest) {
                check_lazy(&f.b, &text);
            }
        }
        _ => {
            ended_guest(&f.b, mode, rest);
            if f.b.sessions.now().since(START) > Duration::from_secs(10 * 365 * 86_400) {
                // Ticket times are 32-bit seconds from 2020: stay well within them.
                f.b = lazy();
            } else {
                // The clock moved: a live ticket for the next iterations.
                f.b.ticket = block_on(f.b.sessions.create_web(None)).unwrap().1;
            }
        }
    });
});
