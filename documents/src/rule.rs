//! `kind: Rule`: what the server does with a discovered machine whose
//! reported inventory matches an expression (docs/rules.md).
//!
//! The match is a CEL expression (the `cel` crate: Google's Common
//! Expression Language, as Kubernetes and Envoy use it), compiled when the
//! rule is applied so a syntax error is an apply-time error naming the
//! rule, the field and the column. It sees the variables of [`Facts`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// A rule as applied and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDoc {
    pub name: String,
    /// Higher wins; equal priorities are ordered by name.
    pub priority: i64,
    /// At most this many machines are ever adopted by this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    /// The CEL expression, as written.
    #[serde(rename = "match")]
    pub match_expr: String,
    /// A kiln template rendered over the facts; the adopted Hardware's name.
    pub hardware_name: String,
    /// Merged into the adopted Hardware's metadata (an object).
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<RuleWorkflow>,
}

/// The workflow a rule creates for the machine it adopts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleWorkflow {
    pub template: String,
    /// Added to `device_1` (the machine's MAC), as a Workflow's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hardware_map: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleYaml {
    #[serde(rename = "apiVersion", default)]
    _api_version: Option<String>,
    pub(crate) kind: String,
    name: String,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    max_count: Option<u32>,
    #[serde(rename = "match")]
    match_expr: String,
    hardware_name: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    workflow: Option<RuleWorkflowYaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleWorkflowYaml {
    template: String,
    #[serde(default, alias = "hardwareMap")]
    hardware_map: BTreeMap<String, String>,
}

/// Checks a parsed `kind: Rule` document: each error names its field
/// (the caller adds the document).
pub(crate) fn rule_doc(y: RuleYaml) -> Result<RuleDoc, (String, String)> {
    let bad = |field: &str, m: String| (field.to_string(), m);
    if !crate::documents::valid_name(&y.name) {
        return Err(bad("name", format!("{:?} must be 1-63 of [a-z0-9._-], starting with a letter or digit", y.name)));
    }
    if y.max_count == Some(0) {
        return Err(bad("max_count", "must be at least 1 (leave it out for no limit)".into()));
    }
    let metadata = y.metadata.unwrap_or_else(|| serde_json::json!({}));
    if !metadata.is_object() {
        return Err(bad("metadata", "must be a mapping (it is merged into the Hardware's metadata)".into()));
    }
    if y.hardware_name.trim().is_empty() {
        return Err(bad("hardware_name", "must not be empty".into()));
    }
    crate::template::check_syntax("hardware_name", &y.hardware_name).map_err(|e| bad("hardware_name", e.message))?;
    let workflow = match y.workflow {
        Some(w) => {
            if !crate::documents::valid_name(&w.template) {
                return Err(bad("workflow.template", format!("{:?} is not a template name", w.template)));
            }
            if let Some(k) =
                w.hardware_map.keys().find(|k| k.is_empty() || crate::documents::RESERVED_KEYS.contains(&k.as_str()))
            {
                return Err(bad(
                    &format!("workflow.hardware_map.{k}"),
                    "a key must be non-empty and not reserved".into(),
                ));
            }
            Some(RuleWorkflow { template: w.template, hardware_map: w.hardware_map })
        }
        None => None,
    };
    let doc = RuleDoc {
        name: y.name,
        priority: y.priority,
        max_count: y.max_count,
        match_expr: y.match_expr,
        hardware_name: y.hardware_name,
        metadata,
        workflow,
    };
    Rule::compile(doc.clone()).map_err(|m| bad("match", m))?;
    Ok(doc)
}

/// What a match expression sees of one discovered machine.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The MAC it booted from (lower case, colon separated).
    pub mac: String,
    /// Its inventory as reported (the `kiln_inventory` JSON).
    pub inventory: serde_json::Value,
}

/// Unit constants a match expression may use for sizes (ints, bytes).
pub const SIZE_UNITS: &[(&str, i64)] = &[
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

impl Facts {
    /// The variables of a match expression and of `hardware_name`:
    /// `mac`, `inventory`, and shorthands that are always present (empty
    /// or 0 where the machine did not say): `vendor`, `product`, `serial`,
    /// `boot_mode`, `cpus`, `memory_bytes`, `disks`, `nics`.
    pub fn variables(&self) -> serde_json::Map<String, serde_json::Value> {
        let inv = &self.inventory;
        let text = |p: &str| inv.pointer(p).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let number = |p: &str| inv.pointer(p).and_then(serde_json::Value::as_u64);
        let cpus = number("/cpu/threads").or_else(|| number("/cpu/cores")).or_else(|| number("/cpu/sockets"));
        let list = |p: &str| inv.pointer(p).cloned().unwrap_or_else(|| serde_json::json!([]));
        let mut vars = serde_json::Map::new();
        vars.insert("mac".into(), self.mac.clone().into());
        vars.insert("inventory".into(), inv.clone());
        vars.insert("vendor".into(), text("/system/vendor").into());
        vars.insert("product".into(), text("/system/product").into());
        vars.insert("serial".into(), text("/system/serial").into());
        vars.insert("boot_mode".into(), text("/system/boot_mode").into());
        vars.insert("cpus".into(), cpus.unwrap_or(0).into());
        vars.insert("memory_bytes".into(), number("/memory/total_bytes").unwrap_or(0).into());
        vars.insert("disks".into(), list("/disks"));
        vars.insert("nics".into(), list("/nics"));
        vars
    }
}

/// A rule with its compiled match expression.
#[derive(Debug)]
pub struct Rule {
    pub doc: RuleDoc,
    program: cel::Program,
}

impl Rule {
    /// Compiles the rule's match expression. The error is the message for
    /// field `match`: the first syntax error with its line and column, or
    /// a name the expression uses that no variable has.
    pub fn compile(doc: RuleDoc) -> Result<Self, String> {
        if doc.match_expr.trim().is_empty() {
            return Err("must not be empty (write true to match every machine)".into());
        }
        let program = cel::Program::compile(&doc.match_expr).map_err(|errors| {
            let Some(e) = errors.errors.first() else { return "cannot be parsed".to_string() };
            let line = if doc.match_expr.contains('\n') { format!("line {}, ", e.pos.0) } else { String::new() };
            // cel counts columns from 1, as editors do.
            format!("{} at {line}column {}", e.msg, e.pos.1)
        })?;
        let rule = Self { doc, program };
        // A name no variable has fails every evaluation: say so now. (An
        // evaluation over no inventory finds it unless the expression
        // stops before it, e.g. after `false &&`.)
        let empty = Facts { mac: "00:00:00:00:00:00".into(), inventory: serde_json::json!({}) };
        if let Err(cel::ExecutionError::UndeclaredReference(name)) = rule.program.execute(&context(&empty)) {
            return Err(format!("{name:?} is not a variable or function (see docs/rules.md)"));
        }
        Ok(rule)
    }

    /// Does the machine of `facts` match? An evaluation error (a field
    /// the machine did not report, a type mismatch) is an `Err` with CEL's
    /// message; a result that is not a bool is one too.
    pub fn matches(&self, facts: &Facts) -> Result<bool, String> {
        match self.program.execute(&context(facts)) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the expression gave {:?}, not a bool", other.type_of())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The adopted Hardware's name: `hardware_name` rendered over the
    /// facts (`{{ .inventory.system.serial }}`, `{{ .mac }}`...), checked
    /// to be a valid name.
    pub fn hardware_name(&self, facts: &Facts) -> Result<String, String> {
        let data = serde_json::Value::Object(facts.variables());
        let name = crate::template::render("hardware_name", &self.doc.hardware_name, &data)
            .map_err(|e| e.message)?
            .trim()
            .to_string();
        if !crate::documents::valid_name(&name) {
            return Err(format!(
                "rendered {name:?}, which is not a valid name (1-63 of [a-z0-9._-], starting with a letter or digit; \
                 `| lower` lowers a serial)"
            ));
        }
        Ok(name)
    }
}

/// The CEL context of `facts`: its variables and the size units.
fn context(facts: &Facts) -> cel::Context<'static, 'static> {
    let mut ctx = cel::Context::default();
    for (name, value) in facts.variables() {
        ctx.add_variable_from_value(name, cel_value(&value));
    }
    for (name, bytes) in SIZE_UNITS {
        ctx.add_variable_from_value(*name, *bytes);
    }
    ctx
}

/// JSON to CEL with every integer an `int` (so `size_bytes >= 100 * GiB`
/// compares ints; JSON's unsigned numbers would otherwise be `uint`s,
/// which CEL does not mix with ints in arithmetic).
fn cel_value(v: &serde_json::Value) -> cel::Value {
    use serde_json::Value as J;
    match v {
        J::Null => cel::Value::Null,
        J::Bool(b) => cel::Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => cel::Value::String(Arc::new(s.clone())),
        J::Array(items) => cel::Value::List(Arc::new(items.iter().map(cel_value).collect())),
        J::Object(map) => {
            let map: HashMap<String, cel::Value> = map.iter().map(|(k, v)| (k.clone(), cel_value(v))).collect();
            cel::Value::from(map)
        }
    }
}

/// Rules in the order they are tried: highest priority first, then by name.
pub fn rule_order(a: &RuleDoc, b: &RuleDoc) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name))
}

/// A rule document's error, for callers that build a rule outside a YAML
/// stream (the store reading one back).
pub fn compile_stored(doc: RuleDoc) -> Result<Rule, SpecError> {
    let name = doc.name.clone();
    Rule::compile(doc).map_err(|message| SpecError {
        object: format!("rule {name}"),
        line: None,
        field: Some("match".into()),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(expr: &str) -> RuleDoc {
        RuleDoc {
            name: "r1".into(),
            priority: 0,
            max_count: None,
            match_expr: expr.into(),
            hardware_name: "r1-{{ .inventory.system.serial | lower }}".into(),
            metadata: serde_json::json!({}),
            workflow: None,
        }
    }

    fn facts() -> Facts {
        Facts {
            mac: "52:54:00:aa:00:01".into(),
            inventory: serde_json::json!({
                "system": {"vendor": "Dell Inc.", "product": "PowerEdge R650", "serial": "ABC123", "boot_mode": "uefi"},
                "cpu": {"threads": 64, "cores": 32},
                "memory": {"total_bytes": 270_582_939_648_u64},
                "disks": [
                    {"name": "sda", "size_bytes": 480_103_981_056_u64, "rotational": false, "transport": "sata"},
                    {"name": "sdb", "size_bytes": 4_000_787_030_016_u64, "rotational": true, "transport": "sas"}
                ],
                "nics": [{"name": "eno1", "mac": "52:54:00:aa:00:01", "speed_mbps": 25000}]
            }),
        }
    }

    #[test]
    fn expressions_see_the_inventory_and_the_shorthands() {
        let f = facts();
        for (expr, want) in [
            ("true", true),
            ("vendor.startsWith('Dell') && cpus >= 64", true),
            ("inventory.system.product.matches('^PowerEdge R6[0-9]0$')", true),
            ("memory_bytes >= 250 * GiB && memory_bytes < 256 * GiB", true),
            ("size(disks) == 2 && disks.exists(d, !d.rotational && d.size_bytes >= 400 * GB)", true),
            ("disks.all(d, d.transport == 'nvme')", false),
            ("nics.exists(n, n.speed_mbps >= 25000)", true),
            ("boot_mode == 'bios'", false),
            ("mac.startsWith('52:54:00')", true),
            ("has(inventory.tpm)", false),
        ] {
            let rule = Rule::compile(doc(expr)).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(rule.matches(&f), Ok(want), "{expr}");
        }
    }

    #[test]
    fn errors_say_where() {
        // `&&` is the 9th character.
        let e = Rule::compile(doc("cpus >= && 4")).unwrap_err();
        assert!(e.ends_with("at column 9"), "{e}");
        let e = Rule::compile(doc("cpu >= 4")).unwrap_err();
        assert!(e.contains("\"cpu\" is not a variable"), "{e}");
        assert!(Rule::compile(doc(" ")).is_err());
        // A field the machine did not report is an evaluation error, and a
        // non-bool result too.
        let rule = Rule::compile(doc("inventory.tpm.version == '2.0'")).unwrap();
        assert!(rule.matches(&facts()).unwrap_err().contains("tpm"));
        assert!(Rule::compile(doc("cpus")).unwrap().matches(&facts()).unwrap_err().contains("not a bool"));
    }

    #[test]
    fn hardware_names_are_rendered_and_checked() {
        let rule = Rule::compile(doc("true")).unwrap();
        assert_eq!(rule.hardware_name(&facts()).unwrap(), "r1-abc123");
        let upper = Rule::compile(RuleDoc { hardware_name: "R1-{{ .serial }}".into(), ..doc("true") }).unwrap();
        let e = upper.hardware_name(&facts()).unwrap_err();
        assert!(e.contains("\"R1-ABC123\"") && e.contains("not a valid name"), "{e}");
    }

    #[test]
    fn rule_documents_are_parsed_strictly_with_errors_naming_rule_line_and_field() {
        let yaml = "kind: Rule\nname: r1\npriority: 5\nmax_count: 3\nmatch: cpus >= 4\nhardware_name: \"r1-{{ .serial }}\"\nmetadata: {rack: a}\nworkflow: {template: t, hardware_map: {site: x}}\n";
        let docs = crate::parse_documents("rules.yaml", yaml).unwrap();
        let [crate::Document::Rule(rule)] = docs.as_slice() else { panic!("{docs:?}") };
        assert_eq!((rule.priority, rule.max_count, rule.match_expr.as_str()), (5, Some(3), "cpus >= 4"));
        assert_eq!(rule.workflow.as_ref().unwrap().hardware_map.get("site").map(String::as_str), Some("x"));
        for (bad, field, words) in [
            (yaml.replace("cpus >= 4", "cpus >= && 4"), "match", "'&&' expecting"),
            (yaml.replace("priority: 5", "priorty: 5"), "", "priorty"),
            (yaml.replace("{rack: a}", "[a]"), "metadata", "mapping"),
            (yaml.replace("r1-{{ .serial }}", "r1-{{ .serial"), "hardware_name", ""),
            (yaml.replace("template: t", "template: T!"), "workflow.template", "not a template name"),
        ] {
            let e = crate::parse_documents("rules.yaml", &bad).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("rules.yaml document 1 (Rule \"r1\"), line "), "{text}");
            if !field.is_empty() {
                assert_eq!(e.field.as_deref(), Some(field), "{text}");
            }
            assert!(text.contains(words), "{text}");
        }
    }

    #[test]
    fn order_is_priority_then_name() {
        let mut rules = [
            RuleDoc { name: "b".into(), priority: 10, ..doc("true") },
            RuleDoc { name: "a".into(), priority: 10, ..doc("true") },
            RuleDoc { name: "c".into(), priority: 20, ..doc("true") },
        ];
        rules.sort_by(rule_order);
        assert_eq!(rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["c", "a", "b"]);
    }
}
