use serde_json::json;

use super::*;

fn disk(name: &str, size_gib: u64, rotational: bool, transport: &str, serial: Option<&str>) -> Disk {
    Disk {
        name: name.into(),
        by_id: serial.map(|s| vec![format!("/dev/disk/by-id/{transport}-{s}")]).unwrap_or_default(),
        serial: serial.map(str::to_string),
        size_bytes: Some(size_gib << 30),
        rotational: Some(rotational),
        transport: Some(transport.into()),
        ..Disk::default()
    }
}

fn hint(v: serde_json::Value) -> DiskHint {
    DiskHint::from_json(&v).unwrap()
}

#[test]
fn sizes_parse_with_comparisons_and_units() {
    let s = |t: &str| SizeHint::parse(t).unwrap();
    assert_eq!((s(">= 100GiB").op, s(">= 100GiB").bytes), (SizeOp::Ge, 100 << 30));
    assert_eq!((s("< 2TB").op, s("< 2TB").bytes), (SizeOp::Lt, 2_000_000_000_000));
    assert_eq!((s("==10GiB").op, s("==10GiB").bytes), (SizeOp::Eq, 10 << 30));
    assert_eq!((s("100").op, s("100").bytes, s("100").unit), (SizeOp::Eq, 100 << 30, 1 << 30), "bare: GiB, ==");
    assert_eq!(s("> 1.5TiB").bytes, 3 << 39);
    assert_eq!(s("!= 512 MiB").bytes, 512 << 20);
    assert_eq!(s("<= 4096B").bytes, 4096);
    assert_eq!(s("> 80 KB").bytes, 80_000);
    assert_eq!(s(">= 3MB").bytes, 3_000_000);
    assert_eq!(s(">= 3GB").bytes, 3_000_000_000);
    assert_eq!(s(">= 1KiB").bytes, 1024);
    // == compares in whole units, as Ironic compares whole GiB.
    assert!(s("== 10GiB").matches((10 << 30) + (700 << 20)));
    assert!(!s("== 10GiB").matches(11 << 30));
    assert!(s("!= 10GiB").matches(11 << 30));
    assert!(s(">= 100GiB").matches(100 << 30) && !s("> 100GiB").matches(100 << 30));
    assert!(s("< 2TB").matches(1_999_999_999_999) && !s("< 2TB").matches(2_000_000_000_000));
    for bad in ["", ">= GiB", ">= 10 PiB", "=> 10", "ten", "== 1.5GiB", ">= -1"] {
        assert!(SizeHint::parse(bad).is_err(), "{bad:?}");
    }
    assert!(SizeHint::parse(">= 10 PiB").unwrap_err().contains("unknown unit \"PiB\""));
}

#[test]
fn hints_read_from_json_name_the_bad_field() {
    let h = hint(json!({"rotational": false, "size": ">= 100GiB", "transport": "NVMe", "serial": " S1 "}));
    assert_eq!(h.rotational, Some(false));
    assert_eq!(h.transport.as_deref(), Some("nvme"));
    assert_eq!(h.serial.as_deref(), Some("S1"));
    assert_eq!(h.to_string(), r#"{rotational: false, serial: "S1", size: ">= 100GiB", transport: "nvme"}"#);
    assert_eq!(hint(json!({"size": 100})).size.unwrap().bytes, 100 << 30, "a number is GiB");
    assert_eq!(hint(json!({"rotational": "true"})).rotational, Some(true));
    let e = |v| DiskHint::from_json(&v).unwrap_err();
    assert_eq!(e(json!({"size": ">= 1 XB"})).field.as_deref(), Some("size"));
    assert_eq!(e(json!({"rotational": "maybe"})).field.as_deref(), Some("rotational"));
    assert_eq!(e(json!({"transport": "floppy"})).field.as_deref(), Some("transport"));
    assert_eq!(e(json!({"serial": ""})).field.as_deref(), Some("serial"));
    let unknown = e(json!({"seriall": "x"}));
    assert_eq!(unknown.field.as_deref(), Some("seriall"));
    assert!(unknown.message.contains("known: size, model"), "{unknown}");
    assert!(e(json!({})).message.contains("at least one"));
    assert!(e(json!("sda")).message.contains("a map"));
    // The stored form reads back the same.
    let stored = serde_json::to_string(&h).unwrap();
    assert_eq!(serde_json::from_str::<DiskHint>(&stored).unwrap(), h);
}

#[test]
fn resolution_picks_the_one_disk_or_names_the_hint_and_every_candidate() {
    let disks = vec![
        disk("vda", 10, true, "virtio", Some("small")),
        disk("vdb", 200, false, "virtio", Some("big")),
        disk("sda", 500, true, "sata", Some("hdd")),
    ];
    let chosen = resolve(&hint(json!({"rotational": false, "size": ">= 100GiB"})), &disks).unwrap();
    assert_eq!(chosen.name, "vdb");
    assert_eq!(stable_path(chosen), "/dev/disk/by-id/virtio-big");
    assert_eq!(resolve(&hint(json!({"serial": "hdd"})), &disks).unwrap().name, "sda");
    assert_eq!(resolve(&hint(json!({"name": "/dev/vda"})), &disks).unwrap().name, "vda");
    assert_eq!(resolve(&hint(json!({"transport": "sata"})), &disks).unwrap().name, "sda");

    let none = resolve(&hint(json!({"size": "> 1TiB"})), &disks).unwrap_err();
    assert_eq!(
        none,
        r#"disk hint {size: "> 1TiB"} matches no disk: vda (size 10.0 GiB is not > 1TiB); vdb (size 200.0 GiB is not > 1TiB); sda (size 500.0 GiB is not > 1TiB)"#
    );
    let two = resolve(&hint(json!({"transport": "virtio"})), &disks).unwrap_err();
    assert!(
        two.starts_with(
            r#"disk hint {transport: "virtio"} matches 2 disks: vda (10.0 GiB, virtio, serial "small"); vdb"#
        ),
        "{two}"
    );
    assert!(resolve(&hint(json!({"serial": "x"})), &[]).unwrap_err().contains("reported no disks"));

    let reasons = explain(&hint(json!({"rotational": false, "serial": "big"})), &disks);
    assert_eq!(reasons[0].1, Err(r#"serial "small" is not "big", rotational is true"#.into()));
    assert_eq!(reasons[1].1, Ok(()));
}

#[test]
fn wwn_model_vendor_and_by_path_match_as_udev_and_labels_spell_them() {
    let d = Disk {
        name: "sda".into(),
        by_id: vec![
            "/dev/disk/by-id/ata-ST4000NM0035-1V4_ZC18ABCD".into(),
            "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4".into(),
        ],
        by_path: vec!["/dev/disk/by-path/pci-0000:00:17.0-ata-3".into()],
        vendor: Some("SEAGATE".into()),
        model: Some("ST4000NM0035-1V4".into()),
        wwn: Some("naa.5000c500a1b2c3d4".into()),
        ..Disk::default()
    };
    let ok = |v| hint(v).check(&d);
    assert_eq!(ok(json!({"wwn": "0x5000C500A1B2C3D4"})), Ok(()));
    assert_eq!(ok(json!({"wwn": "naa.5000c500a1b2c3d4"})), Ok(()));
    assert_eq!(ok(json!({"model": "st4000nm0035-1v4", "vendor": "Seagate"})), Ok(()));
    assert_eq!(ok(json!({"by_path": "/dev/disk/by-path/pci-0000:00:17.0-ata-3"})), Ok(()));
    assert_eq!(ok(json!({"by_path": "pci-0000:00:17.0-ata-3"})), Ok(()));
    assert!(ok(json!({"by_path": "pci-0000:00:17.0-ata-4"})).is_err());
    assert_eq!(ok(json!({"rotational": true})), Err("rotational unknown".into()), "unknown is no match");
    // The model+serial name is preferred over the WWN one; without by-id, /dev/NAME.
    assert_eq!(stable_path(&d), "/dev/disk/by-id/ata-ST4000NM0035-1V4_ZC18ABCD");
    let wwn_only = Disk { by_id: vec!["/dev/disk/by-id/wwn-0x1".into()], ..d.clone() };
    assert_eq!(stable_path(&wwn_only), "/dev/disk/by-id/wwn-0x1");
    assert_eq!(stable_path(&Disk { by_id: vec![], ..d }), "/dev/sda");
}

#[test]
fn templates_defer_hint_calls_until_the_disks_are_known_then_resolve_them() {
    use crate::template::{DiskContext, render, render_probe, render_with_disks};
    let data = json!({"hardware": {"metadata": {"serial": "big"}}});
    // At creation: kept, hint spelled out; `rootDisk` becomes the hardware's hint.
    let deferred =
        render("t", r#"{{ disk (dict "serial" .hardware.metadata.serial "rotational" false) }}"#, &data).unwrap();
    let b64 = |json: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(json)
    };
    assert_eq!(
        deferred,
        format!("{{{{ disk (fromJson (b64dec `{}`)) }}}}", b64(r#"{"serial":"big","rotational":false}"#))
    );
    assert!(!deferred.contains('"') && !deferred.contains('\\'), "nothing that ends a YAML string: {deferred}");
    let root = hint(json!({"size": ">= 100GiB"}));
    let with_root = DiskContext { disks: None, root_disk: Some(&root) };
    let root_deferred = render_with_disks("t", "DEST={{ rootDisk }}", &data, with_root).unwrap();
    assert_eq!(root_deferred, format!("DEST={{{{ disk (fromJson (b64dec `{}`)) }}}}", b64(r#"{"size":">= 100GiB"}"#)));
    let e = render("t", "{{ rootDisk }}", &data).unwrap_err();
    assert!(e.message.contains("the hardware has no root_disk"), "{e}");
    // Checking a template without hardware: a placeholder.
    assert_eq!(render_probe("t", r#"{{ disk (dict "serial" "x") }} {{ rootDisk }}"#).unwrap(), "probe probe");
    let typo = render_probe("t", r#"{{ disk (dict "seriall" "x") }}"#).unwrap_err();
    assert_eq!(typo.field.as_deref(), Some("disk.seriall"), "refused when the template is applied: {typo}");
    // A bad hint is refused at creation already, naming the key.
    let bad = render("t", r#"{{ disk (dict "size" "big") }}"#, &data).unwrap_err();
    assert_eq!(bad.field.as_deref(), Some("disk.size"), "{bad}");
    // At dispatch, with the machine's disks.
    let disks = vec![disk("vda", 10, true, "virtio", Some("small")), disk("vdb", 200, false, "virtio", Some("big"))];
    let known = DiskContext { disks: Some(&disks), root_disk: None };
    let empty = json!({"actions": {}});
    assert_eq!(render_with_disks("t", &deferred, &empty, known).unwrap(), "/dev/disk/by-id/virtio-big");
    assert_eq!(render_with_disks("t", &root_deferred, &empty, known).unwrap(), "DEST=/dev/disk/by-id/virtio-big");
    let two =
        render_with_disks("t", r#"{{ disk (fromJson "{\"transport\":\"virtio\"}") }}"#, &empty, known).unwrap_err();
    assert!(two.message.contains("matches 2 disks"), "{two}");
    // What `kiln plan` reads back from the rendered text.
    let odd = hint(json!({"serial": "a\"b\\c}} \u{1}", "size": ">= 1GiB"}));
    let odd_deferred = render_with_disks(
        "t",
        "x {{ rootDisk }} y {{ rootDisk }}",
        &data,
        DiskContext { disks: None, root_disk: Some(&odd) },
    )
    .unwrap();
    assert_eq!(crate::template::deferred_disk_hints(&odd_deferred), vec![odd.clone(), odd]);
    assert_eq!(
        crate::template::deferred_disk_hints(&deferred),
        vec![hint(json!({"serial": "big", "rotational": false}))]
    );
    let odd_disks = vec![Disk {
        serial: Some("a\"b\\c}} \u{1}".into()),
        size_bytes: Some(2 << 30),
        ..disk("vdz", 2, true, "virtio", None)
    }];
    let odd_known = DiskContext { disks: Some(&odd_disks), root_disk: None };
    assert_eq!(
        render_with_disks("t", &odd_deferred, &empty, odd_known).unwrap(),
        "x /dev/vdz y /dev/vdz",
        "no by-id name: /dev/NAME"
    );
    // Used as an argument at creation, it is refused (as `.actions` outputs are).
    let arg = render("t", r#"{{ disk (dict "serial" "x") | printf "%s-part1" }}"#, &data).unwrap_err();
    assert!(arg.message.contains("known only when the workflow runs"), "{arg}");
}

#[test]
fn a_hardware_documents_root_disk_is_checked_and_stored() {
    let doc = |root: &str| format!("kind: Hardware\nname: m1\nmacs: [\"52:54:00:00:00:01\"]\nroot_disk: {root}\n");
    let docs = crate::parse_documents("hw.yaml", &doc(r#"{rotational: false, size: ">= 100GiB"}"#)).unwrap();
    let crate::Document::Hardware(hw) = &docs[0] else { panic!("{docs:?}") };
    assert_eq!(hw.root_disk.as_deref(), Some(&hint(json!({"rotational": false, "size": ">= 100GiB"}))));
    let stored = serde_json::to_value(hw).unwrap();
    assert_eq!(stored["root_disk"], json!({"size": ">= 100GiB", "rotational": false}));
    let e = crate::parse_documents("hw.yaml", &doc(r#"{size: "about 1TB"}"#)).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("root_disk.size"), "{e}");
    let e = crate::parse_documents("hw.yaml", &doc("{colour: red}")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("root_disk.colour"), "{e}");
    // Without root_disk, the stored JSON is as before.
    let docs = crate::parse_documents("hw.yaml", "kind: Hardware\nname: m1\nmacs: [\"52:54:00:00:00:01\"]\n").unwrap();
    let crate::Document::Hardware(hw) = &docs[0] else { panic!() };
    assert!(!serde_json::to_string(hw).unwrap().contains("root_disk"));
}
