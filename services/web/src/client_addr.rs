//! The client's address, as audit records, sessions and the sign-in limit see it.
//! Behind an ingress the TCP peer is the ingress; its `X-Forwarded-For` (or
//! `Forwarded`) names the client — but a header is believed only when the peer is a
//! configured trusted proxy (`MAILBRIDGE_WEB_TRUSTED_PROXIES`), and then the address
//! taken is the right-most one that is not itself a trusted proxy: everything to its
//! left was written by the client and may be forged.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, header},
    middleware::Next,
    response::Response,
};
use mailbridge_core::config::Networks;

use crate::WebState;

/// The environment variable naming the trusted proxies.
pub const TRUSTED_PROXIES_VAR: &str = "MAILBRIDGE_WEB_TRUSTED_PROXIES";

/// The client's address of a request, as resolved by [`resolve`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// A request's client address: the one [`resolve`] stored, else the TCP peer's.
pub fn of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions.get::<ClientAddr>().map(|c| c.0).or_else(|| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_canonical())
    })
}

/// The trusted proxies from the environment (comma-separated addresses or CIDR
/// networks; none when unset).
pub fn trusted_proxies_from_env() -> Result<Networks, String> {
    match std::env::var(TRUSTED_PROXIES_VAR) {
        Ok(value) => value
            .parse::<Networks>()
            .map_err(|e| format!("{TRUSTED_PROXIES_VAR}: {e}")),
        Err(_) => Ok(Networks::default()),
    }
}

/// The middleware that stores every request's [`ClientAddr`].
pub async fn resolve(State(state): State<WebState>, mut request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let addr = client_of(peer.ip(), request.headers(), &state.trusted_proxies);
        request.extensions_mut().insert(ClientAddr(addr));
    }
    next.run(request).await
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy.
pub fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &Networks) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(&peer) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    // From the right: the first hop that is not a trusted proxy is the client. An
    // entry that is no address (`unknown`, an obfuscated name) ends the walk at the
    // last trusted hop.
    let mut client = peer;
    for hop in chain.iter().rev() {
        match hop {
            Some(addr) if trusted.contains(addr) => client = *addr,
            Some(addr) => return *addr,
            None => return client,
        }
    }
    client
}

/// The addresses a proxy chain names, left (the first client) to right (the last
/// proxy): `X-Forwarded-For`, or `Forwarded`'s `for=` when there is no
/// `X-Forwarded-For`. `None` for an entry that is not an address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let xff = values(header::HeaderName::from_static("x-forwarded-for"));
    if !xff.is_empty() {
        return xff.iter().map(|v| parse_node(v)).collect();
    }
    values(header::FORWARDED)
        .iter()
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v))
        })
        .collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, optionally quoted.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
        .map(|ip: IpAddr| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let forged = headers(&[("x-forwarded-for", "198.51.100.7")]);
        let none = Networks::default();
        assert_eq!(
            client_of(ip("203.0.113.5"), &forged, &none),
            ip("203.0.113.5")
        );
        let trusted: Networks = "10.0.0.0/24".parse().unwrap();
        assert_eq!(
            client_of(ip("203.0.113.5"), &forged, &trusted),
            ip("203.0.113.5"),
            "an untrusted peer's header is ignored"
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted: Networks = "10.0.0.0/24, 192.0.2.9".parse().unwrap();
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 192.0.2.9")]);
        assert_eq!(
            client_of(ip("10.0.0.2"), &chain, &trusted),
            ip("198.51.100.7")
        );
        // Split over two header lines, with ports and brackets.
        let split = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "[2001:db8::7]:4711"),
        ]);
        assert_eq!(
            client_of(ip("10.0.0.2"), &split, &trusted),
            ip("2001:db8::7")
        );
        // Only trusted hops: the left-most of them.
        let inner = headers(&[("x-forwarded-for", "10.0.0.7, 192.0.2.9")]);
        assert_eq!(client_of(ip("10.0.0.2"), &inner, &trusted), ip("10.0.0.7"));
        // No header: the proxy itself.
        assert_eq!(
            client_of(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        // Garbage stops the walk at the last trusted hop.
        let junk = headers(&[("x-forwarded-for", "1.1.1.1, unknown, 192.0.2.9")]);
        assert_eq!(client_of(ip("10.0.0.2"), &junk, &trusted), ip("192.0.2.9"));
    }

    #[test]
    fn forwarded_is_read_without_x_forwarded_for() {
        let trusted: Networks = "10.0.0.0/24".parse().unwrap();
        let fwd = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8::9]:80\";proto=https",
        )]);
        assert_eq!(client_of(ip("10.0.0.2"), &fwd, &trusted), ip("2001:db8::9"));
        let both = headers(&[
            ("forwarded", "for=1.1.1.1"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(
            client_of(ip("10.0.0.2"), &both, &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let trusted: Networks = "10.0.0.0/24".parse().unwrap();
        let chain = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_of(ip("::ffff:10.0.0.2"), &chain, &trusted),
            ip("198.51.100.7")
        );
    }
}
