//! Files the operator gives (documents) and gets (keys).

use std::io::Read;

use anyhow::Context;

/// The contents of `name`, or of stdin for `-`.
pub fn read_file(name: &str) -> anyhow::Result<String> {
    if name == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(name).with_context(|| format!("cannot read {name}"))
    }
}

/// Writes a file only its owner can read (see [`kiln_proto::secret_file`]).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(kiln_proto::secret_file::write(path, bytes)?)
}
