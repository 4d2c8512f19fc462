//! The client's address behind a load balancer or an Ingress. The address
//! the connection comes from is the client's unless it is one of the
//! configured trusted proxies (`trusted_proxies`: addresses and CIDR
//! ranges); then `X-Forwarded-For` is read from the right, each proxy
//! appending the address it got the request from, and the first address
//! that is not a trusted proxy is the client. From anyone else the header
//! is ignored: a client cannot choose the address its rate limits and
//! audit entries are kept under.

use axum::http::HeaderMap;
use std::net::IpAddr;

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

/// `X-Forwarded-For` entries read at most (a longer chain is cut at the
/// left, the part no trusted proxy vouches for anyway).
const MAX_HOPS: usize = 32;

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR ranges
    /// (`10.0.0.0/8, 192.0.2.7, fd00::/8`); the error names the bad entry.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || {
                format!(
                    "trusted_proxies: {entry:?} is not an IP address or CIDR range (like 10.0.0.0/8)"
                )
            };
            let (addr, bits) = match entry.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (entry, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let addr = canonical(addr);
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(bad)?,
                None => max,
            };
            out.push((addr, bits));
        }
        Ok(Self(out))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|&(net, bits)| in_range(ip, net, bits))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if self.0.is_empty() || !self.contains(client) {
            return client;
        }
        let mut hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let keep = hops.len().saturating_sub(MAX_HOPS);
        hops.drain(..keep);
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// An address as proxies write it: bare, or with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// An IPv4 address written as IPv6 (`::ffff:192.0.2.1`) is the IPv4 one.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "proxy.example",
            "10.0.0.0/x",
            "1.2.3",
        ] {
            let e = TrustedProxies::parse(&format!("192.0.2.1, {bad}")).unwrap_err();
            assert!(e.contains(bad) && e.contains("trusted_proxies"), "{e}");
        }
        assert!(TrustedProxies::parse(" , ").unwrap().0.is_empty());
    }

    #[test]
    fn the_header_is_believed_only_from_trusted_proxies_and_only_as_far_as_they_go() {
        let p = TrustedProxies::parse("10.0.0.0/8, 192.0.2.7, fd00::/8").unwrap();
        // Straight from a client: its own header means nothing.
        assert_eq!(
            p.client(ip("198.51.100.9"), &headers(&["203.0.113.1"])),
            ip("198.51.100.9")
        );
        // Through the Ingress (10.1.2.3): the address it saw.
        assert_eq!(
            p.client(ip("10.1.2.3"), &headers(&["203.0.113.1"])),
            ip("203.0.113.1")
        );
        // A client's forged entry left of what the proxies wrote is not
        // reached: the first untrusted address from the right wins.
        assert_eq!(
            p.client(
                ip("10.1.2.3"),
                &headers(&["1.1.1.1, 203.0.113.1", "192.0.2.7"])
            ),
            ip("203.0.113.1")
        );
        // Ports, IPv6, IPv4-mapped peers.
        assert_eq!(
            p.client(ip("::ffff:10.0.0.1"), &headers(&["[2001:db8::5]:4431"])),
            ip("2001:db8::5")
        );
        assert_eq!(
            p.client(ip("fd12::1"), &headers(&["198.51.100.2:80"])),
            ip("198.51.100.2")
        );
        // Nothing usable: the proxy itself (or the last good hop).
        assert_eq!(p.client(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
        assert_eq!(
            p.client(ip("10.1.2.3"), &headers(&["junk, 10.9.9.9"])),
            ip("10.9.9.9")
        );
        // None configured: the peer, always.
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("10.1.2.3"), &headers(&["203.0.113.1"])),
            ip("10.1.2.3")
        );
    }
}
