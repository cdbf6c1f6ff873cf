//! `GET /admin/api/events`: the console's Server-Sent Events (`ready`, `mobile`,
//! `audit`, `tick`).

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use http::HeaderMap;
use sessiond::layer::cookie_value;
use sessiond_mobile::MobileChange;
use tokio::sync::broadcast::error::RecvError;

use crate::app::AppState;
use crate::console::{Actor, AuditEntry, COOKIE, Via};

/// How often the event stream sends a `tick` (the page then re-reads the live
/// sessions: expiries and new web sessions have no event of their own).
pub const TICK: Duration = Duration::from_secs(5);

pub(super) struct Feed {
    mobile: Option<tokio::sync::broadcast::Receiver<MobileChange>>,
    audit: tokio::sync::broadcast::Receiver<AuditEntry>,
    tick: tokio::time::Interval,
    state: AppState,
    /// The console session's token (`None`: bearer); the stream ends with it.
    token: Option<String>,
    ready: bool,
    closed: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

pub(super) async fn next_event(feed: &mut Feed) -> Option<Event> {
    if !feed.ready {
        feed.ready = true;
        return Some(
            Event::default()
                .event("ready")
                .retry(Duration::from_secs(2))
                .data("{}"),
        );
    }
    let Feed {
        mobile,
        audit,
        tick,
        state,
        token,
        closed,
        ..
    } = feed;
    tokio::select! {
        () = closed.as_mut() => None,
        r = async {
            match mobile.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        } => match r {
            Ok(change) => Event::default().event("mobile").json_data(change).ok(),
            Err(RecvError::Lagged(_)) => Some(Event::default().event("mobile").data(r#"{"kind":"refresh"}"#)),
            Err(RecvError::Closed) => None,
        },
        r = audit.recv() => match r {
            Ok(entry) => Event::default().event("audit").json_data(entry).ok(),
            Err(RecvError::Lagged(_)) => Some(Event::default().event("audit").data("{}")),
            Err(RecvError::Closed) => None,
        },
        _ = tick.tick() => {
            let now = state.sessions.now();
            if let Some(t) = token {
                let credential = state.admin.fingerprint().await?;
                state.console.check(t, now, false, &credential)?;
            }
            Some(Event::default().event("tick").data(format!("\"{}\"", now.to_iso8601())))
        }
    }
}

/// Server-sent events: `ready`, `mobile` (a change of the mobile sessions),
/// `audit` (an entry), `tick` (the server's time; a console session that ended stops
/// the stream).
#[utoipa::path(get, path = "/events", tag = "console",
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(actor): Extension<Actor>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let token = match actor.via {
        Via::Console => cookie_value(&headers, COOKIE).map(str::to_string),
        Via::Bearer => None,
    };
    let state_console_closed = state.console.closed();
    let feed = Feed {
        mobile: state.mobile.as_ref().map(|m| m.sessions.changes()),
        audit: state.console.events(),
        tick: tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK),
        state,
        token,
        ready: false,
        closed: Box::pin(state_console_closed),
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = next_event(&mut feed).await?;
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
