//! TLS for the mock upstream ([`MockUpstream::start_tls`](super::MockUpstream::start_tls)):
//! the transport in front of the request handling, so a proxy under test talks to the mock
//! the way it talks to a real provider — rustls, ALPN `h2` / `http/1.1`, certificate checks.
//!
//! At start a private CA and a leaf certificate for `127.0.0.1`, `::1` and `localhost` are
//! generated with rcgen (ECDSA P-256, in memory, nothing cached on disk except the CA PEM
//! written to a temp file for clients that take a path, e.g. Iron's `[upstream] ca_file`).
//! Clients trust [`MockTls::ca_pem`]; the leaf is only served.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// ALPN protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The mock's TLS material: the acceptor and the CA clients must trust.
pub(crate) struct MockTls {
    pub(crate) acceptor: TlsAcceptor,
    ca_pem: String,
    /// `ca_pem` on disk, removed when the mock is dropped.
    ca_file: tempfile::NamedTempFile,
}

impl MockTls {
    /// A fresh CA, a leaf for the loopback names signed by it, and a rustls server config
    /// offering h2 and http/1.1.
    pub(crate) fn generate() -> anyhow::Result<MockTls> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "iron-testkit mock CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)
            .context("mock TLS: CA certificate")?;

        let mut leaf_params = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ])?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "iron-testkit mock upstream");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca)
            .context("mock TLS: leaf certificate")?;

        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .context("mock TLS: protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("mock TLS: server certificate")?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();

        let ca_pem = ca.pem();
        let mut ca_file = tempfile::Builder::new()
            .prefix("iron-mock-ca-")
            .suffix(".pem")
            .tempfile()
            .context("mock TLS: CA temp file")?;
        ca_file.write_all(ca_pem.as_bytes())?;
        ca_file.flush()?;
        Ok(MockTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_pem,
            ca_file,
        })
    }

    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub(crate) fn ca_file(&self) -> &Path {
        self.ca_file.path()
    }
}
