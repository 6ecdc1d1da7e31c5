use super::*;

/// The shape of Tinkerbell's playground Ubuntu template, with hardware
/// values. Line numbers below refer to this text.
const UBUNTU: &str = r#"version: "0.1"
name: ubuntu_provisioning
global_timeout: 1800
tasks:
  - name: "os-installation"
    worker: "{{.device_1}}"
    volumes:
      - /dev:/dev
      - /dev/console:/dev/console
      - /lib/firmware:/lib/firmware:ro
    environment:
      MIRROR_HOST: 10.1.1.11
    actions:
      - name: "stream-ubuntu-image"
        image: quay.io/tinkerbell-actions/image2disk:v1.0.0
        timeout: 600
        environment:
          DEST_DISK: {{ index .Hardware.Disks 0 }}
          IMG_URL: "http://10.1.1.11:8080/focal.raw.gz"
          COMPRESSED: true
      - name: "write-netplan"
        image: quay.io/tinkerbell-actions/writefile:v1.0.0
        timeout: 90
        environment:
          DEST_DISK: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
          DEST_PATH: /etc/netplan/config.yaml
          UID: 0
          MODE: 0644
      - name: "kexec-ubuntu"
        image: quay.io/tinkerbell-actions/kexec:v1.0.0
        timeout: 90
        pid: host
        volumes:
          - /dev/console:/dev/console:rw
        environment:
          BLOCK_DEVICE: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
"#;

/// Tinkerbell's playground example as an operator would apply it: a
/// `kind: Template` document wrapping the template text.
const PLAYGROUND: &str = r#"kind: Template
name: ubuntu
data: |
  version: "0.1"
  name: ubuntu_provisioning
  global_timeout: 1800
  tasks:
    - name: "os-installation"
      worker: "{{.device_1}}"
      volumes:
        - /dev:/dev
        - /dev/console:/dev/console
        - /lib/firmware:/lib/firmware:ro
      actions:
        - name: "stream-ubuntu-image"
          image: quay.io/tinkerbell-actions/image2disk:v1.0.0
          timeout: 600
          environment:
            DEST_DISK: {{ index .Hardware.Disks 0 }}
            IMG_URL: "http://10.1.1.11:8080/jammy-server-cloudimg-amd64.raw.gz"
            COMPRESSED: true
        - name: "install-openssl"
          image: quay.io/tinkerbell-actions/cexec:v1.0.0
          timeout: 90
          environment:
            BLOCK_DEVICE: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
            FS_TYPE: ext4
            CHROOT: y
            DEFAULT_INTERPRETER: "/bin/sh -c"
            CMD_LINE: "apt -y update && apt -y install openssl"
        - name: "write-netplan"
          image: quay.io/tinkerbell-actions/writefile:v1.0.0
          timeout: 90
          environment:
            DEST_DISK: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
            FS_TYPE: ext4
            DEST_PATH: /etc/netplan/config.yaml
            CONTENTS: |
              network:
                version: 2
                renderer: networkd
                ethernets:
                  id0:
                    match:
                      macaddress: {{ index .Hardware.MACs 0 }}
                    dhcp4: true
            UID: 0
            GID: 0
            MODE: 0644
            DIRMODE: 0755
        - name: "write-hostname"
          image: quay.io/tinkerbell-actions/writefile:v1.0.0
          timeout: 90
          environment:
            DEST_DISK: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
            FS_TYPE: ext4
            DEST_PATH: /etc/hostname
            CONTENTS: {{ .hardware.metadata.instance.hostname }}
            {{- if .hardware.metadata.instance.tags }}
            TAGS: {{ join "," .hardware.metadata.instance.tags | quote }}
            {{- end }}
        - name: "kexec-ubuntu"
          image: quay.io/tinkerbell-actions/kexec:v1.0.0
          timeout: 90
          pid: host
          environment:
            BLOCK_DEVICE: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
            FS_TYPE: ext4
"#;

fn tpl(data: &str) -> TemplateDoc {
    TemplateDoc::new("ubuntu", data)
}

fn hw() -> HardwareDoc {
    HardwareDoc {
        id: "m1".into(),
        agent_id: "52:54:00:12:34:56".into(),
        macs: vec!["52:54:00:12:34:56".into(), "52:54:00:12:34:57".into()],
        disks: vec!["/dev/nvme0n1".into()],
        metadata: json!({"instance": {"hostname": "m1", "tags": ["a", "b"]}}),
        netboot: true,
        spec: serde_json::Value::Null,
        object_meta: serde_json::Value::Null,
        bmc: None,
        root_disk: None,
    }
}

fn wf() -> WorkflowDoc {
    WorkflowDoc {
        id: "w".into(),
        template: "ubuntu".into(),
        hardware: "m1".into(),
        hardware_map: [("device_1".to_string(), "52:54:00:12:34:56".to_string())].into(),
        boot_options: None,
    }
}

fn none() -> Definitions {
    Definitions::new()
}

fn plan(data: &str) -> Plan {
    plan_workflow(&tpl(data), &wf(), &hw(), &none()).unwrap_or_else(|e| panic!("{e}"))
}

/// The first error: at template apply, else when the workflow is planned.
fn plan_err(data: &str) -> SpecError {
    match check_template(&tpl(data), &none()) {
        Err(e) => e,
        Ok(_) => plan_workflow(&tpl(data), &wf(), &hw(), &none()).expect_err("must fail"),
    }
}

#[test]
fn plans_the_tinkerbell_ubuntu_template() {
    check_template(&tpl(UBUNTU), &none()).unwrap();
    let plan = plan(UBUNTU);
    assert_eq!(plan.template_name, "ubuntu_provisioning");
    assert_eq!(plan.version, "0.1");
    assert_eq!(plan.global_timeout_seconds, Some(1800));
    assert_eq!(plan.actions.len(), 3);
    let a = &plan.actions[0];
    assert_eq!((a.task.as_str(), a.name.as_str()), ("os-installation", "stream-ubuntu-image"));
    assert_eq!(a.worker, "52:54:00:12:34:56");
    assert_eq!(a.image, "quay.io/tinkerbell-actions/image2disk:v1.0.0");
    assert_eq!(a.environment["DEST_DISK"], "/dev/nvme0n1");
    assert_eq!(a.environment["COMPRESSED"], "true");
    assert_eq!(a.environment["MIRROR_HOST"], "10.1.1.11", "task environment merged in");
    assert_eq!(a.timeout_seconds, 600);
    assert_eq!((a.pid.as_str(), a.network.as_str()), ("", ""));
    assert_eq!(plan.actions[1].environment["DEST_DISK"], "/dev/nvme0n1p1");
    assert_eq!(plan.actions[1].environment["MODE"], "0644", "kept as written: no octal surprise");
    assert_eq!(plan.actions[1].environment["UID"], "0");
    let k = &plan.actions[2];
    assert_eq!(k.pid, "host");
    assert_eq!(k.volumes, vec!["/dev:/dev", "/lib/firmware:/lib/firmware:ro", "/dev/console:/dev/console:rw"]);
    assert_eq!(k.timeout_seconds, 90);
    assert_eq!(k.environment["BLOCK_DEVICE"], "/dev/nvme0n1p1");
}

#[test]
fn plans_the_playground_template_document() {
    let docs = crate::parse_documents("ubuntu.yaml", PLAYGROUND).unwrap();
    let crate::Document::Template(t) = &docs[0] else { panic!("{docs:?}") };
    let checked = check_template(t, &none()).unwrap();
    assert_eq!(checked.actions.len(), 5);
    assert_eq!(checked.actions[0].environment["DEST_DISK"], template::PROBE, "hardware values are placeholders");
    let plan = plan_workflow(t, &wf(), &hw(), &none()).unwrap();
    let names: Vec<&str> = plan.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["stream-ubuntu-image", "install-openssl", "write-netplan", "write-hostname", "kexec-ubuntu"]);
    assert!(plan.actions.iter().all(|a| a.worker == "52:54:00:12:34:56" && a.volumes.len() == 3));
    assert_eq!(plan.actions[1].environment["CHROOT"], "y");
    assert_eq!(plan.actions[1].environment["DEFAULT_INTERPRETER"], "/bin/sh -c");
    let netplan = &plan.actions[2].environment;
    assert_eq!(netplan["DIRMODE"], "0755");
    assert!(netplan["CONTENTS"].starts_with("network:\n  version: 2\n"), "{}", netplan["CONTENTS"]);
    assert!(netplan["CONTENTS"].contains("macaddress: 52:54:00:12:34:56\n"), "{}", netplan["CONTENTS"]);
    let hostname = &plan.actions[3].environment;
    assert_eq!((hostname["CONTENTS"].as_str(), hostname["TAGS"].as_str()), ("m1", "a,b"));
    assert_eq!(plan.actions[4].pid, "host");
    assert_eq!(plan.actions[4].timeout_seconds, 90);
}

#[test]
fn template_data_has_tinkerbell_and_kiln_views_of_the_hardware() {
    let data = "version: \"0.1\"\nname: t\ntasks:\n  - name: t\n    worker: \"{{ .Hardware.AgentID }}\"\n    actions:\n      - name: a\n        image: reg.io/a:v1\n        environment:\n          ID: \"{{ .Hardware.ID }}/{{ .hardware.id }}/{{ .workflow.id }}\"\n          MAC: \"{{ (index .Hardware.Interfaces 1).MAC }}\"\n";
    // Field access on a parenthesised value, as Tinkerbell's docs write it.
    assert!(check_template(&tpl(data), &none()).is_ok());
    let plan = plan(data);
    let a = &plan.actions[0];
    assert_eq!(a.worker, "52:54:00:12:34:56");
    assert_eq!(a.environment["ID"], "m1/m1/w");
    assert_eq!(a.environment["MAC"], "52:54:00:12:34:57");
    let data = data.replace("(index .Hardware.Interfaces 1).MAC", "range .Hardware.Interfaces }}{{ .MAC }} {{ end");
    assert_eq!(
        plan_workflow(&tpl(&data), &wf(), &hw(), &none()).unwrap().actions[0].environment["MAC"],
        "52:54:00:12:34:56 52:54:00:12:34:57 "
    );
}

#[test]
fn values_are_strings_as_written() {
    let data = "version: 0.10\nname: t\ntasks:\n  - name: t\n    worker: \"52:54:00:AB:CD:EF\"\n    environment: {A: 1.10, B: ~, C: \"\", D: yes, E: 1e3}\n    actions:\n      - name: a\n        image: busybox\n        command: [sleep, 10]\n        environment: {A: override, F: -0}\n        on-failure: [/bin/sh, -c, echo failed]\n        on-timeout: [echo, late]\n";
    let plan = plan(data);
    assert_eq!(plan.version, "0.10");
    assert_eq!(plan.global_timeout_seconds, None);
    let a = &plan.actions[0];
    assert_eq!(a.worker, "52:54:00:ab:cd:ef", "a MAC worker is lower-cased");
    assert_eq!(a.image, "docker.io/library/busybox:latest", "canonical image reference");
    assert_eq!(a.command, ["sleep", "10"]);
    let env: Vec<(&str, &str)> = a.environment.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env, [("A", "override"), ("B", ""), ("C", ""), ("D", "yes"), ("E", "1e3"), ("F", "-0")]);
    assert_eq!(a.on_failure, ["/bin/sh", "-c", "echo failed"]);
    assert_eq!(a.on_timeout, ["echo", "late"]);
    assert_eq!(a.timeout_seconds, DEFAULT_ACTION_TIMEOUT_SECONDS);
}

#[test]
fn tasks_and_actions_flatten_in_order_with_merged_settings() {
    let data = "version: \"0.1\"\nname: t\ntasks:\n  - name: one\n    worker: w1\n    volumes: [\"/a:/x\", \"/b:/y/\"]\n    environment: {K: task, T: t}\n    actions:\n      - name: a\n        image: reg.io/a:v1\n        volumes: [\"/c:/y:ro\"]\n        environment: {K: action}\n        namespaces: {pid: host, network: host}\n      - name: b\n        image: reg.io/b:v1\n  - name: two\n    worker: w2\n    actions:\n      - name: a\n        image: reg.io/a:v1\n        pid: host\n        namespaces: {pid: host}\n";
    let plan = plan(data);
    let ids: Vec<(&str, &str, &str)> =
        plan.actions.iter().map(|a| (a.task.as_str(), a.name.as_str(), a.worker.as_str())).collect();
    assert_eq!(ids, [("one", "a", "w1"), ("one", "b", "w1"), ("two", "a", "w2")]);
    let a = &plan.actions[0];
    assert_eq!(a.volumes, ["/a:/x", "/c:/y:ro"], "the action's volume replaces the task's for the same target");
    assert_eq!((a.environment["K"].as_str(), a.environment["T"].as_str()), ("action", "t"));
    assert_eq!((a.pid.as_str(), a.network.as_str()), ("host", "host"));
    assert_eq!(plan.actions[1].volumes, ["/a:/x", "/b:/y/"]);
    assert_eq!(plan.actions[1].environment["K"], "task");
    assert_eq!(plan.actions[2].pid, "host");
    assert!(plan.actions[2].volumes.is_empty());
    assert_eq!(plan.field_path(0), "tasks[0].actions[0]");
    assert_eq!(plan.field_path(1), "tasks[0].actions[1]");
    assert_eq!(plan.field_path(2), "tasks[1].actions[0]");
}

#[test]
fn values_from_hardware_are_checked_when_the_workflow_is_planned() {
    let data = UBUNTU
        .replace("timeout: 600", "timeout: {{ .hardware.metadata.timeout }}")
        .replace("image: quay.io/tinkerbell-actions/kexec:v1.0.0", "image: \"{{ .hardware.metadata.image }}\"");
    // Without hardware, the template is fine: those values are unknown.
    let checked = check_template(&tpl(&data), &none()).unwrap();
    assert_eq!(checked.actions[0].timeout_seconds, DEFAULT_ACTION_TIMEOUT_SECONDS);
    assert_eq!(checked.actions[2].image, template::PROBE);
    let with = |metadata: serde_json::Value| {
        let hw = HardwareDoc { metadata, ..hw() };
        plan_workflow(&tpl(&data), &wf(), &hw, &none())
    };
    let plan = with(json!({"timeout": 30, "image": "reg.io/kexec:v2"})).unwrap();
    assert_eq!(plan.actions[0].timeout_seconds, 30);
    assert_eq!(plan.actions[2].image, "reg.io/kexec:v2");
    let err = with(json!({"timeout": "soon", "image": "reg.io/kexec:v2"})).unwrap_err();
    assert_eq!((err.field.as_deref(), err.line), (Some("tasks[0].actions[0].timeout"), Some(16)), "{err}");
    assert!(err.message.contains("expected u64"), "{err}");
    let err = with(json!({"timeout": 0, "image": "reg.io/kexec:v2"})).unwrap_err();
    assert_eq!((err.field.as_deref(), err.line), (Some("tasks[0].actions[0].timeout"), Some(16)), "{err}");
    let err = with(json!({"timeout": 30, "image": "Bad Image"})).unwrap_err();
    assert_eq!((err.field.as_deref(), err.line), (Some("tasks[0].actions[2].image"), Some(31)), "{err}");
    assert!(err.message.contains("invalid image reference \"Bad Image\""), "{err}");
    let err = with(json!({"timeout": 30})).unwrap_err();
    assert_eq!((err.field.as_deref(), err.line), (Some(".hardware.metadata.image"), Some(31)), "{err}");
    assert!(err.message.contains("known keys: name, timeout"), "{err}");
}

/// Every error names the template, the field path, and the template line.
#[test]
fn errors_carry_field_paths_and_lines() {
    let cases: Vec<(String, &str, usize, &str)> = vec![
        (
            UBUNTU.replace("timeout: 600", "timeout: 600\n        retries_please: 3"),
            "tasks[0].actions[0].retries_please",
            17,
            "unknown field `retries_please`",
        ),
        (
            UBUNTU.replace("quay.io/tinkerbell-actions/writefile", "Quay.io/Bad Image"),
            "tasks[0].actions[1].image",
            22,
            "invalid image",
        ),
        (
            UBUNTU.replace("\"write-netplan\"", "\"stream-ubuntu-image\""),
            "tasks[0].actions[1].name",
            21,
            "duplicate name",
        ),
        (UBUNTU.replace("pid: host", "pid: container"), "tasks[0].actions[2].pid", 33, "use \"host\""),
        (
            UBUNTU.replace("timeout: 90\n        pid", "timeout: 0\n        pid"),
            "tasks[0].actions[2].timeout",
            32,
            "more than 0",
        ),
        (
            UBUNTU.replace("timeout: 600", "timeout: soon"),
            "tasks[0].actions[0].timeout",
            16,
            "invalid type: string \"soon\"",
        ),
        (UBUNTU.replace("timeout: 600", "timeout: -5"), "tasks[0].actions[0].timeout", 16, "invalid"),
        (
            UBUNTU.replace("/dev/console:/dev/console:rw", "relative:dst"),
            "tasks[0].actions[2].volumes[0]",
            35,
            "target must be an absolute path",
        ),
        (
            UBUNTU.replace("/dev/console:/dev/console:rw", "/a:/b:rw,bogus"),
            "tasks[0].actions[2].volumes[0]",
            35,
            "unknown option \"bogus\"",
        ),
        (UBUNTU.replace("/dev/console:/dev/console:rw", "/a"), "tasks[0].actions[2].volumes[0]", 35, "SRC:DST"),
        (
            UBUNTU.replace("- /dev/console:/dev/console\n", "- /tmp:/dev/\n"),
            "tasks[0].volumes[1]",
            9,
            "target /dev is mounted twice",
        ),
        (UBUNTU.replace("worker: \"{{.device_1}}\"", "worker: \"\""), "tasks[0].worker", 6, "empty"),
        (UBUNTU.replace("    worker: \"{{.device_1}}\"\n", ""), "tasks[0]", 5, "missing field `worker`"),
        (UBUNTU.replace("worker: \"{{.device_1}}\"\n", ""), "tasks[0]", 6, "did not find expected key"),
        (
            UBUNTU.replace("        image: quay.io/tinkerbell-actions/image2disk:v1.0.0\n", ""),
            "tasks[0].actions[0].image",
            14,
            "missing field `image`",
        ),
        (UBUNTU.replace("global_timeout: 1800", "global_timeout: soon"), "global_timeout", 3, "invalid type"),
        (UBUNTU.replace("global_timeout: 1800", "global_timeout: 0"), "global_timeout", 3, "more than 0"),
        (UBUNTU.replace("version: \"0.1\"", "version: \"\""), "version", 1, "must not be empty"),
        (
            UBUNTU.replace("pid: host", "pid: host\n        namespaces: {network: bridge}"),
            "tasks[0].actions[2].namespaces.network",
            34,
            "use \"host\"",
        ),
        (
            UBUNTU.replace("pid: host", "pid: host\n        namespaces:\n          pid: \"\""),
            "tasks[0].actions[2].namespaces.pid",
            35,
            "contradicts pid",
        ),
        (
            UBUNTU.replace("COMPRESSED: true", "COMPRESSED: {a: 1}"),
            "tasks[0].actions[0].environment.COMPRESSED",
            20,
            "expected a string, number or bool",
        ),
        (
            UBUNTU.replace("COMPRESSED: true", "\"A=B\": x"),
            "tasks[0].actions[0].environment",
            17,
            "invalid variable name \"A=B\"",
        ),
        (UBUNTU.replace("MIRROR_HOST", "\"\""), "tasks[0].environment", 11, "invalid variable name \"\""),
        (
            UBUNTU.replace("\"kexec-ubuntu\"", &format!("\"{}\"", "k".repeat(200))),
            "tasks[0].actions[2].name",
            30,
            "1-199 characters",
        ),
        (
            UBUNTU.replace("image: quay.io/tinkerbell-actions/kexec:v1.0.0", "image: a\n        builtin: reboot"),
            "tasks[0].actions[2]",
            30,
            "exactly one of image, builtin or external",
        ),
        (UBUNTU.replace("name: ubuntu_provisioning", "name: \" \""), "name", 2, "must not be empty"),
        (
            UBUNTU.replace("- name: \"os-installation\"", "- name: os-installation\n    colour: blue"),
            "tasks[0].colour",
            6,
            "unknown field `colour`",
        ),
        (UBUNTU.replace(".device_1", ".device_9"), ".device_9", 6, "no value for \".device_9\""),
        (
            UBUNTU.replace("index .Hardware.Disks 0 }}\n          IMG", "index .Hardware.Disks 3 }}\n          IMG"),
            ".Hardware.Disks[3]",
            18,
            "out of range",
        ),
        (UBUNTU.replace("formatPartition", "fmtPartition"), "", 25, "unsupported function \"fmtPartition\""),
    ];
    for (data, field, line, needle) in cases {
        let err = plan_err(&data);
        assert_eq!(err.object, "template \"ubuntu\"", "{err}");
        assert_eq!(err.field.as_deref().unwrap_or(""), field, "{err}");
        assert_eq!(err.line, Some(line), "{field}: {err}");
        assert!(err.message.contains(needle), "{field}: {err}");
        let shown = err.to_string();
        assert!(shown.contains(&format!("line {line}")), "{shown}");
        if !field.is_empty() {
            assert!(shown.contains(&format!("field {field}")), "{shown}");
        }
    }
    let err = plan_err("version: \"0.1\"\nname: x\ntasks: []\n");
    assert_eq!((err.field.as_deref(), err.line), (Some("tasks"), Some(3)), "{err}");
    let err = plan_err("version: \"0.1\"\nname: x\ntasks:\n  - name: t\n    worker: w\n    actions: []\n");
    assert_eq!((err.field.as_deref(), err.line), (Some("tasks[0].actions"), Some(6)), "{err}");
    let err = plan_err("name: x\ntasks: []\n");
    assert!(err.message.contains("missing field `version`"), "{err}");
    let err = plan_err("just text\n");
    assert!(err.message.contains("invalid type"), "{err}");
}

#[test]
fn lines_point_into_the_template_not_the_rendered_output() {
    // The range renders three tasks from six template lines; the broken
    // action after it is on template line 16 but much later in the output.
    let data = "version: \"0.1\"\nname: t\ntasks:\n{{- range $i, $d := .hardware.metadata.disks }}\n  - name: \"wipe-{{ $i }}\"\n    worker: \"{{ $.device_1 }}\"\n    actions:\n      - name: wipe\n        image: reg.io/wipe:v1\n        environment: {DISK: \"{{ $d }}\"}\n{{- end }}\n  - name: final\n    worker: \"{{ .device_1 }}\"\n    actions:\n      - name: write\n        image: \"{{ .hardware.metadata.image }}\"\n        note: {{ .hardware.metadata.note }}\n";
    let metadata = json!({"disks": ["/dev/sda", "/dev/sdb", "/dev/sdc"], "image": "Bad Image", "note": "fine"});
    let hw = HardwareDoc { metadata, ..hw() };
    let without_note = data.replace("        note: {{ .hardware.metadata.note }}\n", "");
    let err = plan_workflow(&tpl(&without_note), &wf(), &hw, &none()).unwrap_err();
    assert_eq!((err.field.as_deref(), err.line), (Some("tasks[3].actions[0].image"), Some(16)), "{err}");
    let metadata = json!({"disks": ["/dev/sda", "/dev/sdb", "/dev/sdc"], "image": "reg.io/w:v1", "note": "fine"});
    let hw = HardwareDoc { metadata, ..hw };
    let err = plan_workflow(&tpl(data), &wf(), &hw, &none()).unwrap_err();
    assert_eq!((err.field.as_deref(), err.line), (Some("tasks[3].actions[0].note"), Some(17)), "{err}");
    // A value that breaks the YAML: the line is the template's too.
    let metadata = json!({"disks": ["/dev/sda", "/dev/sdb", "/dev/sdc"], "image": "reg.io/w:v1", "note": "a: b: c"});
    let hw = HardwareDoc { metadata, ..hw };
    let err = plan_workflow(&tpl(&data.replace("note:", "timeout:")), &wf(), &hw, &none()).unwrap_err();
    assert_eq!(err.line, Some(17), "{err}");
}

#[test]
fn resources_and_retries() {
    let data = UBUNTU.replace(
        "timeout: 600\n",
        "timeout: 600\n        retries: 2\n        retry_backoff: 1\n        terminal: false\n        resources: {memory: 256Mi, cpus: 0.5, pids: 64, gpus: all}\n",
    );
    let plan = plan(&data);
    assert_eq!(plan.field_path(2), "tasks[0].actions[2]");
    let a = &plan.actions[0];
    assert_eq!((a.retries, a.retry_backoff_seconds, a.terminal), (2, 1, false));
    assert_eq!(
        a.resources,
        Resources {
            memory_bytes: Some(256 << 20),
            nano_cpus: Some(500_000_000),
            pids: Some(64),
            gpus: Some("all".into())
        }
    );
    assert_eq!(plan.actions[1].resources, Resources::default());
    assert_eq!(parse_memory("2G"), Some(2_000_000_000));
    assert_eq!(parse_memory("12 parsecs"), None);
    for (bad, field) in [
        ("{memory: lots}", "resources.memory"),
        ("{memory: 1Ki}", "resources.memory"),
        ("{cpus: -1}", "resources.cpus"),
        ("{pids: 0}", "resources.pids"),
        ("{gpus: some}", "resources.gpus"),
        ("{disk: 1G}", "resources.disk"),
    ] {
        let data = UBUNTU.replace("timeout: 600\n", &format!("timeout: 600\n        resources: {bad}\n"));
        let err = plan_err(&data);
        assert_eq!(err.field.as_deref(), Some(format!("tasks[0].actions[0].{field}").as_str()), "{err}");
        assert_eq!(err.line, Some(17), "{err}");
    }
    let err = plan_err(&UBUNTU.replace("timeout: 600\n", "timeout: 600\n        retries: 101\n"));
    assert_eq!((err.field.as_deref(), err.line), (Some("tasks[0].actions[0].retries"), Some(17)), "{err}");
    let builtin = UBUNTU.replace("image: quay.io/tinkerbell-actions/kexec:v1.0.0", "builtin: reboot");
    let k = &plan_workflow(&tpl(&builtin), &wf(), &hw(), &none()).unwrap().actions[2];
    assert_eq!((k.image.as_str(), k.builtin.as_str(), k.terminal), ("", "reboot", true));
    let err = plan_err(&UBUNTU.replace("image: quay.io/tinkerbell-actions/kexec:v1.0.0", "builtin: explode"));
    assert_eq!((err.field.as_deref(), err.line), (Some("tasks[0].actions[2].builtin"), Some(31)), "{err}");
}

fn defs() -> Definitions {
    let yaml = "kind: ActionDefinition\nname: discover\nimage: reg.io/kiln/discover:v1\n\
        input_schema: {type: object, required: [min_gb], properties: {min_gb: {type: integer, minimum: 1}}, additionalProperties: false}\n\
        output_schema: {type: object, required: [disk]}\nresources: {memory: 64Mi}\n";
    let docs = crate::parse_documents("defs", yaml).unwrap();
    let crate::Document::ActionDefinition(d) = &docs[0] else { panic!() };
    [(d.name.clone(), d.clone())].into()
}

#[test]
fn typed_actions_take_their_image_and_validate_their_input() {
    let data = "version: \"0.1\"\nname: t\ntasks:\n  - name: t\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: find\n        use: discover\n        with: {min_gb: 8}\n      - name: write\n        image: reg.io/kiln/w:v1\n        environment: {DISK: \"{{ .actions.find.output.disk }}\"}\n";
    check_template(&tpl(data), &defs()).unwrap();
    let plan = plan_workflow(&tpl(data), &wf(), &hw(), &defs()).unwrap();
    let find = &plan.actions[0];
    assert_eq!(
        (find.image.as_str(), find.definition.as_str(), find.input_json.as_str()),
        ("reg.io/kiln/discover:v1", "discover", "{\"min_gb\":8}")
    );
    assert_eq!(find.resources.memory_bytes, Some(64 << 20));
    assert_eq!(find.output_schema_json, "{\"required\":[\"disk\"],\"type\":\"object\"}");
    assert_eq!(plan.actions[1].environment["DISK"], "{{ .actions.find.output.disk }}", "resolved at dispatch");
    for (bad, field) in [
        ("with: {min_gb: 0}", "tasks[0].actions[0].with.min_gb"),
        ("with: {min_gb: 8, colour: red}", "tasks[0].actions[0].with"),
        ("with: {}", "tasks[0].actions[0].with"),
    ] {
        let err = check_template(&tpl(&data.replace("with: {min_gb: 8}", bad)), &defs()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{bad}: {err}");
        assert_eq!(err.line, Some(9), "{bad}: {err}");
    }
    let err = check_template(&tpl(&data.replace("use: discover", "use: nothing")), &defs()).unwrap_err();
    assert!(err.to_string().contains("no ActionDefinition \"nothing\" (known: discover)"), "{err}");
    let err = check_template(&tpl(&data.replace("use: discover", "use: discover\n        image: x/y:z")), &defs())
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("tasks[0].actions[0].use"));
    let err = check_template(&tpl(&data.replace("        use: discover\n", "")), &defs()).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("tasks[0].actions[0].with"));
}

#[test]
fn field_path_never_panics() {
    let plan = plan(UBUNTU);
    assert_eq!(plan.field_path(7), "tasks[0].actions[7]");
    let empty = Plan { template_name: "t".into(), version: "1".into(), global_timeout_seconds: None, actions: vec![] };
    assert_eq!(empty.field_path(0), "tasks[0].actions[0]");
}

/// Truncated and mangled templates are errors, never panics, both when
/// applied and when planned.
#[test]
fn never_panics_on_broken_templates() {
    let docs = crate::parse_documents("ubuntu.yaml", PLAYGROUND).unwrap();
    let crate::Document::Template(t) = &docs[0] else { panic!() };
    let sources = [UBUNTU, t.data.as_str()];
    let mut inputs: Vec<String> = Vec::new();
    for src in sources {
        for i in (0..=src.len()).filter(|i| src.is_char_boundary(*i)).step_by(3) {
            inputs.push(src[..i].to_string());
        }
        let lines: Vec<&str> = src.lines().collect();
        for skip in 0..lines.len() {
            let mut l = lines.clone();
            l.remove(skip);
            inputs.push(l.join("\n"));
        }
    }
    for input in inputs {
        let _ = check_template(&tpl(&input), &defs());
        let _ = plan_workflow(&tpl(&input), &wf(), &hw(), &defs());
    }
}

/// UBUNTU with an unknown action field (`args:`, line 19), an unknown task
/// field (`foo:`, line 6) and an unknown top-level field (`kind:`, line 2),
/// all of which Tinkerbell ignores.
fn with_unknown_fields() -> String {
    UBUNTU
        .replace("timeout: 600", "timeout: 600\n        args: [\"--force\"]")
        .replace("    worker: \"{{.device_1}}\"", "    foo: bar\n    worker: \"{{.device_1}}\"")
        .replacen("name: ubuntu_provisioning", "kind: ubuntu\nname: ubuntu_provisioning", 1)
}

#[test]
fn a_tinkerbell_template_warns_about_unknown_body_fields_and_plans() {
    let data = with_unknown_fields();
    let lines: Vec<&str> = data.lines().collect();
    assert_eq!((lines[1], lines[6].trim(), lines[18].trim()), ("kind: ubuntu", "foo: bar", "args: [\"--force\"]"));
    let t = TemplateDoc { format: TemplateFormat::Tinkerbell, ..tpl(&data) };
    let expected = [("kind", 2), ("tasks[0].foo", 7), ("tasks[0].actions[0].args", 19)];
    let (checked, warnings) = check_template_with_warnings(&t, &none()).unwrap_or_else(|e| panic!("{e}"));
    let (planned, plan_warnings) =
        plan_workflow_with_warnings(&t, &wf(), &hw(), &none()).unwrap_or_else(|e| panic!("{e}"));
    for w in [&warnings, &plan_warnings] {
        let got: Vec<(&str, usize)> = w.iter().map(|w| (w.field.as_deref().unwrap(), w.line.unwrap())).collect();
        assert_eq!(got, expected, "{w:?}");
        assert!(w.iter().all(|w| w.message.contains("unknown field, ignored") && w.object == "template \"ubuntu\""));
    }
    assert_eq!(
        warnings[2].to_string(),
        "template \"ubuntu\", line 19, field tasks[0].actions[0].args: unknown field, ignored (as Tinkerbell ignores it)"
    );
    // The plan is the one of the template without them.
    assert_eq!(planned, plan(UBUNTU));
    assert_eq!(checked.actions.len(), planned.actions.len());
    // Without unknown fields, no warnings.
    let clean = TemplateDoc { format: TemplateFormat::Tinkerbell, ..tpl(UBUNTU) };
    assert!(plan_workflow_with_warnings(&clean, &wf(), &hw(), &none()).unwrap().1.is_empty());
}

#[test]
fn a_tinkerbell_template_still_fails_on_what_is_wrong() {
    // Leniency is about unknown fields only: a wrong type is still an error.
    let data = with_unknown_fields().replace("timeout: 600", "timeout: soon");
    let t = TemplateDoc { format: TemplateFormat::Tinkerbell, ..tpl(&data) };
    let e = check_template_with_warnings(&t, &none()).unwrap_err();
    assert_eq!((e.field.as_deref(), e.line), (Some("tasks[0].actions[0].timeout"), Some(18)), "{e}");
    assert!(e.message.contains("invalid type: string \"soon\""), "{e}");
}

#[test]
fn a_kiln_template_refuses_unknown_body_fields_as_before() {
    let data = with_unknown_fields();
    // The first unknown field, with serde's `deny_unknown_fields` message.
    let e = plan_err(&data);
    assert_eq!((e.field.as_deref(), e.line), (Some("kind"), Some(2)), "{e}");
    assert_eq!(e.message, "unknown field `kind`, expected one of `version`, `name`, `id`, `global_timeout`, `tasks`");
    let data = data.replacen("kind: ubuntu\n", "", 1);
    let e = plan_err(&data);
    assert_eq!((e.field.as_deref(), e.line), (Some("tasks[0].foo"), Some(6)), "{e}");
    assert_eq!(e.message, "unknown field `foo`, expected one of `name`, `worker`, `volumes`, `environment`, `actions`");
    let data = data.replacen("    foo: bar\n", "", 1);
    for e in [
        plan_err(&data),
        plan_workflow(&tpl(&data), &wf(), &hw(), &none()).unwrap_err(),
        // An unknown field before a type error is the error, as serde
        // stops at the first.
        plan_err(&data.replace("timeout: 90", "timeout: soon")),
    ] {
        assert_eq!(
            e.to_string(),
            "template \"ubuntu\", line 17, field tasks[0].actions[0].args: unknown field `args`, expected one of \
             `name`, `image`, `builtin`, `external`, `use`, `with`, `terminal`, `timeout`, `command`, \
             `environment`, `volumes`, `pid`, `namespaces`, `on-timeout`, `on-failure`, `resources`, `retries`, \
             `retry_backoff`"
        );
    }
    // Inside namespaces:, and resources: (strict for both formats: a kiln
    // extension shared with ActionDefinition).
    let ns = UBUNTU.replace("pid: host", "namespaces: {pid: host, ipc: host}");
    let e = plan_err(&ns);
    assert_eq!(e.message, "unknown field `ipc`, expected `pid` or `network`", "{e}");
    assert_eq!(e.field.as_deref(), Some("tasks[0].actions[2].namespaces.ipc"));
    let tink = |d: &str| TemplateDoc { format: TemplateFormat::Tinkerbell, ..tpl(d) };
    let (_, w) = check_template_with_warnings(&tink(&ns), &none()).unwrap();
    assert_eq!(
        w.iter().map(|w| w.field.as_deref().unwrap()).collect::<Vec<_>>(),
        ["tasks[0].actions[2].namespaces.ipc"]
    );
    let res = UBUNTU.replace("pid: host", "resources: {disk: 1}");
    let e = check_template_with_warnings(&tink(&res), &none()).unwrap_err();
    assert!(e.message.starts_with("unknown field `disk`, expected one of `memory`"), "{e}");
}
