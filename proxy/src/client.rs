//! The HTTP client side of the proxy: provider endpoints, async DNS with a cache, and the
//! pingora connector (pooled connections, h1/h2, rustls).
//!
//! Used by the *upstream* stage (7). `HttpPeer::new` with a hostname resolves with blocking
//! DNS and panics on failure, so peers are always built from a [`SocketAddr`] that
//! [`Resolver`] looked up asynchronously and cached. [`Net::upstream_addr`] is the one place
//! that turns a provider endpoint into the address to connect to: it resolves, then applies
//! the SSRF guard ([`crate::guard::pick_upstream_addr`]) to the resolved addresses, so the
//! checked address is exactly the one connected to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use pingora_core::connectors::ConnectorOptions;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;

/// How long a DNS answer is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

/// Scheme, host, port and path prefix of a provider base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without trailing slash and without a trailing `/v1` (agent paths carry it).
    pub prefix: String,
    /// Value for the `Host` header.
    pub authority: String,
}

impl Endpoint {
    pub fn parse(base_url: &str) -> Result<Self, String> {
        let uri: http::Uri = base_url
            .parse()
            .map_err(|_| format!("`{base_url}` is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{base_url}`: the scheme must be http or https")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{base_url}` has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let mut prefix = uri.path().trim_end_matches('/').to_owned();
        if prefix.ends_with("/v1") {
            prefix.truncate(prefix.len() - 3);
        }
        let default_port = (tls && port == 443) || (!tls && port == 80);
        let authority = match (host.contains(':'), default_port) {
            (true, true) => format!("[{host}]"),
            (true, false) => format!("[{host}]:{port}"),
            (false, true) => host.clone(),
            (false, false) => format!("{host}:{port}"),
        };
        Ok(Endpoint {
            tls,
            host,
            port,
            prefix,
            authority,
        })
    }

    /// The upstream path for an agent path like `/v1/chat/completions?x=1`.
    pub fn path_for(&self, agent_path: &str) -> String {
        format!("{}{}", self.prefix, agent_path)
    }
}

/// Resolved addresses of one host.
type Addrs = Arc<[SocketAddr]>;

/// Async DNS resolution with a small TTL cache.
#[derive(Default)]
pub struct Resolver {
    cache: RwLock<HashMap<(String, u16), (Addrs, Instant)>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// The first address of `host`.
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<SocketAddr> {
        self.resolve_all(host, port)
            .await?
            .first()
            .copied()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
    }

    /// Every address of `host` (an IP literal is its own answer), cached for [`DNS_TTL`].
    pub async fn resolve_all(&self, host: &str, port: u16) -> std::io::Result<Addrs> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(Arc::from([SocketAddr::new(ip, port)]));
        }
        let key = (host.to_owned(), port);
        if let Some((addrs, at)) = self.cache.read().ok().and_then(|c| c.get(&key).cloned())
            && at.elapsed() < DNS_TTL
        {
            return Ok(addrs);
        }
        let addrs: Addrs = tokio::net::lookup_host((host, port)).await?.collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ));
        }
        if let Ok(mut c) = self.cache.write() {
            c.insert(key, (addrs.clone(), Instant::now()));
        }
        Ok(addrs)
    }
}

/// Why no address could be used for a provider.
#[derive(Debug)]
pub enum AddrError {
    /// DNS failed or returned nothing.
    Resolve(std::io::Error),
    /// The SSRF guard refused every address (or plain http).
    Refused(crate::guard::Refusal),
}

/// Timeouts applied to one upstream exchange.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

/// Builds the pingora peer for `endpoint` at `addr`.
pub fn peer(endpoint: &Endpoint, addr: SocketAddr, t: Timeouts) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, endpoint.tls, endpoint.host.clone());
    peer.options.connection_timeout = Some(t.connect);
    peer.options.total_connection_timeout = Some(t.connect);
    peer.options.read_timeout = Some(t.first_byte);
    peer.options.write_timeout = Some(t.first_byte);
    peer.options.alpn = if endpoint.tls { ALPN::H2H1 } else { ALPN::H1 };
    peer
}

/// Idle upstream connections kept (pingora's default when no options are given).
const UPSTREAM_POOL_SIZE: usize = 128;

/// Checks that `file` is a PEM file of one or more certificates that rustls accepts as trust
/// anchors (the same loader pingora uses); returns how many. The error names the file only.
pub fn check_ca_file(file: &Path) -> Result<usize, String> {
    if file.to_str().is_none() {
        return Err(format!("{}: the path is not UTF-8", file.display()));
    }
    let mut store = pingora_core::tls::RootCertStore::empty();
    pingora_core::tls::load_ca_file_into_store(file, &mut store)
        .map_err(|e| format!("{}: {}", file.display(), e))?;
    if store.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            file.display()
        ));
    }
    Ok(store.len())
}

/// Everything needed to talk to providers, shared by all requests.
pub struct Net {
    pub connector: pingora_core::connectors::http::Connector,
    pub resolver: Resolver,
    pub timeouts: Timeouts,
    pub pool_idle: Duration,
    /// `security.allow_private_upstreams`.
    pub allow_private: bool,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("timeouts", &self.timeouts)
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// Trusting the platform's CAs for https upstreams.
    pub fn new(timeouts: Timeouts, pool_idle: Duration, allow_private: bool) -> Self {
        Net {
            connector: pingora_core::connectors::http::Connector::new(None),
            resolver: Resolver::default(),
            timeouts,
            pool_idle,
            allow_private,
        }
    }

    /// Like [`Net::new`], but with `ca_file` (`upstream.ca_file`) the connector trusts only
    /// the CAs in that PEM file instead of the platform's (pingora's rustls connector replaces
    /// its root store with the file). The file is checked first, because pingora panics on a
    /// file it cannot load.
    pub fn with_ca_file(
        timeouts: Timeouts,
        pool_idle: Duration,
        allow_private: bool,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        let Some(file) = ca_file else {
            return Ok(Self::new(timeouts, pool_idle, allow_private));
        };
        check_ca_file(file)?;
        let path = file
            .to_str()
            .ok_or_else(|| format!("{}: the path is not UTF-8", file.display()))?;
        let mut options = ConnectorOptions::new(UPSTREAM_POOL_SIZE);
        options.ca_file = Some(path.to_owned());
        Ok(Net {
            connector: pingora_core::connectors::http::Connector::new(Some(options)),
            resolver: Resolver::default(),
            timeouts,
            pool_idle,
            allow_private,
        })
    }

    /// The address to connect to for `endpoint`: resolved now (cached briefly), then checked
    /// by the SSRF guard. A refusal is logged here (provider host, no secret).
    pub async fn upstream_addr(&self, endpoint: &Endpoint) -> Result<SocketAddr, AddrError> {
        if !endpoint.tls && !self.allow_private {
            // No lookup needed to refuse plain http.
            tracing::warn!(
                target: "iron::security",
                host = endpoint.host.as_str(),
                "refused upstream: plain http (security.allow_private_upstreams is off)"
            );
            return Err(AddrError::Refused(crate::guard::Refusal::PlainHttp));
        }
        let addrs = self
            .resolver
            .resolve_all(&endpoint.host, endpoint.port)
            .await
            .map_err(AddrError::Resolve)?;
        crate::guard::pick_upstream_addr(endpoint.tls, &addrs, self.allow_private).map_err(|r| {
            tracing::warn!(
                target: "iron::security",
                host = endpoint.host.as_str(),
                addresses = addrs.len(),
                "refused upstream: every resolved address is internal \
                 (security.allow_private_upstreams is off)"
            );
            AddrError::Refused(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let e = Endpoint::parse("https://api.openai.com/v1/").unwrap();
        assert!(e.tls);
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("api.openai.com", 443, "")
        );
        assert_eq!(e.authority, "api.openai.com");
        assert_eq!(e.path_for("/v1/models"), "/v1/models");
        let e = Endpoint::parse("http://127.0.0.1:8081/proxy").unwrap();
        assert_eq!(
            (e.port, e.prefix.as_str(), e.authority.as_str()),
            (8081, "/proxy", "127.0.0.1:8081")
        );
        assert_eq!(e.path_for("/v1/messages"), "/proxy/v1/messages");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }

    #[tokio::test]
    async fn resolves_literals_and_localhost() {
        let r = Resolver::default();
        assert_eq!(r.resolve("127.0.0.1", 80).await.unwrap().port(), 80);
        assert!(r.resolve("localhost", 81).await.unwrap().ip().is_loopback());
    }
}

/// Async DNS (issue 6): a failed lookup is an error, never a panic; answers are cached for
/// [`DNS_TTL`].
#[cfg(test)]
mod dns_tests {
    use super::*;

    #[tokio::test]
    async fn unresolvable_host_is_an_error_not_a_panic() {
        let r = Resolver::default();
        assert!(r.resolve_all("iron-test-host.invalid", 443).await.is_err());
        assert!(r.resolve("iron-test-host.invalid", 443).await.is_err());
        // (The provider path turns this into 502 `upstream_error`: tests/reliability.rs
        // `unresolvable_provider_host_is_a_502`.) Nothing failed is cached.
        assert!(r.cache.read().unwrap().is_empty());
    }

    #[tokio::test]
    async fn cached_answer_is_used_within_the_ttl_only() {
        let r = Resolver::default();
        let host = "iron-cached-host.invalid";
        let cached: Addrs = Arc::from([SocketAddr::from(([203, 0, 113, 7], 443))]);
        r.cache
            .write()
            .unwrap()
            .insert((host.to_owned(), 443), (cached.clone(), Instant::now()));
        // `.invalid` never resolves: an answer can only come from the cache.
        assert_eq!(r.resolve_all(host, 443).await.unwrap(), cached);
        assert_eq!(r.resolve(host, 443).await.unwrap(), cached[0]);
        // Another port is another entry.
        assert!(r.resolve_all(host, 444).await.is_err());
        // Past the TTL the entry is not used: a fresh lookup happens (and fails here).
        let stale = Instant::now()
            .checked_sub(DNS_TTL + Duration::from_secs(1))
            .unwrap();
        r.cache
            .write()
            .unwrap()
            .insert((host.to_owned(), 443), (cached, stale));
        assert!(r.resolve_all(host, 443).await.is_err());
    }
}
