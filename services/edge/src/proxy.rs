//! PROXY protocol (HAProxy's v1 text and v2 binary forms), so that the device's real
//! address survives a cloud load balancer. Parsing is sans-IO (`parse` sees bytes,
//! returns what it needs); `read_header` does the I/O. Only peers listed as trusted
//! proxies are asked for a header: anyone else could claim any address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header is 107 bytes.
const V1_MAX: usize = 107;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// The outcome of parsing the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header of `len` bytes; `source` is `None` for LOCAL/UNKNOWN
    /// (the proxy's own health checks): the connection's own address stands.
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    NeedMore,
}

pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < V2_SIGNATURE.len() {
        let could_be_v2 = V2_SIGNATURE.starts_with(buf);
        let could_be_v1 = b"PROXY ".starts_with(&buf[..buf.len().min(6)]);
        return if could_be_v2 || could_be_v1 {
            Ok(Parsed::NeedMore)
        } else {
            Err(ProxyError::NotProxy)
        };
    }
    if buf.starts_with(V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else {
        Err(ProxyError::NotProxy)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(end) = buf.windows(2).take(V1_MAX).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed("v1 line too long"))
        } else {
            Ok(Parsed::NeedMore)
        };
    };
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed("v1 not ASCII"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let source = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            src,
            _dst,
            sport,
            _dport,
        ] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 source address"))?;
            if (*family == "TCP4") != ip.is_ipv4() {
                return Err(ProxyError::Malformed("v1 address family"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 source port"))?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyError::Malformed("v1 fields")),
    };
    Ok(Parsed::Header {
        len: end + 2,
        source,
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 16 {
        return Ok(Parsed::NeedMore);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if buf.len() < len {
        return Ok(Parsed::NeedMore);
    }
    let body = &buf[16..len];
    let source = match (version_command & 0x0f, buf[13]) {
        (0x0, _) => None, // LOCAL
        (0x1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (0x1, 0x21) if body.len() >= 36 => {
            let octets: [u8; 16] = body[..16].try_into().expect("length checked");
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        (0x1, 0x00) => None, // UNSPEC
        (0x1, _) => return Err(ProxyError::Malformed("v2 address family")),
        _ => return Err(ProxyError::Malformed("v2 command")),
    };
    Ok(Parsed::Header { len, source })
}

/// Reads exactly one PROXY header from `stream`, never a byte past it (the SMTP or
/// TLS that follows belongs to the session).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        // A v2 header announces its length after 16 bytes; v1 ends at CRLF.
        let want = match parse(&buf)? {
            Parsed::Header { source, .. } => return Ok(source),
            Parsed::NeedMore if buf.starts_with(V2_SIGNATURE) && buf.len() >= 16 => {
                16 + u16::from_be_bytes([buf[14], buf[15]]) as usize - buf.len()
            }
            Parsed::NeedMore => 1,
        };
        let start = buf.len();
        buf.resize(start + want, 0);
        stream
            .read_exact(&mut buf[start..])
            .await
            .map_err(|_| ProxyError::Malformed("connection closed inside the header"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers() {
        let header = b"PROXY TCP4 192.0.2.10 203.0.113.5 51234 587\r\nEHLO x\r\n";
        assert_eq!(
            parse(header).unwrap(),
            Parsed::Header {
                len: 45,
                source: Some("192.0.2.10:51234".parse().unwrap())
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 25\r\n";
        assert!(
            matches!(parse(v6).unwrap(), Parsed::Header { source: Some(a), .. } if a.ip().is_ipv6())
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
        assert_eq!(parse(b"PROXY TCP4 192.0.2.10").unwrap(), Parsed::NeedMore);
        assert!(parse(b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 999.0.2.10 203.0.113.5 1 2\r\n").is_err());
        assert!(parse(&[b'P'; 200]).is_err());
        assert_eq!(parse(b"EHLO printer\r\n"), Err(ProxyError::NotProxy));
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v2_headers() {
        let body = [192, 0, 2, 10, 203, 0, 113, 5, 0xC8, 0x22, 0x02, 0x4B];
        let header = v2(1, 0x11, &body);
        assert_eq!(
            parse(&header).unwrap(),
            Parsed::Header {
                len: 28,
                source: Some("192.0.2.10:51234".parse().unwrap())
            }
        );
        assert_eq!(parse(&header[..20]).unwrap(), Parsed::NeedMore);
        assert_eq!(
            parse(&v2(0, 0, &[])).unwrap(),
            Parsed::Header {
                len: 16,
                source: None
            }
        );
        assert!(parse(&v2(1, 0x11, &body[..4])).is_err());
        assert!(parse(&v2(7, 0x11, &body)).is_err());
        let mut with_tlvs = body.to_vec();
        with_tlvs.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        assert!(matches!(
            parse(&v2(1, 0x11, &with_tlvs)).unwrap(),
            Parsed::Header { len: 32, .. }
        ));
    }

    #[tokio::test]
    async fn read_header_stops_at_the_header() {
        let mut input = v2(
            1,
            0x11,
            &[192, 0, 2, 10, 203, 0, 113, 5, 0xC8, 0x22, 0x02, 0x4B],
        );
        input.extend_from_slice(b"EHLO x\r\n");
        let mut stream = &input[..];
        let source = read_header(&mut stream).await.unwrap();
        assert_eq!(source, Some("192.0.2.10:51234".parse().unwrap()));
        assert_eq!(stream, b"EHLO x\r\n");
        let mut v1 = &b"PROXY TCP4 192.0.2.10 203.0.113.5 51234 587\r\nQUIT\r\n"[..];
        assert!(read_header(&mut v1).await.unwrap().is_some());
        assert_eq!(v1, b"QUIT\r\n");
    }
}
