//! What the kernel command line says about modules, as kmod's modprobe
//! reads it: `NAME.PARAM=VALUE` options for a loadable module (the kernel
//! applies them itself only to built-in code) and
//! `modprobe.blacklist=NAME,NAME` (never loaded for a device; an operator's
//! way around a driver that hangs a machine, without rebuilding the image).

use std::collections::{HashMap, HashSet};

use crate::index::normalise;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    pub blacklist: HashSet<String>,
    /// module -> `PARAM=VALUE` words, in command line order
    pub params: HashMap<String, Vec<String>>,
}

impl KernelCmdline {
    pub fn parse(cmdline: &str) -> Self {
        let mut out = Self::default();
        for word in words(cmdline) {
            let Some((key, value)) = word.split_once('=') else { continue };
            if key == "modprobe.blacklist" {
                out.blacklist.extend(value.split(',').filter(|m| !m.is_empty()).map(normalise));
                continue;
            }
            let Some((module, param)) = key.split_once('.') else { continue };
            if module.is_empty() || param.is_empty() {
                continue;
            }
            out.params.entry(normalise(module)).or_default().push(format!("{param}={value}"));
        }
        out
    }

    /// The options string `finit_module` takes for `module`.
    pub fn options(&self, module: &str) -> String {
        self.params.get(module).map(|p| p.join(" ")).unwrap_or_default()
    }
}

/// The kernel's split: spaces separate words except inside double quotes,
/// which stay in the word (the kernel's parameter parser strips them).
fn words(cmdline: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (None, false);
    for (i, c) in cmdline.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                start.get_or_insert(i);
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(s) = start.take() {
                    out.push(&cmdline[s..i]);
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(s) = start {
        out.push(&cmdline[s..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_options_and_the_blacklist_come_from_the_command_line() {
        let c = KernelCmdline::parse(
            "console=ttyS0 kiln.server=http://10.0.2.2:9 mlx4-core.num_vfs=4 ixgbe.allow_unsupported_sfp=1 \
             modprobe.blacklist=ata-piix,floppy mlx4_core.probe_vf=0 modprobe.blacklist=bnx2x \
             e1000e.name=\"a b\" quiet\n",
        );
        assert_eq!(c.blacklist, ["ata_piix", "floppy", "bnx2x"].map(String::from).into());
        assert_eq!(c.options("mlx4_core"), "num_vfs=4 probe_vf=0");
        assert_eq!(c.options("ixgbe"), "allow_unsupported_sfp=1");
        assert_eq!(c.options("e1000e"), "name=\"a b\"");
        assert_eq!(c.options("virtio_net"), "");
    }
}
