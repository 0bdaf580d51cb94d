//! Clicks: the click token, the user-agent class, the visitor hash and the
//! click record that the redirect makes durable.
//!
//! Owns: what a click *is*, and the local durable [`spool`] a click falls back
//! to when Redis cannot take it in time ([`Durability`] says where it went).
//! How it is written to Redis lives in [`crate::store`]. Never builds URLs,
//! never reads request types.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::link::LinkClaims;

mod record;
pub mod spool;
mod ua;

pub use record::{ClickRecord, PackedRecord};
pub use ua::{UaClass, bot_reason};

/// Mints a click token: a UUID v7 (RFC 9562 §5.7), time-ordered, 74 random bits.
///
/// Written everywhere in its canonical hyphenated lowercase form (RFC 9562 §4),
/// 36 characters.
pub fn mint_token() -> Uuid {
    Uuid::now_v7()
}

/// Now, as Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One recorded click, as written to the click stream and the click record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    /// Click token (UUID v7).
    pub token: Uuid,
    /// Time of the click, Unix milliseconds.
    pub ts_ms: u64,
    /// Note, creator, product and campaign from the verified tracked link.
    pub link: LinkClaims,
    /// Keyed hash of the client IP, 16 lowercase hex characters (see [`VisitorHasher`]).
    pub ip_hash: String,
    /// Coarse user-agent class.
    pub ua: UaClass,
    /// Host of the `Referer` header, lowercased, when present and well formed (≤ 253 bytes).
    pub referrer_host: Option<String>,
}

/// Why Redis did not take a click (metric label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnrecordedReason {
    /// Redis did not acknowledge within the bounded wait.
    Timeout,
    /// Redis answered with an error or the connection failed.
    RedisError,
    /// Redis was known to be down, so it was not tried (the spool took the click at once).
    RedisDown,
}

impl UnrecordedReason {
    /// Stable metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::RedisError => "redis_error",
            Self::RedisDown => "redis_down",
        }
    }
}

/// Where a click ended up before its 302 was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged by Redis.
    Redis,
    /// Redis could not take it (the reason); fsynced to the local spool instead.
    Spooled(UnrecordedReason),
    /// Neither Redis nor the spool could take it: redirected anyway, counted as dropped.
    Dropped(spool::SpoolError),
}

/// Keyed hash of client IPs, so raw IPs are never stored.
///
/// `ip_hash = hex(HMAC-SHA256(visitor_secret, "linkloop/ip/v1\0" || ip_text)[..8])`,
/// where `ip_text` is the canonical textual form (RFC 5952 for IPv6; IPv4-mapped
/// IPv6 addresses are hashed as their IPv4 form).
#[derive(Clone)]
pub struct VisitorHasher {
    mac: Hmac<Sha256>,
}

impl VisitorHasher {
    /// Keys the hasher. Any secret length is accepted by HMAC; configuration
    /// requires at least 32 bytes.
    pub fn new(secret: &[u8]) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length"); // ok: infallible
        Self { mac }
    }

    /// The 16-hex-character keyed hash of `ip`.
    pub fn ip_hash(&self, ip: IpAddr) -> String {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut mac = self.mac.clone();
        mac.update(b"linkloop/ip/v1\0");
        match ip {
            // The dotted quad, as `Display` writes it, without the formatting machinery.
            IpAddr::V4(v4) => {
                let mut num = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        mac.update(b".");
                    }
                    mac.update(num.format(octet).as_bytes());
                }
            }
            v6 => mac.update(v6.to_string().as_bytes()),
        }
        let out = mac.finalize().into_bytes();
        let mut s = String::with_capacity(16);
        for b in &out[..8] {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }
}

impl std::fmt::Debug for VisitorHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VisitorHasher(..)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Extracts the host of a `Referer` header value: lowercased, without port or
/// userinfo, at most 253 bytes (RFC 1035 name length). `None` when absent or not an
/// absolute http(s) URL.
pub fn referrer_host(referer: &str) -> Option<String> {
    let url = url::Url::parse(referer).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str()?;
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_hash_hashes_the_addresses_display_text() {
        // The dotted quad is written octet by octet; the hash must stay the one of the
        // address's text (stored hashes and repeat markers depend on it).
        let h = VisitorHasher::new(&[7u8; 32]);
        for ip in ["0.0.0.0", "10.0.0.1", "203.0.113.7", "255.255.255.255", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut mac = h.mac.clone();
            mac.update(b"linkloop/ip/v1\0");
            mac.update(ip.to_string().as_bytes());
            assert_eq!(h.ip_hash(ip), hex::encode(&mac.finalize().into_bytes()[..8]), "{ip}");
        }
    }

    #[test]
    fn ip_hash_is_keyed_stable_and_maps_v4_in_v6() {
        let a = VisitorHasher::new(&[1u8; 32]);
        let b = VisitorHasher::new(&[2u8; 32]);
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(a.ip_hash(v4), a.ip_hash(mapped));
        assert_ne!(a.ip_hash(v4), b.ip_hash(v4));
        assert_eq!(a.ip_hash(v4).len(), 16);
        assert!(!a.ip_hash(v4).contains("203"));
    }

    #[test]
    fn token_is_v7_and_canonical() {
        let t = mint_token();
        assert_eq!(t.get_version_num(), 7);
        let s = t.hyphenated().to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(s, s.to_lowercase());
    }

    #[test]
    fn referrer_hosts() {
        assert_eq!(referrer_host("https://www.Xiaohongshu.com/explore/1?x=1").as_deref(), Some("www.xiaohongshu.com"));
        assert_eq!(referrer_host("https://u:p@evil.cn:8443/"), Some("evil.cn".into()));
        assert_eq!(referrer_host("javascript:alert(1)"), None);
        assert_eq!(referrer_host("not a url"), None);
    }
}
