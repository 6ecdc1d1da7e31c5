//! kiln's template renderer against Go's: the same templates and data go
//! through kiln and through a small Go program (tests/go-oracle) that renders
//! as Tinkerbell does (text/template + Sprig's hermetic functions +
//! Tinkerbell's four, missingkey=error). Both must print the same text, or
//! both must fail.
//!
//! A few differences are deliberate (docs/templates.md, "Differences from
//! Go"); `expected` below maps Go's result onto what kiln promises for them,
//! and nothing else is forgiven.
//!
//! The Go program is built from Debian's packages in GOPATH mode, offline.
//! Without `go` the test says so and passes; scripts/test-env.sh installs it,
//! so CI always runs it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use kiln_documents::template::render;
use proptest::prelude::*;
use serde_json::{Value, json};

struct Oracle {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The running Go renderer, or `None` when Go is not installed.
fn oracle() -> Option<&'static Mutex<Oracle>> {
    static ORACLE: OnceLock<Option<Mutex<Oracle>>> = OnceLock::new();
    ORACLE.get_or_init(start_oracle).as_ref()
}

fn start_oracle() -> Option<Mutex<Oracle>> {
    if Command::new("go").arg("version").output().is_err() {
        eprintln!(
            "SKIPPED: `go` is not installed, so kiln's templates are not compared with Go's \
             (apt-get install golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev)"
        );
        return None;
    }
    // In the target's scratch directory, so that Go's build cache is kept
    // between runs; each run builds its own binary (a cache hit after the
    // first), so that concurrent runs never share a half-written one.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-oracle");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let bin = dir.join(format!("oracle-{}", std::process::id()));
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go-oracle/main.go");
    let tinkerbell = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go-oracle/tinkerbell.go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(source)
        .arg(tinkerbell)
        .env("GOPATH", "/usr/share/gocode")
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.join("cache"))
        .output()
        .expect("run go build");
    assert!(
        built.status.success(),
        "building the Go oracle failed (are golang-github-masterminds-sprig-dev and golang-k8s-sigs-yaml-dev \
         installed?):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // Local time is UTC, as in Tinkerbell's controller container (no TZ,
    // no /etc/localtime) and in kiln's renderer.
    let mut child = Command::new(&bin)
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Go oracle");
    // The running process keeps its binary; the name can go now.
    let _ = std::fs::remove_file(&bin);
    let stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    Some(Mutex::new(Oracle { _child: child, stdin, stdout }))
}

/// Go's result: the output, or the error message.
fn go_render(oracle: &Mutex<Oracle>, template: &str, data: &Value) -> Result<String, String> {
    let mut o = oracle.lock().unwrap_or_else(|e| e.into_inner());
    let line = serde_json::to_string(&json!({"template": template, "data": data})).expect("json");
    writeln!(o.stdin, "{line}").expect("write to the oracle");
    o.stdin.flush().expect("flush");
    let mut answer = String::new();
    o.stdout.read_line(&mut answer).expect("read from the oracle");
    let answer: Value = serde_json::from_str(&answer).expect("the oracle answers JSON");
    match (answer.get("ok"), answer.get("err")) {
        (Some(Value::String(s)), _) => Ok(s.clone()),
        (_, Some(Value::String(e))) => Err(e.clone()),
        _ => panic!("odd answer from the oracle: {answer}"),
    }
}

/// What kiln must do given Go's result: Go's output, or an error where kiln
/// deliberately refuses what Go prints as a placeholder (`<no value>` for a
/// nil, `%!d(string=x)` for a bad printf argument).
fn expected(go: Result<String, String>) -> Result<String, String> {
    match go {
        Ok(s) if s.contains("<no value>") => Err(format!("Go printed <no value>: {s:?}")),
        Ok(s) if s.contains("%!") => Err(format!("Go printed a printf error: {s:?}")),
        // kiln has one integer type; Go tells int from int64 (Sprig's `add`
        // returns int64, a parameter may want int) and refuses to mix them.
        // Go stops there, so what kiln does is not compared.
        Err(e) if e.contains("expected int; got int64") || e.contains("expected int64; got int") => {
            Ok(ANY_INTEGER.into())
        }
        // Likewise kiln has one map type, and Go refuses split's
        // map[string]string where Sprig wants map[string]interface{}.
        Err(e) if e.contains("expected map[string]interface {}; got map[string]string") => Ok(ANY_INTEGER.into()),
        other => other,
    }
}

/// What `expected` says when Go refused to mix int and int64 (or its two
/// map types).
const ANY_INTEGER: &str = "(not compared: Go's int and int64)";

/// The difference between kiln and Go on one case, if any.
fn compare(oracle: &Mutex<Oracle>, template: &str, data: &Value) -> Option<String> {
    let go = expected(go_render(oracle, template, data));
    let kiln = render("template \"t\"", template, data).map_err(|e| e.to_string());
    match (&go, &kiln) {
        (Ok(g), Ok(k)) if g == k => None,
        (Ok(g), _) if g == ANY_INTEGER => None,
        (Err(_), Err(_)) => None,
        _ => Some(format!("template {template:?}\n  go:   {go:?}\n  kiln: {kiln:?}")),
    }
}

/// The data every corpus template sees: Tinkerbell-shaped hardware, and one
/// value of each kind. `actions` is present so that kiln renders everything
/// now instead of deferring `.actions` to dispatch.
fn data() -> Value {
    json!({
        "actions": {},
        "Hardware": {
            "Disks": ["/dev/nvme0n1", "/dev/sdb"],
            "Interfaces": [
                {"MAC": "52:54:00:12:34:56", "DHCP": {"IP": {"Address": "10.0.0.5", "Netmask": "255.255.255.0",
                 "Gateway": "10.0.0.1"}, "NameServers": ["1.1.1.1", "8.8.8.8"], "Hostname": "node-1", "VLANID": ""}},
                {"MAC": "52:54:00:ab:cd:ef", "DHCP": {"IP": {"Address": "10.0.1.5", "Netmask": "255.255.0.0",
                 "Gateway": ""}, "NameServers": [], "Hostname": "", "VLANID": "42"}}
            ],
            "Metadata": {"Instance": {"OperatingSystem": {"Slug": "ubuntu_22_04"}, "Tags": ["a", "b"]}},
            "UserData": "#cloud-config\nusers: []\n"
        },
        "device_1": "52:54:00:12:34:56",
        "s": "Hello, World",
        "e": "",
        "n": 7,
        "z": 0,
        "neg": -3,
        "f": 2.5,
        "whole": 3.0,
        "big": 1000000.0,
        "tiny": 0.00001,
        "t": true,
        "no": false,
        "nil": null,
        "l": ["b", "a", "c", "a"],
        "nums": [3, 1, 2],
        "empty": [],
        "m": {"b": 2, "a": "x", "c": [1, 2], "d": {"e": "deep"}},
        "em": {},
        "csv": "x,y,,z",
        "yaml": "a: 1\nb: [x, z]\n",
        "json": "{\"k\": [1, \"v\"]}",
        "b64": "aGVsbG8=",
        "html": "<a href=\"x\">&'</a>",
    })
}

/// Templates Go renders without error (kiln must print the same).
const RENDERS: &[&str] = &[
    // Fields, parentheses, chains.
    "{{ .s }} {{ .n }} {{ .f }} {{ .t }} {{ .no }} {{ .whole }} {{ .big }} {{ .tiny }} {{ .neg }}",
    "{{ (index .Hardware.Interfaces 0).DHCP.IP.Address }}",
    "{{ (index .Hardware.Interfaces 1).DHCP.VLANID }}/{{ (index .Hardware.Interfaces 0).MAC }}",
    "{{ if eq (index .Hardware.Interfaces 0).MAC \"52:54:00:12:34:56\" }}first{{ end }}",
    "{{ netmaskToPrefixLength (index .Hardware.Interfaces 0).DHCP.IP.Netmask }}",
    "{{ formatPartition (index .Hardware.Disks 0) 1 }} {{ formatPartition \"/dev/sda\" 2 }} {{ formatPartition \"/dev/disk/by-id/x\" 3 }}",
    "{{ .Hardware.Metadata.Instance.OperatingSystem.Slug }}",
    "{{ formatPartition \"/dev/mmcblk0\" 2 }} {{ formatPartition \"/dev/vda\" 12 }} {{ formatPartition \"/dev/md127\" 1 }}",
    "{{ $.s }} {{ $x := .m }}{{ $x.d.e }} {{ (.m).d.e }}",
    "{{ .l }} {{ .nums }} {{ .m }} {{ .empty }} {{ .em }}",
    "{{ index .m \"a\" }} {{ index .m.c 1 }} {{ index .l 0 }}",
    "{{ if index .m \"nope\" }}yes{{ else }}no{{ end }}",
    "{{ if .no }}{{ nil }}{{ mul }}{{ upper 1 }}{{ end }}ok",
    // Control flow.
    "{{ if .t }}a{{ else if .n }}b{{ else }}c{{ end }}",
    "{{ if .no }}a{{ else if .z }}b{{ else }}c{{ end }}",
    "{{ with .m.d }}{{ .e }}{{ end }}{{ with .e }}x{{ else }}empty{{ end }}",
    "{{ with $v := .s }}{{ $v }}{{ . }}{{ end }}",
    "{{ range .l }}[{{ . }}]{{ end }}",
    "{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}",
    "{{ range $k, $v := .m }}{{ $k }}:{{ $v }};{{ end }}",
    "{{ range $v := .nums }}{{ $v }}{{ end }}",
    "{{ range .empty }}x{{ else }}none{{ end }}{{ range .nil }}x{{ else }}nil{{ end }}",
    "{{ range .nums }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ . }}{{ end }}",
    "{{ range .nums }}{{ if eq . 1 }}{{ break }}{{ end }}{{ . }}{{ end }}",
    "{{ $x := 1 }}{{ range .nums }}{{ $x = . }}{{ end }}{{ $x }}",
    "{{ $x := \"a\" }}{{ if .t }}{{ $x = \"b\" }}{{ end }}{{ $x }}",
    "a  {{- .s -}}  b\n{{- /* a comment */ -}}\nc {{/* another */}} d",
    "{{- 3 }} {{ -3 }} {{ 1.5 }} {{ 1e6 }} {{ 0x1F }} {{ 0o17 }} {{ 1_000 }} {{ 'a' }}",
    // Comparison and logic.
    "{{ lt 1 2 }} {{ le 2 2 }} {{ gt .n 3 }} {{ ge .f 2.5 }} {{ lt \"a\" \"b\" }} {{ gt .neg .z }}",
    "{{ eq .n 7 }} {{ eq .s \"x\" \"Hello, World\" }} {{ ne .f 1.5 }} {{ eq .t true }}",
    "{{ and .t .n }} {{ and .t .z }} {{ or .e .s }} {{ or .z .e }} {{ not .em }} {{ not .l }}",
    "{{ and .no .missing.deeper }}",
    "{{ eq .nil .nil }}",
    // fmt.
    "{{ print 1 2 \"a\" \"b\" 3 .t }}|{{ println .s .n }}|{{ print }}|{{ print .nil }}",
    "{{ printf \"%s-%d-%v-%q\" .s .n .f .s }}",
    "{{ printf \"[%5s][%-5s][%05d][%x][%X][%o][%b][%c]\" \"ab\" \"cd\" -42 255 255 8 5 65 }}",
    "{{ printf \"%.2f %e %g %8.3f %+d %t %%\" .f 123456.789 0.000012 3.14159 5 .t }}",
    "{{ printf \"%v %v %v\" .l .m .nil }}",
    "{{ printf \"%q %x %T %T %#x %X\" .l \"hi\" .s .f 255 \"hi\" }}",
    // Escapers.
    "{{ html .nil }} {{ js .nil }} {{ urlquery .nil 1 }} {{ html .html }} {{ js .html }} {{ urlquery \"a b&c=d/é\" }} {{ .html | html }}",
    "{{ slice .l 1 3 }} {{ slice .l 1 }} {{ slice .l }} {{ len .s }} {{ len .l }} {{ len .m }}",
    // Sprig strings.
    "{{ lower .s }} {{ upper .s }} {{ trim \"  x \" }} {{ title \"hello world\" }} {{ repeat 3 \"ab\" }}",
    "{{ hasPrefix \"He\" .s }} {{ hasSuffix \"x\" .s }} {{ contains \"lo, W\" .s }}",
    "{{ trimPrefix \"He\" .s }} {{ trimSuffix \"ld\" .s }} {{ trimAll \"Hd\" .s }} {{ replace \"l\" \"L\" .s }}",
    "{{ quote .s .n }} {{ squote .s }} {{ cat \"a\" .n .nil \"b\" }} {{ .s | quote }}",
    "{{ indent 2 \"a\\nb\" }}|{{ nindent 4 \"a\\nb\" }}|{{ .Hardware.UserData | indent 2 }}",
    "{{ splitList \",\" .csv }} {{ split \",\" .csv }} {{ (split \",\" .csv)._0 }} {{ join \"-\" .l }} {{ join \"+\" .nums }}",
    "{{ regexMatch \"^[a-z]+$\" \"abc\" }} {{ regexMatch \"^\\\\d+$\" .s }} {{ regexReplaceAll \"l+\" .s \"L\" }}",
    "{{ b64enc \"hello\" }} {{ b64dec .b64 }} {{ toString .n }} {{ toString .f }} {{ toString .nil }}",
    "{{ substr 1 3 .s }} {{ trunc 5 .s }} {{ nospace \"a b c\" }} {{ abbrev 8 .s }}",
    // Sprig defaults and flow.
    "{{ default \"d\" .e }} {{ default \"d\" .s }} {{ .e | default \"p\" }} {{ default 5 .z }} {{ default \"x\" .nil }}",
    "{{ empty .e }} {{ empty .s }} {{ empty .z }} {{ empty .em }} {{ empty .nil }} {{ empty .l }}",
    "{{ coalesce .e .z .s }} {{ coalesce .nil .n }} {{ ternary \"y\" \"n\" .t }} {{ ternary \"y\" \"n\" .no }}",
    // Sprig numbers.
    "{{ add 1 2 3 }} {{ sub 10 .n }} {{ mul 2 3 4 }} {{ div 7 2 }} {{ mod 7 3 }} {{ max 1 9 3 }} {{ min 4 2 8 }}",
    "{{ atoi \"42\" }} {{ atoi \"x\" }} {{ int \"12\" }} {{ int .f }} {{ int64 \"5\" }} {{ add1 .n }} {{ add .f 1 }}",
    "{{ until 3 }} {{ until -2 }} {{ seq -2 }} {{ seq 0 }} {{ seq 1 2 7 }} {{ seq 7 -2 1 }} {{ seq 7 2 1 }} {{ seq 1 0 3 }}",
    "{{ substr -1 3 .s }}|{{ substr 2 -1 .s }}|{{ substr 2 99 .s }}|{{ trunc -3 .s }}|{{ abbrev 3 .s }}",
    "{{ until 3 }} {{ seq 3 }} {{ seq 2 5 }} {{ seq 5 2 }} {{ range until 2 }}{{ . }}{{ end }}",
    // Sprig lists.
    "{{ list 1 \"a\" .t }} {{ first .l }} {{ last .l }} {{ rest .nums }} {{ initial .nums }}",
    "{{ uniq .l }} {{ sortAlpha .l }} {{ has \"a\" .l }} {{ has \"q\" .l }} {{ without .l \"a\" }} {{ compact (list \"\" 1 0 \"x\") }}",
    "{{ rest .empty }} {{ initial .empty }} {{ print (first .empty) (last .empty) (slice .empty) }} {{ rest (list 1) }}",
    "{{ append .l \"z\" }} {{ concat .l .nums }} {{ reverse .nums }} {{ len (list) }}",
    // Sprig dicts.
    "{{ $d := dict \"a\" 1 \"b\" \"two\" }}{{ $d }} {{ $d.a }} {{ get $d \"b\" }} {{ get $d \"q\" }} {{ hasKey $d \"a\" }}",
    "{{ .nil | pick }} {{ pick (.nil) }} {{ sortAlpha .nil }} {{ pick nil }} {{ keys nil }} {{ get nil \"a\" }} {{ hasKey nil \"a\" }} {{ fromJson \"bad\" }} {{ unset nil \"a\" }}",
    "{{ keys .m | sortAlpha }} {{ pick .m \"a\" \"b\" }} {{ omit .m \"c\" \"d\" }}",
    "{{ $d := dict \"x\" 1 }}{{ $_ := set $d \"y\" 2 }}{{ $d }} {{ merge (dict \"a\" 1) (dict \"a\" 2 \"b\" 3) }}",
    "{{ dig \"d\" \"e\" \"none\" .m }} {{ dig \"d\" \"q\" \"none\" .m }} {{ values (dict \"a\" 1) }}",
    // Sprig encodings.
    "{{ toJson .m }} {{ toJson .l }} {{ toJson .s }} {{ toJson .nil }} {{ toJson .f }} {{ toJson .big }}",
    "{{ toPrettyJson (dict \"a\" (list 1 2)) }}",
    "{{ toYaml .m }}\n{{ toYaml .l }}\n{{ toYaml .s }}",
    "{{ toYaml $ }}",
    "{{ toYaml (list (print .l .l .l .l .l .l .l .m .m .m) (printf \"%v %v\" .m .Hardware.Interfaces)) }}",
    "{{ toYaml (dict \"key\" (print .s \" it's: \" .l .l .l .l .l .l .l .m .m \"  two  spaces   \" .m .m \"#x\")) }}",
    "{{ toYaml (list (print \"- \" .s .s .s .s .s .s .s .s .s \"   x   \" .s .s .s .s .s .s .s .s .s .s \" \")) }}",
    "{{ toYaml (print \"it's \" .s .s .s .s .s .s .s .s .s \"   x   \" .s .s .s .s .s .s .s .s .s .s \" \\t\") }}",
    "{{ toYaml (list \"no\" \"1.5\" \"12:30\" \"2024-01-02\" \"- x\" \"a: b\" \"#c\" \" lead\" \"trail \" \"~\" \"0x1F\") }}",
    "{{ toYaml (list \"1_000\" \"@at\" \"x #y\" \"é\" \"tab\\there\" \"q'x\" \"\" \"multi\\nline\" \"multi\\nline\\n\" \"x\\n\\n\") }}",
    "{{ toYaml (dict \"k\" (list (list 1 2) (dict \"a\" (list) \"b\" (dict)))) }}",
    "a:\n{{ toYaml (dict \"x\" \"line1\\nline2\\n\" \"y\" (list \"p\\nq\")) | indent 2 }}",
    "{{ (fromYaml .yaml).b }} {{ (fromYaml .yaml).a }} {{ (fromJson .json).k }}",
    "{{ typeOf .s }} {{ typeOf .f }} {{ typeOf .n }} {{ typeOf 3 }} {{ typeOf .l }} {{ typeOf .m }} {{ kindOf .m }} {{ kindOf .l }} {{ kindIs \"string\" .s }}",
    // More of Sprig.
    "{{ mustFirst .l }} {{ mustLast .l }} {{ mustRest .l }} {{ mustInitial .l }} {{ mustReverse .l }} {{ mustUniq .l }}",
    "{{ mustCompact (list 0 1) }} {{ mustWithout .l \"a\" }} {{ mustHas \"b\" .l }} {{ mustAppend .l 1 }} {{ mustPrepend .l 0 }}",
    "{{ mustSlice .l 1 2 }} {{ mustChunk 3 .l }} {{ mustToJson .m }} {{ mustToRawJson .html }} {{ mustFromJson .json }}",
    "{{ mustRegexMatch \"^H\" .s }} {{ mustRegexFind \"o.\" .s }} {{ mustRegexFindAll \"o.\" .s -1 }} {{ mustRegexSplit \"o\" .s -1 }}",
    "{{ mustRegexReplaceAll \"(o)\" .s \"<$1>\" }} {{ mustRegexReplaceAllLiteral \"(o)\" .s \"<$1>\" }} {{ regexReplaceAllLiteral \"o\" .s \"$1\" }}",
    "{{ mustMerge (dict \"a\" 1) (dict \"b\" 2) }} {{ mustMergeOverwrite (dict \"a\" 1 \"c\" (dict \"x\" 1)) (dict \"a\" 2 \"c\" (dict \"y\" 2) \"e\" \"\") }}",
    "{{ mustDeepCopy .m }} {{ deepCopy .l }} {{ deepEqual .m .m }} {{ deepEqual .l .nums }} {{ prepend .l \"z\" }} {{ tuple 1 \"a\" }}",
    "{{ pluck \"a\" .m (dict \"a\" 3) (dict) }} {{ chunk 2 .nums }} {{ chunk 5 .l }} {{ toStrings .nums }} {{ toRawJson .html }}",
    "{{ typeIs \"string\" .s }} {{ typeIs \"int\" .s }} {{ typeIsLike \"float64\" .f }} {{ untilStep 0 10 3 }} {{ untilStep 5 0 -2 }}",
    "{{ splitn \",\" 2 .csv }} {{ splitn \",\" 0 .csv }} {{ splitn \",\" -1 .csv }} {{ splitn \"\" 2 \"abc\" }}",
    "{{ regexSplit \",\" .csv -1 }} {{ regexSplit \",\" .csv 2 }} {{ regexSplit \"x*\" \"axbc\" -1 }} {{ regexSplit \"a\" \"\" -1 }}",
    "{{ regexQuoteMeta \"a.b*c[d]$#-~\" }} {{ sha256sum .s }} {{ adler32sum .s }} {{ b32enc .s }} {{ b32dec \"MZXW6YTBOI======\" }}",
    "{{ sha1sum \"\" }} {{ sha1sum .s }} {{ sha1sum .Hardware.UserData }} {{ sha1sum (repeat 100 \"abc\") }}",
    "{{ b32enc \"\" }} {{ b32enc \"f\" }} {{ b32enc \"fo\" }} {{ b32enc \"foo\" }} {{ b32enc \"foob\" }} {{ b32enc \"fooba\" }}",
    "{{ base \"/a/b.tar.gz\" }} {{ dir \"/a/b/c\" }} {{ ext \"/a/b.tar.gz\" }} {{ clean \"a//b/../../../c/.\" }} {{ isAbs \"/x\" }}",
    "{{ base \"\" }} {{ base \"///\" }} {{ dir \"a\" }} {{ dir \"/\" }} {{ ext \"a.b/c\" }} {{ clean \"/../a/\" }} {{ osBase \"/x/y\" }} {{ osDir \"x/y\" }}",
    "{{ biggest 3 9 2 }} {{ all 1 \"a\" .t }} {{ all 1 .e }} {{ any .e .z .s }} {{ any }} {{ all }} {{ hello }}",
    "{{ toDecimal \"0777\" }} {{ toDecimal 17 }} {{ toDecimal \"9\" }} {{ plural \"one\" \"many\" 1 }} {{ plural \"one\" \"many\" 2 }}",
    "{{ trimall \"H\" .s }} {{ initials \"hello big  world\" }} {{ swapcase .s }} {{ untitle \"Hello World\" }}",
    "{{ addf 1.1 2.2 }} {{ addf }} {{ add1f 0.1 }} {{ subf 1 0.9 }} {{ mulf 1.1 3 }} {{ divf 1 3 }} {{ divf 2 3 }} {{ divf 10 4 }}",
    "{{ addf .f \"1.5\" .n }} {{ mulf 0.1 0.2 0.3 }} {{ divf -1 3 }} {{ maxf 1 2.5 \"3\" }} {{ minf 1 -2.5 }} {{ divf 1e10 3 }}",
    "{{ repeat 2e0 \"ab\" }} {{ round 2.567 1e0 }} {{ untitle \"Hello World  X\" }} {{ swapcase \"hello World x\" }}",
    "{{ initials \"Émile  zola\" }} {{ untitle \"ÉCOLE\" }}",
    // Case conversion (xstrings): acronyms, digits, unicode, separators at the edges.
    "{{ snakecase \"FirstName\" }} {{ snakecase \"HTTPServer\" }} {{ snakecase \"NoHTTPS\" }} {{ snakecase \"GO_PATH\" }} {{ snakecase \"GO PATH\" }} {{ snakecase \"http2xx\" }} {{ snakecase \"HTTP20xOK\" }} {{ snakecase \"Duration2m3s\" }} {{ snakecase \"Bld4Floor3rd\" }}",
    "{{ kebabcase \"FirstName\" }} {{ kebabcase \"HTTPServer\" }} {{ kebabcase \"__a__b__\" }} {{ kebabcase \"-x-\" }} {{ kebabcase \"a.b,c\" }} {{ kebabcase \"ÉcoleNormale\" }} {{ kebabcase \"ΑβΓδ\" }} {{ kebabcase \"日本Go語\" }}",
    "[{{ snakecase \"\" }}][{{ snakecase \" \" }}][{{ snakecase \"a\" }}][{{ snakecase \"A\" }}][{{ snakecase \"9\" }}][{{ snakecase \"a1\" }}][{{ snakecase \"A1b\" }}][{{ snakecase \"1A\" }}][{{ snakecase \"x1.2y\" }}][{{ snakecase \"$money+Sign\" }}][{{ snakecase \"a  b\\tc\" }}]",
    "[{{ snakecase \"ABC\" }}][{{ snakecase \"ABc\" }}][{{ snakecase \"aBC\" }}][{{ snakecase \"a_1_B\" }}][{{ snakecase \"v1.2.3\" }}][{{ snakecase \"Ⅻpart\" }}][{{ snakecase \"½cup\" }}][{{ snakecase \"IPv4Address\" }}][{{ snakecase .s }}]",
    "[{{ camelcase \"some_words\" }}][{{ camelcase \"http_server\" }}][{{ camelcase \"_complex__case_\" }}][{{ camelcase \"some words\" }}][{{ camelcase \"FooBar\" }}][{{ camelcase \"a\" }}][{{ camelcase \"_\" }}][{{ camelcase \"--\" }}][{{ camelcase \"\" }}]",
    "[{{ camelcase \"élan-vital\" }}][{{ camelcase \"straße_ß\" }}][{{ camelcase \"x1_2y\" }}][{{ camelcase \"a b\\tc\\nd\" }}][{{ camelcase \"-a\" }}][{{ camelcase \"a-\" }}][{{ camelcase .s }}]",
    // Go's simple case mappings and categories (not Rust's derived properties): ᾳ is ᾼ, ß stays, İ is i; Ⓐ is no capital.
    "{{ camelcase \"_ᾳ_ﬁ_ß_İX_ᾀ\" }}|{{ snakecase \"ⒶBcǅX\" }}|{{ kebabcase \"ʰHello٣World\" }}",
    // wrap and wrapWith (goutils): widths below 1, long words, spaces at the edges, bytes not characters.
    "[{{ wrap 20 \"Here is one line of text that is going to be wrapped after 20 columns.\" }}][{{ wrap 5 \"\" }}][{{ wrap 0 \"ab cd\" }}][{{ wrap 1 \"ab cd\" }}][{{ wrap -3 \"a b\" }}]",
    "[{{ wrap 3 \"  lead and trail  \" }}][{{ wrap 4 \"averylongword and short\" }}][{{ wrap 4 \"éé éé\" }}][{{ wrap 100 \"short\" }}][{{ wrap 2 \"a  b   c\" }}]",
    "[{{ wrapWith 5 \"\\t\" \"Hello World\" }}][{{ wrapWith 3 \"<br>\" \"averylongword x\" }}][{{ wrapWith 0 \"|\" \"abc\" }}][{{ wrapWith 4 \"\" \"abcdefgh ij\" }}][{{ wrapWith 1 \"-\" \" a b \" }}]",
    // urlParse and urlJoin (Go's net/url): userinfo, ports, IPv6 and zones, query, fragment, opaque forms, escapes.
    "{{ urlParse \"https://user:p%40ss@Example.COM:8443/a%20b/c?x=1&y=%20#frag%20ment\" }}",
    "{{ urlParse \"mailto:joe@example.com?subject=hi\" }}|{{ urlParse \"a:b\" }}|{{ urlParse \"/a:b\" }}|{{ urlParse \"\" }}|{{ urlParse \"*\" }}",
    "{{ urlParse \"http://[fe80::1%25en0]:80/x\" }}|{{ urlParse \"http://[::1]/\" }}|{{ urlParse \"//host/p\" }}|{{ urlParse \"///p\" }}|{{ urlParse \"HTTP://h?\" }}",
    "{{ urlParse \"http://u@h\" }}|{{ urlParse \"http://:@h:\" }}|{{ urlParse \"http://a@b@c/\" }}|{{ urlParse \"http://h/%C3%A9?q#\" }}|{{ urlParse \"x/y?a?b#c#d\" }}|{{ urlParse \"http://%C3%A9.com/\" }}",
    "{{ (urlParse \"tftp://10.0.0.1:69/ipxe/snp.efi\").hostname }} {{ (urlParse .Hardware.Metadata.Instance.OperatingSystem.Slug).path }}",
    "{{ urlJoin (dict \"scheme\" \"https\" \"host\" \"h\" \"path\" \"a b\" \"userinfo\" \"u:p@x\") }}|{{ urlJoin (dict \"path\" \"a:b/c\") }}|{{ urlJoin (dict) }}|{{ urlJoin nil }}",
    "{{ urlJoin (dict \"scheme\" \"mailto\" \"opaque\" \"joe@x\" \"query\" \"s=1\" \"fragment\" \"f g\" \"host\" \"ignored\") }}|{{ urlJoin (dict \"host\" \"h\" \"path\" \"rel?x\") }}|{{ urlJoin (dict \"scheme\" \"http\" \"path\" \"*\") }}",
    "{{ urlJoin (dict \"scheme\" \"http\" \"host\" \"é x:1\" \"fragment\" \"a#b!(c)'\") }}|{{ urlJoin (dict \"userinfo\" \"a/b\" \"host\" \"h\") }}|{{ urlJoin (dict \"userinfo\" \"%41:\" \"scheme\" \"s\") }}|{{ urlJoin (dict \"scheme\" \"http\") }}",
    "{{ urlJoin (urlParse \"https://user:p%40ss@example.com:8443/a%20b/c?x=1#frag%20ment\") }}|{{ urlJoin (urlParse \"mailto:joe@example.com\") }}|{{ urlParse \"a:b:c/d\" | urlJoin }}|{{ urlJoin (urlParse \"http://[fe80::1%25en0]:80/\") }}",
    // A cut inside a two-byte character: Go prints the lone bytes, which the oracle's JSON and kiln both show as U+FFFD each.
    "[{{ wrapWith 3 \"|\" \"ééé\" }}][{{ abbrevboth 5 8 \"ééééééé\" }}]",
    // abbrevboth (goutils AbbreviateFull): offsets at and past each end, widths 3, 4, 6, 7.
    "[{{ abbrevboth 5 10 \"1234 5678 9123\" }}][{{ abbrevboth 10 10 \"abcdefghijklmno\" }}][{{ abbrevboth 5 10 \"abcdefghijklmno\" }}][{{ abbrevboth 0 10 \"abcdefghijklmno\" }}][{{ abbrevboth 1 10 \"abcdefghijklmno\" }}]",
    "[{{ abbrevboth 0 3 \"abcdefg\" }}][{{ abbrevboth 0 4 \"abcdefg\" }}][{{ abbrevboth 1 6 \"abcdefghij\" }}][{{ abbrevboth 8 7 \"abcdefghijklmnopqrstuv\" }}][{{ abbrevboth 99 7 \"abcdefghijklmno\" }}][{{ abbrevboth -5 5 \"abcdefghij\" }}][{{ abbrevboth 3 8 \"\" }}][{{ abbrevboth 12 7 \"abcdefghijklmnopqrstuvwxyz\" }}][{{ abbrevboth -9223372036854775808 8 \"abcdefghijklmnopqrstuvwxyz\" }}][{{ abbrevboth 9223372036854775807 9223372036854775807 \"abc\" }}][{{ wrap 9223372036854775807 \"a b\" }}]",
    "{{ floor 2.7 }} {{ ceil 2.1 }} {{ floor -2.5 }} {{ round 3.14159 2 }} {{ round 2.5 0 }} {{ round 2.45 1 0.6 }} {{ ceil \"1.2\" }}",
    // A real Tinkerbell-style template fragment.
    "version: \"0.1\"\nname: ubuntu\ntasks:\n  - name: os\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: net\n        environment:\n          IP: {{ (index .Hardware.Interfaces 0).DHCP.IP.Address }}/{{ netmaskToPrefixLength (index .Hardware.Interfaces 0).DHCP.IP.Netmask }}\n          DNS: {{ join \",\" (index .Hardware.Interfaces 0).DHCP.NameServers }}\n          {{- with (index .Hardware.Interfaces 0).DHCP.IP.Gateway }}\n          GW: {{ . }}\n          {{- end }}\n          USERDATA: |\n{{ .Hardware.UserData | indent 12 }}\n",
    // define, template, block.
    "{{ define \"x\" }}[{{ . }}]{{ end }}{{ template \"x\" .s }} {{ template \"x\" 3 }}",
    "{{ define \"disk\" }}{{ formatPartition (index .d 0) .n }}{{ end }}a: {{ template \"disk\" (dict \"d\" .Hardware.Disks \"n\" 1) }}\nb: {{ template \"disk\" (dict \"d\" .Hardware.Disks \"n\" 2) }}",
    "before {{ block \"b\" .s }}<{{ . }}>{{ end }} after",
    "{{ define \"r\" }}{{ if . }}{{ index . 0 }},{{ template \"r\" (rest .) }}{{ end }}{{ end }}{{ template \"r\" .nums }}",
    "{{ define \"d\" }}{{ $ }}{{ end }}{{ $x := 5 }}{{ template \"d\" .s }}",
    "{{ define \"e\" }}{{ end }}{{ template \"e\" }}x",
    "{{ define \"a\" }}A{{ template \"b\" }}{{ end }}{{ define \"b\" }}B{{ end }}{{ template \"a\" }}",
    "{{ define \"w\" }}  {{ end }}{{ define \"w\" }}real{{ end }}{{ template \"w\" }}",
    "{{ define \"w\" }}real{{ end }}{{ define \"w\" }}  {{ end }}{{ template \"w\" }}",
    "{{ range .nums }}{{ block \"item\" . }}({{ . }}){{ end }}{{ end }}",
    "{{- define \"t1\" -}}\n  trimmed\n{{- end -}}\n{{ template \"t1\" }}|",
    "{{ define \"m\" }}{{ .a }}{{ end }}{{ template \"m\" .m }}",
    "{{ with .m }}{{ template \"n\" . }}{{ end }}{{ define \"n\" }}{{ .a }}{{ end }}",
    "{{ define `raw` }}r{{ end }}{{ template `raw` }}",
    // Sprig's semver (Masterminds/semver v3).
    "{{ semverCompare \">=1.2.3\" \"1.2.3\" }} {{ semverCompare \"^1.2\" \"1.9.0\" }} {{ semverCompare \"~1.2\" \"1.3.0\" }}",
    "{{ semverCompare \">= 1.2, < 2.0\" \"1.5\" }} {{ semverCompare \"1.2 - 1.4.5\" \"1.4.6\" }} {{ semverCompare \"<1 || >=3\" \"2.0.0\" }}",
    "{{ semverCompare \">=1.2.0\" \"1.3.0-beta.1\" }} {{ semverCompare \">=1.2.0-0\" \"1.3.0-beta.1\" }} {{ semverCompare \"1.x\" \"1.4\" }}",
    "{{ semverCompare \"*\" \"0.0.1\" }} {{ semverCompare \"!=1.2.x\" \"1.2.9\" }} {{ semverCompare \"^0.2.3\" \"0.2.9\" }} {{ semverCompare \"^0.0.3\" \"0.0.4\" }}",
    "{{ semverCompare \">=v1.28\" \"v1.29.3+k3s1\" }} {{ if semverCompare \"<1.25\" \"1.24.9\" }}old{{ else }}new{{ end }}",
    "{{ (semver \"v1.2.3-rc.1+build.5\").Major }}.{{ (semver \"1.2\").Minor }}.{{ (semver \"1\").Patch }} {{ (semver \"1.2.3-rc.1+b\").Prerelease }} {{ (semver \"1.2.3+b.7\").Metadata }} {{ (semver \"v2\").Original }}",
    // Sprig's duration and durationRound, from strings.
    "{{ duration \"95\" }} {{ duration \"0\" }} {{ duration \"-3600\" }} {{ duration \"90061\" }} {{ duration \"x\" }} {{ duration \"99999999999\" }} {{ duration \"+7\" }}",
    "{{ durationRound \"2h10m5s\" }} {{ durationRound \"-1.5h\" }} {{ durationRound \"300ms\" }} {{ durationRound \"1s\" }} {{ durationRound \"1.0000001s\" }} {{ durationRound \"800h\" }} {{ durationRound \"9000h\" }} {{ durationRound \"bad\" }}",
    // Go's time.Time (toDate, mustToDate, unixEpoch, mustDateModify).
    "{{ toDate \"2006-01-02\" \"2024-01-15\" }} {{ toDate \"2006-01-02\" \"bad\" }} {{ toDate \"2006\" \"1999\" | toString | upper }}",
    "{{ toDate \"2006-01-02T15:04:05Z07:00\" \"2023-03-04T05:06:07+02:00\" }} {{ unixEpoch (toDate \"2006-01-02T15:04:05Z07:00\" \"2023-03-04T05:06:07+02:00\") }}",
    "{{ toDate \"2006-01-02T15:04:05Z07:00\" \"2023-03-04T05:06:07Z\" }} {{ toDate \"2006-01-02T15:04:05.999999999Z07:00\" \"2023-03-04T05:06:07.250-08:30\" }}",
    "{{ toDate \"Jan _2 15:04:05.000 MST 2006\" \"feb  3 04:05:06.789 PST 2021\" }} {{ toDate \"2006-01-02 15:04 MST\" \"2024-01-15 10:00 GMT+3\" }}",
    "{{ toDate \"2006-01-02 15:04:05.999999999 -0700 MST\" \"2024-01-15 10:00:00.123 -0700 MST\" }} {{ toDate \"02 Jan 06 15:04 -0700\" \"05 Mar 99 23:59 +0530\" }}",
    "{{ toDate \"3:04PM\" \"12:30AM\" }} {{ toDate \"2006-002\" \"2024-060\" }} {{ toDate \"Monday, 02-Jan-06\" \"friday, 31-Dec-99\" }} {{ toDate \"15:04:05\" \"23:59:59,5\" }}",
    "{{ mustDateModify \"1h30m\" (toDate \"2006-01-02\" \"2024-01-15\") }} {{ mustDateModify \"-48h\" (toDate \"2006-01-02\" \"2024-03-01\") | unixEpoch }} {{ mustDateModify \"1.5h\" (toDate \"2006-01-02 15:04 -0700\" \"2024-01-15 10:00 +0100\") }}",
    "{{ $t := toDate \"2006-01-02 15:04:05\" \"2024-02-29 13:14:15.5\" }}{{ $t.Year }} {{ $t.Month }} {{ $t.Day }} {{ $t.Hour }} {{ $t.Minute }} {{ $t.Second }} {{ $t.Nanosecond }} {{ $t.YearDay }} {{ $t.Weekday }} {{ $t.Unix }} {{ $t.UnixNano }} {{ $t.IsZero }}",
    "{{ (toDate \"2006\" \"x\").IsZero }} {{ (toDate \"2006-01-02T15:04Z07:00\" \"2024-01-15T10:00+05:00\").UTC }} {{ (toDate \"2006\" \"2001\").String }}",
    "{{ $t := toDate \"2006-01-02\" \"2024-01-15\" }}{{ toJson $t }} {{ typeOf $t }} {{ kindOf $t }} {{ printf \"%v|%s|%T|%q\" $t $t $t $t }} {{ if $t }}true{{ end }} {{ empty $t }}",
    "{{ toJson (toDate \"2006-01-02T15:04:05.999Z07:00\" \"2024-01-15T10:00:00.5+01:00\") }} {{ toYaml (toDate \"2006-01-02\" \"2024-01-15\") }}",
    "{{ mustToDate \"2006-01-02\" \"2024-01-15\" }} {{ toDate \"2006-01-02 MST\" \"2024-01-15 UTC\" }} {{ toDate \"2006-01-02 MST\" \"2024-01-15 CEST\" }} {{ toDate \"2006-01-02 -07\" \"2024-01-15 +00\" }}",
    // Sprig's deterministic cryptography.
    "{{ derivePassword 1 \"long\" \"banana colored duckling\" \"Robert Lee Mitchell\" \"masterpasswordapp.com\" }} {{ derivePassword 3 \"pin\" \"p\" \"u\" \"s\" }} {{ derivePassword 0 \"maximum\" \"\" \"\" \"\" }} {{ derivePassword 1 \"nope\" \"p\" \"u\" \"s\" }}",
    "{{ decryptAES \"secret\" \"AAECAwQFBgcICQoLDA0OD4efO3gyWxvpZLrIUPxS4tc1YN+nGY6de2XiyrH3bZJo\" }}|{{ decryptAES \"secret\" \"AAECAwQFBgcICQoLDA0OD/KaX2aU8jLAiN4zSeEnUMhgglvzUPtmXRW+WcdBUO1h\" }}|{{ decryptAES \"x\" \"\" }}",
    "{{ durationRound \"1h1m\" }} {{ durationRound \"2562047h\" }} {{ durationRound \".5m\" }} {{ durationRound \"1.5µs\" }} {{ durationRound \"0\" }} {{ durationRound \"\" }} {{ durationRound 1.5 }} {{ duration nil }}",
];

/// Templates Go refuses (kiln must refuse them too).
const FAILS: &[&str] = &[
    "{{ .missing }}",
    "{{ .m.missing }}",
    "{{ .s.field }}",
    "{{ .nil.field }}",
    "{{ index .l 9 }}",
    "{{ nosuchfunction 1 }}",
    "{{ $undefined }}",
    "{{ if .t }}unclosed",
    "{{ template \"nope\" }}",
    "{{ define \"x\" }}a{{ end }}{{ define \"x\" }}b{{ end }}",
    "{{ if .t }}{{ define \"x\" }}{{ end }}{{ end }}",
    "{{ define \"x\" }}{{ define \"y\" }}{{ end }}{{ end }}",
    "{{ $v := 1 }}{{ define \"x\" }}{{ $v }}{{ end }}",
    "{{ define \"x\" }}{{ break }}{{ end }}",
    "{{ block \"x\" }}{{ end }}",
    "{{ template .s }}",
    "{{ define \"x\" }}unclosed",
    "{{ define \"x\" }}{{ .a }}{{ end }}{{ template \"x\" }}",
    "{{ template \"x\" 1 2 }}",
    "{{ end }}",
    "{{ break }}",
    "{{ range .l }}{{ end }}{{ continue }}",
    "{{ upper 1 }}",
    "{{ lt 1 \"a\" }}",
    "{{ lt .t .t }}",
    "{{ eq 1 1.0 }}",
    "{{ eq .l .l }}",
    "{{ range .n }}x{{ end }}",
    "{{ len .n }}",
    "{{ slice .l 3 1 }}",
    "{{ slice .s 1 }}",
    "{{ nil }}",
    "{{ set nil \"a\" 1 }}",
    "{{ fail \"stop\" }}",
    "{{ divf 1 0 }}",
    "{{ repeat 2.5 \"ab\" }}",
    "{{ repeat .whole \"ab\" }}",
    "{{ call .s }}",
    "{{ mustFromJson \"bad\" }}",
    "{{ chunk 0 .l }}",
    "{{ range (index .nil) }}{{ end }}",
    "{{ index .m \"nope\" \"deeper\" }}",
    "{{ .nil | dig \"a\" \"x\" }}",
    "{{ pick .nil \"a\" }}",
    "{{ hasKey .nil \"a\" }}",
    "{{ mul }}",
    "{{ sub 1 }}",
    "{{ .s 1 }}",
    "{{ fromYaml \"\" }}",
    "{{ netmaskToPrefixLength \"300.1.1.1\" }}",
    "{{ netmaskToPrefixLength \"255.255.255.000\" }}",
    "{{ netmaskToPrefixLength \" 255.255.255.0\" }}",
    "{{ eq (netmaskToPrefixLength \"255.255.255.0\") 24 }}",
    "{{ $x = 1 }}",
    "{{ formatPartition 3 1 }}",
    "{{ formatPartition \"/dev/sda\" \"1\" }}",
    "{{ /* unclosed }}",
    "{{ wrap \"3\" \"abc\" }}",
    "{{ wrapWith 3 1 \"abc\" }}",
    "{{ abbrevboth 1 \"a\" \"abc\" }}",
    "{{ camelcase 1 }}",
    "{{ snakecase }}",
    "{{ urlParse \"http://h:port/\" }}",
    "{{ urlParse \":x\" }}",
    "{{ urlParse \"%\" }}",
    "{{ urlParse \"1a:b/c\" }}",
    "{{ urlParse \"http://h/%zz\" }}",
    "{{ urlParse \"http://h%2F/\" }}",
    "{{ urlParse \"http://[::1/\" }}",
    "{{ urlParse \"http://u ser@h/\" }}",
    "{{ urlParse \"http://h/\\n\" }}",
    "{{ urlParse \"http://h/#%\" }}",
    "{{ urlParse 3 }}",
    "{{ urlJoin (dict \"host\" 1) }}",
    "{{ urlJoin (dict \"path\" .nil) }}",
    "{{ urlJoin (dict \"userinfo\" \"a%zz\") }}",
    "{{ urlJoin \"x\" }}",
    "{{ mustToDate \"2006-01-02\" \"2024-02-30\" }}",
    "{{ mustToDate \"2006-01-02\" \"2024-13-01\" }}",
    "{{ mustToDate \"15:04\" \"24:00\" }}",
    "{{ unixEpoch \"2024\" }}",
    "{{ mustDateModify \"bad\" (toDate \"2006\" \"2000\") }}",
    "{{ mustDateModify \"1h\" \"2000\" }}",
    "{{ (toDate \"2006\" \"2000\").Nope }}",
    "{{ len (toDate \"2006\" \"2000\") }}",
    "{{ range (toDate \"2006\" \"2000\") }}{{ end }}",
    "{{ toDate 2006 \"2000\" }}",
    "{{ decryptAES \"secret\" \"AAAA\" }}",
    "{{ decryptAES \"secret\" \"!!\" }}",
    "{{ decryptAES \"secret\" \"AAECAwQFBgcICQoLDA0ODw==\" }}",
    "{{ decryptAES \"secret\" \"AAECAwQFBgcICQoLDA0OD4efO3gyWxvpZLrIUPxS4tc1YN+nGY6de2XiyrH3bQ==\" }}",
    "{{ derivePassword \"1\" \"long\" \"p\" \"u\" \"s\" }}",
];

/// Templates Go renders and kiln refuses on purpose (docs/templates.md,
/// "Differences from Go"): what Go prints for them is a placeholder or an
/// error message, never a value a machine should be configured with.
const DELIBERATE: &[&str] = &[
    "{{ .nil }}",
    "{{ index .m \"nope\" }}",
    "{{ printf \"%d\" .s }}",
    "{{ first .empty }}",
    "{{ round 1 1e6 }}",
    // kiln's bounds (docs/templates.md): Go makes the list.
    "{{ len (until 100000) }}",
    "{{ printf \"%s %s\" .s }}",
    "{{ b64dec \"!!\" }}",
    "{{ regexMatch \"(\" \"x\" }}",
    "{{ netmaskToPrefixLength \"255.0.255.0\" }}",
    "{{ formatPartition \"/dev/sda\" 0 }}",
    "{{ formatPartition \"\" 1 }}",
    // An integer is an int or an int64 to Sprig, with different results.
    "{{ duration 95 }}",
    "{{ durationRound 60 }}",
];

/// Templates both render, differently, on purpose (docs/templates.md,
/// "Differences from Go"): the template, Go's output, kiln's output.
const DIFFERENT: &[(&str, &str, &str)] = &[
    // fromYaml reads YAML 1.2, where `no`, `on` and `y` are strings;
    // sigs.k8s.io/yaml reads YAML 1.1, where they are booleans.
    ("{{ fromYaml \"no\" }} {{ (fromYaml \"a: on\").a }}", "false true", "no on"),
    // Go cuts by bytes and prints the piece of a character it cut; kiln's
    // output is text, with one U+FFFD for each broken sequence (the
    // oracle's JSON shows one per byte).
    (
        "{{ wrapWith 2 \"|\" \"日本\" }}",
        "\u{FFFD}\u{FFFD}|\u{FFFD}\u{FFFD}|\u{FFFD}\u{FFFD}",
        "\u{FFFD}|\u{FFFD}\u{FFFD}|\u{FFFD}\u{FFFD}",
    ),
    ("{{ trunc 2 \"日本\" }}", "\u{FFFD}\u{FFFD}", "\u{FFFD}"),
    // An escape that decodes to a byte that is not UTF-8: Go keeps the byte
    // (and escapes it again), kiln has U+FFFD.
    ("{{ urlParse \"http://h/%FF\" | urlJoin }}", "http://h/%FF", "http://h/%EF%BF%BD"),
];

#[test]
fn corpus_renders_as_go_renders() {
    let Some(oracle) = oracle() else { return };
    let data = data();
    let mut diffs = Vec::new();
    let mut wrong_corpus = Vec::new();
    for t in RENDERS {
        let go = go_render(oracle, t, &data);
        if go.is_err() {
            wrong_corpus.push(format!("the corpus says Go renders {t:?}, but Go says {go:?}"));
        }
        diffs.extend(compare(oracle, t, &data));
    }
    for t in FAILS {
        let go = go_render(oracle, t, &data);
        if go.is_ok() {
            wrong_corpus.push(format!("the corpus says Go refuses {t:?}, but Go renders {go:?}"));
        }
        diffs.extend(compare(oracle, t, &data));
    }
    for t in DELIBERATE {
        let go = go_render(oracle, t, &data);
        let kiln = render("template \"t\"", t, &data);
        if go.is_err() || kiln.is_ok() {
            wrong_corpus.push(format!("{t:?} is a deliberate difference, but Go says {go:?} and kiln {kiln:?}"));
        }
    }
    for (t, go_out, kiln_out) in DIFFERENT {
        let go = go_render(oracle, t, &data);
        let kiln = render("template \"t\"", t, &data).map_err(|e| e.to_string());
        if go.as_deref() != Ok(*go_out) || kiln.as_deref() != Ok(*kiln_out) {
            wrong_corpus.push(format!("{t:?} is a known difference, but Go says {go:?} and kiln {kiln:?}"));
        }
    }
    assert!(wrong_corpus.is_empty(), "{}", wrong_corpus.join("\n"));
    assert!(RENDERS.len() + FAILS.len() + DELIBERATE.len() >= 60, "the corpus is the proof: keep it large");
    assert!(diffs.is_empty(), "{} difference(s) from Go:\n{}", diffs.len(), diffs.join("\n"));
}

/// Small templates from a grammar of what kiln supports: fields of each
/// kind, literals, functions with arguments of any kind, parentheses,
/// pipes, and the control structures around them.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(".s".to_string()),
        Just(".e".to_string()),
        Just(".n".to_string()),
        Just(".z".to_string()),
        Just(".neg".to_string()),
        Just(".f".to_string()),
        Just(".whole".to_string()),
        Just(".big".to_string()),
        Just(".t".to_string()),
        Just(".no".to_string()),
        Just(".nil".to_string()),
        Just(".l".to_string()),
        Just(".nums".to_string()),
        Just(".empty".to_string()),
        Just(".m".to_string()),
        Just(".m.a".to_string()),
        Just(".m.d.e".to_string()),
        Just(".em".to_string()),
        Just(".missing".to_string()),
        Just(".csv".to_string()),
        Just("$".to_string()),
        Just("\"a\"".to_string()),
        Just("\"\"".to_string()),
        Just("\"x,y\"".to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("-2".to_string()),
        Just("1.5".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("nil".to_string()),
        // An integral float constant, small enough to stay within kiln's
        // bounds when it counts something (`until 1.5e3`).
        Just("1.5e3".to_string()),
        Just("'a'".to_string()),
        Just("\"a: b\\nc\"".to_string()),
        Just(".yaml".to_string()),
        // Only well-formed YAML: the two parsers differ on malformed input.
        Just("(fromYaml .yaml)".to_string()),
        Just(".json".to_string()),
        Just("(index .Hardware.Interfaces 0)".to_string()),
        Just(".Hardware.Interfaces".to_string()),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        let funcs = prop::sample::select(vec![
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "and",
            "or",
            "not",
            "len",
            "index",
            "print",
            "println",
            "quote",
            "squote",
            "upper",
            "lower",
            "trim",
            "title",
            "default",
            "empty",
            "coalesce",
            "toString",
            "add",
            "sub",
            "mul",
            "div",
            "mod",
            "max",
            "min",
            "add1",
            "int",
            "int64",
            "float64",
            "atoi",
            "first",
            "last",
            "rest",
            "initial",
            "reverse",
            "uniq",
            "compact",
            "sortAlpha",
            "without",
            "append",
            "concat",
            "join \",\"",
            "splitList \",\"",
            "split \":\"",
            "list",
            "hasPrefix \"a\"",
            "hasSuffix \"a\"",
            "contains \"x\"",
            "trimPrefix \"H\"",
            "trimSuffix \"d\"",
            "trimAll \"a\"",
            "replace \"a\" \"b\"",
            "repeat 2",
            "substr 1 3",
            "trunc 3",
            "trunc -2",
            "abbrev 5",
            "nospace",
            "toJson",
            "toPrettyJson",
            "toYaml",
            "fromJson",
            "ternary 1 2",
            "html",
            "js",
            "urlquery",
            "slice",
            "b64enc",
            "indent 2",
            "nindent 1",
            "cat",
            "dict \"k\"",
            "get",
            "hasKey",
            "pick",
            "omit",
            "merge",
            "dig \"a\" \"dflt\"",
            "set",
            "unset",
            "uniq",
            "until",
            "seq",
            "regexMatch \"^[a-z]\"",
            "regexFind \"[0-9]+\"",
            "regexReplaceAll \"[aeiou]\"",
            "regexFindAll \"[a-z]\" 2",
            "kindIs \"map\"",
            "mustFirst",
            "prepend",
            "pluck \"a\"",
            "chunk 2",
            "deepEqual",
            "mergeOverwrite",
            "toRawJson",
            "toStrings",
            "splitn \",\" 2",
            "regexSplit \"a\" -1",
            "regexQuoteMeta",
            "sha256sum",
            "adler32sum",
            "b32enc",
            "base",
            "dir",
            "ext",
            "clean",
            "all",
            "any",
            "toDecimal",
            "plural \"a\" \"b\"",
            "initials",
            "swapcase",
            "camelcase",
            "snakecase",
            "kebabcase",
            "wrap 3",
            "wrapWith 2 \"|\"",
            "abbrevboth 5 7",
            "urlParse",
            "urlJoin",
            "untitle",
            "untilStep 1",
            "addf",
            "subf",
            "mulf",
            "divf 1",
            "maxf",
            "minf",
            "floor",
            "ceil",
            "sha1sum",
        ]);
        prop_oneof![
            (funcs.clone(), prop::collection::vec(inner.clone(), 0..3))
                .prop_map(|(f, args)| format!("({f} {})", args.join(" "))),
            (inner.clone(), funcs).prop_map(|(a, f)| format!("({a} | {f})")),
            inner.clone().prop_map(|a| format!("({a}).a")),
            // printf with as many arguments as verbs: Go's placeholders for a
            // missing or extra argument are a deliberate difference.
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(printf \"%v-%v\" {a} {b})")),
        ]
    })
}

fn template() -> impl Strategy<Value = String> {
    let e = expression;
    prop_oneof![
        e().prop_map(|a| format!("{{{{ {a} }}}}")),
        (e(), e(), e())
            .prop_map(|(c, a, b)| format!("{{{{ if {c} }}}}{{{{ {a} }}}}{{{{ else }}}}{{{{ {b} }}}}{{{{ end }}}}")),
        (e(), e())
            .prop_map(|(c, a)| format!("{{{{ with {c} }}}}<{{{{ {a} }}}}|{{{{ . }}}}>{{{{ else }}}}none{{{{ end }}}}")),
        (e(), e()).prop_map(|(c, a)| format!(
            "{{{{ range $i, $v := {c} }}}}{{{{ $i }}}}:{{{{ $v }}}}/{{{{ {a} }}}};{{{{ end }}}}"
        )),
        (e(), e()).prop_map(|(a, b)| format!("{{{{ $x := {a} }}}}{{{{ $x }}}}{{{{ $x = {b} }}}}{{{{ $x }}}}")),
        (e(), e()).prop_map(|(c, a)| format!(
            "{{{{ range $v := {c} }}}}{{{{ if {a} }}}}{{{{ break }}}}{{{{ else }}}}{{{{ continue }}}}{{{{ end }}}}x{{{{ end }}}}."
        )),
        (e(), e(), e()).prop_map(|(c, d, a)| format!(
            "{{{{ if {c} }}}}1{{{{ else if {d} }}}}2{{{{ else }}}}{{{{ with $w := {a} }}}}{{{{ $w }}}}{{{{ end }}}}{{{{ end }}}}"
        )),
        (e(), e()).prop_map(|(a, b)| format!(" x {{{{- {a} -}}}} y {{{{ {b} -}}}}\n z")),
        (e(), e()).prop_map(|(a, c)| format!(
            "{{{{ define \"g\" }}}}<{{{{ {a} }}}}|{{{{ $ }}}}>{{{{ end }}}}{{{{ template \"g\" {c} }}}};{{{{ template \"g\" . }}}}"
        )),
        (e(), e()).prop_map(|(a, c)| format!("{{{{ block \"b\" {c} }}}}[{{{{ {a} }}}}]{{{{ end }}}}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_templates_render_as_go_renders(t in template()) {
        let Some(oracle) = oracle() else { return Ok(()) };
        if let Some(diff) = compare(oracle, &t, &data()) {
            prop_assert!(false, "{}", diff);
        }
    }
}

/// Go's rendering of `template` with the data Tinkerbell's controller builds
/// from `hardware` (the object as JSON) and `hardware_map`.
fn go_render_tinkerbell(
    oracle: &Mutex<Oracle>,
    template: &str,
    hardware: &Value,
    hardware_map: &std::collections::BTreeMap<String, String>,
) -> Result<String, String> {
    let mut o = oracle.lock().unwrap_or_else(|e| e.into_inner());
    let request = json!({"template": template, "tinkerbell": {"hardware": hardware, "hardwareMap": hardware_map}});
    writeln!(o.stdin, "{}", serde_json::to_string(&request).expect("json")).expect("write to the oracle");
    o.stdin.flush().expect("flush");
    let mut answer = String::new();
    o.stdout.read_line(&mut answer).expect("read from the oracle");
    let answer: Value = serde_json::from_str(&answer).expect("the oracle answers JSON");
    match (answer.get("ok"), answer.get("err")) {
        (Some(Value::String(s)), _) => Ok(s.clone()),
        (_, Some(Value::String(e))) => Err(e.clone()),
        _ => panic!("odd answer from the oracle: {answer}"),
    }
}

/// The YAML files of one corpus folder, with their text.
fn corpus(folder: &str) -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tinkerbell-corpus").join(folder);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("read corpus file"))
        })
        .collect()
}

/// `# corpus-<key>: value` lines of a corpus file.
fn directive<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("# corpus-{key}:");
    text.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).map(str::trim).collect()
}

/// Real Tinkerbell templates and hardware from public repositories (each
/// file names its source): every one applies through the parser `kiln
/// apply` uses, plans against a corpus hardware, and renders what Go +
/// Sprig render with the data Tinkerbell's controller builds.
#[test]
fn tinkerbell_corpus_applies_plans_and_renders_as_go_does() {
    use kiln_documents::{Document, check_template, parse_documents_with_warnings, plan_workflow, render_data};
    let mut hardware = std::collections::BTreeMap::new();
    for (file, text) in corpus("hardware") {
        let (docs, warnings) = parse_documents_with_warnings(&file, &text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        // The objects as Go reads them: the YAML as JSON, without status.
        let objects: Vec<Value> = text
            .split("\n---")
            .filter_map(|d| serde_yaml_ng::from_str::<Value>(d).ok())
            .filter(|v| v.get("kind").and_then(Value::as_str) == Some("Hardware"))
            .map(|mut v| {
                v.as_object_mut().expect("object").remove("status");
                v
            })
            .collect();
        let hws: Vec<_> = docs
            .into_iter()
            .filter_map(|d| match d {
                Document::Hardware(h) => Some(h),
                _ => None,
            })
            .collect();
        assert!(!hws.is_empty(), "{file}: no Hardware");
        assert_eq!(hws.len(), objects.len(), "{file}");
        // A file's first hardware is the one templates name it by.
        if let Some((h, o)) = hws.into_iter().zip(objects).next() {
            hardware.insert(file.trim_end_matches(".yaml").to_string(), (h, o));
        }
    }
    assert!(hardware.len() >= 5, "at least 5 corpus hardware objects, found {}", hardware.len());
    let oracle = oracle();
    let mut templates = 0;
    let mut compared = 0;
    let mut failures = Vec::new();
    for (file, text) in corpus("templates") {
        let mut one = || -> Result<(), String> {
            let (docs, warnings) = parse_documents_with_warnings(&file, &text).map_err(|e| e.to_string())?;
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let defs = Default::default();
            let workflow = docs.iter().find_map(|d| match d {
                Document::Workflow(w) => Some(w.clone()),
                _ => None,
            });
            for doc in &docs {
                let Document::Template(t) = doc else { continue };
                templates += 1;
                check_template(t, &defs).map_err(|e| e.to_string())?;
                let hw_name = directive(&text, "hardware").first().copied().unwrap_or("playground");
                let (hw, object) = hardware.get(hw_name).ok_or(format!("no corpus hardware {hw_name}"))?;
                let mut w = workflow.clone().unwrap_or_else(|| kiln_documents::WorkflowDoc {
                    id: "corpus".into(),
                    template: t.name.clone(),
                    hardware: hw.id.clone(),
                    hardware_map: Default::default(),
                    boot_options: None,
                });
                if workflow.is_none() {
                    w.hardware_map.insert("device_1".into(), hw.macs[0].clone());
                }
                for kv in directive(&text, "hardware-map") {
                    let (k, v) = kv.split_once('=').ok_or("corpus-hardware-map: key=value")?;
                    w.hardware_map.insert(k.into(), v.into());
                }
                let plan = plan_workflow(t, &w, hw, &defs).map_err(|e| e.to_string())?;
                if plan.actions.is_empty() {
                    return Err("no actions".into());
                }
                let Some(oracle) = oracle else { continue };
                let kiln =
                    render(&format!("template {:?}", t.name), &t.data, &render_data(&w, hw)).map_err(|e| e.to_string());
                let go = go_render_tinkerbell(oracle, &t.data, object, &w.hardware_map);
                if kiln.as_ref().ok() != go.as_ref().ok() {
                    return Err(format!("kiln and Go render differently\n go: {go:?}\n kiln: {kiln:?}"));
                }
                compared += 1;
            }
            Ok(())
        };
        if let Err(e) = one() {
            failures.push(format!("{file}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} corpus files fail:\n{}", failures.len(), failures.join("\n"));
    assert!(templates >= 15, "at least 15 corpus templates, found {templates}");
    eprintln!("{templates} corpus templates planned, {compared} compared with Go, {} hardware", hardware.len());
}

/// Expressions of both hardware views, for comparing them with Go's.
const VIEW_PROBES: &[&str] = &[
    "{{ range $i, $n := .Hardware.Interfaces }}{{ $i }} {{ $n.DHCP.MAC }} {{ $n.DHCP.IP.Address }} {{ $n.DHCP.IP.Netmask }} {{ $n.DHCP.IP.Gateway }} {{ $n.DHCP.IP.Family }}|{{ end }}",
    "{{ range .Hardware.Interfaces }}{{ .DHCP.Hostname }} {{ .DHCP.NameServers }} {{ .DHCP.TimeServers }} {{ .DHCP.VLANID }} {{ .DHCP.Arch }} {{ .DHCP.UEFI }} {{ .DHCP.LeaseTime }} {{ .DHCP.IfaceName }} {{ .DisableDHCP }}|{{ end }}",
    "{{ range .Hardware.Interfaces }}{{ .Netboot.AllowPXE }} {{ .Netboot.AllowWorkflow }}|{{ end }}",
    "{{ range .Hardware.Interfaces }}{{ .Netboot.OSIE.BaseURL }}{{ end }}",
    "{{ range .Hardware.Interfaces }}{{ .Netboot.IPXE.Binary }}{{ end }}",
    "{{ range .Hardware.Interfaces }}{{ if .Netboot.IPXE }}{{ .Netboot.IPXE.Binary }}{{ else }}none{{ end }}|{{ end }}",
    "{{ range .Hardware.Interfaces }}{{ .Isoboot }}{{ end }}",
    "{{ .Hardware.Disks }} {{ len .Hardware.Disks }} {{ .Hardware.UserData }}|{{ .Hardware.VendorData }}",
    "{{ .Hardware.Metadata.State }} {{ .Hardware.Metadata.BondingMode }}",
    "{{ .Hardware.Metadata.Instance.Hostname }} {{ .Hardware.Metadata.Instance.ID }} {{ .Hardware.Metadata.Instance.Tags }}",
    "{{ .Hardware.Metadata.Instance.OperatingSystem.Distro }} {{ .Hardware.Metadata.Instance.OperatingSystem.OsSlug }} {{ .Hardware.Metadata.Instance.OperatingSystem.Version }}",
    "{{ .Hardware.Metadata.Facility.FacilityCode }}",
    "{{ .Hardware.Metadata.Manufacturer.Slug }}",
    "{{ if .Hardware.Metadata.Custom }}custom{{ else }}no custom{{ end }}",
    "{{ (index .Hardware.Interfaces 0).DHCP.IP.Address }}/{{ netmaskToPrefixLength (index .Hardware.Interfaces 0).DHCP.IP.Netmask }}",
    "{{ .hardware.metadata.name }} {{ .hardware.apiVersion }} {{ .hardware.kind }}",
    "{{ .hardware.metadata.namespace }}",
    "{{ .hardware.metadata.labels }}",
    "{{ toJson .hardware.spec }}",
    "{{ toJson .hardware.status }} {{ toJson .references }}",
    "{{ .hardware.spec.interfaces | len }} {{ (index .hardware.spec.interfaces 0).dhcp.mac }}",
    "{{ (index .hardware.spec.interfaces 0).dhcp.uefi }}",
    "{{ (index .hardware.spec.interfaces 0).netboot.allowPXE }}",
    "{{ .hardware.spec.metadata.instance.hostname }}",
    "{{ .hardware.spec.userData }}",
    "{{ toYaml .hardware.spec.metadata }}",
    "{{ .hardware.spec.disks }}",
];

/// The data views themselves, field by field, on every corpus hardware:
/// kiln's `.Hardware`, `.hardware` and `.references` against the ones Go
/// builds from the object with Tinkerbell's types (same text, or both fail:
/// a nil pointer, a key Go's JSON left out).
#[test]
fn tinkerbell_data_views_match_go() {
    use kiln_documents::{Document, WorkflowDoc, parse_documents_with_warnings, render_data};
    let Some(oracle) = oracle() else { return };
    let mut compared = 0;
    let mut differences = Vec::new();
    for (file, text) in corpus("hardware") {
        let (docs, _) = parse_documents_with_warnings(&file, &text).expect("corpus hardware applies");
        let objects: Vec<Value> = text
            .split("\n---")
            .filter_map(|d| serde_yaml_ng::from_str::<Value>(d).ok())
            .filter(|v| v.get("kind").and_then(Value::as_str) == Some("Hardware"))
            .collect();
        let hws = docs.into_iter().filter_map(|d| match d {
            Document::Hardware(h) => Some(h),
            _ => None,
        });
        for (hw, object) in hws.zip(objects) {
            let w = WorkflowDoc {
                id: "w".into(),
                template: "t".into(),
                hardware: hw.id.clone(),
                hardware_map: [("device_1".to_string(), hw.macs[0].clone())].into(),
                boot_options: None,
            };
            let data = render_data(&w, &hw);
            for probe in VIEW_PROBES {
                let go = go_render_tinkerbell(oracle, probe, &object, &w.hardware_map);
                let kiln = render("template \"t\"", probe, &data).map_err(|e| e.to_string());
                compared += 1;
                if std::env::var_os("KILN_SHOW_VIEWS").is_some() {
                    eprintln!("{file} {probe}\n  go:   {go:?}\n  kiln: {kiln:?}");
                }
                match (&go, &kiln) {
                    (Ok(g), Ok(k)) if g == k => {}
                    (Err(_), Err(_)) => {}
                    // Go prints a nil pointer as <nil>, or a zero one as
                    // <no value>; kiln refuses to print either (deliberate).
                    (Ok(g), Err(_)) if g.contains("<nil>") || g.contains("<no value>") => {}
                    _ => differences.push(format!("{file} {}: {probe}\n  go:   {go:?}\n  kiln: {kiln:?}", hw.id)),
                }
            }
        }
    }
    assert!(differences.is_empty(), "{} of {compared} differ:\n{}", differences.len(), differences.join("\n"));
    eprintln!("{compared} view probes agree with Go");
}

/// A version, with wildcards when it is part of a constraint.
fn semver_version_with(wildcards: bool) -> impl Strategy<Value = String> {
    let num = prop_oneof![Just("0".to_string()), Just("1".to_string()), Just("2".to_string()), Just("10".to_string())];
    let wild = if wildcards {
        prop_oneof![4 => num, 1 => Just("x".to_string()), 1 => Just("*".to_string())].boxed()
    } else {
        num.boxed()
    };
    let pre = prop_oneof![
        Just(String::new()),
        Just("-beta".to_string()),
        Just("-beta.2".to_string()),
        Just("-1".to_string()),
        Just("-0".to_string()),
        Just("-alpha.beta".to_string())
    ];
    let meta = prop_oneof![Just(String::new()), Just("+b1".to_string())];
    let pre = if wildcards { prop_oneof![4 => Just(String::new()), 1 => pre].boxed() } else { pre.boxed() };
    (proptest::bool::ANY, wild.clone(), proptest::option::of(wild.clone()), proptest::option::of(wild), pre, meta)
        .prop_map(|(v, a, b, c, p, m)| {
            let mut s = format!("{}{a}", if v { "v" } else { "" });
            if let Some(b) = b {
                s.push_str(&format!(".{b}"));
                if let Some(c) = c {
                    s.push_str(&format!(".{c}"));
                }
            }
            format!("{s}{p}{m}")
        })
}

fn semver_constraint() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        Just(""),
        Just("="),
        Just("!="),
        Just(">"),
        Just("<"),
        Just(">="),
        Just("=>"),
        Just("<="),
        Just("~"),
        Just("~>"),
        Just("^")
    ];
    let one = (op, proptest::bool::ANY, semver_version_with(true))
        .prop_map(|(o, space, v)| format!("{o}{}{v}", if space && !o.is_empty() { " " } else { "" }));
    let group = prop_oneof![
        proptest::collection::vec(one, 1..3).prop_map(|cs| cs.join(", ")),
        (semver_version_with(true), semver_version_with(true)).prop_map(|(a, b)| format!("{a} - {b}")),
    ];
    proptest::collection::vec(group, 1..3).prop_map(|gs| gs.join(" || "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

    /// Generated constraints and versions: kiln's semverCompare and
    /// Masterminds/semver (through Sprig) agree, errors included.
    #[test]
    fn generated_semver_comparisons_agree_with_go(c in semver_constraint(), v in semver_version_with(false)) {
        let Some(oracle) = oracle() else { return Ok(()) };
        for t in [format!("{{{{ semverCompare {c:?} {v:?} }}}}"), format!("{{{{ (semver {v:?}).Minor }}}}")] {
            if let Some(diff) = compare(oracle, &t, &json!({})) {
                prop_assert!(false, "{}", diff);
            }
        }
    }
}

/// Some of `fields` (a field is left out when its value is `None`).
fn object_of(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(fields.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect())
}

fn maybe<S: Strategy<Value = Value> + 'static>(s: S) -> BoxedStrategy<Option<Value>> {
    proptest::option::weighted(0.6, s).boxed()
}

fn text_value() -> BoxedStrategy<Value> {
    prop_oneof![Just(json!("")), Just(json!("node-1")), Just(json!("10.0.0.5")), Just(json!("42"))].boxed()
}

fn bool_value() -> BoxedStrategy<Value> {
    proptest::bool::ANY.prop_map(Value::Bool).boxed()
}

fn int_value() -> BoxedStrategy<Value> {
    prop_oneof![Just(json!(0)), Just(json!(4)), Just(json!(86400))].boxed()
}

fn list_value() -> BoxedStrategy<Value> {
    prop_oneof![Just(json!([])), Just(json!(["1.1.1.1"])), Just(json!(["a", "b"]))].boxed()
}

/// A Tinkerbell Hardware object with a random choice of fields, zero values
/// included (they are what `omitempty` and nil pointers are about).
fn tinkerbell_hardware() -> impl Strategy<Value = Value> {
    // A netmask kiln and Go read alike (a non-contiguous one is a
    // deliberate difference of netmaskToPrefixLength).
    let netmask = prop_oneof![Just(json!("")), Just(json!("255.255.255.0")), Just(json!("255.255.0.0"))].boxed();
    let ip = (maybe(text_value()), maybe(netmask), maybe(text_value()), maybe(int_value()))
        .prop_map(|(a, n, g, f)| object_of(vec![("address", a), ("netmask", n), ("gateway", g), ("family", f)]));
    let dhcp = (
        (maybe(text_value()), maybe(ip), maybe(list_value()), maybe(bool_value())),
        (maybe(text_value()), maybe(int_value()), maybe(text_value()), maybe(text_value())),
    )
        .prop_map(|((hostname, ip, ns, uefi), (vlan, lease, arch, iface))| {
            object_of(vec![
                ("hostname", hostname),
                ("ip", ip),
                ("name_servers", ns),
                ("uefi", uefi),
                ("vlan_id", vlan),
                ("lease_time", lease),
                ("arch", arch),
                ("iface_name", iface),
            ])
        });
    let netboot = (maybe(bool_value()), maybe(bool_value()), maybe(text_value().prop_map(|u| json!({"url": u}))))
        .prop_map(|(p, w, ipxe)| object_of(vec![("allowPXE", p), ("allowWorkflow", w), ("ipxe", ipxe)]));
    let interface = (maybe(dhcp), maybe(netboot), maybe(bool_value()))
        .prop_map(|(d, n, off)| object_of(vec![("dhcp", d), ("netboot", n), ("disableDhcp", off)]));
    let os = (maybe(text_value()), maybe(text_value()))
        .prop_map(|(slug, distro)| object_of(vec![("slug", slug), ("distro", distro)]));
    let instance = (maybe(text_value()), maybe(text_value()), maybe(os), maybe(list_value()), maybe(bool_value()))
        .prop_map(|(h, id, os, tags, rescue)| {
            object_of(vec![("hostname", h), ("id", id), ("operating_system", os), ("tags", tags), ("rescue", rescue)])
        });
    let metadata = (maybe(instance), maybe(text_value().prop_map(|c| json!({"facility_code": c}))), maybe(int_value()))
        .prop_map(|(i, f, b)| object_of(vec![("instance", i), ("facility", f), ("bonding_mode", b)]));
    let spec = (
        proptest::collection::vec(interface, 0..3),
        maybe(metadata),
        maybe(text_value()),
        maybe(text_value()),
        maybe(prop_oneof![Just(json!([])), Just(json!([{"device": "/dev/sda"}]))].boxed()),
        maybe(bool_value().prop_map(|e| json!({"enrollmentEnabled": e}))),
        proptest::sample::select(vec!["52:54:00:00:00:01", "52:54:00:AB:CD:EF"]),
    )
        .prop_map(|(mut interfaces, metadata, user, vendor, disks, auto, mac)| {
            // kiln knows a machine by a MAC: the first interface has one.
            let mut first = json!({"dhcp": {"mac": mac}});
            if let Some(Value::Object(rest)) = interfaces.first().and_then(|i| i.get("dhcp")) {
                for (k, v) in rest {
                    first["dhcp"][k] = v.clone();
                }
            }
            if interfaces.is_empty() {
                interfaces.push(first);
            } else {
                interfaces[0]["dhcp"] = first["dhcp"].clone();
            }
            object_of(vec![
                ("interfaces", Some(Value::Array(interfaces))),
                ("metadata", metadata),
                ("userData", user),
                ("vendorData", vendor),
                ("disks", disks),
                ("auto", auto),
            ])
        });
    spec.prop_map(|spec| {
        json!({"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware", "metadata": {"name": "gen", "namespace": "ns"}, "spec": spec})
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, failure_persistence: None, ..ProptestConfig::default() })]

    /// Generated Tinkerbell hardware: kiln's views, read through the apply
    /// parser, print what Go's do (or both fail) for every probe.
    #[test]
    fn generated_tinkerbell_hardware_views_match_go(object in tinkerbell_hardware()) {
        use kiln_documents::{Document, WorkflowDoc, parse_documents_with_warnings, render_data};
        let Some(oracle) = oracle() else { return Ok(()) };
        let yaml = serde_yaml_ng::to_string(&object).expect("yaml");
        let (docs, _) = parse_documents_with_warnings("gen.yaml", &yaml).expect("generated hardware applies");
        let Some(Document::Hardware(hw)) = docs.into_iter().next() else { panic!("no hardware") };
        let w = WorkflowDoc { id: "w".into(), template: "t".into(), hardware: hw.id.clone(), hardware_map: Default::default() ,    boot_options: None,};
        let data = render_data(&w, &hw);
        for probe in VIEW_PROBES {
            let go = go_render_tinkerbell(oracle, probe, &object, &w.hardware_map);
            let kiln = render("template \"t\"", probe, &data).map_err(|e| e.to_string());
            let agree = match (&go, &kiln) {
                (Ok(g), Ok(k)) => g == k,
                (Err(_), Err(_)) => true,
                (Ok(g), Err(_)) => g.contains("<nil>") || g.contains("<no value>"),
                _ => false,
            };
            prop_assert!(agree, "{yaml}\n{probe}\n  go:   {go:?}\n  kiln: {kiln:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Go's Duration.String and ParseDuration, through Sprig's duration and
    /// durationRound, on generated seconds and duration strings.
    #[test]
    fn generated_durations_agree_with_go(
        seconds in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), (-100_000i64..100_000).prop_map(|n| n.to_string())],
        text in "[-+]?([0-9]{0,4}(\\.[0-9]{0,3})?(ns|us|µs|ms|s|m|h|x)?){1,3}",
    ) {
        let Some(oracle) = oracle() else { return Ok(()) };
        for t in [format!("{{{{ duration {seconds:?} }}}}"), format!("{{{{ durationRound {text:?} }}}}")] {
            if let Some(diff) = compare(oracle, &t, &json!({})) {
                prop_assert!(false, "{}", diff);
            }
        }
    }
}

/// Text with each run of U+FFFD as one: where Go cuts inside a character
/// it prints the bytes, which the oracle shows as one U+FFFD a byte and
/// kiln as one a broken sequence (a documented difference).
fn collapse_replacements(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c != '\u{FFFD}' || !out.ends_with('\u{FFFD}') {
            out.push(c);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Sprig's word functions on strings made of what their rules tell
    /// apart: cases, digits, connectors, punctuation, symbols, letters that
    /// are not ASCII (with and without case), CJK, and U+FFFD (which
    /// xstrings skips as an invalid rune).
    #[test]
    fn generated_word_functions_agree_with_go(
        s in "[aZbY09_ \\-\t.,$+éÉßǅΣσ日½Ⅻ\u{FFFD}Ⓐʰªİﬁᾳᾀᾈ٣\u{301}\u{3000}«]{0,16}",
        width in -1i64..8,
        left in -2i64..20,
        right in 2i64..16,
    ) {
        let Some(oracle) = oracle() else { return Ok(()) };
        let data = json!({"s": s});
        let cases = [
            ("{{ camelcase .s }}|{{ snakecase .s }}|{{ kebabcase .s }}".to_string(), false),
            (format!("{{{{ wrap {width} .s }}}}|{{{{ wrapWith {width} \"/\" .s }}}}"), true),
            (format!("{{{{ abbrevboth {left} {right} .s }}}}"), true),
        ];
        for (t, cuts_bytes) in cases {
            let go = go_render(oracle, &t, &data);
            let kiln = render("template \"t\"", &t, &data).map_err(|e| e.to_string());
            let same = match (&go, &kiln) {
                (Ok(g), Ok(k)) if cuts_bytes => collapse_replacements(g) == collapse_replacements(k),
                (Ok(g), Ok(k)) => g == k,
                _ => false,
            };
            prop_assert!(same, "template {:?} with .s = {:?}\n  go:   {:?}\n  kiln: {:?}", t, s, go, kiln);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// `urlParse`, and `urlJoin` of its answer and of made-up parts, on
    /// URL-shaped strings: a scheme or not, an authority with userinfo,
    /// IPv6 brackets, zones and ports, escapes good and bad, and the
    /// characters each part escapes differently.
    #[test]
    fn generated_urls_agree_with_go(
        url in "([a-zA-Z][a-zA-Z0-9+.-]{0,3}:)?(//([a-z%:@!]{0,5}@)?(\\[[0-9a-f:%]{0,8}\\]|[a-zA-Z0-9.%é]{0,6})(:[0-9a-z]{0,3})?)?[/a-z0-9%:@ é?#!()*'+&=]{0,14}",
        parts in prop::collection::vec(("(scheme|host|path|query|opaque|fragment|userinfo)", "[a-z0-9/:@?#% é!'()*+&=\\[\\]]{0,8}"), 0..5),
    ) {
        let Some(oracle) = oracle() else { return Ok(()) };
        let dict: serde_json::Map<String, Value> = parts.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        let data = json!({"u": url, "d": dict});
        // An escape that decodes to bytes that are not UTF-8 is a documented
        // difference: Go keeps the bytes, kiln U+FFFD (so urlJoin of it
        // escapes U+FFFD). Such a URL is compared up to that.
        let parsed = go_render(oracle, "{{ urlParse .u }}", &data);
        let broken = parsed.as_ref().is_ok_and(|p| p.contains('\u{FFFD}'));
        for t in ["{{ urlParse .u }}", "{{ urlParse .u | urlJoin }}", "{{ urlJoin .d }}"] {
            if broken && t.contains("| urlJoin") {
                continue;
            }
            // Not `compare`: Go's output here may hold "%!" as text.
            let go = go_render(oracle, t, &data);
            let kiln = render("template \"t\"", t, &data).map_err(|e| e.to_string());
            let same = match (&go, &kiln) {
                (Ok(g), Ok(k)) => collapse_replacements(g) == collapse_replacements(k),
                (Err(_), Err(_)) => true,
                _ => false,
            };
            prop_assert!(same, "template {:?} with .u = {:?}, .d = {:?}\n  go:   {:?}\n  kiln: {:?}", t, url, data["d"], go, kiln);
        }
    }
}

/// One element of a Go time layout and a strategy for text that element
/// reads: mostly well formed, sometimes out of range or malformed.
fn layout_element() -> impl Strategy<Value = (&'static str, BoxedStrategy<String>)> {
    let digits = |n: usize| proptest::string::string_regex(&format!("[0-9]{{{n}}}")).unwrap().boxed();
    let pick = |items: &'static [&'static str]| proptest::sample::select(items).prop_map(str::to_string).boxed();
    let range = |lo: u32, hi: u32, width: usize| (lo..=hi).prop_map(move |n| format!("{n:0width$}")).boxed();
    prop_oneof![
        Just(("2006", prop_oneof![range(1, 9999, 4), digits(4)].boxed())),
        Just(("06", digits(2))),
        Just(("01", range(0, 13, 2))),
        Just(("1", range(1, 12, 1))),
        Just(("Jan", pick(&["Jan", "feb", "MAR", "Sep", "Dec", "Foo"]))),
        Just(("January", pick(&["January", "february", "May", "December", "Janu"]))),
        Just(("02", range(0, 32, 2))),
        Just(("2", range(1, 31, 1))),
        Just(("_2", prop_oneof![(1u32..=9).prop_map(|d| format!(" {d}")), range(10, 31, 2)].boxed())),
        Just(("002", range(0, 367, 3))),
        Just(("15", range(0, 24, 2))),
        Just(("03", range(0, 13, 2))),
        Just(("3", range(1, 12, 1))),
        Just(("04", range(0, 60, 2))),
        Just(("05", range(0, 60, 2))),
        Just(("5", range(0, 59, 1))),
        Just(("PM", pick(&["AM", "PM", "pm", "XM"]))),
        Just(("Mon", pick(&["Mon", "tue", "SUN", "Fri", "Xyz"]))),
        Just(("Monday", pick(&["Monday", "saturday", "Wed"]))),
        Just((
            "MST",
            pick(&["UTC", "PST", "CEST", "GMT", "GMT+3", "GMT-11", "ChST", "+07", "-03", "XY", "WITA", "ABCDT"])
        )),
        Just(("-0700", pick(&["+0000", "-0700", "+0530", "+1400", "0700", "+07"]))),
        Just(("-07:00", pick(&["+00:00", "-07:00", "+05:30", "+0530", "-12:45"]))),
        Just(("-07", pick(&["+00", "-07", "+14", "07"]))),
        Just(("Z07:00", pick(&["Z", "+00:00", "-07:00", "+05:30", "z"]))),
        Just(("Z0700", pick(&["Z", "+0000", "-0330"]))),
        Just((".000", digits(3).prop_map(|d| format!(".{d}")).boxed())),
        Just((",000", digits(3).prop_map(|d| format!(",{d}")).boxed())),
        Just((".999999999", prop_oneof![Just(String::new()), "[0-9]{1,12}".prop_map(|d| format!(".{d}"))].boxed())),
        Just((" ", pick(&[" ", "  ", ""]))),
        Just(("-", pick(&["-", "/"]))),
        Just((":", pick(&[":"]))),
        Just(("T", pick(&["T", "t"]))),
    ]
}

/// A layout of 1 to 7 elements and a value written for it.
fn layout_and_value() -> impl Strategy<Value = (String, String)> {
    prop::collection::vec(layout_element(), 1..8).prop_flat_map(|elements| {
        let layout: String = elements.iter().map(|(l, _)| *l).collect();
        let values: Vec<BoxedStrategy<String>> = elements.into_iter().map(|(_, v)| v).collect();
        (Just(layout), values).prop_map(|(layout, parts)| (layout, parts.concat()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Go's layout language, both ways: kiln parses what Go parses into
    /// the same instant and zone, refuses what Go refuses, and prints the
    /// result as Go prints it (String, Unix, JSON, and each method).
    #[test]
    fn time_layouts_parse_and_print_as_go_does((layout, value) in layout_and_value()) {
        let Some(oracle) = oracle() else { return Ok(()) };
        let data = data();
        let (l, v) = (format!("{layout:?}"), format!("{value:?}"));
        for t in [
            format!("{{{{ $t := toDate {l} {v} }}}}{{{{ $t }}}}|{{{{ $t.Unix }}}}|{{{{ toJson $t }}}}|{{{{ $t.YearDay }}}} {{{{ $t.Weekday }}}}"),
            format!("{{{{ mustToDate {l} {v} }}}}"),
            format!("{{{{ mustDateModify \"-36h15m\" (toDate {l} {v}) | unixEpoch }}}}"),
        ] {
            if let Some(diff) = compare(oracle, &t, &data) {
                prop_assert!(false, "{}", diff);
            }
        }
    }
}
