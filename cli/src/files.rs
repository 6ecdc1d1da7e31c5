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

/// Writes a file only its owner can read (created so, never readable by others).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}
