//! The actions kiln adds for the Tinkerbell hub's oci2disk, qemuimg2disk,
//! slurp, rootio, grub2disk and syslinux, run through the agent with the
//! hub's variables against real targets: the shared local registries, loop
//! devices, qcow2 files made by `qemu-img`, an HTTP server here.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_tests::{LoopDevice, Machine, TestEnv};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

/// One action of the library, as template YAML (8-space indent).
fn action(name: &str, env: &[(&str, &str)]) -> String {
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
    format!(
        "        - name: {name}\n          image: {}\n          timeout: 90\n          environment: {{{}}}\n",
        TestEnv::from_env().action(name),
        vars.join(", ")
    )
}

/// Runs the actions to their end on a fresh machine; returns (workflow, logs).
fn run(actions: &str) -> (Value, String) {
    let m = Machine::start("failed_containers: remove\n");
    let wf = m.run(actions);
    let result = m.cluster.wait_finished(&wf, LIMIT);
    (result, m.logs(&wf))
}

fn attempt(wf: &Value) -> &Value {
    let attempts = wf["actions"][0]["attempts"].as_array().expect("attempts");
    &attempts[attempts.len() - 1]
}

/// Random and repetitive stretches, like a real disk.
fn disk_image(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
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

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip").arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

// ---------------------------------------------------------------- oci2disk

/// Pushes an artifact the way `oras push REF file` does: one layer of type
/// `application/vnd.oci.image.layer.v1.tar` titled with the file name, plus
/// any `extra` layers (which the hub skips).
fn push_artifact(
    registry: &str,
    path: &str,
    title: &str,
    data: Vec<u8>,
    extra: Vec<oci_client::client::ImageLayer>,
    auth: bool,
) {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::secrets::RegistryAuth;
    let env = TestEnv::from_env();
    let auth = if auth {
        RegistryAuth::Basic(env.registry_user.clone(), env.registry_password.clone())
    } else {
        RegistryAuth::Anonymous
    };
    let client = oci_client::Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() });
    let reference: oci_client::Reference = format!("{registry}/{path}").parse().unwrap();
    let annotations = BTreeMap::from([("org.opencontainers.image.title".to_string(), title.to_string())]);
    let mut layers = vec![ImageLayer::new(data, "application/vnd.oci.image.layer.v1.tar".into(), Some(annotations))];
    layers.extend(extra);
    let config = Config::new(b"{}".to_vec(), "application/vnd.unknown.config.v1+json".into(), None);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(client.push(&reference, &layers, config, &auth, None)).expect("push the artifact");
}

#[test]
fn oci2disk_writes_an_oras_style_artifact_from_a_registry_with_credentials() {
    let env = TestEnv::from_env();
    let image = disk_image(3 * MIB as usize + 777);
    let decoy = oci_client::client::ImageLayer::new(
        vec![0xAB; 4096],
        "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        None,
    );
    let path = format!("kiln-test/oci2disk-{}", std::process::id());
    push_artifact(&env.auth_registry, &format!("{path}:raw.gz"), "disk.raw.gz", gzip(&image), vec![decoy], true);
    push_artifact(&env.registry, &format!("{path}:raw"), "disk.raw", image.clone(), vec![], false);

    let disk = LoopDevice::new(8 * MIB).unwrap();
    let dest = disk.path.to_str().unwrap();
    let user = env.registry_user.as_str();
    let pass = env.registry_password.as_str();

    // A wrong password: nothing is written.
    std::fs::write(disk.backing_path(), vec![0xEEu8; 8 * MIB as usize]).unwrap();
    let img = format!("{}/{path}:raw.gz", env.auth_registry);
    let (wf, logs) = run(&action(
        "oci2disk",
        &[
            ("IMG_URL", &img),
            ("DEST_DISK", dest),
            ("COMPRESSED", "true"),
            ("PLAIN_HTTP", "true"),
            ("REGISTRY_USERNAME", user),
            ("REGISTRY_PASSWORD", "wrong"),
        ],
    ));
    assert_eq!(wf["state"], "FAILED", "{wf:#}\n{logs}");
    assert_eq!(attempt(&wf)["reason"], "PullFailed", "{wf:#}");
    assert!(disk.contents().iter().all(|b| *b == 0xEE), "a failed pull wrote to the disk");

    // The hub's README example: gzip by the tag's suffix, credentials, and
    // a Go boolean spelling.
    let (wf, logs) = run(&action(
        "oci2disk",
        &[
            ("IMG_URL", &img),
            ("DEST_DISK", dest),
            ("COMPRESSED", "T"),
            ("PLAIN_HTTP", "true"),
            ("REGISTRY_USERNAME", user),
            ("REGISTRY_PASSWORD", pass),
        ],
    ));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let written = disk.contents();
    assert!(written[..image.len()] == image[..], "the disk differs from the image");
    assert!(written[image.len()..].iter().all(|b| *b == 0xEE), "bytes past the image changed (the decoy layer?)");

    // Uncompressed from the open registry, COMPRESSED unset.
    std::fs::write(disk.backing_path(), vec![0xEEu8; 8 * MIB as usize]).unwrap();
    let img = format!("{}/{path}:raw", env.registry);
    let (wf, logs) = run(&action("oci2disk", &[("IMG_URL", &img), ("DEST_DISK", dest), ("PLAIN_HTTP", "1")]));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert!(disk.contents()[..image.len()] == image[..], "the raw image differs");

    // Bad variables are named before anything is pulled.
    let (wf, _) = run(&action("oci2disk", &[("IMG_URL", "no-tag/here"), ("COMPRESSED", "yes")]));
    let a = attempt(&wf);
    assert_eq!((a["reason"].as_str(), a["exit_code"].as_i64()), (Some("InvalidConfig"), Some(2)), "{a:#}");
    let message = a["message"].as_str().unwrap();
    for var in ["IMG_URL:", "DEST_DISK: is required", "COMPRESSED:"] {
        assert!(message.contains(var), "{var} not named in {message}");
    }
}
