//! E-mail validation of pending sessions (spec §3.6, with its flaws fixed): a
//! one-time activation link with its own random token (never the session id), valid
//! a few minutes, kept on disk so a restart does not break outstanding links, and
//! keyed by app folder so it works for Android apps (no team id). A link proves only
//! the mailbox it was sent to: it is bound to that address, a session whose address
//! changed needs a new link, and mails are limited per recipient and per client
//! address ([`EmailConfig::max_per_recipient`], [`EmailConfig::max_per_client`]).
//!
//! Mail goes out over SMTP ([`lettre`]) or, in development, as `.eml` files in an
//! outbox folder.

use std::net::IpAddr;
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
    /// Validation mails one address may receive per hour (default 3).
    pub max_per_recipient: u32,
    /// Validation mails one client address may cause per hour (default 10).
    pub max_per_client: u32,
}

/// The window of the mail limits.
pub const MAIL_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pending {
    /// Hex SHA-256 of the link's token.
    token_sha256: String,
    folder: String,
    id: String,
    /// The address the link was sent to (the only one it validates).
    #[serde(default)]
    email: String,
    sent: Timestamp,
    expires: Timestamp,
}

/// What an activation link validates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// The app folder.
    pub folder: String,
    /// The session id.
    pub id: String,
    /// The address the link was sent to.
    pub email: String,
}

/// Errors of e-mail validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// Mails sent in the last window: (when, recipient, client address). Held for a
    /// list edit only.
    sent: parking_lot::Mutex<std::collections::VecDeque<(Timestamp, String, Option<IpAddr>)>>,
}

fn sha256_hex(s: &str) -> String {
    sessiond_core::id::to_hex(&Sha256::digest(s.as_bytes()))
}

/// What [`Activations::request`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// A mail with a new link was sent.
    Sent,
    /// A link sent recently to this address is still valid; nothing was sent.
    AlreadySent,
    /// The mail limits of this address or client were reached; nothing was sent.
    Limited,
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
            sent: parking_lot::Mutex::default(),
        })
    }

    fn save(&self, list: &[Pending]) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(list).expect("serializable");
        atomic_write(&self.config.state_file, &bytes)
    }

    /// Sends a validation link for session `folder/id` to `email` (asked by
    /// `client`), unless a link sent to that address is still outstanding, or a mail
    /// limit is reached. Links of the session sent to another address stop working.
    pub async fn request(
        &self,
        folder: &str,
        id: &str,
        email: &str,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Requested, EmailError> {
        let to: Mailbox = email
            .parse()
            .map_err(|_| EmailError::Address(email.to_string()))?;
        let recipient = email.to_ascii_lowercase();
        {
            let mut list = self.pending.lock();
            list.retain(|p| {
                p.expires > now && !(p.folder == folder && p.id == id && p.email != email)
            });
            if list
                .iter()
                .any(|p| p.folder == folder && p.id == id && p.email == email)
            {
                return Ok(Requested::AlreadySent);
            }
            let mut sent = self.sent.lock();
            while sent
                .front()
                .is_some_and(|(t, _, _)| now >= t.plus(MAIL_WINDOW))
            {
                sent.pop_front();
            }
            let to_recipient = sent.iter().filter(|(_, r, _)| *r == recipient).count();
            let from_client = sent.iter().filter(|(_, _, c)| *c == client).count();
            if to_recipient >= self.config.max_per_recipient as usize
                || from_client >= self.config.max_per_client as usize
            {
                return Ok(Requested::Limited);
            }
            // Counted before sending, so that concurrent logins cannot all pass.
            sent.push_back((now, recipient, client));
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
            email: email.to_string(),
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
                let nonce = sessiond_core::id::to_hex(&sessiond_core::id::random_bytes::<4>());
                let path = dir.join(format!("{}-{id}-{nonce}.eml", now.0));
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

    /// Consumes a link's token: what it validates, if the link is known and still
    /// valid. A link works once.
    pub fn consume(&self, token: &str, now: Timestamp) -> Result<Option<Activation>, EmailError> {
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
        Ok((p.expires > now).then_some(Activation {
            folder: p.folder,
            id: p.id,
            email: p.email,
        }))
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
            max_per_recipient: 3,
            max_per_client: 10,
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
            a.request("app", "ab12", "u@example.com", None, t0)
                .await
                .unwrap(),
            Requested::Sent
        );
        assert_eq!(
            a.request(
                "app",
                "ab12",
                "u@example.com",
                None,
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
            a.request("app", "ab12", "not an address", None, t0).await,
            Err(EmailError::Address(_))
        ));
        let b = Activations::load(config(dir.path())).unwrap();
        assert!(
            b.consume(&token, t0).unwrap().is_none(),
            "consumed links are gone after a reload"
        );
    }

    #[tokio::test]
    async fn a_link_is_bound_to_its_address_and_mails_are_limited() {
        let dir = tempfile::tempdir().unwrap();
        let a = Activations::load(config(dir.path())).unwrap();
        let t0 = Timestamp(1_000_000);
        let client = Some(IpAddr::from([203, 0, 113, 9]));
        assert_eq!(
            a.request("app", "01", "me@own.example", client, t0)
                .await
                .unwrap(),
            Requested::Sent
        );
        let first = token_of(dir.path());
        // Another address for the same session: a new link, the first one is void.
        assert_eq!(
            a.request("app", "01", "boss@victim.example", client, t0)
                .await
                .unwrap(),
            Requested::Sent
        );
        assert!(a.consume(&first, t0).unwrap().is_none());
        // Three mails per recipient per hour, ten per client.
        for id in ["02", "03"] {
            assert_eq!(
                a.request("app", id, "boss@victim.example", None, t0)
                    .await
                    .unwrap(),
                Requested::Sent
            );
        }
        assert_eq!(
            a.request("app", "04", "BOSS@victim.example", None, t0)
                .await
                .unwrap(),
            Requested::Limited
        );
        // Two mails from this client so far: eight more reach its ten.
        for i in 0..8 {
            let to = format!("u{i}@example.com");
            assert_eq!(
                a.request("app", &format!("1{i}"), &to, client, t0)
                    .await
                    .unwrap(),
                Requested::Sent
            );
        }
        assert_eq!(
            a.request("app", "20", "late@example.com", client, t0)
                .await
                .unwrap(),
            Requested::Limited
        );
        let later = t0.plus(MAIL_WINDOW);
        assert_eq!(
            a.request("app", "20", "late@example.com", client, later)
                .await
                .unwrap(),
            Requested::Sent
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
            max_per_recipient: 3,
            max_per_client: 10,
        };
        let a = Activations::load(config).unwrap();
        assert_eq!(
            a.request("app", "ab12", "user@example.com", None, Timestamp(1))
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
