//! E-mail validation of pending sessions (spec §3.6, with its flaws fixed): a
//! one-time activation link with its own random token (never the session id), valid
//! a few minutes, kept on disk so a restart does not break outstanding links, and
//! keyed by app folder so it works for Android apps (no team id).
//!
//! Mail goes out over SMTP ([`lettre`]) or, in development, as `.eml` files in an
//! outbox folder.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub use lettre::message::Mailbox;
use lettre::message::{Message, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sessiond_core::Timestamp;
use sessiond_store::fs::{atomic_write, private_dir};
use sha2::{Digest, Sha256};

/// How mail is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// `.eml` files in this folder (development).
    Outbox(PathBuf),
    /// An SMTP server URL as lettre reads it (`smtp://host:587?tls=required`,
    /// `smtps://user:pass@host`).
    Smtp(String),
}

/// Settings of e-mail validation.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// The sender.
    pub from: Mailbox,
    /// The public base URL of this server; links are `<base>/activation?token=…`.
    pub link_base: String,
    /// How long a link stays valid.
    pub validity: Duration,
    /// Delivery.
    pub transport: MailTransport,
    /// Where outstanding links are kept.
    pub state_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    /// Hex SHA-256 of the link's token.
    token_sha256: String,
    folder: String,
    id: String,
    sent: Timestamp,
    expires: Timestamp,
}

/// Errors of e-mail validation.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// The address cannot receive mail.
    #[error("the e-mail address {0:?} is not valid")]
    Address(String),
    /// The mail could not be sent.
    #[error("the validation e-mail could not be sent: {0}")]
    Send(String),
    /// The state file could not be read or written.
    #[error("activation links file: {0}")]
    Io(#[from] std::io::Error),
}

/// Outstanding activation links.
#[derive(Debug)]
pub struct Activations {
    config: EmailConfig,
    // Held for list edits and the file write only, never across an `.await`.
    pending: parking_lot::Mutex<Vec<Pending>>,
}

fn sha256_hex(s: &str) -> String {
    sessiond_core::id::to_hex(&Sha256::digest(s.as_bytes()))
}

/// What [`Activations::request`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// A mail with a new link was sent.
    Sent,
    /// A link sent recently is still valid; nothing was sent.
    AlreadySent,
}

impl Activations {
    /// Loads outstanding links from `config.state_file` (missing file: none).
    pub fn load(config: EmailConfig) -> Result<Self, EmailError> {
        let pending = match std::fs::read(&config.state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", config.state_file.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            config,
            pending: parking_lot::Mutex::new(pending),
        })
    }

    fn save(&self, list: &[Pending]) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(list).expect("serializable");
        atomic_write(&self.config.state_file, &bytes)
    }

    /// Sends a validation link for session `folder/id` to `email`, unless a link
    /// sent less than the validity ago is still outstanding.
    pub async fn request(
        &self,
        folder: &str,
        id: &str,
        email: &str,
        now: Timestamp,
    ) -> Result<Requested, EmailError> {
        let to: Mailbox = email
            .parse()
            .map_err(|_| EmailError::Address(email.to_string()))?;
        {
            let mut list = self.pending.lock();
            list.retain(|p| p.expires > now);
            if list.iter().any(|p| p.folder == folder && p.id == id) {
                return Ok(Requested::AlreadySent);
            }
        }
        let token = URL_SAFE_NO_PAD.encode(sessiond_core::id::random_bytes::<16>());
        let link = format!(
            "{}/activation?token={token}",
            self.config.link_base.trim_end_matches('/')
        );
        let minutes = self.config.validity.as_secs().div_ceil(60);
        let body = format!(
            "Please confirm your e-mail address to activate the app on your device.\n\nOpen this link within {minutes} minutes:\n{link}\n\nIf you did not ask for it, ignore this message.\n"
        );
        let message = Message::builder()
            .from(self.config.from.clone())
            .to(to)
            .subject("Confirm your e-mail address")
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| EmailError::Send(e.to_string()))?;
        self.deliver(id, &message, now).await?;
        let record = Pending {
            token_sha256: sha256_hex(&token),
            folder: folder.to_string(),
            id: id.to_string(),
            sent: now,
            expires: now.plus(self.config.validity),
        };
        let mut list = self.pending.lock();
        list.push(record);
        self.save(&list)?;
        Ok(Requested::Sent)
    }

    async fn deliver(&self, id: &str, message: &Message, now: Timestamp) -> Result<(), EmailError> {
        match &self.config.transport {
            MailTransport::Outbox(dir) => {
                let path = dir.join(format!("{}-{id}.eml", now.0));
                let bytes = message.formatted();
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    private_dir(&dir)?;
                    atomic_write(&path, &bytes)
                })
                .await
                .map_err(std::io::Error::other)??;
                Ok(())
            }
            MailTransport::Smtp(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| EmailError::Send(e.to_string()))?
                    .timeout(Some(Duration::from_secs(15)))
                    .build();
                transport
                    .send(message.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| EmailError::Send(e.to_string()))
            }
        }
    }

    /// Consumes a link's token: the session it activates, if the link is known and
    /// still valid. A link works once.
    pub fn consume(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<Option<(String, String)>, EmailError> {
        if token.is_empty() || token.len() > 64 {
            return Ok(None);
        }
        let hash = sha256_hex(token);
        let mut list = self.pending.lock();
        let Some(i) = list.iter().position(|p| p.token_sha256 == hash) else {
            return Ok(None);
        };
        let p = list.remove(i);
        list.retain(|p| p.expires > now);
        self.save(&list)?;
        Ok((p.expires > now).then_some((p.folder, p.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> EmailConfig {
        EmailConfig {
            from: "a@example.com".parse().unwrap(),
            link_base: "http://x".into(),
            validity: Duration::from_secs(300),
            transport: MailTransport::Outbox(dir.join("outbox")),
            state_file: dir.join("state.json"),
        }
    }

    fn token_of(dir: &std::path::Path) -> String {
        let mail = std::fs::read_dir(dir.join("outbox"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(mail).unwrap();
        text.split("token=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn a_link_expires_after_its_validity_and_resending_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = Activations::load(config(dir.path())).unwrap();
        let t0 = Timestamp(1_000_000);
        assert_eq!(
            a.request("app", "ab12", "u@example.com", t0).await.unwrap(),
            Requested::Sent
        );
        assert_eq!(
            a.request(
                "app",
                "ab12",
                "u@example.com",
                t0.plus(Duration::from_secs(299))
            )
            .await
            .unwrap(),
            Requested::AlreadySent
        );
        let token = token_of(dir.path());
        assert!(
            a.consume(&token, t0.plus(Duration::from_secs(300)))
                .unwrap()
                .is_none(),
            "expired"
        );
        assert!(matches!(
            a.request("app", "ab12", "not an address", t0).await,
            Err(EmailError::Address(_))
        ));
        let b = Activations::load(config(dir.path())).unwrap();
        assert!(
            b.consume(&token, t0).unwrap().is_none(),
            "consumed links are gone after a reload"
        );
    }
}

#[cfg(test)]
mod smtp_tests {
    use super::*;

    /// A real SMTP server: Python's `smtpd` DebuggingServer prints what it receives.
    struct SmtpServer {
        child: std::process::Child,
        port: u16,
    }

    impl Drop for SmtpServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn smtp_server() -> SmtpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-u",
                "-m",
                "smtpd",
                "-n",
                "-c",
                "DebuggingServer",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 is needed for the SMTP test server");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the SMTP test server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        SmtpServer { child, port }
    }

    #[tokio::test]
    async fn the_link_goes_out_over_smtp() {
        use std::io::Read as _;
        let mut server = smtp_server();
        let dir = tempfile::tempdir().unwrap();
        let config = EmailConfig {
            from: "Sessions <no-reply@example.com>".parse().unwrap(),
            link_base: "http://sessions.example".into(),
            validity: Duration::from_secs(300),
            transport: MailTransport::Smtp(format!("smtp://127.0.0.1:{}", server.port)),
            state_file: dir.path().join("state.json"),
        };
        let a = Activations::load(config).unwrap();
        assert_eq!(
            a.request("app", "ab12", "user@example.com", Timestamp(1))
                .await
                .unwrap(),
            Requested::Sent
        );
        let _ = server.child.kill();
        let mut out = String::new();
        server
            .child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(out.contains("user@example.com"), "{out}");
        assert!(
            out.contains("http://sessions.example/activation?token="),
            "{out}"
        );
    }
}
