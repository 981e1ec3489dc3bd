//! Facts about the connection a request came in on, which the server records on each request
//! (as an extension) and the REST and browser layers read: the peer, whether it is TLS, and what
//! they mean behind a trusted proxy (P7, P8). It sits below `server`, `protocol` and `web` so
//! that none of them imports another for it.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// Facts about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

impl ConnInfo {
    /// HTTPS directly, or through a trusted proxy that says so (P7).
    pub fn is_secure(&self, headers: &HeaderMap, trusted: &[IpAddr]) -> bool {
        if self.tls {
            return true;
        }
        is_trusted(self.peer.ip(), trusted)
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }
}

impl ConnInfo {
    /// The client's address for the rate limit: the TCP peer, or, when the peer is a trusted
    /// proxy, the nearest untrusted address in `X-Forwarded-For`. Walking from the right means a
    /// client cannot choose its own key by sending a forged header through the proxy.
    pub fn client_ip(&self, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
        let peer = self.peer.ip().to_canonical();
        if !is_trusted(peer, trusted) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip.to_canonical();
                    if !is_trusted(client, trusted) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

/// Whether `ip` is one of the trusted proxies, comparing IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`) as the IPv4 addresses they are: a server listening on `[::]` sees its
/// IPv4 peers in that form, and `trusted_proxies` names them as IPv4.
fn is_trusted(ip: IpAddr, trusted: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|t| t.to_canonical() == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_believes_only_trusted_proxies() {
        let conn = |peer: &str| ConnInfo {
            peer: SocketAddr::new(peer.parse().unwrap(), 1234),
            tls: false,
        };
        let trusted: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.0.0.2".parse().unwrap(),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(conn("9.9.9.9").client_ip(&h, &trusted), ip("9.9.9.9"));
        assert_eq!(conn("10.0.0.1").client_ip(&h, &trusted), ip("1.2.3.4"));
        assert_eq!(
            conn("10.0.0.1").client_ip(&HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        h.insert("x-forwarded-for", "junk, 1.2.3.4".parse().unwrap());
        assert_eq!(conn("10.0.0.1").client_ip(&h, &trusted), ip("1.2.3.4"));
        h.insert("x-forwarded-for", "1.2.3.4, junk".parse().unwrap());
        assert_eq!(conn("10.0.0.1").client_ip(&h, &trusted), ip("10.0.0.1"));
    }

    /// A listener on `[::]` sees IPv4 peers as `::ffff:a.b.c.d`; `trusted_proxies` lists them
    /// as IPv4, and both must mean the same proxy.
    #[test]
    fn ipv4_mapped_peers_and_hops_are_their_ipv4_addresses() {
        let conn = |peer: &str| ConnInfo {
            peer: SocketAddr::new(peer.parse().unwrap(), 1234),
            tls: false,
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted = vec![ip("127.0.0.1"), ip("::ffff:10.0.0.2")];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.2.3.4, ::ffff:10.0.0.2".parse().unwrap(),
        );
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        let mapped = conn("::ffff:127.0.0.1");
        assert_eq!(mapped.client_ip(&h, &trusted), ip("1.2.3.4"));
        assert!(mapped.is_secure(&h, &trusted));
        assert_eq!(conn("10.0.0.2").client_ip(&h, &trusted), ip("1.2.3.4"));
        // An untrusted mapped peer is its IPv4 address, for one bucket with its IPv4 requests.
        assert_eq!(
            conn("::ffff:9.9.9.9").client_ip(&h, &trusted),
            ip("9.9.9.9")
        );
        assert!(!conn("::ffff:9.9.9.9").is_secure(&h, &trusted));
    }
}
