//! The documents an operator writes, and how a workflow's plan is derived
//! from them.
//!
//! - [`documents`]: `kind: Hardware | Template | Workflow` YAML documents
//!   (kubectl-like), parsed strictly: unknown fields are errors.
//! - [`template`]: the Go-template subset Tinkerbell templates use
//!   (`{{.device_1}}`, `{{ index .Hardware.Disks 0 }}`, `formatPartition`).
//! - [`plan`]: the Tinkerbell template structure (`version`, `name`,
//!   `global_timeout`, `tasks[].actions[]`) and the flattened, validated list
//!   of actions a workflow runs.
//! - [`image`]: container image references.
//! - [`hints`]: disk hints (Ironic's root-device hints) and their
//!   resolution against a machine's reported disks.
//!
//! Every error is a [`SpecError`] naming the document, the line when known,
//! and the field path.

pub mod bmc;
pub mod documents;
pub mod error;
pub mod hints;
pub mod image;
mod locate;
pub mod plan;
pub mod rule;
pub mod template;
pub mod tinkerbell;

pub use bmc::{BmcSecretDoc, BmcSpec};
pub use documents::{
    ActionDefinitionDoc, AfterSuccess, BootOptions, Document, HardwareDoc, NetworkBoot, TemplateDoc, TemplateFormat,
    WorkflowDoc, parse_documents, parse_documents_with_warnings, parse_mac,
};
pub use error::SpecError;
pub use hints::DiskHint;
pub use image::{ImagePolicy, ImageRef};
pub use plan::{
    Definitions, Plan, PlannedAction, Resources, check_template, check_template_with_warnings, plan_workflow,
    plan_workflow_with_warnings, render_data, validate_json,
};
pub use rule::{Facts, Rule, RuleDoc, RuleWorkflow, rule_order};
