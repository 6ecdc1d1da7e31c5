use super::*;

fn err(yaml: &str) -> SpecError {
    match parse_documents("f.yaml", yaml) {
        Ok(docs) => panic!("must fail: {docs:?}"),
        Err(e) => e,
    }
}

#[test]
fn parses_all_kinds_in_one_stream() {
    let yaml = "---\nkind: Hardware\nname: m1\nmacs: [\"52-54-00-AB-CD-EF\", \"52:54:00:ab:cd:f0\"]\ndisks: [/dev/sda]\nmetadata: {instance: {id: x, n: 3, tags: [a]}}\n---\n# comment only\n---   \n\n---\napiVersion: kiln.dev/v1\nkind: Template\nname: t\ndata: |\n  version: \"0.1\"\n--- # a comment\nkind: Workflow\nname: w\ntemplate: t\nhardware: m1\nhardwareMap: {device_1: \"52:54:00:AB:CD:EF\", other: not-a-mac}\n";
    let docs = parse_documents("f.yaml", yaml).unwrap();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs.iter().map(Document::kind).collect::<Vec<_>>(), ["Hardware", "Template", "Workflow"]);
    assert_eq!(docs.iter().map(Document::name).collect::<Vec<_>>(), ["m1", "t", "w"]);
    let Document::Hardware(h) = &docs[0] else { panic!() };
    assert_eq!(h.macs, vec!["52:54:00:ab:cd:ef", "52:54:00:ab:cd:f0"], "normalised: lower case, colons");
    assert_eq!(h.agent_id, "52:54:00:ab:cd:ef", "defaults to the first MAC");
    assert_eq!(h.disks, vec!["/dev/sda"]);
    assert_eq!(h.metadata, serde_json::json!({"instance": {"id": "x", "n": 3, "tags": ["a"]}}));
    let Document::Template(t) = &docs[1] else { panic!() };
    assert_eq!(t.data, "version: \"0.1\"\n");
    let Document::Workflow(w) = &docs[2] else { panic!() };
    assert_eq!((w.id.as_str(), w.template.as_str(), w.hardware.as_str()), ("w", "t", "m1"));
    assert_eq!(w.hardware_map["device_1"], "52:54:00:ab:cd:ef");
    assert_eq!(w.hardware_map["other"], "not-a-mac", "only MACs are normalised");
}

#[test]
fn hardware_defaults_and_agent_id() {
    let docs = parse_documents("f", "kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff]\n").unwrap();
    let Document::Hardware(h) = &docs[0] else { panic!() };
    assert_eq!((h.disks.len(), &h.metadata), (0, &serde_json::json!({})));
    let docs = parse_documents(
        "f",
        "kind: Hardware\nname: m\nagent_id: \"AA-BB-CC-DD-EE-01\"\nmacs: [aa:bb:cc:dd:ee:ff]\nmetadata:\n",
    )
    .unwrap();
    let Document::Hardware(h) = &docs[0] else { panic!() };
    assert_eq!(h.agent_id, "aa:bb:cc:dd:ee:01");
    assert_eq!(h.metadata, serde_json::json!({}), "an empty metadata is an empty map");
    let docs = parse_documents("f", "kind: Hardware\nname: m\nagent_id: Rack-4\nmacs: [aa:bb:cc:dd:ee:ff]\n").unwrap();
    assert!(matches!(&docs[0], Document::Hardware(h) if h.agent_id == "rack-4"));
    assert_eq!(parse_mac("AA:bb:CC:dd:EE:ff").as_deref(), Some("aa:bb:cc:dd:ee:ff"));
    for bad in
        ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aabb.ccdd.eeff", "aa:bb:cc:dd:ee:fg", "a:bb:cc:dd:ee:fff"]
    {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
}

#[test]
fn accepts_a_raw_tinkerbell_template() {
    // Unquoted actions are not valid YAML before rendering: detected by text.
    let raw = "version: \"0.1\"\nname: hello_world_workflow  # a comment\nglobal_timeout: 600\ntasks:\n  - name: \"hello world\"\n    worker: {{.device_1}}\n    actions:\n      - name: \"hello_world\"\n        image: hello-world\n        environment:\n          DISK: {{ index .Hardware.Disks 0 }}\n";
    let docs = parse_documents("hello.yaml", raw).unwrap();
    assert_eq!(
        docs,
        vec![Document::Template(TemplateDoc {
            format: crate::TemplateFormat::Tinkerbell,
            ..TemplateDoc::new("hello_world_workflow", raw)
        })]
    );
    // In a stream, each keeps its own exact text.
    let stream = format!(
        "kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff]\n---\n{raw}---\nname: 'quoted'\ntasks: []\nversion: '0.1'\n"
    );
    let docs = parse_documents("f", &stream).unwrap();
    assert_eq!(
        docs[1],
        Document::Template(TemplateDoc {
            format: crate::TemplateFormat::Tinkerbell,
            ..TemplateDoc::new("hello_world_workflow", raw)
        })
    );
    assert!(matches!(&docs[2], Document::Template(t) if t.name == "quoted" && t.data.starts_with("name: 'quoted'\n")));
    let e = err("version: \"0.1\"\ntasks:\n  - name: x\n");
    assert_eq!(e.field.as_deref(), Some("name"));
    assert!(e.message.contains("top-level name"), "{e}");
    // A name kiln cannot use is mapped, as a Tinkerbell object's is.
    let docs = parse_documents("f", "version: \"0.1\"\nname: Hello World\ntasks: []\n").unwrap();
    assert!(matches!(&docs[0], Document::Template(t) if t.name == crate::tinkerbell::kiln_name("Hello World")));
    assert!(crate::tinkerbell::kiln_name("Hello World").starts_with("hello-world-"));
    let (_, warnings) =
        crate::parse_documents_with_warnings("f", "# a raw template\nversion: \"0.1\"\nname: Hello World\ntasks: []\n")
            .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!((warnings[0].field.as_deref(), warnings[0].line), (Some("name"), Some(3)), "{}", warnings[0]);
    assert!(warnings[0].message.contains("\"Hello World\" is \"hello-world-"), "{}", warnings[0]);
    let e = err("version: \"0.1\"\nname: ''\ntasks: []\n");
    assert_eq!(e.field.as_deref(), Some("name"), "{e}");
}

#[test]
fn errors_name_document_line_and_field() {
    let e = err(
        "kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff]\n---\nkind: Hardware\nname: m2\nmacs:\n  - aa:bb:cc:dd:ee:01\n  - x\n",
    );
    assert_eq!(e.object, "f.yaml document 2 (Hardware \"m2\")");
    assert_eq!((e.field.as_deref(), e.line), (Some("macs[1]"), Some(9)), "{e}");
    assert!(e.message.contains("\"x\" is not a MAC address"), "{e}");
    assert_eq!(e.to_string(), "f.yaml document 2 (Hardware \"m2\"), line 9, field macs[1]: \"x\" is not a MAC address");

    for (yaml, field, line, needle) in [
        (
            "kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff]\ncolour: blue\n",
            Some("colour"),
            Some(4),
            "unknown field `colour`",
        ),
        (
            "kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF]\n",
            Some("macs[1]"),
            Some(3),
            "listed twice",
        ),
        ("kind: Hardware\nname: m\nmacs: []\n", Some("macs"), Some(3), "at least one MAC"),
        ("kind: Hardware\nname: m\n", Some("macs"), None, "at least one MAC address is required"),
        (
            "kind: Hardware\nname: m\ninterfaces: [{dhcp: {mac: aa:bb:cc:dd:ee:ff, ip: {adress: x}}}]\n",
            Some("interfaces[0].dhcp.ip.adress"),
            Some(3),
            "unknown field",
        ),
        (
            "kind: Hardware\nname: m\ninterfaces:\n- dhcp:\n    mac: aa:bb\n",
            Some("interfaces[0].dhcp.mac"),
            Some(5),
            "\"aa:bb\" is not a MAC address",
        ),
        (
            "kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff]\ninterfaces:\n- dhcp:\n    uefi: maybe\n",
            Some("interfaces[0].dhcp.uefi"),
            Some(6),
            "must be true or false, not a string",
        ),
        (
            "kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff]\ndisks: [sda]\n",
            Some("disks[0]"),
            Some(4),
            "must be a /dev/ path",
        ),
        (
            "kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff]\ndisks: [/dev/]\n",
            Some("disks[0]"),
            Some(4),
            "must be a /dev/ path",
        ),
        (
            "kind: Hardware\nname: m\nagent_id: \"a b\"\nmacs: [aa:bb:cc:dd:ee:ff]\n",
            Some("agent_id"),
            Some(3),
            "without spaces",
        ),
        ("kind: Hardware\nname: m\nmacs: aa:bb:cc:dd:ee:ff\n", Some("macs"), Some(3), "invalid type"),
        (
            "\n\nkind: Workflow\nname: Bad_Name\ntemplate: t\nhardware: h\n",
            Some("name"),
            Some(4),
            "must be 1-63 of [a-z0-9._-]",
        ),
        ("kind: Workflow\nname: w\ntemplate: t\n", None, Some(1), "missing field `hardware`"),
        (
            "kind: Workflow\nname: w\ntemplate: t\nhardware: h\nhardware_map:\n  Hardware: x\n",
            Some("hardware_map.Hardware"),
            Some(6),
            "reserved",
        ),
        (
            "kind: Workflow\nname: w\ntemplate: t\nhardware: h\nhardwareMap: {actions: x}\n",
            Some("hardware_map.actions"),
            Some(5),
            "reserved",
        ),
        ("kind: Template\nname: t\ndata: \"  \\n\"\n", Some("data"), Some(3), "template source is empty"),
        ("kind: Template\nname: t\n", None, Some(1), "missing field `data`"),
        (
            "kind: Gadget\nname: g\n",
            Some("kind"),
            Some(1),
            "unknown kind \"Gadget\"; expected one of Hardware, Template, Workflow",
        ),
        ("name: g\n", Some("kind"), None, "missing; expected one of"),
        ("kind: [Hardware]\nname: g\n", Some("kind"), Some(1), "must be one of"),
        (
            "apiVersion: tinkerbell.dev/v1\nkind: Template\nname: t\ndata: x\n",
            Some("apiVersion"),
            Some(1),
            "\"tinkerbell.dev/v1\" is not a kiln apiVersion",
        ),
        (
            "apiVersion: 1\nkind: Template\nname: t\ndata: x\n",
            Some("apiVersion"),
            Some(1),
            "1 is not a kiln apiVersion",
        ),
        ("# leading comment\n- a\n- b\n", None, Some(2), "a document must be a mapping"),
    ] {
        let e = err(yaml);
        assert_eq!(e.field.as_deref(), field, "{yaml}: {e}");
        assert_eq!(e.line, line, "{yaml}: {e}");
        assert!(e.message.contains(needle), "{yaml}: {e}");
    }
    let e = err("kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff]\n---\n\nkind: Hardware\nname: [unclosed\n");
    assert_eq!(e.object, "f.yaml document 2", "the name is unknown");
    assert_eq!(e.line, Some(7), "counted across the stream: {e}");
    assert!(!e.message.contains(" at line "), "the line is reported once: {e}");
    let e = err("kind: Workflow\nname: w\ntemplate: t\nhardware: h\nhardware_map: {a: [1]}\n");
    assert_eq!(e.field.as_deref(), Some("hardware_map.a"), "{e}");
}

#[test]
fn splits_the_stream_on_separator_lines_only() {
    let chunks = split_stream("a: 1\n---\nb: |\n  --- not a separator\n  x\n---\t# tab comment\n\n--- \nc: 3");
    let texts: Vec<(&str, usize, usize)> = chunks.iter().map(|c| (c.text, c.offset, c.number)).collect();
    assert_eq!(texts, [("a: 1\n", 0, 1), ("b: |\n  --- not a separator\n  x\n", 2, 2), ("c: 3", 8, 3)]);
    assert!(split_stream("").is_empty());
    assert!(split_stream("---\n# nothing\n---\n").is_empty());
    assert!(parse_documents("f", "---\n---\n").unwrap().is_empty());
    // `---x` is not a separator: a document that is not a mapping.
    assert!(err("---x\n").message.contains("mapping"));
}

#[test]
fn action_definitions() {
    let docs = parse_documents(
        "f",
        "kind: ActionDefinition\nname: d\nimage: reg.io/d:v1\ninput_schema: {type: object}\nresources: {memory: 64Mi}\n",
    )
    .unwrap();
    let Document::ActionDefinition(d) = &docs[0] else { panic!() };
    assert_eq!((d.image.as_str(), d.output_schema.clone()), ("reg.io/d:v1", serde_json::json!({})));
    assert_eq!(d.resources.memory_bytes, Some(64 << 20));
    let e = err("kind: ActionDefinition\nname: d\nimage: Bad Image\n");
    assert_eq!((e.field.as_deref(), e.line), (Some("image"), Some(3)), "{e}");
    let e = err("kind: ActionDefinition\nname: d\nimage: reg.io/d:v1\ninput_schema: {type: 12}\n");
    assert_eq!((e.field.as_deref(), e.line), (Some("input_schema"), Some(4)), "{e}");
}

#[test]
fn never_panics_on_garbage() {
    let valid = "kind: Hardware\nname: m\nmacs: [aa:bb:cc:dd:ee:ff]\n---\nversion: \"0.1\"\nname: t\ntasks:\n  - worker: {{.device_1}}\n---\nkind: Workflow\nname: w\ntemplate: t\nhardware: m\n";
    for i in (0..=valid.len()).filter(|i| valid.is_char_boundary(*i)) {
        let _ = parse_documents("f", &valid[..i]);
        let _ = parse_documents("f", &valid[i..]);
    }
    for garbage in
        ["\u{0}", "{", "[", "&a *a", "*a", "!!binary x", ": :", "kind: Hardware\nname: é\nmacs: [é]", "---\n...\n"]
    {
        let _ = parse_documents("f", garbage);
    }
}

/// Found by the property tests: a chunk between `---` lines that YAML reads
/// as two documents gave an error with neither line nor field, worded as a
/// limitation of the YAML library.
#[test]
fn two_documents_in_one_part_say_where() {
    let e = err("kind: Hardware\nname: m1\nmacs: [\"52:54:00:12:34:56\"]\n---\n\ndefineWorkflow\n: w\ntemplate: t\n");
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("separate documents with a line of just ---"), "{e}");
    let e = err("kind: Workflow\nname: w\n...\nkind: Template\n");
    assert_eq!(e.line, Some(3), "{e}");
}

const HW: &str = "kind: Hardware\nname: n1\nmacs: [\"52:54:00:00:00:01\"]\n";

#[test]
fn hardware_bmc_section_is_checked_and_stored() {
    let docs = parse_documents(
        "f.yaml",
        &format!(
            "{HW}bmc:\n  address: https://10.0.0.5/redfish/v1/Systems/1\n  protocol: Redfish\n  credentials: n1-bmc\n  tls:\n    ca: |\n      -----BEGIN CERTIFICATE-----\n      MIIB\n      -----END CERTIFICATE-----\n"
        ),
    )
    .unwrap();
    let Document::Hardware(h) = &docs[0] else { panic!() };
    let bmc = h.bmc.as_ref().unwrap();
    assert_eq!((bmc.protocol.as_str(), bmc.credentials.as_str(), bmc.insecure), ("redfish", "n1-bmc", false));
    assert!(bmc.tls_ca.as_deref().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    // Without a bmc section the stored JSON has no bmc key (hardware stored
    // before BMCs existed reads back equal).
    let Document::Hardware(plain) = &parse_documents("f.yaml", HW).unwrap()[0] else { panic!() };
    assert!(!serde_json::to_string(plain).unwrap().contains("bmc"));

    let cases = [
        ("  address: 10.0.0.5\n  protocol: snmp\n  credentials: c\n", "bmc.protocol", "redfish or ipmi"),
        ("  address: ftp://10.0.0.5\n  protocol: redfish\n  credentials: c\n", "bmc.address", "http:// or https://"),
        ("  address: https://10.0.0.5\n  protocol: ipmi\n  credentials: c\n", "bmc.address", "not a URL"),
        ("  address: 10.0.0.5\n  protocol: redfish\n  credentials: Bad_Name\n", "bmc.credentials", "BmcSecret"),
        (
            "  address: 10.0.0.5\n  protocol: redfish\n  credentials: c\n  tls: {ca: x, insecure: true}\n",
            "bmc.tls",
            "not both",
        ),
        ("  address: 10.0.0.5\n  protocol: redfish\n  credentials: c\n  tls: {ca: nope}\n", "bmc.tls.ca", "PEM"),
        ("  address: 10.0.0.5\n  protocol: ipmi\n  credentials: c\n  tls: {insecure: true}\n", "bmc.tls", "no TLS"),
        ("  address: 10.0.0.5\n  protocol: redfish\n  credentials: c\n  pasword: x\n", "bmc.pasword", "unknown field"),
    ];
    for (bmc, field, message) in cases {
        let e = err(&format!("{HW}bmc:\n{bmc}"));
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert!(e.message.contains(message), "{e}");
    }
}

#[test]
fn bmc_secret_documents_never_show_the_password() {
    let docs =
        parse_documents("f.yaml", "kind: BmcSecret\nname: n1-bmc\nusername: admin\npassword: hunter2-pw\n").unwrap();
    let Document::BmcSecret(s) = &docs[0] else { panic!() };
    assert_eq!((s.name.as_str(), s.username.as_str(), s.password.as_str()), ("n1-bmc", "admin", "hunter2-pw"));
    assert!(!format!("{docs:?}").contains("hunter2-pw"), "Debug shows the password");
    // A password YAML reads as a number is refused without quoting it.
    let e = err("kind: BmcSecret\nname: s\nusername: admin\npassword: 90210417\n");
    assert_eq!(e.field.as_deref(), Some("password"));
    assert!(!e.to_string().contains("90210417"), "{e}");
    let e = err("kind: BmcSecret\nname: s\nusername: admin\n");
    assert!(e.to_string().contains("password"), "{e}");
}

#[test]
fn workflow_boot_options_parse_and_errors_name_the_field() {
    let wf = |extra: &str| format!("kind: Workflow\nname: w\ntemplate: t\nhardware: m1\n{extra}");
    let parse = |extra: &str| match parse_documents("f.yaml", &wf(extra)).unwrap().remove(0) {
        Document::Workflow(w) => w.boot_options,
        other => panic!("{other:?}"),
    };
    assert_eq!(parse(""), None);
    assert_eq!(
        parse("boot_options: {network_boot: pxe, power_cycle: true, after_success: off}\n"),
        Some(BootOptions { network_boot: NetworkBoot::Pxe, power_cycle: true, after_success: AfterSuccess::Off })
    );
    // Network boot implies the power cycle unless it is turned off.
    assert_eq!(
        parse("boot_options: {network_boot: http, after_success: disk}\n"),
        Some(BootOptions { network_boot: NetworkBoot::Http, power_cycle: true, after_success: AfterSuccess::Disk })
    );
    assert_eq!(
        parse("boot_options: {network_boot: iso, after_success: off}\n"),
        Some(BootOptions { network_boot: NetworkBoot::Iso, power_cycle: true, after_success: AfterSuccess::Off })
    );
    let none = parse("boot_options: {}\n").unwrap();
    assert!(none.is_noop(), "{none:?}");
    for (extra, field, says) in [
        ("boot_options: {network_boot: usb}\n", "boot_options.network_boot", "pxe, http, iso or none"),
        ("boot_options: {after_success: reboot}\n", "boot_options.after_success", "none, off or disk"),
        ("boot_options: {power_cycle: maybe}\n", "power_cycle", ""),
        ("boot_options: {netboot: pxe}\n", "netboot", ""),
    ] {
        let e = err(&wf(extra)).to_string();
        assert!(e.contains(field) && e.contains(says), "{extra}: {e}");
    }
}
