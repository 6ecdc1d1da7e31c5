use super::parser::MAX_DEPTH;
use super::*;
use serde_json::json;

fn data() -> Value {
    json!({
        "device_1": "52:54:00:12:34:56",
        "Hardware": {"Disks": ["/dev/nvme0n1", "/dev/sdb"], "Metadata": {"n": 3}},
        "hardware": {"metadata": {"instance": {"id": "i-1", "tags": ["a", "b"], "gone": null}}},
        "flag": false,
        "nums": {"i": 7, "f": 1.5, "whole": 3.0, "big": 1000000.0, "tiny": 1e-7, "odd": 1234567.5},
        "m": {"b": 2, "a": 1, "list": [[10, 11], [12]]},
    })
}

const T: &str = "template \"t\"";

fn r(t: &str) -> String {
    render(T, t, &data()).unwrap_or_else(|e| panic!("{t}: {e}"))
}

fn e(t: &str) -> SpecError {
    match render(T, t, &data()) {
        Ok(out) => panic!("{t} must fail, rendered {out:?}"),
        Err(err) => err,
    }
}

#[test]
fn renders_tinkerbell_expressions() {
    assert_eq!(r("worker: \"{{.device_1}}\""), "worker: \"52:54:00:12:34:56\"");
    assert_eq!(r("{{ index .Hardware.Disks 0 }}"), "/dev/nvme0n1");
    assert_eq!(r("{{ formatPartition ( index .Hardware.Disks 0 ) 1 }}"), "/dev/nvme0n1p1");
    assert_eq!(r("{{ formatPartition ( index .Hardware.Disks 1 ) 2 }}"), "/dev/sdb2");
    assert_eq!(r("{{ .hardware.metadata.instance.id }}"), "i-1");
    assert_eq!(r("{{ .Hardware.Metadata.n }}"), "3");
    assert_eq!(r("{{ . | len }}"), "6");
    assert_eq!(r("{{ $.device_1 }}"), "52:54:00:12:34:56");
    assert_eq!(r("no actions at all"), "no actions at all");
    assert_eq!(r(""), "");
    assert_eq!(r("}} is text"), "}} is text");
}

#[test]
fn pipelines_pass_the_value_as_the_last_argument() {
    assert_eq!(r("{{ .device_1 | upper }}"), "52:54:00:12:34:56");
    assert_eq!(r("{{ \"X\" | lower | quote }}"), "\"x\"");
    assert_eq!(r("{{ \"a-b\" | replace \"-\" \"_\" | upper }}"), "A_B");
    assert_eq!(r("{{ .hardware.metadata.instance.tags | join \"+\" }}"), "a+b");
    assert_eq!(r("{{ \"\" | default \"fallback\" }}"), "fallback");
    assert_eq!(r("{{ (index .Hardware.Disks 1) | printf \"disk=%s\" }}"), "disk=/dev/sdb");
    assert_eq!(r("{{ index .m.list 0 1 }}"), "11", "nested indices");
    assert_eq!(r("{{ index .m \"a\" }}"), "1");
}

#[test]
fn prints_values_as_go_does() {
    assert_eq!(r("{{ .nums.i }} {{ .nums.f }} {{ .nums.whole }} {{ .nums.big }}"), "7 1.5 3 1e+06");
    assert_eq!(r("{{ .nums.tiny }} {{ .nums.odd }}"), "1e-07 1.2345675e+06");
    assert_eq!(r("{{ .flag }} {{ true }}"), "false true");
    assert_eq!(r("{{ .hardware.metadata.instance.tags }}"), "[a b]", "lists print as Go prints them");
    assert_eq!(r("{{ .Hardware.Metadata }}"), "map[n:3]", "maps print as Go prints them");
}

#[test]
fn functions() {
    assert_eq!(r("{{ printf \"%s-%d%%\" .hardware.metadata.instance.id 7 }}"), "i-1-7%");
    assert_eq!(
        r("{{ printf \"[%5s][%-4s][%03d][%05d][%v]\" \"ab\" \"c\" 7 -42 .nums.f }}"),
        "[   ab][c   ][007][-0042][1.5]"
    );
    assert_eq!(r("{{ printf \"%q\" \"a\\\"b\\n\\x01\" }}"), "\"a\\\"b\\n\\x01\"");
    // Go: a float is not an integer for %d, however whole.
    assert!(e("{{ printf \"%d\" .nums.whole }}").message.contains("%d can't print"));
    assert_eq!(r("{{ printf \"no verbs\" }}"), "no verbs");
    assert_eq!(r("{{ join \",\" .hardware.metadata.instance.tags }}"), "a,b");
    assert_eq!(r("{{ join \",\" \"one\" }}"), "one");
    assert_eq!(r("{{ len .Hardware.Disks }} {{ len .m }} {{ len \"é\" }}"), "2 3 2", "len counts bytes like Go");
    assert_eq!(r("{{ default \"x\" \"\" }}{{ default \"x\" \"y\" }}{{ default \"x\" 0 }}{{ default \"x\" }}"), "xyxx");
    assert_eq!(r("{{ netmaskToPrefixLength \"255.255.255.0\" }}"), "24");
    assert_eq!(r("{{ netmaskToPrefixLength \"255.255.240.0\" }}"), "20");
    assert_eq!(r("{{ netmaskToPrefixLength \"0.0.0.0\" }}/{{ netmaskToPrefixLength \"255.255.255.255\" }}"), "0/32");
    assert_eq!(r("{{ replace \"a\" \"b\" \"aXa\" }}"), "bXb");
    assert_eq!(r("{{ quote \"a\" 1 }}"), "\"a\" \"1\"");
    assert_eq!(r("{{ trim \"  x \\n\" }}|{{ lower \"ÀB\" }}|{{ upper \"àb\" }}"), "x|àb|ÀB");
    assert_eq!(r("{{ toString 12 }}{{ toString .flag }}"), "12false");
    assert_eq!(r("{{/* a comment */}}ok"), "ok");
    assert_eq!(r("{{ `raw \\n` }}"), "raw \\n");
}

#[test]
fn comparisons_and_logic() {
    assert_eq!(r("{{ eq 1 1 }} {{ eq 1 2 }} {{ ne \"a\" \"b\" }} {{ eq .nums.i 7 }}"), "true false true true");
    // Go: an integer and a float are incompatible types.
    assert!(e("{{ eq .nums.whole 3 }}").message.contains("incompatible types"));
    assert_eq!(r("{{ eq .device_1 \"x\" \"52:54:00:12:34:56\" }}"), "true", "eq compares with each of the rest");
    assert_eq!(r("{{ not .flag }} {{ not \"\" }} {{ not .m }}"), "true true false");
    assert_eq!(
        r("{{ and .flag .device_1 }}|{{ or .flag .device_1 }}|{{ and 1 2 }}|{{ or 0 \"\" }}"),
        "false|52:54:00:12:34:56|2|"
    );
    // Go stops at the deciding argument: the missing key is never read.
    assert_eq!(r("{{ and .flag .nope }}|{{ or .device_1 .nope }}"), "false|52:54:00:12:34:56");
    assert!(e("{{ and .device_1 .nope }}").message.contains("no value for \".nope\""));
    let err = e("{{ eq .device_1 1 }}");
    assert!(err.message.contains("incompatible types"), "{err}");
    assert!(e("{{ eq .m .m }}").message.contains("can't compare"));
}

#[test]
fn control_flow_variables_and_trim() {
    assert_eq!(r("{{ if .flag }}yes{{ else }}no{{ end }}"), "no");
    assert_eq!(r("{{ if eq .device_1 \"x\" }}a{{ else if .Hardware }}b{{ else }}c{{ end }}"), "b");
    assert_eq!(r("{{ if .flag }}a{{ else if .flag }}b{{ end }}"), "");
    assert_eq!(r("{{ range $i, $d := .Hardware.Disks }}{{ $i }}={{ $d }};{{ end }}"), "0=/dev/nvme0n1;1=/dev/sdb;");
    assert_eq!(r("{{ range .Hardware.Disks }}[{{ . }}]{{ end }}"), "[/dev/nvme0n1][/dev/sdb]");
    assert_eq!(r("{{ range $d := .Hardware.Disks }}{{ $d }} {{ end }}"), "/dev/nvme0n1 /dev/sdb ");
    assert_eq!(r("{{ range $k, $v := .m }}{{ $k }} {{ end }}"), "a b list ", "maps range in key order");
    assert_eq!(r("{{ range .hardware.metadata.instance.gone }}x{{ else }}none{{ end }}"), "none");
    assert_eq!(r("{{ range .Hardware.Disks }}{{ $.device_1 }} {{ end }}"), "52:54:00:12:34:56 52:54:00:12:34:56 ");
    assert_eq!(r("{{ $d := index .Hardware.Disks 1 }}{{ $d }} {{ $.device_1 }}"), "/dev/sdb 52:54:00:12:34:56");
    assert_eq!(r("{{ $x := 1 }}{{ range .Hardware.Disks }}{{ $x }}{{ end }}"), "11", "outer variables are visible");
}

#[test]
fn trim_markers_follow_go() {
    assert_eq!(r("a  \n {{- \"b\" -}} \n  c"), "abc");
    assert_eq!(r("a {{- \"b\" }} c"), "ab c");
    assert_eq!(r("a {{ \"b\" -}} \t\r\n c"), "a bc");
    assert_eq!(r("{{-3}}"), "-3", "a negative number, not a trim marker");
    assert_eq!(r("{{ 3 -}}  x"), "3x");
    assert_eq!(r("x\n{{- /* gone */ -}}\ny"), "xy");
    assert_eq!(r("a\u{a0}{{- 1 }}"), "a\u{a0}1", "only Go's four space characters are trimmed");
    assert_eq!(r("{{/* }} inside a comment */}}ok"), "ok");
    assert_eq!(r("{{ \"}}\" }}"), "}}", "}} inside a string does not close the action");
    assert_eq!(
        r("lines:\n{{- range .Hardware.Disks }}\n  - {{ . }}\n{{- end }}\n"),
        "lines:\n  - /dev/nvme0n1\n  - /dev/sdb\n"
    );
}

#[test]
fn literals() {
    assert_eq!(
        r("{{ 0644 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000 }}"),
        "420 31 15 5 1000",
        "Go's integer syntax"
    );
    assert_eq!(r("{{ 1.5 }} {{ .5 }} {{ 1e3 }} {{ -2 }} {{ +2 }}"), "1.5 0.5 1000 -2 2");
    assert_eq!(r("{{ \"tab\\there\\u00e9\\x41\" }}"), "tab\there\u{e9}A");
    assert_eq!(r("{{ `multi\nline` }}"), "multi\nline");
    for bad in ["{{ 1abc }}", "{{ 0x }}", "{{ 99999999999999999999 }}", "{{ 08 }}"] {
        assert!(check_syntax(T, bad).unwrap_err().message.contains("bad number syntax"), "{bad}");
    }
    assert!(check_syntax(T, "{{ \"\\q\" }}").unwrap_err().message.contains("unsupported escape"));
    assert!(check_syntax(T, "{{ \"\\xff\" }}").unwrap_err().message.contains("invalid escape"));
}

#[test]
fn format_partition_follows_the_kernel_names() {
    // The naming itself is kiln-partition-path's (tested there); here, that
    // the template function gives it what Tinkerbell templates write.
    assert_eq!(format_partition("/dev/sda", 1), "/dev/sda1");
    for (template, want) in [
        ("{{ formatPartition \"/dev/vda\" 3 }}", "/dev/vda3"),
        ("{{ formatPartition \"/dev/mmcblk0\" 2.0 }}", "/dev/mmcblk0p2"),
        ("{{ .Hardware.Metadata.n | formatPartition \"/dev/loop0\" }}", "/dev/loop0p3"),
        ("{{ formatPartition \"/dev/disk/by-id/wwn-0x5000\" 1 }}", "/dev/disk/by-id/wwn-0x5000-part1"),
    ] {
        assert_eq!(r(template), want);
    }
    let err = e("{{ formatPartition \"/dev/sda\" 0 }}");
    assert!(err.message.contains("partition must be a number from 1"), "{err}");
    assert!(e("{{ formatPartition \"\" 1 }}").message.contains("device path"));
    assert!(e("{{ formatPartition \"/dev/sda\" \"x\" }}").message.contains("partition"));
    assert!(
        e("{{ formatPartition \"/dev/sda\" }}")
            .message
            .contains("wrong number of args for formatPartition: want 2 got 1")
    );
}

#[test]
fn missing_keys_name_line_and_field() {
    let err = e("line one\nworker: {{ .device_2 }}");
    assert_eq!((err.line, err.field.as_deref()), (Some(2), Some(".device_2")));
    assert_eq!(err.object, T);
    assert!(
        err.message.contains("no value for \".device_2\" (known keys: Hardware, device_1, flag, hardware, m, nums)"),
        "{err}"
    );
    let err = e("\n\n{{ .Hardware.Nope.x }}");
    assert_eq!((err.line, err.field.as_deref()), (Some(3), Some(".Hardware.Nope")));
    let err = e("{{ range .Hardware.Disks }}{{ .x }}{{ end }}");
    assert!(err.message.contains("can't read field \"x\": . is a string, not a map"), "{err}");
    let err = e("{{ .device_1.x }}");
    assert_eq!(err.field.as_deref(), Some(".device_1.x"));
    assert!(err.message.contains(".device_1 is a string"), "{err}");
    let err = e("{{ $d := .m }}{{ $d.zzz }}");
    assert_eq!(err.field.as_deref(), Some("$d.zzz"), "{err}");
    assert!(err.message.contains("known keys: a, b, list"), "{err}");
    let err = e("{{ .hardware.metadata.instance.gone }}");
    assert_eq!(err.field.as_deref(), Some(".hardware.metadata.instance.gone"));
    assert!(err.message.contains("null"), "{err}");
}

#[test]
fn every_listed_function_is_implemented_once() {
    let mut names = FUNCTIONS.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), FUNCTIONS.len(), "a function is listed twice: {FUNCTIONS:?}");
    for name in FUNCTIONS {
        // Called without arguments each one either works or objects to its
        // arguments by its own name; none is a name without a body.
        if let Err(err) = render(T, &format!("{{{{ {name} }}}}"), &data()) {
            assert_eq!(err.field.as_deref(), Some(*name), "{err}");
            assert!(!err.message.contains("unsupported"), "{err}");
        }
    }
    // A function given as an argument is called without arguments, and
    // `and`/`or` there are checked like anywhere else.
    assert!(e("{{ not and }}").message.contains("wrong number of args for and: want at least 1 got 0"));
    assert_eq!(r("{{ len (or 0 .m) }}"), "3");
}

#[test]
fn function_errors_name_what_is_wrong() {
    let err = e("x\n{{ index .Hardware.Disks 5 }}");
    assert_eq!((err.line, err.field.as_deref()), (Some(2), Some(".Hardware.Disks[5]")));
    assert!(err.message.contains("out of range: the list has 2 item(s)"), "{err}");
    assert!(e("{{ index .Hardware.Disks -1 }}").message.contains("out of range"));
    assert!(e("{{ index .Hardware.Disks \"a\" }}").message.contains("must be an integer"));
    // Go: a missing key is nil, which kiln refuses to print.
    let err = e("{{ index .m \"zz\" }}");
    assert_eq!(err.field.as_deref(), Some("index .m \"zz\""));
    assert!(err.message.contains("no value to print"), "{err}");
    assert_eq!(r("{{ if index .m \"zz\" }}y{{ else }}n{{ end }}"), "n");
    assert_eq!(r("{{ index .device_1 0 }}"), "53", "Go indexes a string by byte");
    assert!(e("{{ index .device_1 99 }}").message.contains("out of range"));
    assert!(e("{{ index }}").message.contains("wrong number of args for index: want at least 1 got 0"));
    assert!(e("{{ len 3 }}").message.contains("len of a number"));
    assert_eq!(r("{{ join \",\" 3 }}"), "3", "Sprig joins a non-list as one item");
    assert!(e("{{ join 3 .m }}").message.contains("expected string; got int"));
    assert!(e("{{ upper }}").message.contains("wrong number of args for upper: want 1 got 0"));
    // Go checks nil commands and argument counts when it runs them, not before.
    assert!(e("{{ nil }}").message.contains("nil is not a command"));
    assert_eq!(r("{{ if .flag }}{{ nil }}{{ upper }}{{ end }}ok"), "ok");
    assert!(e("{{ range 3 }}{{ end }}").message.contains("range can't iterate over a number"));
    for mask in ["255.0.255.0", "255.255.255", "255.255.255.256", "a.b.c.d", "255.255.255.0.0", ""] {
        let err = e(&format!("{{{{ netmaskToPrefixLength {mask:?} }}}}"));
        assert!(err.message.contains("not a dotted IPv4 netmask"), "{mask}: {err}");
    }
    for (t, needle) in [
        ("{{ printf \"%y\" 1 }}", "unsupported verb %y"),
        ("{{ printf \"%s %s\" \"a\" }}", "%s has no argument"),
        ("{{ printf \"%s\" \"a\" \"b\" }}", "2 argument(s) but the format uses 1"),
        ("{{ printf \"%d\" \"a\" }}", "%d can't print a string a"),
        ("{{ printf \"100%\" }}", "ends with %"),
        ("{{ printf \"%99999d\" 1 }}", "width or precision is more than"),
        ("{{ printf 3 }}", "format string first"),
    ] {
        let err = e(t);
        assert!(err.message.contains(needle), "{t}: {err}");
        assert_eq!(err.field.as_deref(), Some("printf"), "{t}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    for (t, line, needle) in [
        ("a\n{{ env \"HOME\" }}", 2, "unsupported function \"env\""),
        ("{{ with .x }}", 1, "with without {{end}}"),
        ("{{ break }}", 1, "outside {{range}}"),
        ("{{ if 1 }}{{ define \"x\" }}{{ end }}{{ end }}", 1, "only allowed at the top level"),
        ("\n\n{{ define \"x\" }}", 3, "\"x\" without {{end}}"),
        ("{{ template x }}", 1, "template needs a template name in quotes"),
        ("{{ block \"x\" }}{{ end }}", 1, "missing value for block clause"),
        ("{{ define \"x\" }}a{{ end }}\n{{ define \"x\" }}b{{ end }}", 2, "multiple definition of template \"x\""),
        ("x\n{{ .a ", 2, "unterminated action"),
        ("{{ .a }}\n\n{{ end }}\nmore\n", 3, "unexpected {{end}}"),
        ("{{ if .flag }}x\n{{ else }}y\n{{ else }}z{{ end }}", 3, "a second else"),
        ("\n{{ else }}", 2, "unexpected {{else}}"),
        ("{{ if .flag }}x", 1, "if without {{end}}"),
        ("{{ range .a }}x", 1, "range without {{end}}"),
        ("{{ if .a }}x{{ else }}", 1, "else without {{end}}"),
        ("{{ if .a }}{{ else range .b }}{{ end }}", 1, "else must be followed by nothing, by if or by with"),
        ("{{ \"abc }}", 1, "unterminated quoted string"),
        ("{{ \"abc\n\" }}", 1, "unterminated quoted string"),
        ("{{ `abc }}", 1, "unterminated raw quoted string"),
        ("{{ .a | }}", 1, "empty command"),
        ("{{ | .a }}", 1, "missing command before |"),
        ("{{ }}", 1, "empty action"),
        ("{{ (index .a }}", 1, "unclosed"),
        ("{{ index .a) }}", 1, "unexpected )"),
        ("{{ .a .b }}", 1, "non-function"),
        ("{{ .a | .b }}", 1, "only functions can follow |"),
        ("{{ $x }}", 1, "undefined variable $x"),
        ("{{ if .a }}{{ $y := 1 }}{{ end }}{{ $y }}", 1, "undefined variable $y"),
        ("{{ range $v := .a }}{{ end }}{{ $v }}", 1, "undefined variable $v"),
        ("{{ $x = 1 }}", 1, "undefined variable $x"),
        ("{{ if $x.a := .a }}{{ end }}", 1, "can only be declared"),
        ("{{ range $a, $b, $c := .x }}{{ end }}", 1, "range variables"),
        ("{{ 'cd' }}", 1, "malformed character constant"),
        ("{{ .a | if }}", 1, "can only start an action"),
        ("{{/* never closed }}", 1, "unclosed comment"),
        ("{{/* c */ }}", 1, "comment ends before closing delimiter"),
        ("{{ end x }}", 1, "unexpected words after end"),
        ("{{ .a\n .b\n ; }}", 3, "unexpected character"),
    ] {
        let err = check_syntax(T, t).expect_err(t);
        assert!(err.to_string().contains(needle), "{t}: {err}");
        assert_eq!(err.line, Some(line), "{t}: {err}");
        assert_eq!(err.object, T);
        // Rendering reports the same error, before reading any data.
        assert_eq!(render(T, t, &data()).unwrap_err(), err, "{t}");
    }
}

#[test]
fn nesting_is_bounded_instead_of_overflowing_the_stack() {
    let deep_if = "{{ if true }}".repeat(10_000);
    assert!(check_syntax(T, &deep_if).unwrap_err().message.contains("nested more than"));
    let deep_parens = format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(check_syntax(T, &deep_parens).unwrap_err().message.contains("nested more than"));
    let fine = format!("{}x{}", "{{ if true }}".repeat(MAX_DEPTH), "{{ end }}".repeat(MAX_DEPTH));
    assert_eq!(r(&fine), "x");
}

#[test]
fn earlier_action_outputs_are_deferred_until_dispatch() {
    let t = "disk: \"{{ .actions.discover.output.disk }}\" host: {{ .device_1 }}";
    let first = r(t);
    assert_eq!(first, "disk: \"{{ .actions.discover.output.disk }}\" host: 52:54:00:12:34:56");
    let at_dispatch = json!({"actions": {"discover": {"output": {"disk": "/dev/sdb"}}}});
    assert_eq!(render("t", &first, &at_dispatch).unwrap(), "disk: \"/dev/sdb\" host: 52:54:00:12:34:56");
    let err = render("t", &first, &json!({"actions": {}})).unwrap_err();
    assert_eq!(err.field.as_deref(), Some(".actions.discover"), "{err}");
    let err = e("{{ .actions.x.output | upper }}");
    assert!(err.message.contains("known only when the workflow runs"), "{err}");
    assert!(e("{{ and .actions.x true }}").message.contains("known only when the workflow runs"));
    assert_eq!(r("{{ $.actions.a.output }}"), "{{ $.actions.a.output }}");
    // Only the data's own `.actions` is deferred, not a field of that name elsewhere.
    let err = render("t", "{{ range .list }}{{ .actions }}{{ end }}", &json!({"list": [{"x": 1}]})).unwrap_err();
    assert!(err.message.contains("no value for \".actions\""), "{err}");
}

#[test]
fn probe_renders_any_field_and_checks_both_branches() {
    let out =
        render_probe("t", "{{ .device_1 }} {{ formatPartition (index .Hardware.Disks 0) 1 }} {{ .a.b.c | upper }}")
            .unwrap();
    assert_eq!(out, "probe /dev/probe1 PROBE");
    assert_eq!(
        render_probe(
            "t",
            "{{ range $i, $d := .Hardware.Disks }}{{ $i }}{{ $d }}{{ end }}|{{ len .x }}|{{ printf \"%d\" .n }}"
        )
        .unwrap(),
        "probeprobe|1|probe"
    );
    assert!(render_probe("t", "{{ nope }}").is_err());
    // Whichever way the condition goes, the other branch is checked too.
    let err = render_probe("t", "{{ if eq .a \"x\" }}ok{{ else }}{{ index 5 1 }}{{ end }}").unwrap_err();
    assert!(err.message.contains("can't index a number"), "{err}");
    assert_eq!(render_probe("t", "{{ if .a }}then{{ else }}else{{ end }}").unwrap(), "then");
    assert_eq!(render_probe("t", "{{ and .a false }}{{ or .a 1 }}{{ not .a }}").unwrap(), "probeprobeprobe");
}

#[test]
fn output_lines_map_back_to_template_lines() {
    let text = "a: 1\n{{- /* trimmed */}}\nb: {{ .multi }}\nc: 3\n{{ range .list }}d: {{ . }}\n{{ end }}e: 5\n";
    let data = json!({"multi": "x\ny\nz", "list": [1, 2]});
    let out = render_mapped(T, text, &data).unwrap();
    assert_eq!(out.text, "a: 1\nb: x\ny\nz\nc: 3\nd: 1\nd: 2\ne: 5\n");
    let expected = [1, 3, 3, 3, 4, 5, 5, 6];
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(out.source_line(i + 1), *want, "output line {}", i + 1);
    }
    assert_eq!(out.source_line(100), 6, "past the end: the template's last line");
}

/// Pseudo-random inputs and every truncation of valid templates: errors
/// are fine, panics (and stack overflows) are not.
#[test]
fn never_panics_on_garbage() {
    let valid = [
        "a {{- .device_1 -}} b {{ if eq 1 1 }}{{ range $i, $v := .Hardware.Disks }}{{ printf \"%q %05d\" $v $i }}{{ end }}{{ else if .flag }}y{{ else }}x{{ end }} `{{ \"s\\\"\\u00e9\" }}` {{/* c */}}",
        "{{ formatPartition ( index .Hardware.Disks 0 ) 1 }} {{ $x := index .m.list 0 1 }}{{ $x }} {{ .nums.f | printf \"%v\" }} {{ 0x1F }} {{ .5 }}",
        "{{ and .flag .nope }}{{ or (eq .device_1 \"x\") (ne 1 2) }}{{ .actions.a.b }}{{ join \",\" .hardware.metadata.instance.tags }}",
    ];
    let mut inputs: Vec<String> = Vec::new();
    for v in valid {
        for i in (0..=v.len()).filter(|i| v.is_char_boundary(*i)) {
            inputs.push(v[..i].to_string());
            inputs.push(v[i..].to_string());
        }
    }
    let alphabet = [
        "{{",
        "}}",
        "{{-",
        "-}}",
        "- ",
        " -",
        "-",
        ".",
        "$",
        "$x",
        ":=",
        "\"",
        "`",
        "\\",
        "(",
        ")",
        "|",
        "if",
        "end",
        "else",
        "range",
        "index",
        "printf",
        "\"%d\"",
        "\"%q\"",
        " ",
        "x",
        "1",
        "0x",
        "1e",
        ".5",
        ",",
        "/*",
        "*/",
        "\n",
        "é",
        "\u{a0}",
        ".device_1",
        ".Hardware.Disks",
        "'",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let mut s = String::new();
        for _ in 0..(next() % 16) {
            s.push_str(alphabet[(next() % alphabet.len() as u64) as usize]);
        }
        inputs.push(s);
    }
    // Valid templates with one token swapped for a random one.
    for v in valid {
        let words: Vec<&str> = v.split(' ').collect();
        for _ in 0..2_000 {
            let mut w = words.clone();
            let at = (next() % w.len() as u64) as usize;
            w[at] = alphabet[(next() % alphabet.len() as u64) as usize];
            inputs.push(w.join(" "));
        }
    }
    for input in inputs {
        let _ = check_syntax("t", &input);
        let _ = render("t", &input, &data());
        let _ = render_probe("t", &input);
    }
}

#[test]
fn data_printed_while_outputs_are_deferred_stays_text_at_dispatch() {
    // Plan time: `.actions` is absent, so its references are deferred, and a
    // value from the data that looks like a template must not become one.
    let data = json!({"metadata": {"evil": "{{ .actions.first.output.secret }}"}});
    let planned = render("t", "A={{ .metadata.evil }} B={{ .actions.first.output.ok }}", &data).unwrap();
    assert_eq!(planned, r#"A={{"{{"}} .actions.first.output.secret }} B={{ .actions.first.output.ok }}"#);
    // Dispatch: the real reference is filled in, the data stays text.
    let outputs = json!({"actions": {"first": {"output": {"ok": "yes", "secret": "s3cret"}}}});
    let dispatched = render("t", &planned, &outputs).unwrap();
    assert_eq!(dispatched, "A={{ .actions.first.output.secret }} B=yes");
}

/// Output and work grow with the template and the data, not exponentially:
/// ranges nested over a short list, and pipelines that double a string at
/// each stage, stop with an error that names the line and the expression.
/// (Before the step and size bounds, each of these ran for hours or until
/// memory ran out.)
#[test]
fn no_exponential_blow_up() {
    const BLOW_UP: std::time::Duration = std::time::Duration::from_secs(60);
    let data = json!({"l": [1, 2, 3, 4], "s": "aa", "big": "x".repeat(100_000)});
    let nested = format!("x\n{}.{}", "{{ range .l }}".repeat(40), "{{ end }}".repeat(40));
    let doubling = format!("x\n{{{{ .s{} }}}}", " | replace \"a\" \"aa\"".repeat(60));
    let spread = "x\n{{ replace \"\" .big .big }}".to_string();
    let printf = format!("x\n{{{{ .s{} }}}}", " | printf \"%s%s\" .s | printf \"%v%v\" .big".repeat(60));
    // Lists and maps that double through a variable.
    let concat = "x\n{{ $l := .l }}{{ range until 60 }}{{ $l = concat $l $l }}{{ end }}".to_string();
    let nest = "x\n{{ $l := .l }}{{ range until 60 }}{{ $l = list $l $l }}{{ end }}".to_string();
    let dict = "x\n{{ $d := dict }}{{ range until 60 }}{{ $d = dict \"a\" $d \"b\" $d }}{{ end }}".to_string();
    let until = "x\n{{ range until 100000000 }}{{ end }}".to_string();
    let split = "x\n{{ splitList \"\" .big | len }}".to_string();
    for (text, field) in [
        (nested, ".l"),
        (doubling, "replace"),
        (spread, "replace"),
        (printf, "printf"),
        (concat, "concat"),
        (nest, "list"),
        (dict, "dict"),
        (until, "until"),
        (split, "splitList"),
    ] {
        let start = std::time::Instant::now();
        let result = render(T, &text, &data);
        // Not a speed goal (those are benchmarks): a bound that a blow-up
        // (2^40 and more) would never meet, loose enough for a loaded
        // machine running a debug build.
        assert!(start.elapsed() < BLOW_UP, "{:?} for {text}", start.elapsed());
        let e = result.expect_err(&text);
        assert_eq!((e.line, e.field.as_deref()), (Some(2), Some(field)), "{e}");
        let start = std::time::Instant::now();
        let _ = render_probe(T, &text);
        assert!(start.elapsed() < BLOW_UP, "probe: {:?} for {text}", start.elapsed());
    }
}

/// An error about a value names the expression that produced it, also when
/// that is a literal or a pipeline rather than one field.
#[test]
fn errors_about_values_name_the_expression() {
    let err = e("{{ range $i, $v := true }}{{ $i }}{{ end }}");
    assert_eq!((err.line, err.field.as_deref()), (Some(1), Some("true")), "{err}");
    let err = e("\n{{ range (index .m \"a\") }}{{ end }}");
    assert_eq!((err.line, err.field.as_deref()), (Some(2), Some("(index .m \"a\")")), "{err}");
    let err = e("{{ .hardware.metadata.instance | len | not | and .hardware.metadata.instance.gone }}");
    assert_eq!(
        err.field.as_deref(),
        Some(".hardware.metadata.instance | len | not | and .hardware.metadata.instance.gone")
    );
    let err = render_probe(T, "{{ range 3 }}{{ end }}").expect_err("a number is no list");
    assert_eq!(err.field.as_deref(), Some("3"), "{err}");
}

/// docs/templates.md lists exactly the functions in the table, and none of
/// them among the unsupported ones.
#[test]
fn the_docs_list_every_function() {
    let doc = include_str!("../../../docs/templates.md");
    let section = |start: &str, end: &str| -> std::collections::BTreeSet<String> {
        let from = doc.find(start).expect("section start") + start.len();
        let to = from + doc[from..].find(end).expect("section end");
        doc[from..to].split('`').skip(1).step_by(2).map(|w| w.split('/').next().unwrap_or(w).to_string()).collect()
    };
    let listed = section("### Functions", "Not supported");
    let table: std::collections::BTreeSet<String> = FUNCTIONS.iter().map(|f| f.to_string()).collect();
    let missing: Vec<_> = table.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&table).collect();
    assert!(missing.is_empty() && extra.is_empty(), "not in the docs: {missing:?}; not functions: {extra:?}");
    let unsupported = section("Not supported (an error", "### Differences");
    let both: Vec<_> = unsupported.intersection(&table).collect();
    assert!(both.is_empty(), "listed as unsupported but supported: {both:?}");
}

/// The language as Go runs it, checked here without Go (the differential
/// test in tests/go_differential.rs checks the same against Go itself).
#[test]
fn go_language_features() {
    let cases = [
        // Fields of a parenthesised value, alone and as an argument.
        ("{{ (index .m.list 0) }} {{ (.hardware.metadata).instance.id }}", "[10 11] i-1"),
        ("{{ if eq (.hardware.metadata).instance.id \"i-1\" }}y{{ end }}", "y"),
        // with, else with, else if, assignment, break and continue.
        (
            "{{ with .nums.i }}{{ . }}{{ end }}{{ with .flag }}x{{ else with .device_1 }}{{ . }}{{ end }}",
            "752:54:00:12:34:56",
        ),
        ("{{ if .flag }}a{{ else if .nums.i }}b{{ else }}c{{ end }}", "b"),
        ("{{ $x := 1 }}{{ range .Hardware.Disks }}{{ $x = . }}{{ end }}{{ $x }}", "/dev/sdb"),
        ("{{ range $i, $v := .m.list }}{{ if eq $i 1 }}{{ break }}{{ end }}{{ $v }}{{ end }}", "[10 11]"),
        (
            "{{ range .Hardware.Disks }}{{ if eq . \"/dev/sdb\" }}{{ continue }}{{ end }}{{ . }}{{ end }}",
            "/dev/nvme0n1",
        ),
        ("{{ if $d := .Hardware.Disks }}{{ len $d }}{{ end }}", "2"),
        // Comparison, print, printf.
        ("{{ lt 1 2 }} {{ ge .nums.f 1.5 }} {{ gt \"b\" \"a\" }} {{ le 3 2 }}", "true true true false"),
        ("{{ print 1 2 \"a\" 3 }}|{{ println \"x\" 1 }}", "1 2a3|x 1\n"),
        (
            "{{ printf \"%5.2f|%x|%X|%o|%b|%c|%+d|%t|%e|%T\" 3.14159 255 \"hi\" 8 5 65 3 true 1234.5 .m }}",
            " 3.14|ff|6869|10|101|A|+3|true|1.234500e+03|map[string]interface {}",
        ),
        ("{{ .nums.big }} {{ .nums.tiny }} {{ .m }} {{ 'a' }}", "1e+06 1e-07 map[a:1 b:2 list:[[10 11] [12]]] 97"),
        // Escapers and Sprig.
        ("{{ html \"<a&'>\" }} {{ js \"a'<\" }} {{ urlquery \"a b/c\" }}", "&lt;a&amp;&#39;&gt; a\\'\\u003C a+b%2Fc"),
        ("{{ regexMatch \"^/dev/nvme\" (index .Hardware.Disks 0) }} {{ splitList \":\" .device_1 | last }}", "true 56"),
        (
            "{{ $d := dict \"a\" 1 }}{{ $_ := set $d \"b\" 2 }}{{ $d }} {{ dig \"metadata\" \"instance\" \"id\" \"-\" .hardware }}",
            "map[a:1 b:2] i-1",
        ),
        ("{{ toJson .m }}", "{\"a\":1,\"b\":2,\"list\":[[10,11],[12]]}"),
        ("{{ toYaml .hardware.metadata }}", "instance:\n  gone: null\n  id: i-1\n  tags:\n  - a\n  - b"),
        ("{{ \"line\\nnext\" | nindent 2 }}", "\n  line\n  next"),
        ("{{ b64enc \"kiln\" | b64dec }} {{ add 1 2 3 }} {{ seq 3 }} {{ until 2 }}", "kiln 6 1 2 3 [0 1]"),
        ("{{ default \"d\" .flag }} {{ empty .m }} {{ coalesce .flag 0 \"x\" }} {{ ternary 1 2 true }}", "d false x 1"),
        (
            "{{ keys .m | sortAlpha | join \",\" }} {{ pick .m \"a\" }} {{ omit .m \"list\" \"b\" }}",
            "a,b,list map[a:1] map[a:1]",
        ),
        ("{{ if .flag }}{{ nil }}{{ mul }}{{ end }}ok", "ok"),
    ];
    for (t, want) in cases {
        assert_eq!(r(t), want, "{t}");
    }
    for (t, needle) in [
        ("{{ eq 1 1.5 }}", "incompatible types"),
        ("{{ lt true false }}", "invalid type for comparison"),
        ("{{ upper 1 }}", "expected string; got int"),
        ("{{ mul }}", "wrong number of args for mul: want at least 1 got 0"),
        ("{{ pick .hardware.metadata.instance.gone \"a\" }}", "expected map"),
        ("{{ (index .m.list 0).x }}", "can't read field \"x\": (index .m.list 0) is a list"),
    ] {
        let err = e(t);
        assert!(err.message.contains(needle), "{t}: {err}");
        assert_eq!(err.line, Some(1));
    }
}

#[test]
fn template_calls_are_bounded() {
    // Doubling calls stop at the step bound, not after 2^100 of them.
    let doubling = "x\n{{ define \"x\" }}{{ template \"x\" . }}{{ template \"x\" . }}{{ end }}{{ template \"x\" . }}";
    let e = render(T, doubling, &json!({})).unwrap_err();
    assert!(e.message.contains("nested more than 100 deep") || e.message.contains("steps"), "{e}");
    // As deep as allowed, with nesting inside each call, on a small stack
    // (tokio's and the test harness's threads have 2 MiB).
    let mut deep = "{{ define \"d\" }}{{ if . }}".to_string();
    deep.push_str(&"{{ with 1 }}{{ range list 1 }}".repeat(30));
    deep.push_str("{{ template \"d\" (sub $ 1) }}");
    deep.push_str(&"{{ end }}{{ end }}".repeat(30));
    deep.push_str("{{ end }}{{ end }}{{ template \"d\" 99 }}done");
    let result = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || render(T, &deep, &json!({})))
        .unwrap()
        .join()
        .expect("no stack overflow");
    let e = result.unwrap_err();
    assert!(e.message.contains("nested more than 160 deep"), "{e}");
    let shallow =
        "{{ define \"d\" }}{{ if . }}{{ template \"d\" (sub $ 1) }}{{ end }}{{ end }}{{ template \"d\" 70 }}done";
    assert_eq!(render(T, shallow, &json!({})).unwrap(), "done");
    let e =
        render(T, "{{ define \"i\" }}{{ template \"i\" . }}{{ end }}{{ template \"i\" 1 }}", &json!({})).unwrap_err();
    assert!(e.message.contains("nested more than 100 deep"), "{e}");
    // Checked at apply time with placeholders too.
    assert!(render_probe(T, "{{ define \"p\" }}{{ .a.b }}{{ end }}{{ template \"p\" .x }}").is_ok());
}

#[test]
fn the_deepest_nesting_with_the_deepest_expression_fits_a_small_stack() {
    // Close to 160 bodies deep (the bound), then parentheses 60 deep.
    let parens = format!("{}1{}", "(add 1 ".repeat(60), ")".repeat(60));
    let mut t = "{{ define \"d\" }}{{ if . }}".to_string();
    t.push_str("{{ template \"d\" (sub $ 1) }}{{ else }}");
    t.push_str(&"{{ with 1 }}".repeat(40));
    t.push_str(&format!("{{{{ {parens} }}}}"));
    t.push_str(&"{{ end }}".repeat(40));
    t.push_str("{{ end }}{{ end }}{{ template \"d\" 55 }}");
    let result = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || render(T, &t, &json!({})))
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert_eq!(result.unwrap(), "61");
}
