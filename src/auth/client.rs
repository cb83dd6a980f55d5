//! Who is on the other end of a call: the client's network address, for
//! limits on what a caller without an account can cost (DESIGN §3).
//!
//! The address is the TCP peer's, unless `UNIO_CLIENT_ADDRESS_HEADER`
//! names a header that a trusted load balancer sets (such as
//! `x-forwarded-for`): then the last address in it, the one the balancer
//! itself appended. IPv6 clients are keyed by their /64, since one host
//! commonly holds a whole /64 and could rotate through it.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderName;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The client address of a request, set by the auth layer for every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(pub IpAddr);

/// The address `request` came from, normalised for use as a limit key.
pub fn address_of<B>(request: &http::Request<B>, header: Option<&HeaderName>) -> Option<IpAddr> {
    let forwarded = header.and_then(|name| {
        let last = request.headers().get_all(name).iter().next_back()?;
        let value = last.to_str().ok()?;
        value.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
    });
    let peer = || {
        let extensions = request.extensions();
        extensions
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .or_else(|| {
                extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|tls| tls.get_ref().remote_addr())
            })
            .map(|addr| addr.ip())
    };
    forwarded.or_else(peer).map(limit_key)
}

/// IPv4 as is (also when mapped into IPv6); IPv6 cut to its /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The client address of a call, as the auth layer recorded it.
pub fn client_address<T>(request: &tonic::Request<T>) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ClientAddress>()
        .map(|address| address.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(limit_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_trusted_header_gives_the_address_its_balancer_appended() {
        let name = HeaderName::from_static("x-forwarded-for");
        let request = http::Request::builder()
            .header("x-forwarded-for", "203.0.113.9, 198.51.100.4")
            .body(())
            .unwrap();
        assert_eq!(
            address_of(&request, Some(&name)),
            Some("198.51.100.4".parse().unwrap())
        );
        assert_eq!(address_of(&request, None), None, "no peer in a unit test");
    }
}
