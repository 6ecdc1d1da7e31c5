//! A Tinkerbell user's YAML as it is: a `kubectl get -o yaml` export of
//! Hardware, Template and Workflow (kind: List, server-side fields, a field
//! kiln does not know, also in the template body, a name kiln cannot use
//! directly) applies with `kiln apply`, warns about what it ignores, and
//! runs on the real engine with the values Tinkerbell's template data gives.

use std::time::Duration;

use kiln_tests::{Cluster, has_line, random_mac, stderr, stdout, unique};

#[test]
fn a_tinkerbell_export_applies_and_runs_unchanged() {
    let mut cluster = Cluster::start().expect("start server");
    let mac = random_mac();
    let upper_mac = mac.to_ascii_uppercase();
    let hw = format!("{}_Rack1", unique("Node"));
    let tpl = unique("ubuntu");
    let wf = unique("wf");
    let image = cluster.env.busybox();
    let export = format!(
        r#"apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: tinkerbell.org/v1alpha1
  kind: Hardware
  metadata:
    creationTimestamp: "2024-05-01T10:00:00Z"
    generation: 2
    managedFields:
    - manager: kubectl
      operation: Update
    name: {hw}
    namespace: tink-system
    resourceVersion: "1234"
    uid: 6f1c1a39-0000-4000-8000-000000000001
  spec:
    disks:
    - device: /dev/vda
    interfaces:
    - dhcp:
        arch: x86_64
        hostname: node-1
        ip:
          address: 192.168.2.10
          gateway: 192.168.2.1
          netmask: 255.255.255.0
        mac: "{upper_mac}"
        name_servers: [1.1.1.1, 8.8.8.8]
        uefi: true
        vlan_id: "42"
        link_speed: 25G
      netboot:
        allowPXE: false
        allowWorkflow: true
    metadata:
      instance:
        hostname: node-1
        operating_system:
          slug: ubuntu_22_04
    userData: "hello from userData"
  status:
    state: Ready
- apiVersion: tinkerbell.org/v1alpha1
  kind: Template
  metadata:
    name: {tpl}
    namespace: tink-system
  spec:
    data: |
      version: "0.1"
      name: {tpl}
      global_timeout: 600
      tasks:
        - name: "os installation"
          worker: "{{{{.device_1}}}}"
          environment:
            IP: "{{{{ (index .Hardware.Interfaces 0).DHCP.IP.Address }}}}/{{{{ netmaskToPrefixLength (index .Hardware.Interfaces 0).DHCP.IP.Netmask }}}}"
          actions:
            - name: "show data"
              image: {image}
              timeout: 60
              args: ["--verbose"]
              command: ["sh", "-c", "echo ip=$IP; echo os=$OS; echo disk=$DISK; echo name=$NAME; echo vlan=$VLAN; echo dns=$DNS; echo user=$USERDATA; echo img=$IMG"]
              environment:
                OS: {{{{ .Hardware.Metadata.Instance.OperatingSystem.Slug }}}}
                DISK: {{{{ formatPartition (index .Hardware.Disks 0) 1 }}}}
                NAME: {{{{ .hardware.metadata.name }}}}
                VLAN: "{{{{ (index .hardware.spec.interfaces 0).dhcp.vlan_id }}}}"
                DNS: {{{{ join "," (index .Hardware.Interfaces 0).DHCP.NameServers }}}}
                USERDATA: {{{{ .Hardware.UserData | quote }}}}
                IMG: {{{{ .img_url }}}}
- apiVersion: tinkerbell.org/v1alpha1
  kind: Workflow
  metadata:
    name: {wf}
    namespace: tink-system
  spec:
    templateRef: {tpl}
    hardwareRef: {hw}
    hardwareMap:
      device_1: "{upper_mac}"
      img_url: http://10.1.1.1/jammy.raw.gz
    bootOptions:
      toggleAllowNetboot: true
  status:
    state: STATE_PENDING
"#
    );
    // kiln plan shows the template body's warning too.
    let line_of = |needle: &str| export.lines().position(|l| l.contains(needle)).expect("needle") + 1;
    let body_line = line_of("args: [") - line_of("version: \"0.1\"") + 1;
    let args_warning = format!(
        "warning: template \"{tpl}\", line {body_line}, field tasks[0].actions[0].args: unknown field, ignored"
    );
    let planned = cluster.kiln_with_stdin(&["plan", "-f", "-"], Some(&export));
    assert!(planned.status.success(), "plan: {}{}", stdout(&planned), stderr(&planned));
    assert!(stdout(&planned).contains("show data"), "{}", stdout(&planned));
    assert!(stderr(&planned).lines().any(|l| l.starts_with(&args_warning)), "{args_warning}: {}", stderr(&planned));
    let out = cluster.kiln_with_stdin(&["apply", "-f", "-"], Some(&export));
    assert!(out.status.success(), "apply: {}{}\n{}", stdout(&out), stderr(&out), cluster.logs());
    let applied = stdout(&out);
    let warnings = stderr(&out);
    assert!(applied.contains(&format!("workflow/{wf} created")), "{applied}");
    assert!(applied.contains(&format!("template/{tpl} created")), "{applied}");
    // The hardware's name has capitals: mapped, and the mapping is said.
    for (field, needle) in [
        ("items[0].metadata.name", format!("name: {hw}")),
        ("items[0].spec.interfaces[0].dhcp.link_speed", "link_speed".to_string()),
        ("items[2].spec.bootOptions", "bootOptions".to_string()),
    ] {
        let expected = format!("line {}, field {field}", line_of(&needle));
        assert!(
            warnings.lines().any(|l| l.starts_with("warning: ") && l.contains(&expected)),
            "{expected}: {warnings}"
        );
    }
    assert!(!warnings.contains("managedFields") && !warnings.contains("status"), "server-side fields: {warnings}");
    // A field of the template body kiln does not know (Tinkerbell ignores
    // it): a warning with its line in the template, said once although the
    // template is both checked and rendered for the workflow.
    assert_eq!(warnings.lines().filter(|l| l.starts_with(&args_warning)).count(), 1, "{args_warning}: {warnings}");
    let kiln_hw = applied
        .lines()
        .find_map(|l| l.strip_prefix("hardware/").and_then(|rest| rest.strip_suffix(" created")))
        .expect("hardware created")
        .to_string();
    assert_ne!(kiln_hw, hw);
    assert!(kiln_hw.starts_with(&hw.to_ascii_lowercase()), "{kiln_hw}");

    cluster.start_agent(&mac, "").expect("start agent");
    let done = cluster.wait_finished(&wf, Duration::from_secs(120));
    assert_eq!(done["state"], "SUCCESS", "{done:#}\n{}", cluster.logs());
    let logs = stdout(&cluster.kiln(&["logs", &wf]));
    for line in [
        "[show data] ip=192.168.2.10/24",
        "[show data] os=ubuntu_22_04",
        "[show data] disk=/dev/vda1",
        &format!("[show data] name={hw}"),
        "[show data] vlan=42",
        "[show data] dns=1.1.1.1,8.8.8.8",
        "[show data] user=hello from userData",
        "[show data] img=http://10.1.1.1/jammy.raw.gz",
    ] {
        assert!(has_line(&logs, line), "logs lack {line:?}: {logs}");
    }
}
