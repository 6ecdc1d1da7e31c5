//! Coldplug for the hook image: load the kernel modules of the devices that
//! are present, the job udev does at boot on a full system.
//!
//! Every device the kernel knows has a `modalias` in sysfs
//! (`/sys/bus/pci/devices/0000:00:02.0/modalias` is
//! `pci:v00001AF4d00001041sv...`); depmod's `modules.alias` maps those, by
//! fnmatch pattern, to the modules that drive them. Loading a driver makes
//! new devices appear (a virtio PCI function becomes a virtio device, a SATA
//! controller gets disks), so [`run`] looks again each time a load ends,
//! and once more after a short pause when none is left, until a look finds
//! nothing new.
//!
//! Why not `modprobe ALIAS` per device, as the hook's `/init` did: each is a
//! process that reads and pattern-matches the whole alias file, and with the
//! server NICs' and HBAs' aliases (2,000 patterns) that cost ~1 s of the
//! boot under QEMU/TCG. Here the index is read once and every module loads
//! in its own thread (a slow probe, such as a SATA port scan, does not hold
//! up the NIC's driver), each module once even when several devices and
//! dependents want it at the same time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

mod cmdline;
mod index;
mod kernel;

pub use cmdline::KernelCmdline;
pub use index::{ModuleIndex, normalise};
pub use kernel::{Kernel, RealKernel};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{file} line {line}: {reason}")]
    Index { file: &'static str, line: usize, reason: String },
    #[error("module {0} is not in this kernel's modules.dep")]
    UnknownModule(String),
    #[error("modules.dep has a dependency cycle: {0}")]
    DependencyCycle(String),
}

/// How a run looks for devices.
pub struct Options {
    /// Modules to load whatever the hardware (the image's /etc/modules,
    /// `kiln.modules=`), from the start, beside the devices' drivers.
    pub also: Vec<String>,
    /// The most looks that find modules to load (a bound, in case a
    /// device keeps changing its alias).
    pub max_rounds: usize,
    /// Pause once no load is left, before the last look: asynchronous
    /// probes (SCSI and USB scans) add their devices after the driver's
    /// load has returned.
    pub settle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { also: Vec::new(), max_rounds: 32, settle: Duration::from_millis(200) }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Distinct device modaliases seen.
    pub devices: usize,
    /// Looks at the devices that found modules to load.
    pub rounds: usize,
    /// Modules this run loaded, in the order they finished: why, and when
    /// the load ended (from the run's start).
    pub loaded: Vec<Loaded>,
    /// Modules that failed, with the kernel's answer.
    pub failed: BTreeMap<String, String>,
    /// Matched by a device but skipped (`modprobe.blacklist=`).
    pub blacklisted: BTreeSet<String>,
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} modules loaded for {} devices in {} rounds ({:.2} s)",
            self.loaded.len(),
            self.devices,
            self.rounds,
            self.elapsed.as_secs_f64()
        )?;
        if !self.failed.is_empty() {
            let failed: Vec<_> = self.failed.iter().map(|(m, e)| format!("{m} ({e})")).collect();
            write!(f, "; failed: {}", failed.join(", "))?;
        }
        if !self.blacklisted.is_empty() {
            write!(f, "; blacklisted: {}", self.blacklisted.iter().cloned().collect::<Vec<_>>().join(", "))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub module: String,
    /// The device's modalias, "requested", or "needed by MODULE".
    pub because: String,
    pub at: Duration,
}

/// The modaliases of every device under `sys` (`/sys` on a machine), on
/// every bus.
pub fn device_aliases(sys: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sys.join("bus")) else { return out };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else { continue };
        for dev in devices.flatten() {
            if let Ok(alias) = std::fs::read_to_string(dev.path().join("modalias")) {
                let alias = alias.trim();
                if !alias.is_empty() {
                    out.insert(alias.to_string());
                }
            }
        }
    }
    out
}

/// [`run`] on this machine: the running kernel's modules under
/// `/lib/modules/RELEASE` (or `modules_dir`), `/proc/cmdline`, `/sys`.
pub fn run_here(modules_dir: Option<&Path>, options: &Options) -> Result<Report, Error> {
    let read =
        |path: &Path| std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source });
    let dir = match modules_dir {
        Some(dir) => dir.to_path_buf(),
        None => Path::new("/lib/modules").join(read(Path::new("/proc/sys/kernel/osrelease"))?.trim()),
    };
    let index = ModuleIndex::open(&dir)?;
    let cmdline = KernelCmdline::parse(&read(Path::new("/proc/cmdline"))?);
    Ok(run(&index, &cmdline, &RealKernel, Path::new("/sys"), options))
}

/// Loads the drivers of the devices under `sys` and the modules of
/// `options.also`, as described in the crate's documentation. Failures are
/// reported, never fatal: a machine with one broken driver may still reach
/// the network through another.
pub fn run(index: &ModuleIndex, cmdline: &KernelCmdline, kernel: &dyn Kernel, sys: &Path, options: &Options) -> Report {
    let loader = Loader::new(index, cmdline, kernel);
    let mut report = Report::default();
    let mut seen = HashSet::new();
    // Modules asked for so far (a load in flight is not asked for twice).
    let mut asked: HashSet<String> = HashSet::new();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let mut running = 0;
        let spawn = |module: String, because: String| {
            let (loader, done) = (&loader, done_tx.clone());
            s.spawn(move || {
                loader.ensure(&module, &because);
                let _ = done.send(());
            });
        };
        for m in &options.also {
            let m = normalise(m);
            if asked.insert(m.clone()) {
                running += 1;
                spawn(m, "requested".into());
            }
        }
        let mut settled = false;
        loop {
            // Look: every device not seen yet, for modules not asked for yet.
            let mut wanted = Vec::new();
            for alias in device_aliases(sys) {
                if !seen.insert(alias.clone()) {
                    continue;
                }
                report.devices += 1;
                for module in index.matching(&alias) {
                    if cmdline.blacklist.contains(module) {
                        report.blacklisted.insert(module.to_string());
                    } else if !loader.settled(module) && asked.insert(module.to_string()) {
                        wanted.push((module.to_string(), alias.clone()));
                    }
                }
            }
            if !wanted.is_empty() {
                if report.rounds == options.max_rounds {
                    let mut failed = loader.failed.lock().unwrap();
                    for (module, _) in wanted {
                        failed.insert(
                            module,
                            format!("not loaded: devices kept appearing after {} rounds", options.max_rounds),
                        );
                    }
                } else {
                    report.rounds += 1;
                    settled = false;
                    for (module, because) in wanted {
                        running += 1;
                        spawn(module, because);
                    }
                }
            }
            if running == 0 {
                if settled {
                    break;
                }
                std::thread::sleep(options.settle);
                settled = true;
                continue;
            }
            // Look again as soon as any load has ended: a NIC's driver
            // must not wait for a slow disk controller's probe.
            done_rx.recv().expect("a loader thread holds a sender");
            running -= 1;
            while done_rx.try_recv().is_ok() {
                running -= 1;
            }
        }
    });
    report.loaded = loader.loaded.into_inner().unwrap_or_default();
    report.failed = loader.failed.into_inner().unwrap_or_default();
    report.elapsed = loader.started.elapsed();
    report
}

/// Loads each module once per run, whichever thread asks first; the others
/// wait for that load (the kernel would make a second concurrent load of
/// one module wait too, and then fail it).
struct Loader<'a> {
    index: &'a ModuleIndex,
    cmdline: &'a KernelCmdline,
    kernel: &'a dyn Kernel,
    /// One cell per module of the index: set when its load has ended.
    state: HashMap<String, OnceLock<Result<(), String>>>,
    started: Instant,
    loaded: Mutex<Vec<Loaded>>,
    failed: Mutex<BTreeMap<String, String>>,
}

impl<'a> Loader<'a> {
    fn new(index: &'a ModuleIndex, cmdline: &'a KernelCmdline, kernel: &'a dyn Kernel) -> Self {
        let state: HashMap<_, _> = index.modules().map(|m| (m.to_string(), OnceLock::new())).collect();
        for m in kernel.loaded() {
            if let Some(cell) = state.get(&normalise(&m)) {
                let _ = cell.set(Ok(()));
            }
        }
        Self {
            index,
            cmdline,
            kernel,
            state,
            started: Instant::now(),
            loaded: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    /// Whether `module`'s load has ended (or it was loaded before the run).
    fn settled(&self, module: &str) -> bool {
        self.state.get(module).is_some_and(|c| c.get().is_some())
    }

    /// Loads `module` after its dependencies.
    fn ensure(&self, module: &str, because: &str) {
        let order = match self.index.load_order(module) {
            Ok(order) => order,
            Err(e) => {
                self.failed.lock().unwrap().insert(module.to_string(), e.to_string());
                return;
            }
        };
        for m in &order {
            let why = if m == module { because.to_string() } else { format!("needed by {module}") };
            let cell = &self.state[m];
            if let Err(e) = cell.get_or_init(|| self.load(m, &why)) {
                if m != module {
                    let reason = format!("needs {m}, which failed: {e}");
                    self.failed.lock().unwrap().entry(module.to_string()).or_insert(reason);
                }
                return;
            }
        }
    }

    fn load(&self, module: &str, because: &str) -> Result<(), String> {
        let file = self.index.file(module).expect("load_order gives indexed modules");
        match self.kernel.load(&file, &self.cmdline.options(module)) {
            Ok(true) => {
                let at = self.started.elapsed();
                self.loaded.lock().unwrap().push(Loaded {
                    module: module.to_string(),
                    because: because.to_string(),
                    at,
                });
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                self.failed.lock().unwrap().insert(module.to_string(), e.clone());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
