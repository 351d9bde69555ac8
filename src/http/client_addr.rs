//! The client address of a request: the socket's peer, unless that peer is a trusted
//! proxy; only then the forwarding header the app chose, read from the right, skipping
//! trusted hops (the right-most untrusted address is the client). A client can prepend
//! anything to `X-Forwarded-For`; it cannot change what the proxies appended.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::core::error::{Result, SentriError};

/// Which forwarding header the trusted proxies set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the default).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// The proxies (addresses or CIDR ranges) allowed to name the client address.
///
/// ```
/// use sentri::http::{ForwardedHeader, TrustedProxies};
/// let proxies = TrustedProxies::new(["10.0.0.0/8", "192.0.2.10"])?
///     .header(ForwardedHeader::XForwardedFor);
/// # Ok::<(), sentri::SentriError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedProxies")
            .field(
                "nets",
                &self
                    .nets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .field("header", &self.header)
            .finish()
    }
}

impl TrustedProxies {
    /// Proxies given as addresses (`"192.0.2.10"`) or ranges (`"10.0.0.0/8"`); anything
    /// else is a `CONFIGURATION_ERROR`.
    pub fn new<I, S>(proxies: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = proxies
            .into_iter()
            .map(|p| parse_net(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            nets,
            header: ForwardedHeader::default(),
        })
    }

    /// Chooses the forwarding header (only that one is read).
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer` with these headers.
    pub fn client(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        if !self.trusts(peer) {
            return canonical(peer);
        }
        let hops = match self.header {
            ForwardedHeader::XForwardedFor => list(headers, "x-forwarded-for", Some),
            ForwardedHeader::Forwarded => list(headers, "forwarded", forwarded_for),
        };
        let mut client = canonical(peer);
        for hop in hops.iter().rev() {
            // An unreadable hop: stop at the last proxy we trust.
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

fn parse_net(s: &str) -> Result<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            SentriError::configuration(format!(
                "trusted_proxies: {s:?} is not an IP address or CIDR range"
            ))
        })
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every comma-separated element of every `name` header, mapped by `f`.
fn list<'a>(
    headers: &'a HeaderMap,
    name: &str,
    f: impl Fn(&'a str) -> Option<&'a str>,
) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|e| f(e.trim()).unwrap_or(""))
        .collect()
}

/// The `for=` value of one `Forwarded` element (empty when there is none).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_trusted_peers_are_asked_and_the_right_most_untrusted_hop_wins() {
        let p = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let h = headers("x-forwarded-for", &["6.6.6.6, 1.2.3.4", "10.0.0.2"]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(p.client(&h, peer).to_string(), "1.2.3.4");
        let outsider: IpAddr = "5.5.5.5".parse().unwrap();
        assert_eq!(p.client(&h, outsider).to_string(), "5.5.5.5");
        let garbage = headers("x-forwarded-for", &["1.2.3.4, nonsense"]);
        assert_eq!(p.client(&garbage, peer).to_string(), "10.0.0.1");
        let all_trusted = headers("x-forwarded-for", &["10.1.1.1"]);
        assert_eq!(p.client(&all_trusted, peer).to_string(), "10.1.1.1");
    }

    #[test]
    fn forwarded_header_is_read_only_when_chosen() {
        let p = TrustedProxies::new(["::1"])
            .unwrap()
            .header(ForwardedHeader::Forwarded);
        let peer: IpAddr = "::1".parse().unwrap();
        let mut h = headers(
            "forwarded",
            &["for=9.9.9.9, for=\"[2001:db8::7]:4711\";proto=https"],
        );
        h.append("x-forwarded-for", "8.8.8.8".parse().unwrap());
        assert_eq!(p.client(&h, peer).to_string(), "2001:db8::7");
        assert!(TrustedProxies::new(["not-an-ip"]).is_err());
    }
}
