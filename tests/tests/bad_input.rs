//! Bad operator input gets one clear error naming the field, and writes
//! nothing: an apply is all or nothing.

use kiln_tests::{Cluster, hardware_doc, stderr, stdout};

fn apply_err(c: &Cluster, yaml: &str) -> String {
    let out = c.kiln_with_stdin(&["apply", "-f", "-"], Some(yaml));
    assert_eq!(out.status.code(), Some(1), "apply must fail: {}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn names(c: &Cluster, kind: &str) -> Vec<String> {
    let out = c.kiln(&["get", kind, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| o.get("id").or_else(|| o.get("name")).and_then(|n| n.as_str()).unwrap_or_default().to_string())
        .collect()
}

const MAC: &str = "02:00:00:00:00:aa";

fn template(image: &str) -> String {
    format!(
        "kind: Template\nname: tpl\ndata: |\n  version: \"0.1\"\n  name: tpl\n  tasks:\n    - name: t\n      worker: \"{{{{.device_1}}}}\"\n      actions:\n        - name: a\n          image: {image}\n          timeout: 60\n"
    )
}

fn workflow(hardware: &str) -> String {
    format!("kind: Workflow\nname: wf\ntemplate: tpl\nhardware: {hardware}\nhardware_map:\n  device_1: \"{MAC}\"\n")
}

#[test]
fn malformed_yaml_names_the_line() {
    let c = Cluster::start().unwrap();
    let err = apply_err(&c, "kind: Hardware\nname: [unclosed\n");
    assert!(err.contains("line"), "{err}");
    assert!(names(&c, "hardware").is_empty());
}

#[test]
fn unknown_fields_are_named() {
    let c = Cluster::start().unwrap();
    let err = apply_err(&c, &format!("{}colour: blue\n", hardware_doc("hw1", MAC)));
    assert!(err.contains("colour"), "{err}");
    let bad_action =
        template("127.0.0.1:5030/kiln/busybox:v1").replace("timeout: 60", "timeout: 60\n          retries_please: 3");
    let err = apply_err(&c, &bad_action);
    assert!(err.contains("retries_please"), "{err}");
    assert!(err.contains("tasks[0].actions[0]"), "field path: {err}");
    let err = apply_err(&c, "kind: Gadget\nname: x\n");
    assert!(err.contains("Gadget"), "{err}");
}

#[test]
fn bad_image_reference_is_rejected_with_its_field_path() {
    let c = Cluster::start().unwrap();
    let err = apply_err(&c, &template("Not A/Valid::Image"));
    assert!(err.contains("image"), "{err}");
    assert!(names(&c, "templates").is_empty());
}

#[test]
fn unknown_hardware_and_unknown_worker_write_nothing() {
    let c = Cluster::start().unwrap();
    // Valid hardware and template, but the workflow names hardware that does
    // not exist: nothing of the batch is written.
    let docs = [hardware_doc("hw1", MAC), template("127.0.0.1:5030/kiln/busybox:v1"), workflow("nope")].join("---\n");
    let err = apply_err(&c, &docs);
    assert!(err.contains("nope") && err.contains("hardware"), "{err}");
    assert!(names(&c, "hardware").is_empty(), "no partial records");
    assert!(names(&c, "templates").is_empty(), "no partial records");
    assert!(names(&c, "workflows").is_empty(), "no partial records");

    // A worker that renders to a MAC no hardware has.
    let docs = [hardware_doc("hw1", "02:00:00:00:00:bb"), template("127.0.0.1:5030/kiln/busybox:v1"), workflow("hw1")]
        .join("---\n");
    let err = apply_err(&c, &docs);
    assert!(err.contains("worker"), "{err}");
    assert!(names(&c, "hardware").is_empty());

    // A template that uses a hardware_map key the workflow does not give.
    let docs = [
        hardware_doc("hw1", MAC),
        template("127.0.0.1:5030/kiln/busybox:v1").replace(".device_1", ".device_2"),
        workflow("hw1"),
    ]
    .join("---\n");
    let err = apply_err(&c, &docs);
    assert!(err.contains("device_2") && err.contains("line"), "{err}");
}

#[test]
fn duplicates_and_immutable_workflows() {
    let c = Cluster::start().unwrap();
    let err = apply_err(&c, &[hardware_doc("hw1", MAC), hardware_doc("hw1", MAC)].join("---\n"));
    assert!(err.contains("twice"), "{err}");
    let dup_actions = template("127.0.0.1:5030/kiln/busybox:v1").replace(
        "          timeout: 60\n",
        "          timeout: 60\n        - name: a\n          image: 127.0.0.1:5030/kiln/busybox:v1\n",
    );
    let err = apply_err(&c, &dup_actions);
    assert!(err.contains("tasks[0].actions[1]") || err.contains("duplicate"), "{err}");

    // Another machine claiming the same MAC would steal its actions.
    c.apply(&hardware_doc("hw1", MAC));
    let err = apply_err(&c, &hardware_doc("hw2", MAC));
    assert!(err.contains("hw1"), "{err}");

    c.apply(&[template("127.0.0.1:5030/kiln/busybox:v1"), workflow("hw1")].join("---\n"));
    let again = c.apply(&workflow("hw1"));
    assert!(again.contains("unchanged"), "{again}");
    let changed = format!("{}  device_2: extra\n", workflow("hw1"));
    let out = c.kiln_with_stdin(&["apply", "-f", "-"], Some(&changed));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("delete it first"), "{}", stderr(&out));
    // Hardware used by an unfinished workflow cannot be deleted.
    let out = c.kiln(&["delete", "hardware", "hw1"]);
    assert!(!out.status.success() && stderr(&out).contains("wf"), "{}", stderr(&out));
}

#[test]
fn plan_renders_without_running() {
    let c = Cluster::start().unwrap();
    c.apply(&hardware_doc("hw1", MAC));
    let tpl = template("127.0.0.1:5030/kiln/busybox:v1").replace(
        "          timeout: 60\n",
        "          timeout: 60\n          environment:\n            DEST_DISK: \"{{ index .Hardware.Disks 0 }}\"\n            PART: \"{{ formatPartition ( index .Hardware.Disks 0 ) 1 }}\"\n          pid: host\n",
    );
    c.apply(&tpl);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), workflow("hw1")).unwrap();
    let out = c.kiln(&["plan", "-f", file.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stdout(&out);
    for expected in ["127.0.0.1:5030/kiln/busybox:v1", "DEST_DISK=/dev/vda", "PART=/dev/vda1", "host", "60s"] {
        assert!(plan.contains(expected), "plan lacks {expected}: {plan}");
    }
    // Nothing was created.
    assert!(names(&c, "workflows").is_empty());
}

#[test]
fn plan_shows_failure_and_timeout_handlers() {
    let c = Cluster::start().unwrap();
    c.apply(&hardware_doc("hw1", MAC));
    c.apply(&template("127.0.0.1:5030/kiln/busybox:v1").replace(
        "          timeout: 60\n",
        "          timeout: 60\n          on-failure: [/bin/sh, -c, echo failed]\n          on-timeout: [echo, late]\n",
    ));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), workflow("hw1")).unwrap();
    let path = file.path().to_str().unwrap();
    // Rendered from the documents, and as stored once applied.
    c.apply(&workflow("hw1"));
    for source in [vec!["-f", path], vec!["wf"]] {
        let out = c.kiln(&[&["plan"], &source[..]].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("   on-failure: [\"/bin/sh\",\"-c\",\"echo failed\"]\n"), "{text}");
        assert!(text.contains("   on-timeout: [\"echo\",\"late\"]\n"), "{text}");
        let out = c.kiln(&[&["plan", "-o", "json"], &source[..]].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let action = &plan["actions"][0];
        assert_eq!(action["on_failure"], serde_json::json!(["/bin/sh", "-c", "echo failed"]), "{plan}");
        assert_eq!(action["on_timeout"], serde_json::json!(["echo", "late"]), "{plan}");
    }
}
