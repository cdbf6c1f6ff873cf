//! A remote client of sessiond (4D's remote mode, over the `/remote` WebSocket
//! protocol of [`sessiond_core::protocol`]).
//!
//! [`RemoteClient::connect`] opens a remote-client session; [`RemoteClient::call`]
//! runs a server-side function in it (calls of one client may run concurrently);
//! [`RemoteClient::sleep`] and [`RemoteClient::reconnect`] follow the machine's sleep
//! and wake; a lost connection is resumed by [`RemoteClient::reconnect`] with the
//! session's `persistentID`; [`RemoteClient::goodbye`] ends the session.
//!
//! ```no_run
//! use sessiond_client::{ClientConfig, RemoteClient};
//! # async fn demo() -> Result<(), sessiond_client::ClientError> {
//! let config = ClientConfig::new("ws://127.0.0.1:8044/remote", "ann", "ann-password");
//! let client = RemoteClient::connect(config).await?;
//! let n = client.call("session.increment", serde_json::json!({"path": "visits"})).await?;
//! println!("session {} visit {n}", client.id());
//! client.goodbye().await
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt as _, StreamExt as _};
use parking_lot::Mutex;
use serde_json::Value;
use sessiond_core::SessionId;
use sessiond_core::protocol::{
    self, ClientMessage, CloseReason, ErrorCode, Hello, HostType, ServerMessage,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection could not be made or broke.
    #[error("connection: {0}")]
    Connection(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server answered with a protocol error.
    #[error("{code}: {message}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The session's connection is closed (with the server's reason, when it gave one).
    #[error("the connection is closed{}", .0.map(|r| format!(" ({r:?})")).unwrap_or_default())]
    Closed(Option<CloseReason>),
    /// The server sent something this client does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Where and who: the hello of a client. `Debug` never shows the password.
#[derive(Clone)]
pub struct ClientConfig {
    /// `ws://host:port/remote`.
    pub url: String,
    /// User name of the server's users file.
    pub user_name: String,
    /// Its password.
    pub password: String,
    /// `machineName` (default: this machine's host name).
    pub machine_name: String,
    /// `systemUserName` (default: `$USER` / `$USERNAME`).
    pub system_user_name: String,
    /// `hostType` (default: this machine's).
    pub host_type: HostType,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("user_name", &self.user_name)
            .field("password", &"<hidden>")
            .field("machine_name", &self.machine_name)
            .field("system_user_name", &self.system_user_name)
            .field("host_type", &self.host_type)
            .finish()
    }
}

impl ClientConfig {
    /// A config for this machine.
    pub fn new(url: &str, user_name: &str, password: &str) -> Self {
        Self {
            url: url.into(),
            user_name: user_name.into(),
            password: password.into(),
            machine_name: gethostname::gethostname().to_string_lossy().into_owned(),
            system_user_name: std::env::var("USER")
                .or_else(|_| std::env::var("USERNAME"))
                .unwrap_or_default(),
            host_type: HostType::this_machine(),
        }
    }

    fn hello(&self, persistent_id: Option<SessionId>) -> Hello {
        Hello {
            protocol: protocol::VERSION,
            user_name: self.user_name.clone(),
            password: self.password.clone(),
            machine_name: self.machine_name.clone(),
            system_user_name: self.system_user_name.clone(),
            host_type: self.host_type,
            persistent_id,
        }
    }
}

/// What waits for the server: calls by id, and a sleep for its `sleeping`.
#[derive(Default)]
struct Waiting {
    calls: HashMap<u64, oneshot::Sender<Result<Value, ClientError>>>,
    sleep: Option<oneshot::Sender<Result<(), ClientError>>>,
}

/// `None` once the connection is closed: what asks then fails at once instead of
/// waiting for ever.
type Pending = Arc<Mutex<Option<Waiting>>>;

/// Whether a connection is open, and why the server closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Open,
    Closed(Option<CloseReason>),
}

/// One WebSocket connection: a writer queue and a reader task.
struct Connection {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    closed: watch::Receiver<Link>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Connection {
    /// Why the server closed this connection, if it did and said so.
    fn reason(&self) -> Option<CloseReason> {
        match *self.closed.borrow() {
            Link::Closed(r) => r,
            Link::Open => None,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A connected remote client.
pub struct RemoteClient {
    config: ClientConfig,
    id: SessionId,
    persistent_id: SessionId,
    info: Value,
    next_call: AtomicU64,
    conn: Option<Connection>,
}

impl std::fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient")
            .field("id", &self.id)
            .field("persistent_id", &self.persistent_id)
            .finish_non_exhaustive()
    }
}

fn encode(m: &ClientMessage) -> Message {
    Message::text(serde_json::to_string(m).expect("client messages serialize"))
}

/// Opens a connection and says hello; returns the welcome's fields.
async fn open(
    config: &ClientConfig,
    persistent_id: Option<SessionId>,
) -> Result<(Connection, SessionId, SessionId, Value, bool), ClientError> {
    // Small read chunks (the library's default allocates 128 KiB per connection) and
    // no Nagle delay: calls are small frames that want an answer.
    let ws_config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(config.url.as_str(), Some(ws_config), true)
            .await?;
    let (mut sink, mut stream) = ws.split();
    sink.send(encode(&ClientMessage::Hello(config.hello(persistent_id))))
        .await?;
    let welcome = loop {
        match stream.next().await {
            None => return Err(ClientError::Closed(None)),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => break parse(&t)?,
            Some(Ok(_)) => {}
        }
    };
    let (id, persistent, info, resumed) = match welcome {
        ServerMessage::Welcome {
            id,
            persistent_id,
            info,
            resumed,
            ..
        } => (id, persistent_id, info, resumed),
        ServerMessage::Error { code, message, .. } => {
            return Err(ClientError::Server { code, message });
        }
        other => {
            return Err(ClientError::Protocol(format!(
                "expected a welcome: {other:?}"
            )));
        }
    };
    let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let pending: Pending = Arc::new(Mutex::new(Some(Waiting::default())));
    let (closed_tx, closed) = watch::channel(Link::Open);
    let reader = {
        let pending = pending.clone();
        tokio::spawn(async move {
            let mut reason = None;
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                match parse(&t) {
                    Ok(ServerMessage::Result { id, value }) => answer(&pending, id, Ok(value)),
                    Ok(ServerMessage::Error {
                        id: Some(id),
                        code,
                        message,
                    }) => answer(&pending, id, Err(ClientError::Server { code, message })),
                    // An error about no call fails a sleep waiting for its answer.
                    Ok(ServerMessage::Error {
                        id: None,
                        code,
                        message,
                    }) => {
                        if let Some(tx) = pending.lock().as_mut().and_then(|w| w.sleep.take()) {
                            let _ = tx.send(Err(ClientError::Server { code, message }));
                        }
                    }
                    Ok(ServerMessage::Sleeping) => {
                        if let Some(tx) = pending.lock().as_mut().and_then(|w| w.sleep.take()) {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(ServerMessage::Closed { reason: r }) => reason = Some(r),
                    Ok(ServerMessage::Welcome { .. }) | Err(_) => {}
                }
            }
            if let Some(waiting) = pending.lock().take() {
                for (_, tx) in waiting.calls {
                    let _ = tx.send(Err(ClientError::Closed(reason)));
                }
                if let Some(tx) = waiting.sleep {
                    let _ = tx.send(Err(ClientError::Closed(reason)));
                }
            }
            let _ = closed_tx.send(Link::Closed(reason));
        })
    };
    let conn = Connection {
        out,
        pending,
        closed,
        tasks: [writer, reader],
    };
    Ok((conn, id, persistent, info, resumed))
}

/// Hands a call its answer.
fn answer(pending: &Pending, id: u64, result: Result<Value, ClientError>) {
    if let Some(tx) = pending.lock().as_mut().and_then(|w| w.calls.remove(&id)) {
        let _ = tx.send(result);
    }
}

fn parse(text: &str) -> Result<ServerMessage, ClientError> {
    serde_json::from_str(text).map_err(|e| ClientError::Protocol(format!("{e}: {text}")))
}

impl RemoteClient {
    /// Connects and opens a new remote session.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        Self::open(config, None).await
    }

    async fn open(
        config: ClientConfig,
        persistent_id: Option<SessionId>,
    ) -> Result<Self, ClientError> {
        let (conn, id, persistent_id, info, _) = open(&config, persistent_id).await?;
        Ok(Self {
            config,
            id,
            persistent_id,
            info,
            next_call: AtomicU64::new(1),
            conn: Some(conn),
        })
    }

    /// Connects and resumes the session of `persistent_id` (a sleeping, postponed or
    /// live session of the same login).
    pub async fn resume(
        config: ClientConfig,
        persistent_id: SessionId,
    ) -> Result<Self, ClientError> {
        Self::open(config, Some(persistent_id)).await
    }

    /// `Session.id` on the server.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The `persistentID` of this login (presented when reconnecting).
    pub fn persistent_id(&self) -> SessionId {
        self.persistent_id
    }

    /// `Session.info` as the server sent it in the last welcome.
    pub fn info(&self) -> &Value {
        &self.info
    }

    fn conn(&self) -> Result<&Connection, ClientError> {
        self.conn.as_ref().ok_or(ClientError::Closed(None))
    }

    /// Runs server-side function `function` with `params` in this client's session.
    pub async fn call(&self, function: &str, params: Value) -> Result<Value, ClientError> {
        let conn = self.conn()?;
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match conn.pending.lock().as_mut() {
            Some(w) => w.calls.insert(id, tx),
            None => return Err(ClientError::Closed(conn.reason())),
        };
        let m = encode(&ClientMessage::Call {
            id,
            function: function.into(),
            params,
        });
        if conn.out.send(m).is_err() {
            if let Some(w) = conn.pending.lock().as_mut() {
                w.calls.remove(&id);
            }
            return Err(ClientError::Closed(conn.reason()));
        }
        rx.await.unwrap_or(Err(ClientError::Closed(None)))
    }

    /// The machine goes to sleep: tells the server (the session becomes `sleeping`)
    /// and closes the connection. [`RemoteClient::reconnect`] wakes it.
    pub async fn sleep(&mut self) -> Result<(), ClientError> {
        let conn = self.conn()?;
        let (tx, rx) = oneshot::channel();
        match conn.pending.lock().as_mut() {
            Some(w) => w.sleep = Some(tx),
            None => return Err(ClientError::Closed(conn.reason())),
        }
        conn.out
            .send(encode(&ClientMessage::Sleep {}))
            .map_err(|_| ClientError::Closed(None))?;
        rx.await.unwrap_or(Err(ClientError::Closed(None)))?;
        self.conn = None;
        Ok(())
    }

    /// Drops the connection without a goodbye (as a network failure would): the
    /// session becomes `postponed` on the server.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Opens a new connection to the same session with the `persistentID` (after a
    /// sleep, a lost connection, or to replace a live one). True when the server
    /// resumed the session.
    pub async fn reconnect(&mut self) -> Result<bool, ClientError> {
        self.conn = None;
        let (conn, id, persistent_id, info, resumed) =
            open(&self.config, Some(self.persistent_id)).await?;
        self.id = id;
        self.persistent_id = persistent_id;
        self.info = info;
        self.conn = Some(conn);
        Ok(resumed)
    }

    /// Waits until the server closes this connection; its reason, if it gave one.
    pub async fn closed(&self) -> Option<CloseReason> {
        let mut rx = self.conn.as_ref()?.closed.clone();
        match *rx.wait_for(|l| *l != Link::Open).await.ok()? {
            Link::Closed(reason) => reason,
            Link::Open => None,
        }
    }

    /// Ends the session (goodbye) and waits for the server's confirmation.
    pub async fn goodbye(mut self) -> Result<(), ClientError> {
        let conn = self.conn()?;
        conn.out
            .send(encode(&ClientMessage::Goodbye {}))
            .map_err(|_| ClientError::Closed(None))?;
        match self.closed().await {
            Some(CloseReason::Goodbye) => {
                self.conn = None;
                Ok(())
            }
            other => Err(ClientError::Closed(other)),
        }
    }
}
