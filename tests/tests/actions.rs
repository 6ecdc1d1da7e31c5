//! The action library (`actions/`) run through the agent against loop
//! devices, with results checked byte for byte on the host.

use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_tests::http::{Faults, FileServer};
use kiln_tests::{LoopDevice, Machine, TestEnv};
use serde_json::Value;
use sha2::{Digest, Sha256};

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

/// Runs one action to its end on a fresh machine; returns (workflow, logs).
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

/// An image with random and repetitive stretches, like a real disk.
fn disk_image(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
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

/// Compresses with the host's command-line tool, as an image publisher would.
fn compress(tool: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool).arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect(tool);
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().expect(tool);
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[test]
fn image2disk_writes_every_compression_to_a_loop_device_byte_for_byte() {
    let image = disk_image(5 * MIB as usize + 12345);
    let disk = LoopDevice::new(16 * MIB).unwrap();
    // Old contents past the image must be left alone on a block device.
    std::fs::write(disk.backing_path(), vec![0xEEu8; 16 * MIB as usize]).unwrap();
    for tool in ["zstd", "gzip", "xz", "bzip2", "cat"] {
        let body = if tool == "cat" { image.clone() } else { compress(tool, &image) };
        let checksum = sha256(&body);
        let server = FileServer::start(body, Faults::default());
        // The URL says nothing about the compression: magic bytes decide.
        let url = server.url("disk.img");
        let dest = disk.path.to_str().unwrap();
        let (wf, logs) = run(&action(
            "image2disk",
            &[("IMG_URL", &url), ("DEST_DISK", dest), ("CHECKSUM", &checksum), ("VERIFY", "true")],
        ));
        assert_eq!(wf["state"], "SUCCESS", "{tool}: {wf:#}\n{logs}");
        let written = disk.contents();
        assert!(written[..image.len()] == image[..], "{tool}: the disk differs from the image");
        assert!(written[image.len()..].iter().all(|b| *b == 0xEE), "{tool}: bytes past the image changed");
        assert!(logs.contains("sha256 verified") && logs.contains("read-back verification passed"), "{logs}");
        assert!(logs.contains(r#"{"progress":{"what":"image","done":"#), "no progress line: {logs}");
    }
}

#[test]
fn image2disk_resumes_after_the_server_drops_and_comes_back() {
    let image = disk_image(6 * MIB as usize);
    let body = compress("zstd", &image);
    let len = body.len() as u64;
    let checksum = sha256(&body);
    // Two cuts, each followed by 1.5 s of connection refused.
    let faults =
        Faults { cut_after: vec![len / 3, len / 4], down_for: Some(Duration::from_millis(1500)), ..Faults::default() };
    let server = FileServer::start(body, faults);
    let disk = LoopDevice::new(8 * MIB).unwrap();
    let m = Machine::start("failed_containers: remove\n");
    let id = m.run(&action(
        "image2disk",
        &[("IMG_URL", &server.url("img")), ("DEST_DISK", disk.path.to_str().unwrap()), ("CHECKSUM", &checksum)],
    ));
    // `kiln watch` follows it live and shows the action's progress.
    let watch = m.cluster.kiln(&["watch", &id]);
    let wf = m.cluster.wait_finished(&id, LIMIT);
    let logs = m.logs(&id);
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let watched = kiln_tests::stdout(&watch);
    let full =
        format!("action 1 image2disk 100%: {:.1} MiB / {:.1} MiB", len as f64 / MIB as f64, len as f64 / MIB as f64);
    assert!(watched.contains(&full), "no {full:?} in:\n{watched}");
    assert!(disk.contents()[..image.len()] == image[..], "the disk differs from the image");
    // The second and third requests asked for the rest only.
    let ranges = server.ranges();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert_eq!(ranges[0], "");
    assert_eq!(ranges[1], format!("bytes={}-", len / 3));
    assert_eq!(ranges[2], format!("bytes={}-", len / 3 + len / 4));
    assert_eq!(server.bytes_sent(), len, "every byte was sent exactly once");
    assert!(logs.contains("resuming") && logs.contains("resumed 2 times"), "{logs}");
}

#[test]
fn image2disk_rejects_a_bad_checksum_and_scrubs_the_start() {
    let image = disk_image(3 * MIB as usize);
    let server = FileServer::start(compress("gzip", &image), Faults::default());
    let disk = LoopDevice::new(4 * MIB).unwrap();
    let wrong = sha256(b"another image");
    let (wf, logs) = run(&action(
        "image2disk",
        &[("IMG_URL", &server.url("img.gz")), ("DEST_DISK", disk.path.to_str().unwrap()), ("CHECKSUM", &wrong)],
    ));
    assert_eq!(wf["state"], "FAILED", "{wf:#}");
    let a = attempt(&wf);
    assert_eq!(a["reason"], "ChecksumMismatch", "{a:#}");
    assert!(a["message"].as_str().unwrap().contains(&format!("expected {wrong}")), "{a:#}");
    let written = disk.contents();
    assert!(written[..MIB as usize].iter().all(|b| *b == 0), "the start of a bad image must be zeroed");
    assert!(logs.contains("checksum mismatch"), "{logs}");
}

#[test]
fn image2disk_fails_a_truncated_download_instead_of_reporting_success() {
    let image = disk_image(2 * MIB as usize);
    let body = image.clone();
    let short = body.len() as u64 / 2;
    // Every response claims the full length and stops half way: resuming
    // cannot help, and the retry budget runs out.
    let server = FileServer::start(body, Faults { always_short: Some(short), ..Faults::default() });
    let disk = LoopDevice::new(4 * MIB).unwrap();
    let (wf, logs) = run(&action(
        "image2disk",
        &[
            ("IMG_URL", &server.url("raw.img")),
            ("DEST_DISK", disk.path.to_str().unwrap()),
            ("RETRY_DURATION_SECONDS", "2"),
        ],
    ));
    assert_eq!(wf["state"], "FAILED", "{wf:#}\n{logs}");
    let a = attempt(&wf);
    assert_eq!(a["reason"], "DownloadFailed", "{a:#}");
    assert!(a["message"].as_str().unwrap().contains(&format!("after {short} bytes of {}", image.len())), "{a:#}");
}

#[test]
fn image2disk_names_every_missing_or_bad_variable_before_writing() {
    let disk = LoopDevice::new(MIB).unwrap();
    std::fs::write(disk.backing_path(), vec![0x55u8; MIB as usize]).unwrap();
    let (wf, _) = run(&action("image2disk", &[("COMPRESSED", "perhaps"), ("CHECKSUM", "sha256:12")]));
    assert_eq!(wf["state"], "FAILED");
    let a = attempt(&wf);
    assert_eq!(a["reason"], "InvalidConfig", "{a:#}");
    assert_eq!(a["exit_code"], 2, "{a:#}");
    let message = a["message"].as_str().unwrap();
    for var in ["IMG_URL: is required", "DEST_DISK: is required", "COMPRESSED:", "CHECKSUM:"] {
        assert!(message.contains(var), "{var} not named in {message}");
    }
    // COMPRESSED=true on an uncompressed image: refused before any write.
    let server = FileServer::start(vec![7u8; 4096], Faults::default());
    let (wf, _) = run(&action(
        "image2disk",
        &[("IMG_URL", &server.url("x.gz")), ("DEST_DISK", disk.path.to_str().unwrap()), ("COMPRESSED", "true")],
    ));
    assert_eq!(attempt(&wf)["reason"], "NotCompressed", "{wf:#}");
    assert!(disk.contents().iter().all(|b| *b == 0x55), "nothing may be written");
}
