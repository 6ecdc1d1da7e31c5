//! The iPXE binaries kiln hands out. kiln does not build iPXE: Debian's
//! `ipxe` package ships them in /usr/lib/ipxe, or `--ipxe-dir` names a
//! directory holding the same names.

use std::path::{Path, PathBuf};

/// Where Debian's `ipxe` package puts its binaries.
pub const DEBIAN_DIR: &str = "/usr/lib/ipxe";

/// The UEFI binaries kiln can serve: `ipxe.efi` carries iPXE's own NIC
/// drivers, `snponly.efi` uses the firmware's (for NICs iPXE lacks).
pub const EFI_FILES: [&str; 2] = ["ipxe.efi", "snponly.efi"];

/// The iPXE directory to serve: `dir` if given, else Debian's. It must hold
/// `efi` (one of [`EFI_FILES`]) and [`crate::BIOS_FILE`]; the error names
/// what is missing and how to get it.
pub fn locate(dir: Option<&Path>, efi: &str) -> Result<PathBuf, String> {
    if !EFI_FILES.contains(&efi) {
        return Err(format!("--ipxe-efi {efi:?}: must be one of {}", EFI_FILES.join(", ")));
    }
    let (dir, hint) = match dir {
        Some(d) => (d.to_path_buf(), "--ipxe-dir"),
        None => (PathBuf::from(DEBIAN_DIR), "install Debian's `ipxe` package, or give --ipxe-dir"),
    };
    let dir = dir.canonicalize().map_err(|e| format!("iPXE directory {}: {e} ({hint})", dir.display()))?;
    for f in [efi, crate::BIOS_FILE] {
        if !dir.join(f).is_file() {
            return Err(format!("iPXE directory {} has no {f} ({hint})", dir.display()));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_both_binaries() {
        let d = tempfile::tempdir().unwrap();
        let e = locate(Some(d.path()), "ipxe.efi").unwrap_err();
        assert!(e.contains("no ipxe.efi"), "{e}");
        std::fs::write(d.path().join("ipxe.efi"), b"x").unwrap();
        let e = locate(Some(d.path()), "ipxe.efi").unwrap_err();
        assert!(e.contains("no undionly.kpxe"), "{e}");
        std::fs::write(d.path().join("undionly.kpxe"), b"x").unwrap();
        assert_eq!(locate(Some(d.path()), "ipxe.efi").unwrap(), d.path().canonicalize().unwrap());
        let e = locate(Some(d.path()), "snponly.efi").unwrap_err();
        assert!(e.contains("no snponly.efi"), "{e}");
        let e = locate(Some(d.path()), "grub.efi").unwrap_err();
        assert!(e.contains("--ipxe-efi"), "{e}");
        let e = locate(Some(&d.path().join("missing")), "ipxe.efi").unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
