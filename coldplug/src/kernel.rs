//! The kernel side: `finit_module(2)` and `/proc/modules`.

use std::ffi::CString;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};

/// Where modules go. [`RealKernel`] on a machine; tests record instead.
pub trait Kernel: Sync {
    /// Loads the module in `file` with `options` (`PARAM=VALUE ...`).
    /// `Ok(false)`: it was loaded already. `Err`: the kernel's answer.
    fn load(&self, file: &Path, options: &str) -> Result<bool, String>;
    /// Names of the modules loaded now.
    fn loaded(&self) -> Vec<String>;
}

pub struct RealKernel;

impl Kernel for RealKernel {
    fn load(&self, file: &Path, options: &str) -> Result<bool, String> {
        let name = file.to_string_lossy();
        if !name.ends_with(".ko") {
            // finit_module takes compressed files only with a flag kernels
            // before 6.5 lack; the hook's build keeps them uncompressed.
            return Err(format!("{name}: not an uncompressed .ko file"));
        }
        let f = std::fs::File::open(file).map_err(|e| format!("{name}: {e}"))?;
        let options = CString::new(options).map_err(|_| format!("{name}: options contain a NUL byte"))?;
        match finit_module(&f, &options, ModuleInitFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(e.desc().to_string()),
        }
    }

    fn loaded(&self) -> Vec<String> {
        std::fs::read_to_string("/proc/modules")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }
}
