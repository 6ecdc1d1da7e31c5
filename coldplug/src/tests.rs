use std::sync::Mutex;

use super::*;

/// A kernel that records loads, and whose drivers make new devices appear
/// the way real ones do (virtio_pci -> a virtio device).
struct FakeKernel {
    sys: PathBuf,
    loads: Mutex<Vec<(String, String)>>,
    already: Vec<String>,
    fails: Vec<(&'static str, &'static str)>,
    /// module -> (bus, device, modalias) it adds when loaded
    adds: Vec<(&'static str, (&'static str, &'static str, &'static str))>,
    /// modules whose load (probe) takes long
    slow: Vec<(&'static str, Duration)>,
}

impl Kernel for FakeKernel {
    fn load(&self, file: &Path, options: &str) -> Result<bool, String> {
        let m = normalise(file.file_stem().unwrap().to_str().unwrap());
        // long enough for concurrent callers of one module to overlap
        std::thread::sleep(Duration::from_millis(20));
        if let Some((_, d)) = self.slow.iter().find(|(f, _)| *f == m) {
            std::thread::sleep(*d);
        }
        if let Some((_, e)) = self.fails.iter().find(|(f, _)| *f == m) {
            return Err(e.to_string());
        }
        let mut loads = self.loads.lock().unwrap();
        assert!(!loads.iter().any(|(l, _)| *l == m), "{m} loaded twice");
        loads.push((m.clone(), options.to_string()));
        for (_, (bus, dev, alias)) in self.adds.iter().filter(|(a, _)| *a == m) {
            add_device(&self.sys, bus, dev, alias);
        }
        Ok(true)
    }

    fn loaded(&self) -> Vec<String> {
        self.already.clone()
    }
}

fn add_device(sys: &Path, bus: &str, dev: &str, alias: &str) {
    let d = sys.join("bus").join(bus).join("devices").join(dev);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("modalias"), format!("{alias}\n")).unwrap();
}

const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko
kernel/drivers/ata/libata.ko:
kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko
kernel/drivers/char/ipmi/ipmi_si.ko:
kernel/drivers/scsi/sd_mod.ko:
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:
kernel/fs/overlayfs/overlay.ko:
";
const ALIAS: &str = "\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias pci:v00008086d00007010sv*sd*bc*sc*i* ata_piix
alias acpi*:IPI0001:* ipmi_si
alias scsi:t-0x00* sd_mod
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
";

struct Machine {
    _dir: tempfile::TempDir,
    sys: PathBuf,
    index: ModuleIndex,
}

fn machine() -> Machine {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("lib/modules/6.1");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("modules.dep"), DEP).unwrap();
    std::fs::write(modules.join("modules.alias"), ALIAS).unwrap();
    std::fs::write(modules.join("modules.builtin"), "kernel/drivers/tty/serial/8250/8250.ko\n").unwrap();
    let sys = dir.path().join("sys");
    add_device(&sys, "pci", "0000:00:02.0", "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00");
    add_device(&sys, "pci", "0000:00:1f.2", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01");
    add_device(&sys, "pci", "0000:00:01.1", "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80");
    add_device(&sys, "pci", "0000:00:1f.3", "pci:v00008086d00002930sv00001AF4sd00001100bc0Csc05i00");
    add_device(&sys, "acpi", "IPI0001:00", "acpi:IPI0001:");
    add_device(&sys, "acpi", "PNP0501:00", "acpi:PNP0501:");
    add_device(&sys, "cpu", "cpu0", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001");
    // a device without modalias, and a bus without devices
    std::fs::create_dir_all(sys.join("bus/pci/devices/0000:00:00.0")).unwrap();
    std::fs::create_dir_all(sys.join("bus/mdio_bus")).unwrap();
    let index = ModuleIndex::open(&modules).unwrap();
    Machine { _dir: dir, sys, index }
}

fn kernel(m: &Machine) -> FakeKernel {
    FakeKernel {
        sys: m.sys.clone(),
        loads: Mutex::default(),
        already: Vec::new(),
        fails: Vec::new(),
        adds: vec![("virtio_pci", ("virtio", "virtio0", "virtio:d00000001v00001AF4"))],
        slow: Vec::new(),
    }
}

fn fast() -> Options {
    Options { settle: Duration::from_millis(1), ..Options::default() }
}

fn order(k: &FakeKernel) -> Vec<String> {
    k.loads.lock().unwrap().iter().map(|(m, _)| m.clone()).collect()
}

fn before(order: &[String], a: &str, b: &str) -> bool {
    order.iter().position(|m| m == a).unwrap() < order.iter().position(|m| m == b).unwrap()
}

#[test]
fn the_drivers_of_the_devices_present_load_and_the_devices_they_bring_are_seen_too() {
    let m = machine();
    let k = kernel(&m);
    let r = run(&m.index, &KernelCmdline::default(), &k, &m.sys, &fast());
    let loaded = order(&k);
    let set: BTreeSet<_> = loaded.iter().map(String::as_str).collect();
    assert_eq!(
        set,
        ["virtio", "virtio_ring", "virtio_pci", "virtio_net", "libata", "libahci", "ahci", "ata_piix", "ipmi_si"]
            .into(),
        "not e1000e or sd_mod (no such device), overlay only on request"
    );
    // each module once (FakeKernel asserts it), dependencies first
    for (dep, m) in
        [("virtio", "virtio_ring"), ("virtio_ring", "virtio_pci"), ("libata", "ahci"), ("libata", "ata_piix")]
    {
        assert!(before(&loaded, dep, m), "{dep} before {m}: {loaded:?}");
    }
    // virtio_net's device appeared only when virtio_pci loaded: a second round
    assert_eq!(r.rounds, 2, "{r}");
    assert_eq!(r.devices, 8, "7 at the start (one without modalias), the virtio NIC later");
    assert_eq!(r.loaded.len(), 9);
    let why = |m: &str| r.loaded.iter().find(|l| l.module == m).map(|l| l.because.clone()).unwrap();
    assert_eq!(why("virtio_net"), "virtio:d00000001v00001AF4");
    assert!(["needed by ahci", "needed by ata_piix"].contains(&why("libata").as_str()), "{}", why("libata"));
    // in the order the loads ended: a dependency before what needed it
    let at = |m: &str| r.loaded.iter().find(|l| l.module == m).unwrap().at;
    assert!(at("virtio_pci") < at("virtio_net") && at("libata") < at("ahci"));
    assert!(r.failed.is_empty(), "{r}");
    assert!(r.to_string().starts_with("9 modules loaded for 8 devices in 2 rounds ("), "{r}");
}

#[test]
fn requested_modules_load_with_the_first_pass_and_command_line_options() {
    let m = machine();
    let k = kernel(&m);
    let cmdline = KernelCmdline::parse("console=ttyS0 ahci.mobile_lpm_policy=1 sd-mod.x=\"a b\"");
    let options = Options { also: vec!["overlay".into(), "sd-mod".into(), "8250".into()], ..fast() };
    let r = run(&m.index, &cmdline, &k, &m.sys, &options);
    let loads = k.loads.lock().unwrap().clone();
    assert!(loads.contains(&("overlay".into(), "".into())), "{loads:?}");
    assert!(loads.contains(&("sd_mod".into(), "x=\"a b\"".into())), "{loads:?}");
    assert!(loads.contains(&("ahci".into(), "mobile_lpm_policy=1".into())), "{loads:?}");
    assert!(r.loaded.iter().any(|l| l.module == "overlay" && l.because == "requested"), "{:?}", r.loaded);
    assert!(r.failed.is_empty(), "8250 is built in: nothing to load: {r}");
}

#[test]
fn a_blacklisted_driver_is_skipped_and_a_failing_one_does_not_stop_the_others() {
    let m = machine();
    let mut k = kernel(&m);
    k.fails = vec![("ipmi_si", "No such device"), ("libahci", "Unknown symbol in module")];
    let cmdline = KernelCmdline::parse("modprobe.blacklist=ata-piix");
    let options = Options { also: vec!["nosuchmodule".into()], ..fast() };
    let r = run(&m.index, &cmdline, &k, &m.sys, &options);
    let loaded = order(&k);
    assert!(!loaded.contains(&"ata_piix".to_string()), "{loaded:?}");
    assert!(loaded.contains(&"virtio_net".to_string()), "the NIC still loads: {loaded:?}");
    assert_eq!(r.blacklisted, ["ata_piix".to_string()].into());
    assert_eq!(r.failed["ipmi_si"], "No such device");
    assert_eq!(r.failed["libahci"], "Unknown symbol in module");
    assert_eq!(r.failed["ahci"], "needs libahci, which failed: Unknown symbol in module");
    assert_eq!(r.failed["nosuchmodule"], "module nosuchmodule is not in this kernel's modules.dep");
    let text = r.to_string();
    assert!(text.contains("; failed: ahci (needs libahci, which failed: Unknown symbol in module), ipmi_si (No such device), libahci (Unknown symbol in module), nosuchmodule (module nosuchmodule is not in this kernel's modules.dep); blacklisted: ata_piix"), "{text}");
}

#[test]
fn modules_loaded_before_the_run_are_not_loaded_again() {
    let m = machine();
    let mut k = kernel(&m);
    k.already = vec!["libata".into(), "virtio-pci".into()];
    let r = run(&m.index, &KernelCmdline::default(), &k, &m.sys, &fast());
    let loaded = order(&k);
    assert!(!loaded.contains(&"libata".to_string()) && !loaded.contains(&"virtio_pci".to_string()), "{loaded:?}");
    // (virtio_pci was loaded before: its device is not there in this fake
    // sysfs, so virtio_net has nothing to drive)
    assert!(!loaded.contains(&"virtio_net".to_string()));
    assert_eq!(r.rounds, 1, "{r}");
}

#[test]
fn no_device_and_no_request_is_no_round() {
    let dir = tempfile::tempdir().unwrap();
    let m = machine();
    let k = FakeKernel {
        sys: dir.path().into(),
        loads: Mutex::default(),
        already: vec![],
        fails: vec![],
        adds: vec![],
        slow: vec![],
    };
    let r = run(&m.index, &KernelCmdline::default(), &k, dir.path(), &Options::default());
    assert_eq!((r.devices, r.rounds, r.loaded.len()), (0, 0, 0));
}

#[test]
fn the_nic_driver_does_not_wait_for_a_slow_controller_probe() {
    let m = machine();
    let mut k = kernel(&m);
    // (ata_piix scanning its ports takes seconds under emulation)
    k.slow = vec![("ata_piix", Duration::from_millis(1500))];
    let r = run(&m.index, &KernelCmdline::default(), &k, &m.sys, &fast());
    let at = |m: &str| r.loaded.iter().find(|l| l.module == m).unwrap_or_else(|| panic!("{m}: {r}")).at;
    // virtio_net's device appears only after virtio_pci's load; it is
    // looked for then, not once the slow probe of the same round has ended
    assert!(at("virtio_net") < at("ata_piix"), "{:?}", r.loaded);
}

#[test]
fn devices_that_keep_appearing_are_bounded_and_reported() {
    let m = machine();
    let k = kernel(&m);
    let r = run(&m.index, &KernelCmdline::default(), &k, &m.sys, &Options { max_rounds: 1, ..fast() });
    assert_eq!(r.rounds, 1);
    assert_eq!(r.failed["virtio_net"], "not loaded: devices kept appearing after 1 rounds");
    assert!(!order(&k).contains(&"virtio_net".to_string()));
}
