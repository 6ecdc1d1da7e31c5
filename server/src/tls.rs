//! TLS material: the development CA (`--dev-tls`) and the client
//! certificates the server signs for agents (`kiln cert issue`).
//!
//! rustls with the ring provider only (rcgen's default is ring as well).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::auth::write_secret;

/// A server's TLS settings as the listener needs them.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Client certificates signed by this CA are accepted (mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
    /// Agents must present one.
    pub require_client_cert: bool,
    /// The CA that signed `cert_pem`, when known (`--dev-tls`, `--tls-ca`):
    /// network-booted machines fetch it, pinned by its sha256.
    pub ca_pem: Option<Vec<u8>>,
}

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl ServerTls {
    /// The rustls configuration: ALPN offers h2 *and* http/1.1 (tonic's own
    /// TLS offers only h2, which HTTP/1.1 clients of the action API, e.g.
    /// `curl --http1.1` or Python, are refused with); client certificates
    /// are optional at this level (the agent layer enforces them).
    pub fn rustls_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--tls-cert: {e}"))?;
        anyhow::ensure!(!certs.is_empty(), "--tls-cert: no certificate in the file");
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| anyhow::anyhow!("--tls-key: {e}"))?;
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca) {
                    roots.add(c.map_err(|e| anyhow::anyhow!("--client-ca: {e}"))?)?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| anyhow::anyhow!("--client-ca: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder.with_single_cert(certs, key).map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// TLS connections from `listener`: each handshake runs in its own task (a
/// slow or failing client holds up no one); failures are logged at debug
/// level and dropped. tonic gives a `TlsStream`'s peer certificates to
/// every request as `TlsConnectInfo`.
pub fn incoming(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A CA the server can sign agent certificates with.
#[derive(Clone)]
pub struct SigningCa {
    pub cert_pem: String,
    pub key_pem: String,
}

// Hand-written: the key must not reach a log through `{:?}`.
impl std::fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningCa { .. }")
    }
}

/// Files of the development CA in `DATA_DIR/tls/`.
pub struct DevTls {
    pub ca_path: PathBuf,
    pub ca: SigningCa,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

fn err(what: &str) -> impl Fn(rcgen::Error) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{what}: {e}")
}

/// Loads the development CA from `DATA_DIR/tls/` (creating it at the first
/// start) and issues a fresh server certificate for localhost, 127.0.0.1,
/// ::1 and `extra_hosts` (it is cheap, and follows `--public-url` changes).
pub fn dev_tls(data_dir: &Path, extra_hosts: &[String]) -> anyhow::Result<DevTls> {
    let dir = data_dir.join("tls");
    let (ca_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca = if ca_path.exists() && ca_key_path.exists() {
        SigningCa { cert_pem: std::fs::read_to_string(&ca_path)?, key_pem: std::fs::read_to_string(&ca_key_path)? }
    } else {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err("dev CA"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = dn("kiln development CA");
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(err("dev CA key"))?;
        let cert = params.self_signed(&key).map_err(err("dev CA"))?;
        let ca = SigningCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        write_secret(&ca_key_path, ca.key_pem.as_bytes())?;
        std::fs::write(&ca_path, &ca.cert_pem)?;
        ca
    };
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    names.extend(extra_hosts.iter().filter(|h| !h.is_empty()).cloned());
    names.dedup();
    let mut params = CertificateParams::new(names).map_err(err("server certificate names"))?;
    params.distinguished_name = dn("kiln-server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(err("server key"))?;
    let cert = params.signed_by(&key, &issuer(&ca)?).map_err(err("server certificate"))?;
    let (server_cert_pem, server_key_pem) = (cert.pem(), key.serialize_pem());
    std::fs::write(dir.join("server.pem"), &server_cert_pem)?;
    write_secret(&dir.join("server.key"), server_key_pem.as_bytes())?;
    Ok(DevTls { ca_path, ca, server_cert_pem, server_key_pem })
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn issuer(ca: &SigningCa) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(&ca.key_pem).map_err(err("CA key"))?;
    Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(err("CA certificate"))
}

/// A client certificate for `agent_id` (its CN, and a `urn:kiln:agent:`
/// URI SAN), valid for client authentication only. Returns (cert, key) PEM.
pub fn issue_agent_cert(ca: &SigningCa, agent_id: &str) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err("agent certificate"))?;
    params.distinguished_name = dn(agent_id);
    let uri = format!("urn:kiln:agent:{agent_id}");
    params.subject_alt_names =
        vec![SanType::URI(uri.as_str().try_into().map_err(|e| anyhow::anyhow!("agent id {agent_id:?}: {e}"))?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().map_err(err("agent key"))?;
    let cert = params.signed_by(&key, &issuer(ca)?).map_err(err("agent certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The host of a URL (`https://host:port/...` → `host`), for certificate names.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_ca_is_kept_and_signs_agent_certs_naming_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let first = dev_tls(dir.path(), &["kiln.example".into()]).unwrap();
        let again = dev_tls(dir.path(), &[]).unwrap();
        assert_eq!(first.ca.cert_pem, again.ca.cert_pem, "the CA survives restarts");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls/ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (cert, _key) = issue_agent_cert(&first.ca, "02:00:00:00:00:01").unwrap();
        let der = rustls_pem(&cert);
        assert_eq!(crate::auth::cert_agent_id(&der).as_deref(), Some("02:00:00:00:00:01"));
    }

    fn rustls_pem(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("https://kiln.example:42113/x").as_deref(), Some("kiln.example"));
        assert_eq!(url_host("http://10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(url_host("https://[fd00::1]:42113").as_deref(), Some("fd00::1"));
    }
}
