//! archive2disk against an ext4 filesystem on a loop device, fetching from
//! a small HTTP server in the test (needs root, gzip, zstd, sha256sum).

#[path = "../../kit/testsupport/ext4_loop.rs"]
mod disk;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;

use disk::{LoopDisk, action, text};

const BIN: &str = env!("CARGO_BIN_EXE_archive2disk");

/// Serves `files` (path -> body) over HTTP/1.1 on 127.0.0.1; returns the base URL.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = files.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let response = match files.get(&path) {
                    Some(body) => {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        [head.as_bytes(), body].concat()
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                };
                let _ = stream.write_all(&response);
            });
        }
    });
    base
}

/// A tar with a directory, files with modes and owners, and a symlink.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o750);
    dir.set_uid(1000);
    dir.set_gid(1000);
    dir.set_size(0);
    dir.set_mtime(1_700_000_000);
    dir.set_cksum();
    b.append_data(&mut dir, "app/", &[][..]).unwrap();
    for (path, data, mode, uid) in
        [("app/run.sh", &b"#!/bin/sh\necho hi\n"[..], 0o755, 1000), ("app/secret", &b"s3cret"[..], 0o600, 0)]
    {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    }
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    link.set_uid(1000);
    link.set_gid(1000);
    link.set_mtime(1_700_000_000);
    link.set_cksum();
    b.append_link(&mut link, "app/current", "run.sh").unwrap();
    b.into_inner().unwrap()
}

fn pipe(tool: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child =
        Command::new(tool[0]).args(&tool[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{tool:?}");
    out.stdout
}

fn digest(tool: &str, data: &[u8]) -> String {
    let out = pipe(&[tool], data);
    String::from_utf8(out).unwrap().split_whitespace().next().unwrap().to_string()
}

fn assert_sample_unpacked(disk: &LoopDisk, at: &str) {
    assert_eq!(disk.stat(&format!("{at}/app")).unwrap(), ("directory".into(), 0o750, 1000, 1000));
    assert_eq!(disk.stat(&format!("{at}/app/run.sh")).unwrap(), ("regular".into(), 0o755, 1000, 1000));
    assert_eq!(disk.stat(&format!("{at}/app/secret")).unwrap(), ("regular".into(), 0o600, 0, 0));
    assert_eq!(disk.stat(&format!("{at}/app/current")).unwrap(), ("symlink".into(), 0o777, 1000, 1000));
    assert_eq!(disk.read(&format!("{at}/app/run.sh")).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(disk.read(&format!("{at}/app/secret")).unwrap(), b"s3cret");
}

#[test]
fn verified_archives_unpack_with_modes_and_owners() {
    let tar = sample_tar();
    let gz = pipe(&["gzip", "-c"], &tar);
    let zst = pipe(&["zstd", "-q", "-c"], &tar);
    let base = serve(HashMap::from([("/a.tar.gz".to_string(), gz.clone()), ("/a.tar.zst".to_string(), zst.clone())]));
    let disk = LoopDisk::new();

    let sum = format!("sha256:{}", digest("sha256sum", &gz));
    let out = action(
        BIN,
        &[
            ("DEST_DISK", &disk.device),
            ("FS_TYPE", "ext4"),
            ("ARCHIVE_URL", &format!("{base}/a.tar.gz")),
            ("ARCHIVE_TYPE", "targz"),
            ("DEST_PATH", "/opt/kiln"),
            ("TARFILE_CHECKSUM", &sum),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("unpacked 4 entries"), "{}", text(&out));
    assert!(text(&out).contains("\"progress\""), "no progress line: {}", text(&out));
    assert!(!disk.is_mounted());
    assert_sample_unpacked(&disk, "/opt/kiln");
    assert_eq!(disk.list("/"), ["lost+found", "opt"], "no staged archive left");

    // zstd, type from the magic bytes, sha512, into the root.
    let sum = format!("sha512:{}", digest("sha512sum", &zst));
    let out = action(
        BIN,
        &[("DEST_DISK", &disk.device), ("ARCHIVE_URL", &format!("{base}/a.tar.zst")), ("TARFILE_CHECKSUM", &sum)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_sample_unpacked(&disk, "");
    assert_eq!(disk.list("/"), ["app", "lost+found", "opt"]);
}

#[test]
fn a_bad_checksum_writes_nothing() {
    let gz = pipe(&["gzip", "-c"], &sample_tar());
    let base = serve(HashMap::from([("/a.tgz".to_string(), gz.clone())]));
    let disk = LoopDisk::new();
    let wrong = format!("sha256:{}", digest("sha256sum", b"something else"));
    let out = action(
        BIN,
        &[("DEST_DISK", &disk.device), ("ARCHIVE_URL", &format!("{base}/a.tgz")), ("TARFILE_CHECKSUM", &wrong)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let good = digest("sha256sum", &gz);
    assert!(text(&out).contains(&format!("TARFILE_CHECKSUM is {wrong}")), "{}", text(&out));
    assert!(text(&out).contains(&format!("the downloaded file sha256:{good}")), "{}", text(&out));
    assert!(!disk.is_mounted());
    assert_eq!(disk.list("/"), ["lost+found"], "nothing unpacked and no staged archive left");
}

#[test]
fn unverified_streaming_and_type_mismatch() {
    let tar = sample_tar();
    let zst = pipe(&["zstd", "-q", "-c"], &tar);
    let base = serve(HashMap::from([("/a".to_string(), zst), ("/plain.tar".to_string(), tar)]));
    let disk = LoopDisk::new();
    let insecure = ("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", "true");
    let url = format!("{base}/a");
    let out = action(BIN, &[("DEST_DISK", &disk.device), ("ARCHIVE_URL", &url), ("ARCHIVE_TYPE", "targz"), insecure]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("ARCHIVE_TYPE says targz but the archive's first bytes say tarzst"), "{}", text(&out));
    assert_eq!(disk.list("/"), ["lost+found"]);

    let url = format!("{base}/plain.tar");
    let out = action(BIN, &[("DEST_DISK", &disk.device), ("ARCHIVE_URL", &url), ("DEST_PATH", "/srv"), insecure]);
    assert!(out.status.success(), "{}", text(&out));
    assert_sample_unpacked(&disk, "/srv");

    let out = action(BIN, &[("DEST_DISK", &disk.device), ("ARCHIVE_URL", &format!("{base}/missing")), insecure]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("HTTP 404"), "{}", text(&out));
    assert!(!disk.is_mounted());
}

#[test]
fn a_missing_checksum_is_named_before_anything_happens() {
    let disk = LoopDisk::new();
    let out = action(BIN, &[("DEST_DISK", &disk.device), ("ARCHIVE_URL", "http://127.0.0.1:9/a.tar.gz")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("TARFILE_CHECKSUM: is required"), "{}", text(&out));
    assert_eq!(disk.list("/"), ["lost+found"]);
}

/// A hub template's TARFILE_CHECKSUM is the digest of the decompressed tar
/// stream up to its end-of-archive marker (Tinkerbell hashes what its tar
/// reader reads), not of the .tar.gz and not of GNU tar's record padding.
#[test]
fn the_hub_checksum_of_the_decompressed_tar_stream_passes() {
    let mut tar = sample_tar();
    // tar::Builder ends with the two zero blocks; pad the last 10 KiB
    // record with zeros as GNU tar does.
    let end = tar.len();
    tar.resize(end.div_ceil(10240) * 10240, 0);
    let gz = pipe(&["gzip", "-c"], &tar);
    let base = serve(HashMap::from([("/a.tar.gz".to_string(), gz)]));
    let disk = LoopDisk::new();
    for (tool, algorithm) in [("sha256sum", "sha256"), ("sha384sum", "sha384"), ("sha512sum", "sha512")] {
        let sum = format!("{algorithm}:{}", digest(tool, &tar[..end]));
        let out = action(
            BIN,
            &[
                ("DEST_DISK", &disk.device),
                ("FS_TYPE", "ext4"),
                ("ARCHIVE_URL", &format!("{base}/a.tar.gz")),
                ("ARCHIVE_TYPE", "targz"),
                ("DEST_PATH", &format!("/{algorithm}")),
                ("TARFILE_CHECKSUM", &sum),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(&format!("{algorithm} of the decompressed tar stream verified")), "{}", text(&out));
        assert_sample_unpacked(&disk, &format!("/{algorithm}"));
    }
}

/// HTTP_CLIENT_TIMEOUT_MINUTES bounds the whole download, as Go's
/// http.Client.Timeout does in the hub (takes a minute: the unit is minutes).
#[test]
fn http_client_timeout_minutes_ends_a_slow_download() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/slow.tar", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = std::io::Read::read(&mut conn, &mut request);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n");
        // A byte every 5 s: never idle long enough for the idle timeout.
        for _ in 0..100 {
            if conn.write_all(&[0]).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
    });
    let disk = LoopDisk::new();
    let started = std::time::Instant::now();
    let out = action(
        BIN,
        &[
            ("DEST_DISK", &disk.device),
            ("ARCHIVE_URL", &url),
            ("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", "true"),
            ("HTTP_CLIENT_TIMEOUT_MINUTES", "1"),
        ],
    );
    let took = started.elapsed().as_secs();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("did not finish within 60s"), "{}", text(&out));
    assert!((59..90).contains(&took), "took {took} s");
    assert!(!disk.is_mounted());
}
