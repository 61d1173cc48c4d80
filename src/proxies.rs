//! Trusted proxies: behind a reverse proxy every client has the proxy's address, and the real
//! one is in `Forwarded` or `X-Forwarded-For`. Those headers are believed only when the socket
//! comes from a proxy listed in `trusted_proxies`; anyone else could write them.

use std::net::{IpAddr, SocketAddr};

use crate::handshake::Request;

#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    /// (network, prefix length).
    nets: Vec<(IpAddr, u8)>,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)), 32),
            None => (u128::from(v6), 128),
        },
    }
}

impl TrustedProxies {
    /// `"10.0.0.5"`, `"10.0.0.0/8"`, `"::1"`, `"fd00::/8"`.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let nets = entries
            .iter()
            .map(|raw| {
                let bad = || format!("trusted_proxies: {raw:?} is not an IP address or network (write 10.0.0.5 or 10.0.0.0/8)");
                let (addr, len) = match raw.trim().split_once('/') {
                    Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
                    None => (raw.trim(), None),
                };
                let ip: IpAddr = addr.parse().map_err(|_| bad())?;
                let (_, width) = bits(ip);
                let len = len.unwrap_or(width);
                if len > width {
                    return Err(bad());
                }
                Ok((ip, len))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (value, width) = bits(ip);
        self.nets.iter().any(|(net, len)| {
            let (net, net_width) = bits(*net);
            if net_width != width {
                return false;
            }
            let shift = u32::from(width - len);
            *len == 0 || (value >> shift) == (net >> shift)
        })
    }

    /// The client's address: the peer's own, or, when the peer is a trusted proxy, the last
    /// address in the forwarding chain that is not one of ours (port 0: proxies do not say).
    pub fn client(&self, peer: SocketAddr, request: &Request) -> SocketAddr {
        if self.is_empty() || !self.contains(peer.ip()) {
            return peer;
        }
        let chain: Vec<IpAddr> = match request.header("forwarded") {
            Some(forwarded) => forwarded
                .split(',')
                .filter_map(|hop| {
                    hop.split(';').find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        k.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| parse_node(v))?
                    })
                })
                .collect(),
            None => request
                .header("x-forwarded-for")
                .map(|xff| xff.split(',').filter_map(parse_node).collect())
                .unwrap_or_default(),
        };
        chain
            .into_iter()
            .rev()
            .find(|ip| !self.contains(*ip))
            .map_or(peer, |ip| SocketAddr::new(ip, 0))
    }
}

/// One hop: `192.0.2.1`, `"[2001:db8::1]:4711"`, `192.0.2.1:8080`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let v = raw.trim().trim_matches('"');
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    v.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::parse_head;

    fn request(headers: &str) -> Request {
        let head = format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        parse_head(head.as_bytes(), 4096).unwrap().unwrap().0
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn networks_match_by_prefix() {
        let p = proxies(&["10.0.0.0/8", "::1", "192.168.1.7"]);
        assert!(p.contains("10.200.3.4".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        assert!(p.contains("::1".parse().unwrap()));
        assert!(p.contains("192.168.1.7".parse().unwrap()));
        assert!(!p.contains("192.168.1.8".parse().unwrap()));
        assert!(p.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local".into()]).is_err());
    }

    #[test]
    fn the_client_is_the_last_untrusted_hop_and_only_from_a_trusted_peer() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let via_proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let direct: SocketAddr = "198.51.100.9:5000".parse().unwrap();
        let xff = request("X-Forwarded-For: 1.2.3.4, 203.0.113.7, 10.0.0.2\r\n");
        assert_eq!(p.client(via_proxy, &xff), "203.0.113.7:0".parse().unwrap());
        // Anyone can write the header: from an untrusted peer it is ignored.
        assert_eq!(p.client(direct, &xff), direct);
        let fwd = request("Forwarded: for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\"\r\n");
        assert_eq!(
            p.client(via_proxy, &fwd).ip(),
            "2001:db8:cafe::17".parse::<IpAddr>().unwrap()
        );
        assert_eq!(p.client(via_proxy, &request("")), via_proxy);
        assert_eq!(TrustedProxies::default().client(via_proxy, &xff), via_proxy);
    }
}
