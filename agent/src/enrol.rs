//! Enrolment: a network-booted agent has no token of its own, only the
//! one-time enrolment credential its boot script carried (`kiln.enrol=`,
//! written by the hook to `enrolment_file`). Its first call exchanges that
//! for the machine's agent token, and a client certificate when the server
//! signs them ([`kiln_proto::v1::enrolment_service_client`]).
//!
//! The credentials obtained are kept in memory; when the configuration
//! names a `token_file` they are also written there (mode 0600; the
//! certificate and key beside it, `TOKEN_FILE.crt` and `TOKEN_FILE.key`), so
//! that an agent restarted by the hook's supervisor goes on without a new
//! enrolment, which its used credential could not give it. In the hook
//! image those files are in the in-memory root, never on a disk.

use std::path::{Path, PathBuf};

use kiln_proto::connect::ClientTls;
use kiln_proto::v1::EnrolRequest;
use kiln_proto::v1::enrolment_service_client::EnrolmentServiceClient;

use crate::client::{backoff, is_transient};
use crate::config::{AgentConfig, Secret, TokenSource};

/// A client certificate and its key (PEM).
pub type Identity = (Vec<u8>, Vec<u8>);

/// Where a certificate obtained by enrolment is kept beside `token_file`.
pub fn saved_identity_paths(token_file: &Path) -> (PathBuf, PathBuf) {
    let base = token_file.as_os_str().to_owned();
    let with = |ext: &str| {
        let mut p = base.clone();
        p.push(ext);
        PathBuf::from(p)
    };
    (with(".crt"), with(".key"))
}

/// The agent's token and, when enrolment brought one, its client identity:
/// from the configuration when it has a token (a lab's `kiln.token=`, or
/// an agent restarted after its enrolment), otherwise by enrolling with
/// the credential in `enrolment_file`.
pub async fn credentials(config: &AgentConfig, agent_id: &str) -> anyhow::Result<(TokenSource, Option<Identity>)> {
    let Some(enrolment_file) = &config.enrolment_file else {
        return Ok((config.token_source()?, None));
    };
    if let Ok(source) = config.token_source()
        && source.token().is_ok()
    {
        let saved = config
            .token_file
            .as_deref()
            .map(saved_identity_paths)
            .and_then(|(crt, key)| Some((std::fs::read(crt).ok()?, std::fs::read(key).ok()?)));
        return Ok((source, saved));
    }
    let credential = std::fs::read_to_string(enrolment_file)
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "field enrolment_file: {} holds no enrolment credential, and the agent has no token \
                 (field token_file); network-boot the machine again for a new credential",
                enrolment_file.display()
            )
        })?;
    let mac = config.boot_mac.clone().unwrap_or_default();
    let tls = ClientTls { identity: None, ..config.client_tls_ca()? };
    let endpoint =
        kiln_proto::connect::endpoint(&config.server, &tls).map_err(|e| anyhow::anyhow!("field server: {e}"))?;
    let mut client = EnrolmentServiceClient::new(endpoint.connect_lazy());
    let request = EnrolRequest { credential, agent_id: agent_id.to_string(), mac: mac.clone() };
    let mut attempt = 0;
    let enrolled = loop {
        match client.enrol(request.clone()).await {
            Ok(r) => break r.into_inner(),
            Err(s) if is_transient(&s) => {
                tracing::warn!(code = ?s.code(), error = %s.message(), "enrolment failed, retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(s) => anyhow::bail!("the server refused this machine's enrolment ({:?}): {}", s.code(), s.message()),
        }
    };
    tracing::info!(agent_id, hardware = %enrolled.hardware_id, mac = %mac,
        client_certificate = !enrolled.client_cert_pem.is_empty(), "enrolled");
    // Used up: nothing would accept it again.
    let _ = std::fs::remove_file(enrolment_file);
    let identity = (!enrolled.client_cert_pem.is_empty())
        .then(|| (enrolled.client_cert_pem.into_bytes(), enrolled.client_key_pem.into_bytes()));
    let token = match &config.token_file {
        Some(path) => {
            kiln_proto::secret_file::write(path, format!("{}\n", enrolled.token).as_bytes())
                .map_err(|e| anyhow::anyhow!("field token_file: {}: {e}", path.display()))?;
            if let Some((cert, key)) = &identity {
                let (crt_path, key_path) = saved_identity_paths(path);
                kiln_proto::secret_file::write(&key_path, key)
                    .and_then(|()| std::fs::write(&crt_path, cert))
                    .map_err(|e| anyhow::anyhow!("saving the client certificate beside {}: {e}", path.display()))?;
            }
            TokenSource::File(path.clone())
        }
        None => TokenSource::Inline(Secret(enrolled.token)),
    };
    Ok((token, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_saved_beside_the_token() {
        let (crt, key) = saved_identity_paths(Path::new("/etc/kiln/token"));
        assert_eq!((crt.to_str(), key.to_str()), (Some("/etc/kiln/token.crt"), Some("/etc/kiln/token.key")));
    }

    #[tokio::test]
    async fn a_token_already_there_needs_no_enrolment_and_no_token_nor_credential_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        let enrol = dir.path().join("enrol");
        std::fs::write(&token, "kiln_lab\n").unwrap();
        let config = AgentConfig::parse(&format!(
            "server: http://127.0.0.1:1\ntoken_file: {}\nenrolment_file: {}\n",
            token.display(),
            enrol.display()
        ))
        .unwrap();
        // The lab's token (or a restarted agent's): no call to the server
        // (there is none at that address).
        let (source, identity) = credentials(&config, "a").await.unwrap();
        assert_eq!(source.token().unwrap(), "kiln_lab");
        assert!(identity.is_none());
        std::fs::write(&token, "").unwrap();
        let err = credentials(&config, "a").await.unwrap_err().to_string();
        assert!(err.starts_with("field enrolment_file"), "{err}");
    }
}
