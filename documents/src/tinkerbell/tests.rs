use serde_json::json;

use super::kiln_name;
use crate::{Document, parse_documents, parse_documents_with_warnings, render_data};

/// What `kubectl get hardware,template,workflow -o yaml` prints: a List,
/// server-side fields, fields kiln does not know.
const EXPORT: &str = r##"apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: tinkerbell.org/v1alpha1
  kind: Hardware
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"tinkerbell.org/v1alpha1"}
    creationTimestamp: "2024-05-01T10:00:00Z"
    generation: 3
    labels:
      rack: r1
    managedFields:
    - apiVersion: tinkerbell.org/v1alpha1
      manager: kubectl
    name: Machine_One
    namespace: tink-system
    resourceVersion: "4242"
    uid: 0b5c7f8e-0000-0000-0000-000000000001
  spec:
    disks:
    - device: /dev/nvme0n1
    interfaces:
    - dhcp:
        mac: 52:54:00:AA:BB:01
        hostname: one
        ip:
          address: 10.0.0.5
          netmask: 255.255.255.0
          gateway: 10.0.0.1
        name_servers: [1.1.1.1]
        vlan_id: "42"
        uefi: true
        speed: fast
      netboot:
        allowPXE: false
        allowWorkflow: true
    metadata:
      instance:
        operating_system:
          slug: ubuntu_22_04
    userData: "#cloud-config"
    bmcRef:
      apiGroup: bmc.tinkerbell.org
      kind: Machine
      name: bmc-one
    colour: blue
  status:
    state: Ready
- apiVersion: tinkerbell.org/v1alpha1
  kind: Template
  metadata:
    name: ubuntu
    namespace: tink-system
  spec:
    data: |
      version: "0.1"
      name: ubuntu
      tasks:
        - name: os
          worker: "{{.device_1}}"
          actions:
            - name: write
              image: quay.io/tinkerbell/actions/image2disk:v1.0.0
              timeout: 60
              environment:
                DEST_DISK: {{ index .Hardware.Disks 0 }}
                IP: {{ (index .Hardware.Interfaces 0).DHCP.IP.Address }}
                OS: {{ .Hardware.Metadata.Instance.OperatingSystem.Slug }}
                NAME: {{ .hardware.metadata.name }}
  status:
    state: ready
- apiVersion: tinkerbell.org/v1alpha1
  kind: Workflow
  metadata:
    name: wf-1
    namespace: tink-system
  spec:
    templateRef: ubuntu
    hardwareRef: Machine_One
    hardwareMap:
      device_1: 52:54:00:AA:BB:01
      hardware: dropped
    bootOptions:
      toggleAllowNetboot: true
  status:
    state: STATE_SUCCESS
- apiVersion: bmc.tinkerbell.org/v1alpha1
  kind: Machine
  metadata:
    name: bmc-one
"##;

#[test]
fn a_kubectl_export_applies_with_warnings_for_what_kiln_ignores() {
    let (docs, warnings) = parse_documents_with_warnings("export.yaml", EXPORT).unwrap();
    let hw_name = kiln_name("Machine_One");
    assert!(hw_name.starts_with("machine_one-"), "{hw_name}");
    let [Document::Hardware(hw), Document::Template(t), Document::Workflow(w)] = docs.as_slice() else {
        panic!("{docs:?}")
    };
    assert_eq!(hw.id, hw_name);
    // Its body is read as Tinkerbell reads it, for as long as it is stored.
    assert_eq!(t.format, crate::TemplateFormat::Tinkerbell);
    assert_eq!(hw.macs, vec!["52:54:00:aa:bb:01"]);
    assert_eq!(hw.agent_id, "52:54:00:aa:bb:01");
    assert_eq!(hw.disks, vec!["/dev/nvme0n1"]);
    assert!(hw.netboot, "allowPXE is data; kiln boots a machine with a pending workflow");
    assert_eq!(
        hw.object_meta,
        json!({"name": "Machine_One", "namespace": "tink-system", "labels": {"rack": "r1"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"tinkerbell.org/v1alpha1\"}\n"}})
    );
    assert_eq!(t.name, "ubuntu");
    assert_eq!((w.id.as_str(), w.template.as_str(), w.hardware.as_str()), ("wf-1", "ubuntu", hw_name.as_str()));
    assert_eq!(w.hardware_map, [("device_1".to_string(), "52:54:00:aa:bb:01".to_string())].into());

    // Each warning names the field and its line in the file.
    let seen: Vec<(String, Option<usize>)> =
        warnings.iter().map(|w| (w.field.clone().unwrap_or_default(), w.line)).collect();
    let line = |needle: &str| EXPORT.lines().position(|l| l.contains(needle)).map(|i| i + 1);
    for (field, needle) in [
        ("items[0].metadata.name", "name: Machine_One"),
        ("items[0].spec.interfaces[0].dhcp.speed", "speed: fast"),
        ("items[0].spec.colour", "colour: blue"),
        ("items[2].spec.hardwareMap.hardware", "hardware: dropped"),
        ("items[2].spec.bootOptions", "bootOptions:"),
        ("items[3].apiVersion", "apiVersion: bmc.tinkerbell.org"),
    ] {
        assert!(
            seen.contains(&(field.to_string(), line(needle))),
            "no warning {field} at {:?}: {seen:?}",
            line(needle)
        );
    }
    // The seventh: the Hardware's bmcRef names a Machine kiln could not use.
    assert!(warnings.iter().any(|w| w.message.contains("names Machine \"bmc-one\"")), "{warnings:#?}");
    assert_eq!(warnings.len(), 7, "server-side fields and status are ignored silently: {warnings:#?}");
    // A warning reads like an error: object, line, field, message.
    let speed = warnings.iter().find(|w| w.field.as_deref() == Some("items[0].spec.interfaces[0].dhcp.speed")).unwrap();
    assert!(speed.to_string().contains("unknown field, ignored"), "{speed}");
    // parse_documents gives the same documents.
    assert_eq!(parse_documents("export.yaml", EXPORT).unwrap(), docs);
}

#[test]
fn the_template_sees_tinkerbells_views() {
    let (docs, _) = parse_documents_with_warnings("export.yaml", EXPORT).unwrap();
    let [Document::Hardware(hw), Document::Template(t), Document::Workflow(w)] = docs.as_slice() else { panic!() };
    let plan = crate::plan_workflow(t, w, hw, &Default::default()).unwrap();
    let env = &plan.actions[0].environment;
    assert_eq!(env["DEST_DISK"], "/dev/nvme0n1");
    assert_eq!(env["IP"], "10.0.0.5");
    assert_eq!(env["OS"], "ubuntu_22_04");
    assert_eq!(env["NAME"], "Machine_One", "the Kubernetes name, not kiln's");
    let data = render_data(w, hw);
    let iface = &data["Hardware"]["Interfaces"][0];
    assert_eq!(iface["DHCP"]["VLANID"], "42");
    assert_eq!(iface["DHCP"]["UEFI"], true);
    assert_eq!(iface["DHCP"]["TimeServers"], json!([]), "an unset slice is empty, as Go's nil slice prints");
    assert_eq!(iface["DHCP"]["IP"]["Family"], 0);
    assert_eq!(iface["Netboot"]["AllowPXE"], false);
    assert_eq!(iface["Netboot"]["IPXE"], json!(null), "an unset pointer is nil");
    assert_eq!(iface["MAC"], "52:54:00:aa:bb:01", "kiln's earlier .MAC stays");
    assert_eq!(data["Hardware"]["UserData"], "#cloud-config");
    assert_eq!(data["Hardware"]["Metadata"]["Instance"]["Hostname"], "");
    assert_eq!(data["Hardware"]["Metadata"]["Facility"], json!(null));
    let spec = &data["hardware"]["spec"];
    assert_eq!(spec["interfaces"][0]["dhcp"]["uefi"], true);
    assert!(spec["interfaces"][0]["netboot"].get("allowPXE").is_some(), "a *bool false is kept");
    assert!(spec.get("colour").is_none(), "unknown fields are dropped, as the API server does");
    assert_eq!(spec["auto"], json!({}), "Go's omitempty keeps an empty struct");
    assert_eq!(spec["bmcRef"], json!({"apiGroup": "bmc.tinkerbell.org", "kind": "Machine", "name": "bmc-one"}));
    assert_eq!(data["hardware"]["metadata"]["namespace"], "tink-system");
    assert_eq!(data["references"], json!({}));
}

#[test]
fn kiln_hardware_takes_tinkerbell_fields_strictly() {
    let yaml = "kind: Hardware\nname: m\ninterfaces:\n- dhcp:\n    mac: 52:54:00:00:00:02\n    ip: {address: 10.0.0.9}\n\
                macs: [52:54:00:00:00:01]\nuser_data: hello\ntinkerbell_metadata:\n  instance: {hostname: m}\n\
                bmc_ref: {kind: Machine, name: b}\nmetadata: {rack: r2}\n";
    let docs = parse_documents("f", yaml).unwrap();
    let Document::Hardware(hw) = &docs[0] else { panic!() };
    assert_eq!(hw.macs, vec!["52:54:00:00:00:01", "52:54:00:00:00:02"], "listed MACs first, then the interfaces'");
    let w = crate::WorkflowDoc {
        id: "w".into(),
        template: "t".into(),
        hardware: "m".into(),
        hardware_map: Default::default(),
        boot_options: None,
    };
    let data = render_data(&w, hw);
    assert_eq!(data["Hardware"]["Interfaces"][0]["DHCP"]["IP"]["Address"], "10.0.0.9");
    assert_eq!(data["Hardware"]["UserData"], "hello");
    assert_eq!(data["Hardware"]["Metadata"]["Instance"]["Hostname"], "m");
    assert_eq!(data["Hardware"]["Metadata"]["rack"], "r2", "kiln's own metadata keys stay");
    assert_eq!(data["hardware"]["metadata"], json!({"rack": "r2", "name": "m"}));
    assert_eq!(data["hardware"]["spec"]["bmcRef"], json!({"apiGroup": null, "kind": "Machine", "name": "b"}));
    // Unknown fields in kiln's own document are errors.
    let e = parse_documents(
        "f",
        "kind: Hardware\nname: m\ninterfaces:\n- dhcp:\n    mac: 52:54:00:00:00:02\n    colour: x\n",
    )
    .unwrap_err();
    assert_eq!((e.field.as_deref(), e.line), (Some("interfaces[0].dhcp.colour"), Some(6)), "{e}");
    assert_eq!(e.message, "unknown field");
}

#[test]
fn kiln_hardware_without_interfaces_is_seen_as_one_with_them() {
    let docs =
        parse_documents("f", "kind: Hardware\nname: m\nmacs: [52:54:00:00:00:01]\ndisks: [/dev/sda]\nnetboot: false\n")
            .unwrap();
    let Document::Hardware(hw) = &docs[0] else { panic!() };
    let w = crate::WorkflowDoc {
        id: "w".into(),
        template: "t".into(),
        hardware: "m".into(),
        hardware_map: Default::default(),
        boot_options: None,
    };
    let data = render_data(&w, hw);
    assert_eq!(data["Hardware"]["Interfaces"][0]["DHCP"]["MAC"], "52:54:00:00:00:01");
    assert_eq!(data["Hardware"]["Interfaces"][0]["Netboot"]["AllowPXE"], false);
    assert_eq!(data["hardware"]["spec"]["disks"], json!([{"device": "/dev/sda"}]));
    // kiln's earlier keys.
    assert_eq!(data["Hardware"]["MACs"], json!(["52:54:00:00:00:01"]));
    assert_eq!(data["Hardware"]["ID"], "m");
    assert_eq!(data["hardware"]["macs"], json!(["52:54:00:00:00:01"]));
    assert_eq!(data["hardware"]["id"], "m");
}

#[test]
fn names_are_mapped_never_refused() {
    assert_eq!(kiln_name("node-1"), "node-1");
    assert_eq!(kiln_name("a.b-c_d"), "a.b-c_d");
    let long = "n".repeat(100);
    let mapped = kiln_name(&long);
    assert_eq!(mapped.len(), 63);
    assert!(mapped.starts_with(&"n".repeat(54)));
    assert_ne!(kiln_name(&"n".repeat(101)), mapped, "long names sharing a prefix stay apart");
    assert!(kiln_name("Upper").starts_with("upper-"));
    assert_ne!(kiln_name("Upper"), kiln_name("upper"));
    for name in ["-x", "UPPER CASE/with:odd*chars", &long, "é"] {
        assert!(crate::documents::valid_name(&kiln_name(name)), "{name} -> {}", kiln_name(name));
    }
}

#[test]
fn what_kiln_cannot_take_is_an_error_naming_the_field() {
    let err = |yaml: &str| parse_documents_with_warnings("f", yaml).unwrap_err();
    let hw = "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata:\n  name: m\nspec:\n";
    let e = err(&format!("{hw}  interfaces:\n  - dhcp:\n      uefi: maybe\n      mac: 52:54:00:00:00:01\n"));
    assert_eq!((e.field.as_deref(), e.line), (Some("spec.interfaces[0].dhcp.uefi"), Some(8)), "{e}");
    let e = err(&format!("{hw}  interfaces:\n  - dhcp:\n      mac: nope\n"));
    assert_eq!((e.field.as_deref(), e.line), (Some("spec.interfaces[0].dhcp.mac"), Some(8)), "{e}");
    let e = err(&format!("{hw}  disks: [{{device: /dev/sda}}]\n"));
    assert!(e.message.contains("dhcp.mac"), "kiln needs a MAC to know the machine: {e}");
    let e = err("apiVersion: tinkerbell.org/v1alpha1\nkind: Template\nmetadata:\n  name: t\nspec: {}\n");
    assert_eq!(e.field.as_deref(), Some("spec.data"), "{e}");
    let e = err("apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n  templateRef: t\n");
    assert_eq!(e.field.as_deref(), Some("spec.hardwareRef"), "{e}");
    let e = err("apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {}\nspec: {}\n");
    assert_eq!(e.field.as_deref(), Some("metadata.name"), "{e}");
}

/// A Tinkerbell Hardware's bmcRef names a Rufio Machine of the same apply,
/// whose authSecretRef names a Kubernetes Secret: they become the
/// Hardware's bmc: section and a BmcSecret.
#[test]
fn rufio_machines_and_secrets_give_hardware_its_bmc() {
    let yaml = r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata: {name: m1}
spec:
  bmcRef: {apiGroup: bmc.tinkerbell.org, kind: Machine, name: bmc-m1}
  interfaces: [{dhcp: {mac: "52:54:00:00:00:01"}}]
---
apiVersion: bmc.tinkerbell.org/v1alpha1
kind: Machine
metadata: {name: bmc-m1, namespace: tink-system}
spec:
  connection:
    host: 10.0.0.5
    port: 443
    insecureTLS: true
    authSecretRef: {name: BMC_Creds, namespace: tink-system}
---
apiVersion: v1
kind: Secret
metadata: {name: BMC_Creds}
type: kubernetes.io/basic-auth
data: {username: YWRtaW4=, password: aHVudGVyMg==}
---
apiVersion: bmc.tinkerbell.org/v1alpha1
kind: Machine
metadata: {name: ipmi-m2}
spec:
  connection: {host: 10.0.0.6, port: 623, authSecretRef: {name: other}}
---
apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata: {name: m3}
spec:
  bmcRef: {kind: Machine, name: missing}
  interfaces: [{dhcp: {mac: "52:54:00:00:00:03"}}]
"#;
    let (docs, warnings) = parse_documents_with_warnings("f.yaml", yaml).unwrap();
    let Document::Hardware(m1) = &docs[0] else { panic!("{docs:?}") };
    let bmc = m1.bmc.as_ref().expect("m1 has a BMC");
    assert_eq!((bmc.address.as_str(), bmc.protocol.as_str(), bmc.insecure), ("https://10.0.0.5:443", "redfish", true));
    assert_eq!(bmc.credentials, kiln_name("BMC_Creds"));
    let Document::BmcSecret(secret) = docs.last().unwrap() else { panic!("{docs:?}") };
    assert_eq!(
        (secret.name.as_str(), secret.username.as_str(), secret.password.as_str()),
        (bmc.credentials.as_str(), "admin", "hunter2")
    );
    let Document::Hardware(m3) = &docs[1] else { panic!("{docs:?}") };
    assert!(m3.bmc.is_none());
    assert!(warnings.iter().any(|w| w.message.contains("Machine \"missing\"")), "{warnings:?}");
    // IPMI at 623: host:port, no TLS.
    let ipmi = yaml.replace("name: bmc-m1}", "name: ipmi-m2}");
    let (docs, _) = parse_documents_with_warnings("f.yaml", &ipmi).unwrap();
    let Document::Hardware(m1) = &docs[0] else { panic!() };
    let bmc = m1.bmc.as_ref().unwrap();
    assert_eq!((bmc.address.as_str(), bmc.protocol.as_str(), bmc.insecure), ("10.0.0.6:623", "ipmi", false));
    // A Secret with a username and no password is an error naming the
    // field; one that no Machine names is ignored with a warning.
    let err = parse_documents("f.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {username: YQ==}\n")
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("data.password"), "{err}");
    let lone = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {username: a, password: b}\n";
    let (docs, warnings) = parse_documents_with_warnings("f.yaml", lone).unwrap();
    assert!(docs.is_empty() && warnings[0].message.contains("no Rufio Machine"), "{warnings:?}");
}

#[test]
fn tinkerbell_boot_options_map_onto_kilns() {
    let wf = |options: &str| {
        format!(
            "apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {{name: wf-1}}\nspec:\n  templateRef: t\n  hardwareRef: m1\n  bootOptions:\n{options}"
        )
    };
    let (docs, warnings) =
        parse_documents_with_warnings("w.yaml", &wf("    toggleAllowNetboot: true\n    bootMode: netboot\n")).unwrap();
    let [Document::Workflow(w)] = docs.as_slice() else { panic!("{docs:?}") };
    assert_eq!(
        w.boot_options,
        Some(crate::BootOptions {
            network_boot: crate::NetworkBoot::Pxe,
            power_cycle: true,
            after_success: crate::AfterSuccess::None
        })
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let (docs, warnings) =
        parse_documents_with_warnings("w.yaml", &wf("    bootMode: iso\n    isoURL: http://x/hook.iso\n")).unwrap();
    let [Document::Workflow(w)] = docs.as_slice() else { panic!("{docs:?}") };
    assert_eq!(w.boot_options.map(|o| (o.network_boot, o.power_cycle)), Some((crate::NetworkBoot::Iso, true)));
    assert!(warnings.len() == 1 && warnings[0].message.contains("kiln builds the machine's hook ISO"), "{warnings:?}");
    for (options, field, says) in [
        ("    bootMode: floppy\n", "spec.bootOptions.bootMode", "must be netboot or iso"),
        ("    toggleAllowNetboot: yes please\n", "spec.bootOptions.toggleAllowNetboot", "true or false"),
    ] {
        let e = parse_documents("w.yaml", &wf(options)).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(says), "{options}: {e}");
    }
}
