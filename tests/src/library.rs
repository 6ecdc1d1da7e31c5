//! Running actions of the library (actions/) through an agent, for the
//! tests of kiln's own actions and of the hub-compatible ones.

use std::time::Duration;

use serde_json::Value;

use crate::{Machine, TestEnv};

/// How long one action run may take to finish.
pub const LIMIT: Duration = Duration::from_secs(120);

/// One action of the library, as template YAML (8-space indent).
pub fn action(name: &str, env: &[(&str, &str)]) -> String {
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
    format!(
        "        - name: {name}\n          image: {}\n          timeout: 90\n          environment: {{{}}}\n",
        TestEnv::from_env().action(name),
        vars.join(", ")
    )
}

/// Runs the actions to their end on a fresh machine; returns (workflow, logs).
pub fn run(actions: &str) -> (Value, String) {
    let m = Machine::start("failed_containers: remove\n");
    let wf = m.run(actions);
    let result = m.cluster.wait_finished(&wf, LIMIT);
    (result, m.logs(&wf))
}

/// The latest attempt of the workflow's first action.
pub fn attempt(wf: &Value) -> &Value {
    let attempts = wf["actions"][0]["attempts"].as_array().expect("attempts");
    &attempts[attempts.len() - 1]
}

/// An image with random and repetitive stretches, like a real disk
/// (xorshift from `seed`, then 64 KiB of one byte, repeated).
pub fn disk_image(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed;
    while out.len() < len {
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend(std::iter::repeat_n(b'k', 64 * 1024));
    }
    out.truncate(len);
    out
}
