//! The client IP of a request: the socket peer, or, only when the peer is a
//! configured trusted proxy, the address that proxy reports.
//!
//! `X-Forwarded-For` (de-facto standard) is walked from the right, skipping
//! trusted proxies; the first untrusted address is the client. Without it, the
//! last `for=` of `Forwarded` (RFC 7239 §5.2) is used the same way. A header
//! from an untrusted peer is ignored entirely; an unparsable entry stops the walk
//! and the last trusted hop's view (the peer) is used.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client IP for rate limiting and visitor hashing.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut chain: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .collect();
    if chain.is_empty() {
        chain = headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|elem| {
                elem.split(';').map(str::trim).find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    k.eq_ignore_ascii_case("for").then(|| forwarded_node(v))
                })
            })
            .collect();
    }
    let mut client = peer;
    for entry in chain.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>() else { return client };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// RFC 7239 node: `192.0.2.43`, `"[2001:db8::1]:4711"`, `"192.0.2.43:80"`.
fn forwarded_node(v: &str) -> String {
    let v = v.trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_owned();
    }
    match v.split_once(':') {
        Some((host, _port)) if !host.contains(':') => host.to_owned(),
        _ => v.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn walks_from_the_right_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
        let lb: IpAddr = "10.1.2.3".parse().unwrap();
        let outsider: IpAddr = "198.51.100.9".parse().unwrap();
        let xff = h(&[("x-forwarded-for", "203.0.113.1, 198.51.100.7, 10.9.9.9")]);
        assert_eq!(client_ip(lb, &xff, &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        // Spoofed header from an untrusted peer: ignored.
        assert_eq!(client_ip(outsider, &xff, &trusted), outsider);
        // Garbage stops the walk.
        let bad = h(&[("x-forwarded-for", "203.0.113.1, nonsense")]);
        assert_eq!(client_ip(lb, &bad, &trusted), lb);
        // All trusted: the leftmost.
        let all = h(&[("x-forwarded-for", "10.0.0.1, 10.0.0.2")]);
        assert_eq!(client_ip(lb, &all, &trusted), "10.0.0.1".parse::<IpAddr>().unwrap());
        let fwd = h(&[("forwarded", "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"")]);
        assert_eq!(client_ip(lb, &fwd, &trusted), "2001:db8::1".parse::<IpAddr>().unwrap());
        let fwd4 = h(&[("forwarded", "for=\"192.0.2.43:80\"")]);
        assert_eq!(client_ip(lb, &fwd4, &trusted), "192.0.2.43".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(lb, &HeaderMap::new(), &trusted), lb);
    }
}
