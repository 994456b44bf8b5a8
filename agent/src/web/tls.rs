//! The TLS side of the agent's endpoint: a rustls server whose certificate
//! and key are read again when their files change (checked at each
//! handshake: two stat calls), client certificates verified against the
//! configured CA, and the probe's TLS client.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::{ClientAuth, Pem, TlsSettings};

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider(s: &TlsSettings) -> rustls::crypto::CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    if !s.cipher_suites.is_empty() {
        // The list names TLS 1.2 suites; TLS 1.3's are not configurable (as in Go).
        p.cipher_suites.retain(|c| c.version() == &rustls::version::TLS13 || s.cipher_suites.contains(c));
        let order = |c: &rustls::SupportedCipherSuite| s.cipher_suites.iter().position(|x| x == c).unwrap_or(0);
        p.cipher_suites.sort_by_key(order);
    }
    if !s.curves.is_empty() {
        p.kx_groups = s.curves.clone();
    }
    p
}

fn certs(pem: &Pem, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let parsed: Result<Vec<_>, _> = match pem {
        Pem::File(p) => CertificateDer::pem_file_iter(p)
            .map_err(|e| format!("tls_server_config.{key}_file: {}: {e}", p.display()))?
            .collect(),
        Pem::Inline(text) => CertificateDer::pem_slice_iter(text.as_bytes()).collect(),
    };
    let certs = parsed.map_err(|e| format!("tls_server_config.{key}{}: {e}", where_(pem)))?;
    if certs.is_empty() {
        return Err(format!("tls_server_config.{key}{}: no PEM certificate in it", where_(pem)));
    }
    Ok(certs)
}

fn where_(pem: &Pem) -> String {
    match pem {
        Pem::File(p) => format!("_file: {}", p.display()),
        Pem::Inline(_) => String::new(),
    }
}

fn certified_key(s: &TlsSettings, provider: &rustls::crypto::CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = certs(&s.cert, "cert")?;
    let key = match &s.key {
        Pem::File(p) => PrivateKeyDer::from_pem_file(p),
        Pem::Inline(text) => PrivateKeyDer::from_pem_slice(text.as_bytes()),
    }
    .map_err(|e| format!("tls_server_config.key{}: {e}", where_(&s.key)))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("tls_server_config.key{}: {e}", where_(&s.key)))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| format!("tls_server_config.key{}: does not match the certificate: {e}", where_(&s.key)))?;
    Ok(ck)
}

/// The server certificate, read again when the cert or key file changes.
#[derive(Debug)]
struct Reloading {
    settings: TlsSettings,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Mutex<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn modified(s: &TlsSettings) -> Option<SystemTime> {
    let files: Vec<&PathBuf> = [&s.cert, &s.key]
        .into_iter()
        .filter_map(|p| match p {
            Pem::File(f) => Some(f),
            Pem::Inline(_) => None,
        })
        .collect();
    files.iter().filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).max()
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap();
        let now = modified(&self.settings);
        if now != current.0 {
            match certified_key(&self.settings, &self.provider) {
                Ok(ck) => {
                    tracing::info!("web config: server certificate read again");
                    *current = (now, Arc::new(ck));
                }
                // A half-written pair (cert renewed, key not yet): keep the
                // old one and try again at the next handshake.
                Err(e) => {
                    tracing::warn!(error = %e, "web config: new certificate not usable yet; serving the previous one")
                }
            }
        }
        Some(current.1.clone())
    }
}

/// The rustls configuration for `s`; Err names the key and file.
pub fn server_config(s: &TlsSettings) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(provider(s));
    let stamp = modified(s);
    let ck = certified_key(s, &provider)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&s.versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match (s.client_auth, &s.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca, "client_ca")? {
                roots.add(c).map_err(|e| format!("tls_server_config.client_ca{}: {e}", where_(ca)))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let v = if auth == ClientAuth::VerifyIfGiven { v.allow_unauthenticated() } else { v };
            builder.with_client_cert_verifier(v.build().map_err(|e| format!("tls_server_config.client_ca: {e}"))?)
        }
    };
    let resolver = Reloading { settings: s.clone(), provider, current: Mutex::new((stamp, Arc::new(ck))) };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = s.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` over TLS on `listener` until `shutdown`: one task per
/// connection, so a slow handshake holds up nobody else.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: rustls::ServerConfig,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let (acceptor, app, stop) = (acceptor.clone(), app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

/// Accepts any server certificate: the probe checks the agent it runs
/// next to, on loopback, for readiness only, and sends no secret.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The probe's client for an agent serving `s`: it presents the agent's own
/// certificate when client certificates are required (which works when the
/// client CA issued it, the usual single-CA setup).
pub fn probe_client(s: &TlsSettings) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider.clone())));
    if s.client_auth == ClientAuth::None {
        return Ok(builder.with_no_client_auth());
    }
    let chain = certs(&s.cert, "cert")?;
    let key = match &s.key {
        Pem::File(p) => PrivateKeyDer::from_pem_file(p),
        Pem::Inline(text) => PrivateKeyDer::from_pem_slice(text.as_bytes()),
    }
    .map_err(|e| format!("tls_server_config.key: {e}"))?;
    builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())
}
