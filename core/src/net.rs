//! Which network addresses count as *internal* (loopback, private, link-local, …).
//!
//! One list shared by control (checks a provider base URL when it is created,
//! `control/src/validate.rs`) and the proxy (checks the resolved address again at connect
//! time, after DNS, in the *upstream* stage: `proxy/src/guard.rs`). Without
//! `security.allow_private_upstreams`, Iron never sends a provider request to such an
//! address, so a provider URL cannot be used to reach the proxy's own network (SSRF),
//! cloud metadata endpoints (169.254.169.254) or, through DNS rebinding, either of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True for IPv4 addresses that are not globally routable unicast: `0.0.0.0/8`, loopback
/// `127/8`, RFC 1918 `10/8` `172.16/12` `192.168/16`, link-local `169.254/16` (cloud
/// metadata), CGNAT `100.64/10`, IETF protocol assignments `192.0.0/24`, documentation
/// ranges, benchmarking `198.18/15`, multicast `224/4`, reserved `240/4` and broadcast.
pub fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared address space (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240 // 240.0.0.0/4 reserved, 255.255.255.255 broadcast
}

/// True for IPv6 addresses that are not globally routable unicast: loopback `::1`,
/// unspecified `::`, unique local `fc00::/7`, link-local `fe80::/10`, site-local `fec0::/10`,
/// multicast `ff00::/8`, documentation `2001:db8::/32`, and IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) forms of internal IPv4
/// addresses.
pub fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let s = ip.segments();
    let embedded_v4 =
        || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // ::a.b.c.d (deprecated IPv4-compatible; `::` and `::1` are handled below).
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_internal_v4(embedded_v4());
    }
    // 64:ff9b::/96, the NAT64 well-known prefix.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_internal_v4(embedded_v4());
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
}

/// True when `ip` is refused as an upstream address without `allow_private_upstreams`.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

/// True for host *names* that conventionally resolve inside the local network:
/// `localhost` and `*.localhost`, mDNS `*.local`, `*.internal` (cloud metadata and private
/// zones, e.g. `metadata.google.internal`) and single-label names (search-domain lookups).
/// IP literals are not names: check them with [`is_internal_ip`]. This is a cheap early
/// check at configuration time; the connect-time check on the resolved address is the one
/// that cannot be bypassed.
pub fn is_internal_hostname(host: &str) -> bool {
    let d = host.trim_end_matches('.').to_ascii_lowercase();
    d == "localhost"
        || d.ends_with(".localhost")
        || d.ends_with(".local")
        || d.ends_with(".internal")
        || !d.contains('.')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn internal(s: &str) -> bool {
        is_internal_ip(s.parse().unwrap())
    }

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "192.0.0.170",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(internal(ip), "{ip} must be internal");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "169.253.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!internal(ip), "{ip} must be public");
        }
    }

    #[test]
    fn internal_names() {
        for h in [
            "localhost",
            "LOCALHOST.",
            "api.localhost",
            "printer.local",
            "metadata.google.internal",
            "mock",
        ] {
            assert!(is_internal_hostname(h), "{h}");
        }
        for h in ["api.openai.com", "api.anthropic.com.", "example.org"] {
            assert!(!is_internal_hostname(h), "{h}");
        }
    }
}
