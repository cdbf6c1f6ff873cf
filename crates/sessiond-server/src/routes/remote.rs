//! `GET /remote`: the WebSocket endpoint of remote clients (protocol in
//! [`sessiond_core::protocol`] and `docs/remote-protocol.md`).
//!
//! One task per connection: it reads frames, starts each call on its own task (calls
//! of one client run concurrently), writes answers as calls finish, pings the client,
//! and obeys the registry (admin drop, replacement by a reconnection).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use sessiond::ApiError;
use sessiond_core::protocol::{
    self, ClientMessage, CloseReason, ErrorCode, Hello, ServerMessage, parse_client,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::app::AppState;
use crate::desktop::{Attached, CallError, Control};
use crate::passwords::Refusal;
use crate::users::{LoginError, Users};

/// Bytes read from a connection at a time.
const READ_BUFFER: usize = 4096;

/// The route.
pub fn router() -> Router<AppState> {
    Router::new().route("/remote", get(upgrade))
}

async fn upgrade(State(state): State<AppState>, req: Request) -> Response {
    let ip = sessiond::layer::client_ip(&req, state.config.trust_proxy_headers);
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(r) => {
            return ApiError::new(sessiond::error::ErrorCode::WebsocketRequired, r.body_text())
                .with_status(r.status())
                .into_response();
        }
    };
    let limit = state.desktop.config().max_frame_bytes.saturating_mul(4);
    // Small read chunks: the library's default (128 KiB, allocated per connection)
    // would be most of an idle client's memory; frames are small.
    ws.protocols([protocol::SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| connection(state, socket, ip))
}

type Tx = SplitSink<WebSocket, Message>;
type Rx = SplitStream<WebSocket>;

/// How long a write may wait for a client that does not read: then the connection
/// is lost (so a stalled client cannot pin its connection task).
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// Writes one frame; false when the connection is gone or the client stopped reading.
async fn write(tx: &mut Tx, frame: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_LIMIT, tx.send(frame)).await,
        Ok(Ok(()))
    )
}

async fn send(tx: &mut Tx, m: &ServerMessage) -> bool {
    let text = serde_json::to_string(m).expect("server messages serialize");
    write(tx, Message::Text(text.into())).await
}

fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        id,
        code,
        message: message.into(),
    }
}

/// Sends `m`, then a close frame (1008 for a refusal, 1000 otherwise).
async fn close_with(tx: &mut Tx, m: &ServerMessage) {
    let code = if matches!(m, ServerMessage::Error { .. }) {
        1008
    } else {
        1000
    };
    if send(tx, m).await {
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: "".into(),
        }));
        write(tx, close).await;
    }
}

/// What arrived on a connection.
enum Incoming {
    /// A message, or the error to answer it with (the connection goes on).
    Message(Result<ClientMessage, ServerMessage>),
    /// A ping or pong: the client is alive.
    Heartbeat,
}

/// The next frame; `None` when the connection is gone.
async fn next_frame(rx: &mut Rx, max: usize) -> Option<Incoming> {
    let msg = rx.next().await?.ok()?;
    Some(Incoming::Message(match msg {
        Message::Text(t) if t.len() > max => Err(error(
            call_id(&t),
            ErrorCode::FrameTooLarge,
            format!("a frame is at most {max} bytes"),
        )),
        Message::Text(t) => parse_client(&t).map_err(|(code, m)| error(call_id(&t), code, m)),
        Message::Binary(_) => Err(error(
            None,
            ErrorCode::BadFrame,
            "frames are JSON text frames",
        )),
        Message::Ping(_) | Message::Pong(_) => return Some(Incoming::Heartbeat),
        Message::Close(_) => return None,
    }))
}

/// The `id` of a malformed call frame, when it has a usable one, so that the error
/// answers that call.
fn call_id(text: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(text).ok()?;
    (v.get("type")? == "call").then_some(())?;
    v.get("id")?.as_u64()
}

/// The first message (heartbeats skipped).
async fn first_message(rx: &mut Rx, max: usize) -> Option<Result<ClientMessage, ServerMessage>> {
    loop {
        if let Incoming::Message(m) = next_frame(rx, max).await? {
            return Some(m);
        }
    }
}

fn check_hello(h: &Hello) -> Result<(), ServerMessage> {
    if h.protocol != protocol::VERSION {
        return Err(error(
            None,
            ErrorCode::UnsupportedProtocol,
            format!(
                "this server speaks protocol {}; the client asked for {}",
                protocol::VERSION,
                h.protocol
            ),
        ));
    }
    for (field, v) in [
        ("userName", &h.user_name),
        ("machineName", &h.machine_name),
        ("systemUserName", &h.system_user_name),
    ] {
        if v.len() > 255 || v.chars().any(char::is_control) {
            return Err(error(
                None,
                ErrorCode::BadFrame,
                format!("{field}: at most 255 bytes, no control characters"),
            ));
        }
    }
    if h.password.len() > 1024 {
        return Err(error(
            None,
            ErrorCode::BadFrame,
            "password: at most 1024 bytes",
        ));
    }
    Ok(())
}

/// Checks the hello and opens (or resumes) the session.
async fn open(
    state: &AppState,
    hello: &Hello,
    ip: Option<IpAddr>,
) -> Result<(Attached, bool, Value), ServerMessage> {
    check_hello(hello)?;
    let refused = |code, m: &str| error(None, code, m);
    let Some(path) = state.users_file.clone() else {
        return Err(refused(
            ErrorCode::InvalidCredentials,
            "remote logins need a users file",
        ));
    };
    let user = Users::check(
        &state.passwords,
        ip,
        state.sessions.now(),
        path,
        hello.user_name.clone(),
        hello.password.clone(),
    )
    .await
    .map_err(|e| match e {
        LoginError::Refused(Refusal::TooManyAttempts(wait)) => refused(
            ErrorCode::TooManyAttempts,
            &format!(
                "too many failed passwords; retry in {} s",
                wait.as_secs().max(1)
            ),
        ),
        LoginError::Refused(Refusal::Busy) => refused(
            ErrorCode::Busy,
            "too many password checks at once; retry in a moment",
        ),
        LoginError::File(e) => {
            tracing::error!(error = %e, "users file unusable");
            refused(ErrorCode::Internal, "the users file cannot be read")
        }
    })?
    .ok_or_else(|| refused(ErrorCode::InvalidCredentials, "wrong user name or password"))?;
    state
        .desktop
        .open_remote(&user, hello, ip)
        .await
        .map_err(|e| error(None, e.code, e.message))
}

/// How a connection's main loop ended.
enum End {
    /// The client said goodbye.
    Goodbye,
    /// The connection was lost (or closed without goodbye).
    Lost,
    /// The registry closed the session or gave it to another connection.
    Closed,
}

async fn connection(state: AppState, socket: WebSocket, ip: Option<IpAddr>) {
    let config = state.desktop.config().clone();
    let (mut tx, mut rx) = socket.split();
    let hello = tokio::time::timeout(
        config.hello_timeout,
        first_message(&mut rx, config.max_frame_bytes),
    )
    .await;
    let hello = match hello {
        Err(_) => {
            let m = error(None, ErrorCode::HelloRequired, "no hello in time");
            return close_with(&mut tx, &m).await;
        }
        Ok(None) => return,
        Ok(Some(Err(m))) => return close_with(&mut tx, &m).await,
        Ok(Some(Ok(ClientMessage::Hello(h)))) => h,
        Ok(Some(Ok(_))) => {
            let m = error(
                None,
                ErrorCode::HelloRequired,
                "the first message is a hello",
            );
            return close_with(&mut tx, &m).await;
        }
    };
    let (mut attached, resumed, info) = match open(&state, &hello, ip).await {
        Ok(a) => a,
        Err(m) => return close_with(&mut tx, &m).await,
    };
    tracing::info!(session = %attached.session, user = %hello.user_name, resumed, "remote client connected");
    let welcome = ServerMessage::Welcome {
        protocol: protocol::VERSION,
        id: attached.session,
        persistent_id: attached.persistent,
        resumed,
        info,
    };
    let end = if send(&mut tx, &welcome).await {
        serve(&state, &config, &mut tx, &mut rx, &mut attached).await
    } else {
        End::Lost
    };
    match end {
        End::Goodbye => {
            state.desktop.goodbye_remote(&attached).await;
            let m = ServerMessage::Closed {
                reason: CloseReason::Goodbye,
            };
            close_with(&mut tx, &m).await;
        }
        End::Lost => state.desktop.detach_remote(&attached).await,
        End::Closed => {}
    }
}

/// The main loop of a welcomed connection.
async fn serve(
    state: &AppState,
    config: &crate::desktop::DesktopConfig,
    tx: &mut Tx,
    rx: &mut Rx,
    attached: &mut Attached,
) -> End {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u64, Result<Value, CallError>)>();
    let mut running: HashSet<u64> = HashSet::new();
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval_at(
        Instant::now() + config.ping_interval,
        config.ping_interval.max(Duration::from_millis(10)),
    );
    loop {
        let reply = tokio::select! {
            // The registry's word first: a replaced or dropped connection stops before
            // it acts on another frame of its client.
            biased;
            Some(Control::Close(reason)) = attached.control.recv() => {
                close_with(tx, &ServerMessage::Closed { reason }).await;
                return End::Closed;
            }
            frame = next_frame(rx, config.max_frame_bytes) => {
                heard = Instant::now();
                match frame {
                    None => return End::Lost,
                    Some(Incoming::Heartbeat) => None,
                    Some(Incoming::Message(m)) => match handle(state, config, attached, &mut running, &done_tx, m).await {
                        Ok(reply) => reply,
                        Err(end) => return end,
                    },
                }
            }
            Some((id, r)) = done_rx.recv() => {
                running.remove(&id);
                if matches!(&r, Err(e) if e.code == ErrorCode::SessionClosed)
                    && matches!(state.sessions.get(&attached.session).await, Ok(None))
                {
                    // The record went without this node being told (a drop message
                    // missed while Redis pub/sub was down): end the connection too.
                    state.desktop.drop_connected(&attached.session).await;
                }
                Some(match r {
                    Ok(value) => ServerMessage::Result { id, value },
                    Err(e) => error(Some(id), e.code, e.message),
                })
            }
            _ = ping.tick() => {
                if heard.elapsed() > config.ping_timeout {
                    tracing::info!(session = %attached.session, "remote client silent: connection lost");
                    return End::Lost;
                }
                if !write(tx, Message::Ping(axum::body::Bytes::new())).await {
                    return End::Lost;
                }
                None
            }
        };
        if let Some(m) = reply
            && !send(tx, &m).await
        {
            return End::Lost;
        }
    }
}

/// Acts on one client message: the reply to send now, if any, or how the loop ends.
async fn handle(
    state: &AppState,
    config: &crate::desktop::DesktopConfig,
    attached: &Attached,
    running: &mut HashSet<u64>,
    done: &mpsc::UnboundedSender<(u64, Result<Value, CallError>)>,
    message: Result<ClientMessage, ServerMessage>,
) -> Result<Option<ServerMessage>, End> {
    Ok(Some(match message {
        Err(m) => m,
        Ok(ClientMessage::Hello(_)) => error(
            None,
            ErrorCode::HelloRequired,
            "hello is the first message only",
        ),
        Ok(ClientMessage::Goodbye {}) => return Err(End::Goodbye),
        Ok(ClientMessage::Sleep {}) => match state.desktop.sleep_remote(attached).await {
            Ok(()) => ServerMessage::Sleeping,
            Err(e) => error(None, e.code, e.message),
        },
        Ok(ClientMessage::Call {
            id,
            function,
            params,
        }) => {
            // Counted per session, so that reconnecting does not give more room.
            if running.len() >= config.max_calls_per_connection
                || state.desktop.running_calls(&attached.session) >= config.max_calls_per_connection
            {
                error(
                    Some(id),
                    ErrorCode::TooManyCalls,
                    format!(
                        "at most {} calls run at once in a session",
                        config.max_calls_per_connection
                    ),
                )
            } else if !running.insert(id) {
                error(
                    Some(id),
                    ErrorCode::DuplicateCallId,
                    "a call with this id is running",
                )
            } else {
                let desktop = state.desktop.clone();
                let done = done.clone();
                let session = attached.session;
                tokio::spawn(async move {
                    let r = desktop.call(session, &function, params).await;
                    // The connection may be gone; the call's effects stay.
                    let _ = done.send((id, r));
                });
                return Ok(None);
            }
        }
    }))
}
