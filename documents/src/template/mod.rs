//! Go's text/template as Tinkerbell renders it: Sprig's hermetic text
//! functions, Tinkerbell's four (`formatPartition`, `netmaskToPrefixLength`,
//! `toYaml`, `fromYaml`) and `missingkey=error`.
//!
//! Written here because the one Go-template crate for Rust (gtmpl) has been
//! unmaintained since 2021. The semantics are Go's, and
//! tests/go_differential.rs proves it against Go and Sprig themselves; the
//! few deliberate differences are listed in docs/templates.md. The main one:
//! where Go would print a placeholder such as `<no value>` for a nil or
//! `%!d(string=x)` for a bad printf argument, this renderer fails instead:
//! the output configures a machine, and a wrong value there is worse than a
//! refused template.
//!
//! A template is parsed once into nodes; [`render`] evaluates them against a
//! JSON value. [`render_probe`] evaluates them against *no* data: every field
//! yields a placeholder, so the structure of the output can be checked when a
//! template is applied, before any hardware exists.
//!
//! One file per stage: `lexer` splits the text into text pieces and the
//! tokens of each `{{ }}`, `parser` builds the tree (and refuses unknown
//! functions and undefined variables), `eval` walks it against the data,
//! `functions` holds the functions templates call, and `value` how Go reads
//! and prints values. What those functions need from Go's libraries is in
//! `printf` (fmt's verbs), `encoding` (JSON, YAML, base32 as Go writes
//! them), `decimal` (Sprig's float arithmetic) and `gostd` (escapers, paths,
//! strings, regexp).

use serde_json::Value;

use crate::SpecError;
use value::Val;

pub use functions::{FUNCTIONS, format_partition};

/// Renders `text` with `data`. `object` names the template in errors.
/// Disk hint functions are deferred to dispatch (see [`DiskContext`]).
pub fn render(object: &str, text: &str, data: &Value) -> Result<String, SpecError> {
    render_mapped(object, text, data).map(|r| r.text)
}

/// Renders `text` with `data`, disk hint functions resolved with `disks`.
pub fn render_with_disks(object: &str, text: &str, data: &Value, disks: DiskContext<'_>) -> Result<String, SpecError> {
    eval::evaluate(object, text, &Val::Json(data.clone()), disks).map(|r| r.text)
}

/// What the disk hint functions (`disk HINT`, `rootDisk`) resolve against.
///
/// A workflow's template is rendered when the workflow is created, usually
/// before its machine has booted and reported its disks. So without
/// `disks` a hint call renders as itself, with the hint spelled out as
/// base64 JSON (``{{ disk (fromJson (b64dec `eyJzZXJpYWwiOiJ4In0=`)) }}``;
/// `rootDisk` becomes the Hardware's `root_disk` hint then), and the server renders it again
/// with the reported disks before the workflow's first action is handed
/// out, as it renders `.actions` outputs (server/src/app/dispatch.rs).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskContext<'a> {
    /// The machine's reported disks; `None`: not known to this rendering.
    pub disks: Option<&'a [kiln_inventory::Disk]>,
    /// The Hardware's `root_disk`, for `rootDisk`.
    pub root_disk: Option<&'a crate::hints::DiskHint>,
}

/// How a deferred hint call starts, for whoever looks for unresolved hints
/// in rendered text. The hint follows as base64 JSON, in a raw string.
pub const DEFERRED_DISK_CALL: &str = "{{ disk (fromJson (b64dec `";

/// The hints of the deferred hint calls in `text`, in order (what `kiln
/// plan` shows the resolution of).
pub fn deferred_disk_hints(text: &str) -> Vec<crate::hints::DiskHint> {
    use base64::Engine as _;
    let mut hints = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(DEFERRED_DISK_CALL) {
        rest = &rest[at + DEFERRED_DISK_CALL.len()..];
        let encoded = rest.split('`').next().unwrap_or_default();
        if let Ok(json) = base64::engine::general_purpose::STANDARD.decode(encoded)
            && let Ok(hint) = serde_json::from_slice(&json)
        {
            hints.push(hint);
        }
    }
    hints
}

/// Parses only: syntax errors, unknown functions and undefined variables,
/// with line numbers.
pub fn check_syntax(object: &str, text: &str) -> Result<(), SpecError> {
    parser::parse(object, text).map(|_| ())
}

/// Renders with placeholder data: every field access succeeds and prints
/// [`PROBE`]. Used to check a template's structure without hardware.
pub fn render_probe(object: &str, text: &str) -> Result<String, SpecError> {
    render_probe_mapped(object, text).map(|r| r.text)
}

/// What a field prints as when rendering with [`render_probe`].
pub const PROBE: &str = "probe";

/// The key under which earlier actions' outputs are given to templates.
pub const ACTIONS_KEY: &str = "actions";

/// A rendering, with the template line each of its lines came from, so that
/// errors found in the output (YAML structure, field values) can point at
/// the line the operator wrote.
pub(crate) struct Rendered {
    pub text: String,
    /// `lines[i]`: the template line of the first byte of output line `i + 1`.
    lines: Vec<usize>,
    /// The template's last line, for positions past the output's end.
    last: usize,
}

impl Rendered {
    /// The template line that produced output line `line` (1-based).
    pub fn source_line(&self, line: usize) -> usize {
        line.checked_sub(1).and_then(|i| self.lines.get(i)).copied().unwrap_or(self.last)
    }
}

pub(crate) fn render_mapped(object: &str, text: &str, data: &Value) -> Result<Rendered, SpecError> {
    render_mapped_with_disks(object, text, data, DiskContext::default())
}

pub(crate) fn render_mapped_with_disks(
    object: &str,
    text: &str,
    data: &Value,
    disks: DiskContext<'_>,
) -> Result<Rendered, SpecError> {
    eval::evaluate(object, text, &Val::Json(data.clone()), disks)
}

pub(crate) fn render_probe_mapped(object: &str, text: &str) -> Result<Rendered, SpecError> {
    eval::evaluate(object, text, &Val::Probe, DiskContext::default())
}

/// A [`SpecError`] at a template line.
fn error(object: &str, line: usize, field: Option<String>, message: impl Into<String>) -> SpecError {
    SpecError { object: object.to_string(), line: Some(line), field, message: message.into() }
}

mod crypto;
mod decimal;
mod duration;
mod encoding;
mod eval;
mod functions;
mod gostd;
mod gotime;
mod gourl;
mod lexer;
mod parser;
mod printf;
mod semver;
mod value;
mod words;

#[cfg(test)]
mod tests;
