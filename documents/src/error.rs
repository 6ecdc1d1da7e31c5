use std::fmt;

/// An error in an operator's document, precise enough to fix it without
/// guessing: which document, which line (when known), which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// What the error is in, e.g. `template "ubuntu"` or `workflows.yaml document 2`.
    pub object: String,
    /// 1-based line in that object's source, when known.
    pub line: Option<usize>,
    /// Field path such as `tasks[0].actions[1].image`, when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.object)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
