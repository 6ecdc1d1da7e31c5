//! Property tests of template parsing and rendering: whatever the template
//! text and whatever the hardware data, the renderer returns an output or an
//! error that says where (a line, and for data errors the expression), never
//! a panic, never a hang, and the same output for the same input.
//!
//! Inputs are kept small so the whole suite runs in a few seconds in debug.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kiln_documents::template::{FUNCTIONS, check_syntax, render, render_probe};
use kiln_documents::{
    Definitions, Document, HardwareDoc, SpecError, TemplateDoc, WorkflowDoc, check_template, parse_documents,
    plan_workflow,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const OBJ: &str = "template \"t\"";

/// Valid templates, as the crate's own tests write them.
const VALID: &[&str] = &[
    "worker: \"{{.device_1}}\"",
    "{{ index .Hardware.Disks 0 }}",
    "{{ formatPartition ( index .Hardware.Disks 0 ) 1 }}",
    "{{ .hardware.metadata.instance.id }}",
    "{{ . | len }}",
    "{{ $.device_1 }}",
    "{{ .device_1 | upper }}",
    "{{ \"X\" | lower | quote }}",
    "{{ \"a-b\" | replace \"-\" \"_\" | upper }}",
    "{{ .hardware.metadata.instance.tags | join \"+\" }}",
    "{{ \"\" | default \"fallback\" }}",
    "{{ (index .Hardware.Disks 1) | printf \"disk=%s\" }}",
    "{{ printf \"[%5s][%-4s][%03d][%05d][%v]\" \"ab\" \"c\" 7 -42 .nums.f }}",
    "{{ printf \"%q\" \"a\\\"b\\n\\x01\" }}",
    "{{ netmaskToPrefixLength \"255.255.240.0\" }}",
    "{{ if .flag }}yes{{ else if .device_1 }}dev{{ else }}no{{ end }}",
    "{{ range $i, $d := .Hardware.Disks }}{{ $i }}={{ $d }},{{ end }}",
    "{{ range .m }}{{ . }}{{ else }}empty{{ end }}",
    "{{ $x := .device_1 }}{{ $x | upper }}",
    "a\n{{- /* comment */ -}}\nb {{- 3 }} {{ -3 }}",
    "{{ and .flag .nope.deeper }} {{ or .flag \"x\" }} {{ not .flag }}",
    "{{ if eq .nums.i 7 }}seven{{ end }}{{ if ne .device_1 \"x\" }}!{{ end }}",
    "{{ toString 0x1F }} {{ 0o17 }} {{ 1_000 }} {{ 1.5e3 }} {{ `raw\\n` }}",
    "{{ (index .m.list 0) }} {{ with .m }}{{ .b }}{{ else with .flag }}f{{ end }} {{ lt 1 2 }}",
    "{{ $x := 0 }}{{ range $i, $v := .Hardware.Disks }}{{ if eq $i 1 }}{{ break }}{{ end }}{{ $x = $v }}{{ end }}{{ $x }}",
    "{{ toYaml .m }} {{ .m | toJson }} {{ dict \"a\" 1 | keys }} {{ regexMatch \"^a\" \"ab\" }} {{ print nil 1 }}",
    "version: \"0.1\"\nname: t\ntasks:\n  - name: t1\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: a\n        image: alpine:3\n        environment:\n          DISK: {{ index .Hardware.Disks 0 }}\n",
];

fn data() -> Value {
    json!({
        "device_1": "52:54:00:12:34:56",
        "Hardware": {"Disks": ["/dev/nvme0n1", "/dev/sdb"], "Metadata": {"n": 3}},
        "hardware": {"metadata": {"instance": {"id": "i-1", "tags": ["a", "b"], "gone": null}}},
        "flag": false,
        "nums": {"i": 7, "f": 1.5, "whole": 3.0, "big": 1000000.0},
        "m": {"b": 2, "a": 1, "list": [[10, 11], [12]]},
    })
}

/// The checks every error must pass: it has a line inside the template, and
/// its text names that line.
fn check_error(text: &str, e: &SpecError) -> Result<(), TestCaseError> {
    let lines = text.split('\n').count();
    let line = e.line.ok_or_else(|| TestCaseError::fail(format!("no line in error {e} for {text:?}")))?;
    prop_assert!(line >= 1 && line <= lines, "line {line} outside 1..={lines} in {e} for {text:?}");
    prop_assert!(e.to_string().contains(&format!("line {line}")), "{e}");
    prop_assert!(!e.message.trim().is_empty(), "empty message for {text:?}");
    Ok(())
}

/// Everything the template module offers, on one text and one data value.
/// A render error whose template parses is about the data: it must also
/// name the expression or function that failed.
fn exercise(text: &str, data: &Value) -> Result<Option<String>, TestCaseError> {
    let start = Instant::now();
    let syntax = check_syntax(OBJ, text);
    if let Err(e) = &syntax {
        check_error(text, e)?;
    }
    if let Err(e) = render_probe(OBJ, text) {
        check_error(text, &e)?;
        prop_assert!(syntax.is_err() || e.field.is_some(), "probe error names no expression: {e} for {text:?}");
    }
    let out = render(OBJ, text, data);
    match &out {
        Err(e) => {
            check_error(text, e)?;
            prop_assert!(syntax.is_err() || e.field.is_some(), "error names no expression: {e} for {text:?}");
        }
        Ok(_) => prop_assert!(syntax.is_ok(), "rendered a template that check_syntax refuses: {text:?}"),
    }
    // Determinism.
    prop_assert_eq!(&render(OBJ, text, data), &out);
    prop_assert!(start.elapsed() < Duration::from_secs(2), "slow: {:?} for {text:?}", start.elapsed());
    Ok(out.ok())
}

/// Fragments other than the function names ([`FUNCTIONS`]).
const FIXED_FRAGMENTS: &[&str] = &[
    "{{",
    "}}",
    "{{-",
    "-}}",
    "{{ ",
    " }}",
    "{{/*",
    "*/}}",
    " ",
    "\n",
    "\t",
    "(",
    ")",
    "|",
    ":=",
    ",",
    "=",
    ".",
    "$",
    "$x",
    "$i",
    "$.",
    "\"",
    "`",
    "\\",
    "if",
    "else",
    "end",
    "range",
    "with",
    "break",
    "continue",
    "define",
    "nil",
    "true",
    "false",
    ".device_1",
    ".Hardware.Disks",
    ".Hardware.Metadata",
    ".hardware.metadata.instance",
    ".nums",
    ".m.list",
    ".actions.a.output",
    "0",
    "-1",
    "1e400",
    "99999999999999999999",
    "-9223372036854775808",
    "0x",
    "0x7fffffffffffffff",
    "1_",
    ".5",
    "1.5e3",
    "\"%d\"",
    "\"%s%v%q\"",
    "\"%999d\"",
    "\"%-0x\"",
    "\"\\u00e9\\U0001F600\\x41\\xff\"",
    "`raw`",
    "é",
    "😀",
    "\u{202e}",
    "\0",
    "\r\n",
    "-",
    "*/",
    "/*",
];

/// Pieces a generated template is made of: text, delimiters on their own,
/// and everything that may appear inside an action.
fn fragment() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(FIXED_FRAGMENTS.iter().chain(FUNCTIONS).copied().collect::<Vec<_>>());
    prop_oneof![
        6 => fixed.prop_map(str::to_string),
        1 => "[a-z_.$]{1,6}",
        1 => any::<String>().prop_map(|s| s.chars().take(4).collect()),
    ]
}

/// A well-formed expression, to reach evaluation rather than stop at syntax.
fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            ".",
            ".device_1",
            ".Hardware.Disks",
            ".Hardware.Metadata.n",
            ".hardware.metadata.instance.tags",
            ".hardware.metadata.instance.gone",
            ".flag",
            ".nums.i",
            ".nums.f",
            ".m",
            ".m.list",
            ".missing",
            "$",
            "$.m",
            "true",
            "false",
            "0",
            "1",
            "-7",
            "2.5",
            "\"\"",
            "\"a\"",
            "\"255.255.0.0\"",
            "\"%s-%d\"",
            "\"/dev/sda\"",
            "`x`",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<String>().prop_map(|s| format!("{:?}", s.chars().take(6).collect::<String>())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        let func = prop::sample::select(FUNCTIONS.to_vec());
        prop_oneof![
            (func.clone(), prop::collection::vec(inner.clone(), 0..4))
                .prop_map(|(f, args)| format!("{f} {}", args.join(" "))),
            inner.clone().prop_map(|e| format!("({e})")),
            (inner, func).prop_map(|(e, f)| format!("{e} | {f}")),
        ]
    })
}

/// A template of text and actions, with control structures that are
/// sometimes balanced and sometimes not.
fn structured() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-z :\n]{0,8}",
        4 => expr().prop_map(|e| format!("{{{{ {e} }}}}")),
        1 => expr().prop_map(|e| format!("{{{{ $x := {e} }}}}{{{{ $x }}}}")),
        1 => expr().prop_map(|e| format!("{{{{ if {e} }}}}")),
        1 => expr().prop_map(|e| format!("{{{{ range $i, $v := {e} }}}}{{{{ $i }}}}")),
        1 => expr().prop_map(|e| format!("{{{{ else if {e} }}}}")),
        1 => Just("{{ else }}".to_string()),
        2 => Just("{{ end }}".to_string()),
        1 => fragment(),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

/// Hardware-like data: nested maps with keys templates read, and hostile
/// leaves (huge numbers, unicode, template delimiters, YAML syntax).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        prop::sample::select(vec![
            "",
            "a",
            "/dev/sda",
            "/dev/nvme0n1",
            "52:54:00:12:34:56",
            "255.255.255.0",
            "{{ .x }}",
            "}}",
            "{{",
            "a: b",
            "- x",
            "\"",
            "'",
            "\n",
            "#",
            "&a",
            "*a",
            "!!binary",
            "é😀",
            "%d",
            "0644",
            "true",
            "~",
        ])
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        let key = prop::sample::select(vec![
            "device_1", "Hardware", "Disks", "Metadata", "hardware", "metadata", "instance", "id", "tags", "n", "nums",
            "i", "f", "m", "list", "flag", "a", "actions", "output",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Replace(usize, String),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), fragment()).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 1..6usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), fragment()).prop_map(|(at, s)| Edit::Replace(at, s)),
    ];
    prop::collection::vec(edit, 1..5)
}

/// Applies edits at char boundaries (offsets wrap around the length).
fn mutate(src: &str, edits: &[Edit]) -> String {
    let mut s = src.to_string();
    let boundary = |s: &str, at: usize| {
        let mut at = at.min(s.len());
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    for e in edits {
        match e {
            Edit::Insert(at, t) => {
                let at = boundary(&s, at % (s.len() + 1));
                s.insert_str(at, t);
            }
            Edit::Delete(at, n) => {
                let at = boundary(&s, at % (s.len() + 1));
                let end = boundary(&s, at + n);
                s.replace_range(at..end, "");
            }
            Edit::Replace(at, t) => {
                let at = boundary(&s, at % (s.len() + 1));
                let end = boundary(&s, at + t.len());
                s.replace_range(at..end, t);
            }
        }
    }
    s
}

fn tpl(data: &str) -> TemplateDoc {
    TemplateDoc::new("t", data)
}

fn wf() -> WorkflowDoc {
    WorkflowDoc {
        id: "w".into(),
        template: "t".into(),
        hardware: "m1".into(),
        hardware_map: BTreeMap::from([("device_1".to_string(), "52:54:00:12:34:56".to_string())]),
        boot_options: None,
    }
}

fn hw(metadata: Value, disks: Vec<String>) -> HardwareDoc {
    HardwareDoc {
        id: "m1".into(),
        agent_id: "52:54:00:12:34:56".into(),
        macs: vec!["52:54:00:12:34:56".into()],
        disks,
        metadata,
        netboot: true,
        spec: Value::Null,
        object_meta: Value::Null,
        bmc: None,
        root_disk: None,
    }
}

/// A Tinkerbell template whose values come from hardware metadata.
const WORKFLOW_TEMPLATE: &str = r#"version: "0.1"
name: t
global_timeout: 1800
tasks:
  - name: install
    worker: "{{.device_1}}"
    volumes: ["/dev:/dev"]
    actions:
      - name: stream
        image: alpine:3
        timeout: 600
        environment:
          DEST_DISK: {{ index .Hardware.Disks 0 }}
          HOST: {{ .hardware.metadata.host }}
          QUOTED: {{ .hardware.metadata.host | quote }}
          PART: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
      - name: second
        image: alpine:3
        command: ["sh", "-c", "echo {{ printf "%v" .hardware.metadata.host }}"]
"#;

/// The documents an operator applies: hardware, a template wrapping template
/// text, a workflow.
const DOCUMENTS: &str = r#"kind: Hardware
name: m1
macs: ["52:54:00:12:34:56"]
disks: ["/dev/sda"]
metadata: {instance: {hostname: m1, tags: [a, b]}}
---
kind: Template
name: t
data: |
  version: "0.1"
  name: t
  tasks:
    - name: install
      worker: "{{.device_1}}"
      actions:
        - name: a
          image: alpine:3
          environment:
            DISK: {{ index .Hardware.Disks 0 }}
            HOST: {{ .hardware.metadata.instance.hostname | quote }}
---
kind: Workflow
name: w
template: t
hardware: m1
hardware_map: {device_1: "52:54:00:12:34:56"}
"#;

fn check_plan_error(text: &str, e: &SpecError) -> Result<(), TestCaseError> {
    prop_assert!(e.line.is_some() || e.field.is_some(), "error says neither line nor field: {e} for {text:?}");
    if let Some(line) = e.line {
        prop_assert!(line >= 1 && line <= text.split('\n').count(), "line {line} outside the template: {e}");
    }
    prop_assert!(!e.message.trim().is_empty(), "empty message: {e}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        exercise(&text, &data())?;
    }

    #[test]
    fn fragment_soup_never_panics(parts in prop::collection::vec(fragment(), 0..24)) {
        exercise(&parts.concat(), &data())?;
    }

    #[test]
    fn structured_templates_render_or_say_where(text in structured(), hw_data in value()) {
        exercise(&text, &data())?;
        exercise(&text, &hw_data)?;
    }

    #[test]
    fn mutated_valid_templates_render_or_say_where(which in 0..VALID.len(), edits in edits()) {
        let text = mutate(VALID[which], &edits);
        exercise(&text, &data())?;
    }

    #[test]
    fn valid_templates_render_any_data_or_say_where(which in 0..VALID.len(), data in value()) {
        exercise(VALID[which], &data)?;
    }

    /// Hardware values cannot change the structure of the plan: a value
    /// holding YAML syntax is an error or stays inside its field.
    #[test]
    fn plans_keep_their_structure_whatever_the_hardware(host in value(), disk in any::<String>()) {
        let doc = tpl(WORKFLOW_TEMPLATE);
        let defs = Definitions::new();
        check_template(&doc, &defs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let hardware = hw(json!({"host": host}), vec![disk]);
        match plan_workflow(&doc, &wf(), &hardware, &defs) {
            Err(e) => check_plan_error(WORKFLOW_TEMPLATE, &e)?,
            Ok(plan) => {
                let names: Vec<&str> = plan.actions.iter().map(|a| a.name.as_str()).collect();
                prop_assert_eq!(names, vec!["stream", "second"]);
                let keys: Vec<&str> = plan.actions[0].environment.keys().map(String::as_str).collect();
                prop_assert_eq!(keys, vec!["DEST_DISK", "HOST", "PART", "QUOTED"]);
                prop_assert_eq!(plan.actions[1].command.len(), 3);
                // Deterministic.
                let again = plan_workflow(&doc, &wf(), &hardware, &defs).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again, plan);
            }
        }
    }

    /// Mangled document files: parsed, or an error with a line or a field;
    /// a template among them is checked and planned against the hardware.
    #[test]
    fn mutated_documents_parse_or_say_where(edits in edits()) {
        let text = mutate(DOCUMENTS, &edits);
        match parse_documents("docs.yaml", &text) {
            Err(e) => check_plan_error(&text, &e)?,
            Ok(docs) => {
                let template = docs.iter().find_map(|d| if let Document::Template(t) = d { Some(t) } else { None });
                let hardware = docs.iter().find_map(|d| if let Document::Hardware(h) = d { Some(h) } else { None });
                if let (Some(t), Some(h)) = (template, hardware) {
                    let defs = Definitions::new();
                    // Lines in these errors count from the template text.
                    if let Err(e) = check_template(t, &defs) {
                        check_plan_error(&t.data, &e)?;
                    }
                    if let Err(e) = plan_workflow(t, &wf(), h, &defs) {
                        check_plan_error(&t.data, &e)?;
                    }
                }
            }
        }
    }

    /// Mangled template documents: errors with a line or a field, never a panic.
    #[test]
    fn mutated_workflow_templates_plan_or_say_where(edits in edits(), host in value()) {
        let text = mutate(WORKFLOW_TEMPLATE, &edits);
        let doc = tpl(&text);
        let defs = Definitions::new();
        if let Err(e) = check_template(&doc, &defs) {
            check_plan_error(&text, &e)?;
        }
        let hardware = hw(json!({"host": host}), vec!["/dev/sda".into()]);
        if let Err(e) = plan_workflow(&doc, &wf(), &hardware, &defs) {
            check_plan_error(&text, &e)?;
        }
    }
}
