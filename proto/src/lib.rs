//! Generated code for kiln's gRPC protocol. The protocol itself, with its
//! rules, is documented in `proto/kiln/v1/*.proto`.

pub mod v1 {
    tonic::include_proto!("kiln.v1");
}

/// Request metadata key that carries the agent's id on every agent call.
pub const AGENT_ID_METADATA: &str = "kiln-agent-id";

/// Response metadata of `Plan`, one value per warning (UTF-8 text), as
/// `ApplyResponse.warnings` holds them: the response is the workflow itself.
pub const PLAN_WARNING_METADATA: &str = "kiln-warning-bin";

/// Converts between `SystemTime` and the protobuf timestamp.
pub mod time {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn to_proto(t: SystemTime) -> prost_types::Timestamp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
    }

    pub fn from_proto(t: &prost_types::Timestamp) -> SystemTime {
        UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
    }

    /// Milliseconds since the epoch, the unit the store keeps.
    pub fn millis_to_proto(ms: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
    }

    pub fn proto_to_millis(t: &prost_types::Timestamp) -> i64 {
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    }
}

/// Files that hold secrets (tokens, keys), written by every kiln program the
/// same way: here, because this is the one crate all of them link.
pub mod secret_file {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;

    /// Writes `bytes` to `path` readable by its owner only: created with mode
    /// 0600 (never readable by others, not even briefly), synced, and renamed
    /// into place, so a reader sees the old file or the whole new one. The
    /// parent directory is created if needed. Errors name the path.
    pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(named)?;
        }
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(".tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(named)?;
        f.write_all(bytes).map_err(named)?;
        f.sync_all().map_err(named)?;
        std::fs::rename(&tmp, path).map_err(named)
    }

    #[cfg(test)]
    mod tests {
        use std::os::unix::fs::PermissionsExt;

        #[test]
        fn secrets_are_private_and_replaced_whole() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sub/token");
            super::write(&path, b"one").unwrap();
            super::write(&path, b"two").unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"two");
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1, "no temporary file left");
            let err = super::write(&path.join("x"), b"").unwrap_err();
            assert!(err.to_string().contains("sub/token"), "the error names the path: {err}");
        }
    }
}

/// Request metadata key of credentials: `authorization: Bearer TOKEN` (the
/// agent's token on agent calls, the operator's on admin calls).
pub const AUTHORIZATION_METADATA: &str = "authorization";

/// How clients (agent, CLI, tests) reach the server: one place that turns a
/// URL and TLS files into a tonic endpoint, so all of them agree.
pub mod connect {
    use std::time::Duration;

    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    /// TLS material of a client, as PEM.
    #[derive(Clone, Default)]
    pub struct ClientTls {
        /// CA to trust for the server's certificate. Without it, an
        /// `https://` URL is refused (no system roots: kiln servers use
        /// their own CA).
        pub ca_pem: Option<Vec<u8>>,
        /// Client certificate and key, for mutual TLS.
        pub identity: Option<(Vec<u8>, Vec<u8>)>,
    }

    // Hand-written so a key never reaches a log through `{:?}`.
    impl std::fmt::Debug for ClientTls {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ClientTls")
                .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
                .field("identity", &self.identity.as_ref().map(|_| "<cert and key>"))
                .finish()
        }
    }

    /// An endpoint for `url` (`https://` needs `tls.ca_pem`; `http://` is
    /// plaintext and must not carry a client identity).
    pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, String> {
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("invalid server URL {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            let ca = tls.ca_pem.as_ref().ok_or_else(|| {
                format!("server URL {url:?} is https: give the CA that signed its certificate (--ca / ca_file)")
            })?;
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(config).map_err(|e| format!("TLS configuration: {e}"))?;
        } else if url.starts_with("http://") {
            if tls.identity.is_some() {
                return Err(format!("a client certificate needs an https:// server URL, not {url:?}"));
            }
        } else {
            return Err(format!("server URL {url:?} must start with https:// (or http:// for a --plaintext server)"));
        }
        Ok(endpoint)
    }
}
