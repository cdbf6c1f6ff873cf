//! Identifiers and secrets: the public session id, cookie tokens and OTPs.
//!
//! Every random value comes from the OS CSPRNG ([`getrandom`]). Secrets are never
//! stored: stores keep a [`TokenHash`] (SHA-256, truncated to 128 bits) and compare
//! hashes in constant time.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Timestamp};

/// Fills `N` bytes from the operating system's CSPRNG.
///
/// # Panics
/// Panics if the OS has no usable random source; running without one would be unsafe.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random number generator is unavailable");
    buf
}

/// Lower-case hexadecimal of `bytes`.
///
/// ```
/// assert_eq!(sessiond_core::id::to_hex(&[0x0a, 0xff]), "0aff");
/// ```
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| {
            [
                char::from(DIGITS[usize::from(b >> 4)]),
                char::from(DIGITS[usize::from(b & 15)]),
            ]
        })
        .collect()
}

/// Lower- or upper-case hex digits as exactly `N` bytes; `None` for any other text.
///
/// ```
/// assert_eq!(sessiond_core::id::from_hex::<2>("0aFF"), Some([0x0a, 0xff]));
/// assert_eq!(sessiond_core::id::from_hex::<2>("0a"), None);
/// assert_eq!(sessiond_core::id::from_hex::<2>("+a+f"), None); // digits only, no signs
/// ```
pub fn from_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (b, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *b = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(out)
}

/// The public id of a session: a random UUID written as 32 upper-case hex digits,
/// exactly as 4D's `Session.id` (`3C81A8D7AFE64C2E9CCFFCDC35DC52F5`).
///
/// ```
/// use sessiond_core::SessionId;
/// let id = SessionId::random();
/// let text = id.to_string();
/// assert_eq!(text.len(), 32);
/// assert_eq!(text.parse::<SessionId>().unwrap(), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// A new random id (UUID version 4 layout).
    pub fn random() -> Self {
        let mut b = random_bytes::<16>();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Self(b)
    }

    /// The id's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Builds an id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for SessionId {
    /// 32 upper-case hex digits, written at once (ids are written on every stored
    /// change and every JSON view: one `write_str`, not one formatted byte at a time).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        let mut text = [0u8; 32];
        for (pair, b) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        f.pad(std::str::from_utf8(&text).expect("hex digits are ASCII"))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Parses 32 hex digits (either case), also accepting the dashed UUID form.
impl FromStr for SessionId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex16(s).map(Self).ok_or(Error::InvalidId)
    }
}

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = if s.len() == 36 {
        let b = s.as_bytes();
        if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
            return None;
        }
        b.iter().copied().filter(|&c| c != b'-').collect()
    } else {
        s.as_bytes().to_vec()
    };
    std::str::from_utf8(&digits).ok().and_then(from_hex)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The stored form of a secret: SHA-256 truncated to 128 bits.
///
/// Compared in constant time; a leaked store does not reveal usable cookies.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TokenHash(pub [u8; 16]);

impl TokenHash {
    /// Hashes a secret.
    pub fn of(secret: &[u8]) -> Self {
        let digest = Sha256::digest(secret);
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Self(out)
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// The value of the session cookie: the session id and a 128-bit secret, encoded as
/// 43 characters of unpadded base64url. The secret is distinct from the public id and
/// only its [`TokenHash`] is stored, so knowing a session's id is not enough to use it.
///
/// A guest session that holds nothing yet is not stored at all: its cookie is a
/// **guest ticket** ([`GuestKey::ticket`], 64 characters) that also carries the
/// session's creation time and last activity, whose id and secret are derived from
/// the server's [`GuestKey`], so the server recognizes it without a lookup, and whose
/// times are sealed by a MAC under that key, so a client cannot move them.
///
/// ```
/// use sessiond_core::{CookieToken, SessionId};
/// let token = CookieToken::issue(SessionId::random());
/// let parsed: CookieToken = token.encode().parse().unwrap();
/// assert_eq!(parsed.session_id(), token.session_id());
/// assert!(parsed.hash().ct_eq(&token.hash()));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CookieToken {
    id: SessionId,
    secret: [u8; 16],
    /// Computed once: every use of a token needs it.
    hash: TokenHash,
    /// A guest ticket's times and their MAC.
    stamp: Option<Stamp>,
}

/// A guest ticket's creation and last activity (seconds since [`TICKET_EPOCH_MS`])
/// and the MAC that binds them to the session id.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    created: u32,
    last: u32,
    tag: [u8; 8],
}

impl Stamp {
    fn times(self) -> (Timestamp, Timestamp) {
        (ticket_time(self.created), ticket_time(self.last))
    }
}

impl CookieToken {
    fn new(id: SessionId, secret: [u8; 16]) -> Self {
        Self {
            id,
            secret,
            hash: TokenHash::of(&secret),
            stamp: None,
        }
    }

    /// Issues a new token for a session, with a fresh secret.
    pub fn issue(id: SessionId) -> Self {
        Self::new(id, random_bytes())
    }

    /// A new session id and the token of its first client, from one read of the OS
    /// random source.
    pub fn new_session() -> Self {
        let bytes = random_bytes::<32>();
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[..16]);
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&bytes[16..]);
        Self::new(SessionId(id), secret)
    }

    /// The session the token claims to belong to (not yet verified).
    pub fn session_id(&self) -> SessionId {
        self.id
    }

    /// The hash under which stores keep this token.
    pub fn hash(&self) -> TokenHash {
        self.hash
    }

    /// A guest ticket's (creation, last activity), as the client presented them:
    /// [`GuestKey::recognizes`] tells whether the server wrote them.
    pub fn stamp(&self) -> Option<(Timestamp, Timestamp)> {
        self.stamp.map(Stamp::times)
    }

    /// The cookie value.
    pub fn encode(&self) -> String {
        let mut raw = [0u8; TICKET_LEN];
        raw[..16].copy_from_slice(self.id.as_bytes());
        raw[16..32].copy_from_slice(&self.secret);
        match self.stamp {
            None => URL_SAFE_NO_PAD.encode(&raw[..32]),
            Some(stamp) => {
                raw[32..36].copy_from_slice(&stamp.created.to_be_bytes());
                raw[36..40].copy_from_slice(&stamp.last.to_be_bytes());
                raw[40..].copy_from_slice(&stamp.tag);
                URL_SAFE_NO_PAD.encode(raw)
            }
        }
    }
}

/// Bytes of a guest ticket: id, secret, creation and last activity (seconds since
/// [`TICKET_EPOCH_MS`]), a 64-bit MAC of the id and the two times.
const TICKET_LEN: usize = 48;
/// 2020-01-01T00:00:00Z: ticket times are seconds from here (32 bits last until 2156).
const TICKET_EPOCH_MS: u64 = 1_577_836_800_000;

fn ticket_seconds(t: Timestamp) -> u32 {
    u32::try_from(t.0.saturating_sub(TICKET_EPOCH_MS) / 1000).unwrap_or(u32::MAX)
}

fn ticket_time(seconds: u32) -> Timestamp {
    Timestamp(TICKET_EPOCH_MS + u64::from(seconds) * 1000)
}

impl FromStr for CookieToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 43 && s.len() != 64 {
            return Err(Error::InvalidToken);
        }
        let mut raw = [0u8; TICKET_LEN];
        let n = URL_SAFE_NO_PAD
            .decode_slice(s, &mut raw)
            .map_err(|_| Error::InvalidToken)?;
        if n != 32 && n != TICKET_LEN {
            return Err(Error::InvalidToken);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[..16]);
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&raw[16..32]);
        let mut token = Self::new(SessionId(id), secret);
        if n == TICKET_LEN {
            let at = |i: usize| u32::from_be_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
            token.stamp = Some(Stamp {
                created: at(32),
                last: at(36),
                tag: raw[40..].try_into().expect("8 bytes"),
            });
        }
        Ok(token)
    }
}

impl fmt::Debug for CookieToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CookieToken({}, ..)", self.id)
    }
}

/// The server's key for guest sessions that are not stored: it derives their ids (the
/// last 6 bytes are a MAC of the first 10) and their cookie secrets, so that a guest
/// ticket — and a guest id given to the service API — is recognized without a lookup,
/// and nobody without the key can make one. Every node of a deployment uses the same
/// key (`sessiond serve` keeps it in `credentials.json`).
#[derive(Clone)]
pub struct GuestKey {
    key: [u8; 32],
    /// HMAC-SHA-256 keyed with `key`, cloned for each MAC (the key's two blocks are
    /// hashed once, not per MAC: guests are made on every cookieless request).
    keyed: hmac::Hmac<Sha256>,
}

impl fmt::Debug for GuestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GuestKey(..)")
    }
}

impl GuestKey {
    /// A fresh random key.
    pub fn random() -> Self {
        Self::from_bytes(random_bytes())
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        use hmac::Mac as _;
        let keyed = hmac::Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        Self { key, keyed }
    }

    /// The key's 32 bytes (to keep it).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = self.keyed.clone();
        mac.update(label);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// A new guest session id (UUID version 4 layout, 74 random bits, a 48-bit tag).
    pub fn new_id(&self) -> SessionId {
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&random_bytes::<10>());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let tag = self.mac(b"id", &b[..10]);
        b[10..].copy_from_slice(&tag[..6]);
        SessionId(b)
    }

    /// Whether `id` was made by [`GuestKey::new_id`] with this key (constant time).
    pub fn made(&self, id: &SessionId) -> bool {
        let tag = self.mac(b"id", &id.0[..10]);
        tag[..6].ct_eq(&id.0[10..]).into()
    }

    /// The cookie secret of guest session `id`.
    fn secret(&self, id: &SessionId) -> [u8; 16] {
        let mut s = [0u8; 16];
        s.copy_from_slice(&self.mac(b"secret", &id.0)[..16]);
        s
    }

    /// The MAC of a ticket's times.
    fn stamp_tag(&self, id: &SessionId, created: u32, last: u32) -> [u8; 8] {
        let mut data = [0u8; 24];
        data[..16].copy_from_slice(&id.0);
        data[16..20].copy_from_slice(&created.to_be_bytes());
        data[20..].copy_from_slice(&last.to_be_bytes());
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&self.mac(b"stamp", &data)[..8]);
        tag
    }

    /// The guest ticket of session `id`, created at `created`, last active at `last`
    /// (times kept to the second).
    pub fn ticket(&self, id: SessionId, created: Timestamp, last: Timestamp) -> CookieToken {
        let (created, last) = (ticket_seconds(created), ticket_seconds(last));
        let mut t = CookieToken::new(id, self.secret(&id));
        t.stamp = Some(Stamp {
            created,
            last,
            tag: self.stamp_tag(&id, created, last),
        });
        t
    }

    /// Whether `token` is a guest ticket this key made: its id, its secret and its
    /// times (constant time).
    pub fn recognizes(&self, token: &CookieToken) -> bool {
        let Some(stamp) = token.stamp else {
            return false;
        };
        let secret = self.secret(&token.id).ct_eq(&token.secret);
        let tag = self
            .stamp_tag(&token.id, stamp.created, stamp.last)
            .ct_eq(&stamp.tag);
        self.made(&token.id) & bool::from(secret & tag)
    }
}

/// A one-time token as returned by `createOTP()`: a random UUID in 4D's text form
/// (32 upper-case hex digits). Only its hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpToken([u8; 16]);

impl OtpToken {
    /// A fresh random token.
    pub fn random() -> Self {
        Self(SessionId::random().0)
    }

    /// The hash under which stores keep this token.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Display for OtpToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SessionId(self.0).fmt(f)
    }
}

impl fmt::Debug for OtpToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpToken(..)")
    }
}

impl FromStr for OtpToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex16(s).map(Self).ok_or(Error::InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_is_32_uppercase_hex() {
        let s = SessionId::random().to_string();
        assert_eq!(s.len(), 32);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
        );
    }

    #[test]
    fn session_id_displays_every_byte_as_two_digits_and_parses_back() {
        let bytes = [
            0x00, 0x01, 0x0A, 0x0F, 0x10, 0x7F, 0x80, 0x9C, 0xA5, 0xB0, 0xC3, 0xD7, 0xE8, 0xF1,
            0xFE, 0xFF,
        ];
        let id = SessionId::from_bytes(bytes);
        assert_eq!(id.to_string(), "00010A0F107F809CA5B0C3D7E8F1FEFF");
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
        assert_eq!(format!("{id:>34}"), format!("  {id}"));
    }

    #[test]
    fn session_id_parses_lowercase_and_dashed() {
        let id: SessionId = "3C81A8D7AFE64C2E9CCFFCDC35DC52F5".parse().unwrap();
        assert_eq!(id, "3c81a8d7afe64c2e9ccffcdc35dc52f5".parse().unwrap());
        assert_eq!(id, "3c81a8d7-afe6-4c2e-9ccf-fcdc35dc52f5".parse().unwrap());
        assert!("3C81".parse::<SessionId>().is_err());
        assert!(
            "ZZ81A8D7AFE64C2E9CCFFCDC35DC52F5"
                .parse::<SessionId>()
                .is_err()
        );
        assert!(
            "3c81a8d7+afe6-4c2e-9ccf-fcdc35dc52f5"
                .parse::<SessionId>()
                .is_err()
        );
    }

    #[test]
    fn cookie_token_rejects_garbage() {
        assert!("".parse::<CookieToken>().is_err());
        assert!("A".repeat(43).parse::<CookieToken>().is_ok());
        assert!("!".repeat(43).parse::<CookieToken>().is_err());
        assert!("a".repeat(44).parse::<CookieToken>().is_err());
    }

    #[test]
    fn guest_tickets_are_recognized_only_with_their_key() {
        let key = GuestKey::random();
        let id = key.new_id();
        assert!(key.made(&id) && !GuestKey::random().made(&id));
        assert!(!key.made(&SessionId::random()));
        let t = key.ticket(
            id,
            Timestamp(1_700_000_000_000),
            Timestamp(1_700_000_060_000),
        );
        let text = t.encode();
        assert_eq!(text.len(), 64);
        let parsed: CookieToken = text.parse().unwrap();
        assert!(key.recognizes(&parsed));
        assert_eq!(
            parsed.stamp(),
            Some((Timestamp(1_700_000_000_000), Timestamp(1_700_000_060_000)))
        );
        // A refreshed ticket (later times) keeps the secret, so the token stored with
        // the guest goes on matching it.
        let refreshed = key.ticket(
            id,
            Timestamp(1_700_000_000_000),
            Timestamp(1_700_000_900_000),
        );
        assert!(parsed.hash().ct_eq(&refreshed.hash()));
        // Same id, another secret: refused.
        let forged = CookieToken::issue(id);
        assert!(!key.recognizes(&forged));
        assert!(!key.recognizes(&CookieToken::issue(SessionId::random())));
    }

    #[test]
    fn a_guest_ticket_with_rewritten_times_is_not_recognized() {
        let key = GuestKey::random();
        let id = key.new_id();
        let t = key.ticket(
            id,
            Timestamp(1_700_000_000_000),
            Timestamp(1_700_000_000_000),
        );
        let mut raw = URL_SAFE_NO_PAD.decode(t.encode()).unwrap();
        for byte in 32..40 {
            raw[byte] ^= 1;
            let moved: CookieToken = URL_SAFE_NO_PAD.encode(&raw).parse().unwrap();
            assert!(
                moved.stamp().is_some() && !key.recognizes(&moved),
                "byte {byte}"
            );
            raw[byte] ^= 1;
        }
        raw[47] ^= 1;
        let retagged: CookieToken = URL_SAFE_NO_PAD.encode(&raw).parse().unwrap();
        assert!(!key.recognizes(&retagged));
    }

    #[test]
    fn from_hex_takes_hex_digits_only() {
        assert_eq!(from_hex::<1>("+f"), None);
        assert_eq!(from_hex::<1>("-0"), None);
        assert_eq!(from_hex::<1>(" f"), None);
        assert_eq!(from_hex::<2>("é0"), None);
        assert_eq!(from_hex::<1>("fF"), Some([0xff]));
    }

    #[test]
    fn tokens_differ_from_the_public_id() {
        let id = SessionId::random();
        let t = CookieToken::issue(id);
        assert!(!t.encode().contains(&id.to_string()));
        assert_ne!(CookieToken::issue(id).hash(), t.hash());
    }
}
