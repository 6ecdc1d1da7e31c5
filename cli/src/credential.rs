//! The operator credential, read once and sent with every call.

use anyhow::{Context, bail};

/// Adds the operator credential to every call.
#[derive(Clone)]
pub struct OperatorToken(tonic::metadata::AsciiMetadataValue);

impl tonic::service::Interceptor for OperatorToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(kiln_proto::AUTHORIZATION_METADATA, self.0.clone());
        Ok(req)
    }
}

/// The operator credential: `--token-file`/`KILN_TOKEN_FILE`, else `KILN_TOKEN`.
pub fn operator_token(file: Option<&std::path::Path>) -> anyhow::Result<OperatorToken> {
    let token = match (file, std::env::var("KILN_TOKEN")) {
        (Some(f), _) => {
            std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?.trim().to_string()
        }
        (None, Ok(t)) => t.trim().to_string(),
        (None, Err(_)) => bail!(
            "no operator credential: give --token-file FILE (the server's DATA_DIR/admin-token), \
             KILN_TOKEN_FILE or KILN_TOKEN"
        ),
    };
    if token.is_empty() {
        bail!("the operator credential (--token-file / KILN_TOKEN) is empty");
    }
    let mut value: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {token}").parse().map_err(|_| anyhow::anyhow!("the operator credential is not ASCII"))?;
    value.set_sensitive(true);
    Ok(OperatorToken(value))
}
