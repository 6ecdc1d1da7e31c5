//! What an attempt needs before its container exists: an image this
//! machine allows, host directories to bind, and the container's spec.

use std::collections::HashMap;
use std::path::PathBuf;

use kiln_documents::ImageRef;
use kiln_proto::v1::{ActionSpec, Assignment};

use crate::Agent;
use crate::runtime::{ContainerSpec, Limits, labels};

/// The server's CA in `/kiln`, for actions calling the action API.
const API_CA: &str = "ca.pem";

/// The action's image, if this machine's own allow-list accepts it; checked
/// before anything is pulled. The error is (reason, message).
pub(super) fn allowed_image(agent: &Agent, spec: &ActionSpec) -> Result<ImageRef, (&'static str, String)> {
    let image = ImageRef::parse(&spec.image).map_err(|e| ("InvalidImage", e))?;
    agent.image_policy.check(&image).map_err(|e| ("ImageNotAllowed", e))?;
    Ok(image)
}

/// Host directories of one attempt, bound into its container.
pub(super) struct AttemptDirs {
    /// `/kiln` in the container: the failure files.
    pub kiln: PathBuf,
    /// `/tmp_disk`: disk-backed scratch space, discarded after the attempt.
    pub scratch: PathBuf,
    /// `/workflow`: shared by all actions of the workflow on this machine.
    pub workflow: PathBuf,
    /// `/out`: files left here are uploaded as the attempt's artifacts.
    pub out: PathBuf,
}

impl AttemptDirs {
    pub fn create(agent: &Agent, a: &Assignment) -> std::io::Result<Self> {
        let dirs = Self {
            kiln: agent.config.state_dir.join("attempts").join(safe_name(&a.attempt_id)),
            scratch: agent.config.scratch_dir().join(safe_name(&a.attempt_id)),
            workflow: agent.config.state_dir.join("workflows").join(safe_name(&a.workflow_id)),
            out: agent.config.state_dir.join("out").join(safe_name(&a.attempt_id)),
        };
        for d in [&dirs.kiln, &dirs.scratch, &dirs.workflow, &dirs.out] {
            std::fs::create_dir_all(d)?;
        }
        // The action API is on the server's TLS port: actions trust its CA.
        if let Some(ca) = &agent.api_ca_pem {
            std::fs::write(dirs.kiln.join(API_CA), ca)?;
        }
        Ok(dirs)
    }

    fn binds(&self) -> Vec<String> {
        vec![
            format!("{}:/kiln", self.kiln.display()),
            format!("{}:/tmp_disk", self.scratch.display()),
            format!("{}:/workflow", self.workflow.display()),
            format!("{}:/out", self.out.display()),
        ]
    }

    /// The workflow directory stays for the workflow's next actions.
    pub fn remove_attempt_dirs(&self) {
        for d in [&self.kiln, &self.scratch, &self.out] {
            if let Err(e) = std::fs::remove_dir_all(d) {
                tracing::warn!(dir = %d.display(), error = %e, "removing attempt directory failed");
            }
        }
    }
}

/// Names used as host directory and container names: no path separators.
fn safe_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// The action's container: its image, command, environment, mounts, limits
/// and the labels that tie it to this attempt.
pub(super) fn container_spec(
    agent: &Agent,
    a: &Assignment,
    spec: &ActionSpec,
    image: &ImageRef,
    dirs: &AttemptDirs,
) -> ContainerSpec {
    let limits = spec.resources.clone().unwrap_or_default();
    let positive = |v: u64| (v > 0).then_some(v as i64);
    let name = container_name(a);
    let template_host_network = spec.network == "host";
    ContainerSpec {
        // Under Tinkerbell an action has a network namespace of its own
        // unless its template asks for the host's, and so a hostname naming
        // its container: the waitdaemon pattern finds its own container by
        // it (`docker inspect $(hostname)`). Host networking the agent
        // chose (the hook image has no bridge) must not take that away, so
        // the hostname is the container's name; a template's own `network:
        // host` keeps the machine's hostname, as under Tinkerbell.
        hostname: (agent.config.host_network && !template_host_network).then(|| name.clone()),
        name,
        image: image.to_string(),
        command: spec.command.clone(),
        env: environment(agent, a, spec),
        // Host /dev, not a copy: partitions created by an earlier action
        // (or by this one) appear without restarting anything.
        binds: std::iter::once("/dev:/dev".to_string())
            .chain(dirs.binds())
            .chain(spec.volumes.iter().cloned())
            .collect(),
        pid_host: spec.pid == "host",
        host_network: agent.config.host_network || template_host_network,
        labels: HashMap::from([
            (labels::WORKFLOW.to_string(), a.workflow_id.clone()),
            (labels::ACTION.to_string(), a.action_index.to_string()),
            (labels::ATTEMPT.to_string(), a.attempt_id.clone()),
            (labels::AGENT.to_string(), agent.id.clone()),
        ]),
        limits: Limits {
            memory_bytes: positive(limits.memory_bytes),
            nano_cpus: positive(limits.nano_cpus),
            pids: positive(limits.pids),
            gpus: (!limits.gpus.is_empty()).then_some(limits.gpus),
        },
        stdin: (!spec.definition.is_empty()).then(|| spec.input_json.clone().into_bytes()),
    }
}

/// `kiln-<workflow>-<action>-<attempt>`: unique per attempt, so a
/// restarted agent finds (and replaces) its own leftovers by name. At most
/// 51 characters, so that it (and a handler's, 11 more) can be a hostname
/// (63 at most): the workflow's part is cut to 22 (the labels carry the
/// whole id).
pub fn container_name(a: &Assignment) -> String {
    let workflow: String = a
        .workflow_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .take(22)
        .collect();
    let attempt: String = a.attempt_id.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
    format!("kiln-{workflow}-{}-{attempt}", a.action_index)
}

/// The template's environment plus what every action is told about itself.
/// kiln's variables come last, so a template cannot fake them.
fn environment(agent: &Agent, a: &Assignment, spec: &ActionSpec) -> Vec<String> {
    let mut env: Vec<String> =
        spec.environment.iter().filter(|(k, _)| !k.starts_with("KILN_")).map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    env.extend([
        format!("KILN_WORKFLOW_ID={}", a.workflow_id),
        format!("KILN_ACTION_ID={}", a.action_index),
        format!("KILN_ACTION_NAME={}", spec.name),
        format!("KILN_TASK_NAME={}", spec.task),
        format!("KILN_ATTEMPT={}", a.attempt),
        format!("KILN_ATTEMPT_ID={}", a.attempt_id),
        format!("KILN_AGENT_ID={}", agent.id),
        format!("KILN_HARDWARE_ID={}", a.hardware_id),
        format!("KILN_API_ENDPOINT={}", agent.config.server),
        format!("KILN_ACTION_TOKEN={}", a.action_token),
    ]);
    if agent.api_ca_pem.is_some() {
        env.push(format!("KILN_API_CA=/kiln/{API_CA}"));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_docker_safe() {
        let a = Assignment {
            workflow_id: "wf/1 x".into(),
            action_index: 2,
            attempt_id: "0b7c-44d1-9a9a-aaaa-bbbbcccc".into(),
            ..Default::default()
        };
        assert_eq!(container_name(&a), "kiln-wf_1_x-2-0b7c44d19a9a");
        let long = Assignment { workflow_id: "w".repeat(200), action_index: u32::MAX, ..a };
        assert!(container_name(&long).len() + "-on-timeout".len() <= 63, "a hostname: {}", container_name(&long));
    }
}
