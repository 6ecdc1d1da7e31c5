//! The module index of one kernel: `modules.dep`, `modules.alias` and
//! `modules.builtin` under `/lib/modules/VERSION`, as depmod writes them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::Error;

/// `-` and `_` are the same in module names (the kernel stores `_`).
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// Module name of a path such as `kernel/drivers/net/foo-bar.ko`.
fn module_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    normalise(file.split(".ko").next().unwrap_or(file))
}

struct Module {
    /// Relative to the index's directory.
    file: PathBuf,
    /// Every module this one needs, transitively (modules.dep is flat).
    deps: Vec<String>,
}

struct Alias {
    /// The pattern's text up to its first wildcard: a cheap test first,
    /// since a device's alias is compared with every pattern (2,000 here).
    literal: String,
    pattern: glob::Pattern,
    module: String,
}

/// What depmod knows about the modules of one kernel.
pub struct ModuleIndex {
    dir: PathBuf,
    modules: HashMap<String, Module>,
    aliases: Vec<Alias>,
    builtin: HashSet<String>,
}

impl ModuleIndex {
    /// Reads `DIR/modules.dep`, `DIR/modules.alias` and, if present,
    /// `DIR/modules.builtin`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
        };
        let builtin = match read("modules.builtin") {
            Ok(text) => text.lines().filter(|l| !l.is_empty()).map(module_of).collect(),
            Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        Self::parse(dir, &read("modules.dep")?, &read("modules.alias")?, builtin)
    }

    fn parse(dir: &Path, dep: &str, alias: &str, builtin: HashSet<String>) -> Result<Self, Error> {
        let mut modules = HashMap::new();
        for (n, line) in dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (file, deps) = line.split_once(':').ok_or_else(|| Error::Index {
                file: "modules.dep",
                line: n + 1,
                reason: format!("no ':' in {line:?}"),
            })?;
            modules.insert(
                module_of(file),
                Module { file: PathBuf::from(file), deps: deps.split_whitespace().map(module_of).collect() },
            );
        }
        let mut aliases = Vec::new();
        for (n, line) in alias.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| Error::Index { file: "modules.alias", line: n + 1, reason };
            let mut words = line.split_whitespace();
            let (Some("alias"), Some(pattern), Some(module), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(bad(format!("expected `alias PATTERN MODULE`, got {line:?}")));
            };
            let literal = pattern[..pattern.find(['*', '?', '[']).unwrap_or(pattern.len())].to_string();
            let pattern = glob::Pattern::new(pattern).map_err(|e| bad(format!("pattern {pattern:?}: {e}")))?;
            aliases.push(Alias { literal, pattern, module: normalise(module) });
        }
        Ok(Self { dir: dir.to_path_buf(), modules, aliases, builtin })
    }

    /// Modules whose aliases match a device's modalias, in the order of
    /// modules.alias, each once. (kmod's modprobe loads every match too:
    /// a device may need a driver and a helper, such as a bus module.)
    pub fn matching(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for a in &self.aliases {
            if modalias.starts_with(&a.literal) && a.pattern.matches(modalias) && !out.contains(&a.module.as_str()) {
                out.push(&a.module);
            }
        }
        out
    }

    pub fn is_module(&self, name: &str) -> bool {
        self.modules.contains_key(name)
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(name)
    }

    /// The file of a module.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        self.modules.get(name).map(|m| self.dir.join(&m.file))
    }

    /// What to load for `name`, dependencies before the modules needing
    /// them, `name` last. Ordered from each dependency's own line, not
    /// from the order of the flat list (busybox's depmod and kmod's
    /// differ there).
    pub fn load_order(&self, name: &str) -> Result<Vec<String>, Error> {
        let mut order = Vec::new();
        let mut visiting = Vec::new();
        self.visit(name, &mut order, &mut visiting)?;
        Ok(order)
    }

    fn visit(&self, name: &str, order: &mut Vec<String>, visiting: &mut Vec<String>) -> Result<(), Error> {
        if order.iter().any(|m| m == name) {
            return Ok(());
        }
        if visiting.iter().any(|m| m == name) {
            visiting.push(name.to_string());
            return Err(Error::DependencyCycle(visiting.join(" -> ")));
        }
        let Some(module) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            return Err(Error::UnknownModule(name.to_string()));
        };
        visiting.push(name.to_string());
        for dep in &module.deps {
            self.visit(dep, order, visiting)?;
        }
        visiting.pop();
        order.push(name.to_string());
        Ok(())
    }

    /// Every module the index has a file for.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko
kernel/drivers/ata/libata.ko:
kernel/drivers/usb/storage/usb-storage.ko:
";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias virtio:d00000001v* virtio_net
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias pci:v00008086d00002922sv*sd*bc*sc*i* ahci
alias usb:v0421p0019d059[2-9]dc*dsc*dp*ic*isc*ip*in* usb-storage
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(Path::new("/lib/modules/6.1.0-57-amd64"), DEP, ALIAS, ["crc32c_generic".to_string()].into())
            .unwrap()
    }

    #[test]
    fn device_aliases_match_the_modules_that_claim_them() {
        let i = index();
        assert_eq!(i.matching("virtio:d00000001v00001AF4"), ["virtio_net"]);
        // ICH9 AHCI: by its class and by its id, one module once
        assert_eq!(i.matching("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"), ["ahci"]);
        // character ranges, and `_`/`-` spellings of one module
        assert_eq!(i.matching("usb:v0421p0019d0595dc00dsc00dp00ic08isc06ip50in00"), ["usb_storage"]);
        assert_eq!(i.matching("usb:v0421p0019d0591dc00dsc00dp00icFFiscFFipFFin00"), Vec::<&str>::new());
        assert!(i.matching("pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00").is_empty());
    }

    #[test]
    fn dependencies_load_first_in_the_order_their_own_lines_give() {
        let i = index();
        assert_eq!(
            i.load_order("virtio_net").unwrap(),
            ["failover", "net_failover", "virtio", "virtio_ring", "virtio_net"]
        );
        assert_eq!(i.load_order("ahci").unwrap(), ["libata", "libahci", "ahci"]);
        assert_eq!(i.load_order("crc32c_generic").unwrap(), Vec::<String>::new(), "built in: nothing to load");
        assert!(matches!(i.load_order("nope"), Err(Error::UnknownModule(m)) if m == "nope"));
        assert_eq!(
            i.file("usb_storage").unwrap(),
            Path::new("/lib/modules/6.1.0-57-amd64/kernel/drivers/usb/storage/usb-storage.ko")
        );
    }

    #[test]
    fn a_dependency_cycle_is_an_error_not_a_hang() {
        let i = ModuleIndex::parse(Path::new("/m"), "a.ko: b.ko\nb.ko: a.ko\n", "", HashSet::new()).unwrap();
        assert!(matches!(i.load_order("a"), Err(Error::DependencyCycle(c)) if c == "a -> b -> a"));
    }

    #[test]
    fn a_malformed_index_names_its_file_and_line() {
        let e = ModuleIndex::parse(Path::new("/m"), "a.ko:\n", "alias x a\nalias y\n", HashSet::new()).err().unwrap();
        assert_eq!(e.to_string(), "modules.alias line 2: expected `alias PATTERN MODULE`, got \"alias y\"");
        let e = ModuleIndex::parse(Path::new("/m"), "a.ko\n", "", HashSet::new()).err().unwrap();
        assert_eq!(e.to_string(), "modules.dep line 1: no ':' in \"a.ko\"");
    }
}
