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
    assert_eq!(err.trim_end(), "error: stdin document 1, line 2: did not find expected ',' or ']'");
    assert!(names(&c, "hardware").is_empty());
}

#[test]
fn unknown_fields_are_named() {
    let c = Cluster::start().unwrap();
    let err = apply_err(&c, &format!("{}colour: blue\n", hardware_doc("hw1", MAC)));
    // Anchored at the start; the list of known fields after it may grow.
    let expected =
        "error: stdin document 1 (Hardware \"hw1\"), line 6, field colour: unknown field `colour`, expected one of ";
    assert!(err.starts_with(expected), "{err}");
    let bad_action =
        template("127.0.0.1:5030/kiln/busybox:v1").replace("timeout: 60", "timeout: 60\n          retries_please: 3");
    let err = apply_err(&c, &bad_action);
    let expected = "error: template \"tpl\", line 10, field tasks[0].actions[0].retries_please: \
                    unknown field `retries_please`, expected one of ";
    assert!(err.starts_with(expected), "field path: {err}");
    let err = apply_err(&c, "kind: Gadget\nname: x\n");
    assert!(
        err.starts_with(
            "error: stdin document 1 (Gadget \"x\"), line 1, field kind: unknown kind \"Gadget\"; expected one of "
        ),
        "{err}"
    );
}

#[test]
fn bad_image_reference_is_rejected_with_its_field_path() {
    let c = Cluster::start().unwrap();
    let err = apply_err(&c, &template("Not A/Valid::Image"));
    assert_eq!(
        err.trim_end(),
        "error: template \"tpl\", line 8, field tasks[0].actions[0].image: \
         invalid image reference \"Not A/Valid::Image\": contains whitespace"
    );
    assert!(names(&c, "templates").is_empty());
}

#[test]
fn unknown_hardware_and_unknown_worker_write_nothing() {
    let c = Cluster::start().unwrap();
    // Valid hardware and template, but the workflow names hardware that does
    // not exist: nothing of the batch is written.
    let docs = [hardware_doc("hw1", MAC), template("127.0.0.1:5030/kiln/busybox:v1"), workflow("nope")].join("---\n");
    let err = apply_err(&c, &docs);
    assert_eq!(err.trim_end(), "error: Workflow \"wf\": field hardware: hardware \"nope\" not found");
    assert!(names(&c, "hardware").is_empty(), "no partial records");
    assert!(names(&c, "templates").is_empty(), "no partial records");
    assert!(names(&c, "workflows").is_empty(), "no partial records");

    // A worker that renders to a MAC no hardware has.
    let docs = [hardware_doc("hw1", "02:00:00:00:00:bb"), template("127.0.0.1:5030/kiln/busybox:v1"), workflow("hw1")]
        .join("---\n");
    let err = apply_err(&c, &docs);
    assert_eq!(
        err.trim_end(),
        "error: Workflow \"wf\": template \"tpl\" task \"t\": unknown worker \"02:00:00:00:00:aa\": \
         no hardware has this agent id or MAC"
    );
    assert!(names(&c, "hardware").is_empty());

    // A template that uses a hardware_map key the workflow does not give.
    let docs = [
        hardware_doc("hw1", MAC),
        template("127.0.0.1:5030/kiln/busybox:v1").replace(".device_1", ".device_2"),
        workflow("hw1"),
    ]
    .join("---\n");
    let err = apply_err(&c, &docs);
    assert_eq!(
        err.trim_end(),
        "error: template \"tpl\", line 5, field .device_2: no value for \".device_2\" \
         (known keys: Hardware, device_1, hardware, references, workflow)"
    );
}

#[test]
fn duplicates_and_immutable_workflows() {
    let c = Cluster::start().unwrap();
    let err = apply_err(&c, &[hardware_doc("hw1", MAC), hardware_doc("hw1", MAC)].join("---\n"));
    assert_eq!(err.trim_end(), "error: Hardware \"hw1\" appears twice in this apply");
    let dup_actions = template("127.0.0.1:5030/kiln/busybox:v1").replace(
        "          timeout: 60\n",
        "          timeout: 60\n        - name: a\n          image: 127.0.0.1:5030/kiln/busybox:v1\n",
    );
    let err = apply_err(&c, &dup_actions);
    assert_eq!(
        err.trim_end(),
        "error: template \"tpl\", line 10, field tasks[0].actions[1].name: duplicate name \"a\""
    );

    // Another machine claiming the same MAC would steal its actions.
    c.apply(&hardware_doc("hw1", MAC));
    let err = apply_err(&c, &hardware_doc("hw2", MAC));
    assert_eq!(err.trim_end(), "error: Hardware \"hw2\": 02:00:00:00:00:aa is already used by hardware \"hw1\"");

    c.apply(&[template("127.0.0.1:5030/kiln/busybox:v1"), workflow("hw1")].join("---\n"));
    let again = c.apply(&workflow("hw1"));
    assert_eq!(again, "workflow/wf unchanged\n");
    let changed = format!("{}  device_2: extra\n", workflow("hw1"));
    let out = c.kiln_with_stdin(&["apply", "-f", "-"], Some(&changed));
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "error: workflow \"wf\" already exists with a different template, hardware or hardware_map; \
         workflows cannot be changed, delete it first\n"
    );
    // Hardware used by an unfinished workflow cannot be deleted.
    let out = c.kiln(&["delete", "hardware", "hw1"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out), "error: hardware \"hw1\" is used by unfinished workflow(s) wf\n");
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
