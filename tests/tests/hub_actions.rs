//! The actions kiln adds for the Tinkerbell hub's oci2disk, qemuimg2disk,
//! slurp, rootio, grub2disk and syslinux, run through the agent with the
//! hub's variables against real targets: the shared local registries, loop
//! devices, qcow2 files made by `qemu-img`, an HTTP server here.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use kiln_tests::library::{self, action, attempt, run};
use kiln_tests::{LoopDevice, TestEnv};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// The image data of this file's tests (its own seed, so the two suites'
/// images differ).
fn disk_image(len: usize) -> Vec<u8> {
    library::disk_image(len, 0x2545_f491_4f6c_dd1d)
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

/// HTTPS in front of a plain-HTTP registry, with a self-signed certificate
/// for 127.0.0.1: the hub's oci2disk always speaks HTTPS, and needs
/// `SKIP_VERIFY` for such a registry. Serves until the test process ends.
fn tls_front(upstream: String) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    addr.to_string()
}

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

    // HTTPS, as the hub always speaks it: a self-signed registry needs
    // SKIP_VERIFY, and is refused without it.
    let https = tls_front(env.registry.clone());
    let img = format!("{https}/{path}:raw");
    std::fs::write(disk.backing_path(), vec![0xEEu8; 8 * MIB as usize]).unwrap();
    let (wf, logs) = run(&action("oci2disk", &[("IMG_URL", &img), ("DEST_DISK", dest)]));
    assert_eq!(attempt(&wf)["reason"], "PullFailed", "{wf:#}\n{logs}");
    assert!(disk.contents().iter().all(|b| *b == 0xEE), "an unverified registry was written from");
    let (wf, logs) = run(&action("oci2disk", &[("IMG_URL", &img), ("DEST_DISK", dest), ("SKIP_VERIFY", "true")]));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert!(disk.contents()[..image.len()] == image[..], "the image over HTTPS differs");

    // Bad variables are named before anything is pulled.
    let (wf, _) = run(&action("oci2disk", &[("IMG_URL", "no-tag/here"), ("COMPRESSED", "yes")]));
    let a = attempt(&wf);
    assert_eq!((a["reason"].as_str(), a["exit_code"].as_i64()), (Some("InvalidConfig"), Some(2)), "{a:#}");
    let message = a["message"].as_str().unwrap();
    for var in ["IMG_URL:", "DEST_DISK: is required", "COMPRESSED:"] {
        assert!(message.contains(var), "{var} not named in {message}");
    }
}

// ------------------------------------------------- a small HTTP server here

/// A request as the server saw it.
#[derive(Debug, Clone, Default)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Serves `body` with real byte ranges (`bytes=a-b`, as qemu-img's curl
/// driver asks) and HEAD; records every request, reading request bodies
/// whole (Content-Length or chunked) and answering POSTs with `post_status`.
struct HttpServer {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

impl HttpServer {
    fn start(body: Vec<u8>, post_status: u16) -> HttpServer {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (body, log) = (std::sync::Arc::new(body), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (body, log) = (body.clone(), log.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let mut req = Request {
                        method: parts.next().unwrap_or_default().into(),
                        path: parts.next().unwrap_or_default().into(),
                        ..Default::default()
                    };
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            req.headers.push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                    if req.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                        loop {
                            let mut size = String::new();
                            reader.read_line(&mut size).unwrap();
                            let n = usize::from_str_radix(size.trim(), 16).unwrap();
                            let mut chunk = vec![0; n + 2];
                            reader.read_exact(&mut chunk).unwrap();
                            if n == 0 {
                                break;
                            }
                            req.body.extend_from_slice(&chunk[..n]);
                        }
                    } else if let Some(n) = req.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
                        req.body = vec![0; n];
                        reader.read_exact(&mut req.body).unwrap();
                    }
                    let total = body.len();
                    let range = req.header("range").and_then(|r| r.strip_prefix("bytes=")).and_then(|r| {
                        let (a, b) = r.split_once('-')?;
                        let a: usize = a.parse().ok()?;
                        let b: usize = if b.is_empty() { total - 1 } else { b.parse().ok()? };
                        Some((a, b.min(total - 1)))
                    });
                    let (status, content): (String, &[u8]) = match (req.method.as_str(), range) {
                        ("POST", _) => (format!("{post_status} Whatever"), b"stored\n"),
                        (_, Some((a, b))) => {
                            (format!("206 Partial Content\r\nContent-Range: bytes {a}-{b}/{total}"), &body[a..=b])
                        }
                        _ => ("200 OK".to_string(), &body[..]),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                        content.len()
                    );
                    let mut stream = stream;
                    let _ = stream.write_all(head.as_bytes());
                    if req.method != "HEAD" {
                        let _ = stream.write_all(content);
                    }
                    log.lock().unwrap().push(req);
                });
            }
        });
        HttpServer { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

// ------------------------------------------------------------ qemuimg2disk

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("qemu-img (qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn qemuimg2disk_converts_a_real_qcow2_over_http_onto_a_loop_device() {
    let image = disk_image(5 * MIB as usize + 4096);
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    let qcow2 = dir.path().join("disk.qcow2");
    std::fs::write(&raw, &image).unwrap();
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", "-c", raw.to_str().unwrap(), qcow2.to_str().unwrap()]);
    let body = std::fs::read(&qcow2).unwrap();
    assert_eq!(&body[..4], b"QFI\xfb", "a qcow2 file");
    let server = HttpServer::start(body, 200);

    let disk = LoopDevice::new(16 * MIB).unwrap();
    std::fs::write(disk.backing_path(), vec![0xEEu8; 16 * MIB as usize]).unwrap();
    let dest = disk.path.to_str().unwrap();
    // The hub's example: IMG_URL and DEST_DISK only (FORMAT host_device).
    let (wf, logs) = run(&action("qemuimg2disk", &[("IMG_URL", &server.url("/disk.qcow2")), ("DEST_DISK", dest)]));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let written = disk.contents();
    assert!(written[..image.len()] == image[..], "the disk differs from the qcow2's contents");
    assert!(written[image.len()..].iter().all(|b| *b == 0xEE), "bytes past the image changed");
    assert!(logs.contains(r#"{"progress":{"what":"image""#), "no progress line: {logs}");
    assert!(server.requests().iter().any(|r| r.header("range").is_some()), "qemu-img read by ranges");

    // EXTRA_ARGS reach qemu-img (-n: do not create the target; -S 0 writes
    // zeros too) and FORMAT=raw with it.
    let (wf, logs) = run(&action(
        "qemuimg2disk",
        &[("IMG_URL", &server.url("/disk.qcow2")), ("DEST_DISK", dest), ("FORMAT", "raw"), ("EXTRA_ARGS", "-n -S 0")],
    ));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert!(logs.contains("-O raw") && logs.contains("-n -S 0"), "{logs}");

    // qemu-img's failure is the action's, with its exit code.
    let (wf, logs) = run(&action("qemuimg2disk", &[("IMG_URL", "/no/such.qcow2"), ("DEST_DISK", dest)]));
    let a = attempt(&wf);
    assert_eq!((a["reason"].as_str(), a["exit_code"].as_i64()), (Some("ConvertFailed"), Some(1)), "{a:#}\n{logs}");
    let (wf, _) = run(&action("qemuimg2disk", &[("DEST_DISK", dest)]));
    assert_eq!(attempt(&wf)["message"], "IMG_URL: is required", "{wf:#}");
}

// ------------------------------------------------------------------- slurp

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip").arg("-dc").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "not gzip");
    out.stdout
}

/// The one part of a multipart/form-data body: (headers, content).
fn only_part(req: &Request) -> (String, Vec<u8>) {
    let ct = req.header("content-type").expect("content type");
    let boundary = ct.split("boundary=").nth(1).expect("a boundary").trim_matches('"');
    let body = &req.body;
    let open = format!("--{boundary}\r\n");
    let close = format!("\r\n--{boundary}--");
    assert!(body.starts_with(open.as_bytes()), "body starts with the boundary");
    let rest = &body[open.len()..];
    let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("part headers");
    let headers = String::from_utf8_lossy(&rest[..head_end]).to_string();
    let content = &rest[head_end + 4..];
    let end = content.windows(close.len()).rposition(|w| w == close.as_bytes()).expect("closing boundary");
    (headers, content[..end].to_vec())
}

#[test]
fn slurp_uploads_the_disk_as_the_hubs_multipart_form() {
    let image = disk_image(4 * MIB as usize);
    let disk = LoopDevice::new(4 * MIB).unwrap();
    std::fs::write(disk.backing_path(), &image).unwrap();
    let src = disk.path.to_str().unwrap();

    for (compressed, file) in [("false", "ubuntu_wordpress.img"), ("T", "ubuntu_wordpress.img.gz")] {
        let server = HttpServer::start(Vec::new(), 200);
        let (wf, logs) = run(&action(
            "slurp",
            &[
                ("DEST_URL", &server.url("/image")),
                ("SOURCE_DISK", src),
                ("IMG_NAME", "ubuntu_wordpress"),
                ("COMPRESSED", compressed),
            ],
        ));
        assert_eq!(wf["state"], "SUCCESS", "{compressed}: {wf:#}\n{logs}");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 1, "one POST");
        assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("POST", "/image"));
        assert!(reqs[0].header("content-type").unwrap().starts_with("multipart/form-data"));
        let (headers, content) = only_part(&reqs[0]);
        assert!(headers.contains(&format!("name=\"BootyImage\"; filename=\"{file}\"")), "{headers}");
        let uploaded = if compressed == "T" { gunzip(&content) } else { content };
        assert!(uploaded == image, "{compressed}: the uploaded bytes differ from the disk");
        let done = format!(r#"{{"progress":{{"what":"disk","done":{},"total":{}"#, image.len(), image.len());
        assert!(logs.contains(&done), "no final progress line: {logs}");
    }

    // The hub would report success here; kiln fails and says why.
    let server = HttpServer::start(Vec::new(), 507);
    let (wf, logs) =
        run(&action("slurp", &[("DEST_URL", &server.url("/image")), ("SOURCE_DISK", src), ("IMG_NAME", "x")]));
    let a = attempt(&wf);
    assert_eq!(a["reason"], "UploadFailed", "{a:#}\n{logs}");
    assert!(a["message"].as_str().unwrap().contains("507"), "{a:#}");
}

// ------------------------------------------------------------------ rootio

/// An action with a container command (the hub's `command: ["partition"]`).
fn action_with_command(name: &str, command: &str, env: &[(&str, &str)]) -> String {
    let plain = action(name, env);
    plain.replace("          timeout: 90\n", &format!("          timeout: 90\n          command: [{command:?}]\n"))
}

/// A partition as sfdisk reads it back: (start, size, type, name, bootable).
type ReadPart = (u64, u64, String, String, bool);

/// `sfdisk --json` of a disk image: (label, partitions).
fn table(path: &std::path::Path) -> (String, Vec<ReadPart>) {
    let out = Command::new("sfdisk").arg("--json").arg(path).output().expect("sfdisk");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["partitiontable"];
    let parts = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap_or_default().to_string(),
                p["bootable"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    (t["label"].as_str().unwrap().to_string(), parts)
}

fn blkid(dev: &std::path::Path) -> String {
    let out = Command::new("blkid").args(["-p", "-o", "export"]).arg(dev).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn rootio_partitions_wipes_and_formats_from_cpr_metadata() {
    const SECTORS: u64 = 131072; // 64 MiB
    let disk = LoopDevice::new(SECTORS * 512).unwrap();
    std::fs::write(disk.backing_path(), vec![0xEEu8; (SECTORS * 512) as usize]).unwrap();
    let dev = disk.path.to_str().unwrap();
    // The hub's test/standard.json, on this disk.
    let metadata = serde_json::json!({"metadata": {"instance": {"hostname": "server001", "storage": {
        "disks": [{"device": dev, "wipe_table": true, "partitions": [
            {"label": "BIOS", "number": 1, "size": 4096},
            {"label": "SWAP", "number": 2, "size": 32768},
            {"label": "ROOT", "number": 3, "size": 0}]}],
        "filesystems": []}}}});
    let server = HttpServer::start(serde_json::to_vec(&metadata).unwrap(), 200);
    let port = server.addr.port().to_string();
    let env = [("MIRROR_HOST", "127.0.0.1"), ("METADATA_SERVICE_PORT", port.as_str())];
    let (wf, logs) = run(&action_with_command("rootio", "partition", &env));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let req = &server.requests()[0];
    assert_eq!((req.path.as_str(), req.header("user-agent")), ("/metadata", Some("bootkit")));
    let (label, parts) = table(disk.backing_path());
    assert_eq!(label, "gpt");
    let end = SECTORS - 2048;
    assert_eq!(
        parts,
        [
            (2048, 4097, "21686148-6449-6E6F-744E-656564454649".into(), "BIOS".into(), false),
            (6145, 32769, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F".into(), "SWAP".into(), false),
            (38914, end - 38914 + 1, "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(), "ROOT".into(), false),
        ]
    );
    // wipe_table zeroed the disk (all of it: it is under 1 GiB) before the table.
    let bytes = disk.contents();
    assert!(bytes[(2048 * 512) as usize..(end * 512) as usize].iter().all(|b| *b == 0), "the disk was not wiped");

    // format: the host parses no partition tables, so each partition is a
    // loop device over its range of the disk.
    let swap = LoopDevice::over_range(disk.backing_path(), 6145 * 512, 32769 * 512).unwrap();
    let root = LoopDevice::over_range(disk.backing_path(), 38914 * 512, (end - 38914 + 1) * 512).unwrap();
    let bios = LoopDevice::over_range(disk.backing_path(), 2048 * 512, 4097 * 512).unwrap();
    let metadata = serde_json::json!({"metadata": {"instance": {"storage": {"filesystems": [
        {"mount": {"create": {"options": ["-n", "EFI"]}, "device": bios.path, "format": "vfat", "point": "/boot/efi"}},
        {"mount": {"create": {"options": ["-L", "ROOT"]}, "device": root.path, "format": "ext4", "point": "/"}},
        {"mount": {"create": {"options": ["-L", "SWAP"]}, "device": swap.path, "format": "swap", "point": "none"}}]}}}});
    let server = HttpServer::start(serde_json::to_vec(&metadata).unwrap(), 200);
    let port = server.addr.port().to_string();
    let env = [("MIRROR_HOST", "127.0.0.1"), ("METADATA_SERVICE_PORT", port.as_str())];
    let (wf, logs) = run(&action_with_command("rootio", "format", &env));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let efi = blkid(&bios.path);
    assert!(efi.contains("TYPE=vfat") && efi.contains("LABEL=EFI"), "{efi}");
    let (r, s) = (blkid(&root.path), blkid(&swap.path));
    assert!(r.contains("TYPE=ext4") && r.contains("LABEL=ROOT"), "{r}");
    // As in the hub, mkswap gets no create options (no label).
    assert!(s.contains("TYPE=swap") && !s.contains("LABEL="), "{s}");

    // mount: into the action's own container, as in the hub (so only the
    // mount itself can be seen: it worked, or it failed naming the point).
    let metadata = serde_json::json!({"metadata": {"instance": {"storage": {"filesystems": [
        {"mount": {"device": root.path, "format": "ext4", "point": "/tmp"}}]}}}});
    let server = HttpServer::start(serde_json::to_vec(&metadata).unwrap(), 200);
    let port = server.addr.port().to_string();
    let env = [("MIRROR_HOST", "127.0.0.1"), ("METADATA_SERVICE_PORT", port.as_str())];
    let (wf, logs) = run(&action_with_command("rootio", "mount", &env));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert!(logs.contains(&format!("mounted [{}] -> [/tmp]", root.path.display())), "{logs}");
    let metadata = serde_json::json!({"metadata": {"instance": {"storage": {"filesystems": [
        {"mount": {"device": root.path, "format": "ext4", "point": "/no-such-dir"}}]}}}});
    let server = HttpServer::start(serde_json::to_vec(&metadata).unwrap(), 200);
    let port = server.addr.port().to_string();
    let env = [("MIRROR_HOST", "127.0.0.1"), ("METADATA_SERVICE_PORT", port.as_str())];
    let (wf, logs) = run(&action_with_command("rootio", "mount", &env));
    let a = attempt(&wf);
    assert_eq!(a["reason"], "StepFailed", "{a:#}\n{logs}");
    assert!(a["message"].as_str().unwrap().contains("-> [/no-such-dir]"), "{a:#}");

    // MBR (any value, as the hub reads it) with the hub's mbr.json layout.
    let metadata = serde_json::json!({"metadata": {"instance": {"storage": {"disks": [
        {"device": dev, "partitions": [{"label": "FAT32_ACTIVE", "number": 1, "size": 0}]}]}}}});
    let server = HttpServer::start(serde_json::to_vec(&metadata).unwrap(), 200);
    let port = server.addr.port().to_string();
    let env = [("MIRROR_HOST", "127.0.0.1"), ("METADATA_SERVICE_PORT", port.as_str()), ("MBR", "false")];
    let (wf, logs) = run(&action_with_command("rootio", "partition", &env));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    assert_eq!(
        table(disk.backing_path()),
        ("dos".into(), vec![(2048, SECTORS - 2048, "c".into(), String::new(), true)])
    );

    // A filesystem type the hub cannot make: the action fails naming it
    // (the hub panics), after making the others.
    let metadata = serde_json::json!({"metadata": {"instance": {"storage": {"filesystems": [
        {"mount": {"device": root.path, "format": "btrfs", "point": "/"}},
        {"mount": {"device": swap.path, "format": "swap", "point": "none"}}]}}}});
    let server = HttpServer::start(serde_json::to_vec(&metadata).unwrap(), 200);
    let port = server.addr.port().to_string();
    let env = [("MIRROR_HOST", "127.0.0.1"), ("METADATA_SERVICE_PORT", port.as_str())];
    let (wf, logs) = run(&action_with_command("rootio", "format", &env));
    let a = attempt(&wf);
    assert_eq!(a["reason"], "StepFailed", "{a:#}\n{logs}");
    assert!(a["message"].as_str().unwrap().contains("\"btrfs\""), "{a:#}");
    assert!(logs.contains("mkswap"), "the next filesystem was still made: {logs}");
}

// ---------------------------------------------------- syslinux, grub2disk

/// A disk image file with one MBR partition from sector 2048 (type `kind`),
/// a loop device over the whole disk and one over the partition (the host
/// kernel parses no partition tables).
struct PartitionedDisk {
    file: tempfile::NamedTempFile,
    whole: LoopDevice,
    part: LoopDevice,
}

impl PartitionedDisk {
    fn new(size: u64, kind: &str, mkfs: &[&str]) -> PartitionedDisk {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size).unwrap();
        let mut sfdisk = Command::new("sfdisk").args(["-q"]).arg(file.path()).stdin(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(
            &mut sfdisk.stdin.take().unwrap(),
            format!("start=2048, type={kind}, bootable\n").as_bytes(),
        )
        .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        let whole = LoopDevice::over(file.path()).unwrap();
        let part = LoopDevice::over_range(file.path(), 2048 * 512, size - 2048 * 512).unwrap();
        let out = Command::new(mkfs[0]).args(&mkfs[1..]).arg(&part.path).output().unwrap();
        assert!(out.status.success(), "{mkfs:?}: {}", String::from_utf8_lossy(&out.stderr));
        PartitionedDisk { file, whole, part }
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.file.path()).unwrap()
    }
}

#[test]
fn syslinux_writes_the_mbr_and_installs_ldlinux_on_a_fat_partition() {
    let disk = PartitionedDisk::new(40 * MIB, "c", &["mkfs.vfat", "-n", "BOOT"]);
    let before = disk.bytes();
    let (whole, part) = (disk.whole.path.to_str().unwrap(), disk.part.path.to_str().unwrap());

    let (wf, _) =
        run(&action("syslinux", &[("DEST_DISK", whole), ("DEST_PARTITION", part), ("SYSLINUX_VERSION", "6.04")]));
    let a = attempt(&wf);
    assert_eq!(a["reason"], "InvalidConfig", "{a:#}");
    assert!(a["message"].as_str().unwrap().contains("SYSLINUX_VERSION"), "{a:#}");
    assert!(disk.bytes() == before, "a refused configuration wrote to the disk");

    // The hub's README example.
    let (wf, logs) =
        run(&action("syslinux", &[("DEST_DISK", whole), ("DEST_PARTITION", part), ("SYSLINUX_VERSION", "3.86")]));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let after = disk.bytes();
    let mbr = std::fs::read("/usr/lib/syslinux/mbr/mbr.bin").expect("syslinux-common");
    assert!(after[..mbr.len()] == mbr[..], "the MBR boot code is syslinux's");
    assert!(after[440..512] == before[440..512], "the disk signature and partition table are untouched");
    let boot = 2048 * 512;
    assert_eq!(&after[boot + 3..boot + 11], b"SYSLINUX", "the partition's boot sector is syslinux's");
    let out = Command::new("mdir")
        .args(["-a", "-i"])
        .arg(&disk.part.path)
        .arg("::/")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(listing.contains("ldlinux  sys") && listing.contains("ldlinux  c32"), "{listing}");
}

#[test]
fn grub2disk_installs_grub_and_writes_grub_cfg_from_inside_the_root_filesystem() {
    let disk = PartitionedDisk::new(64 * MIB, "83", &["mkfs.ext4", "-q", "-L", "ROOT"]);
    // A root filesystem with a kernel for grub-mkconfig to find.
    let mnt = tempfile::tempdir().unwrap();
    let mount = |args: &[&str]| assert!(Command::new(args[0]).args(&args[1..]).status().unwrap().success(), "{args:?}");
    let (part, mnt_path) = (disk.part.path.to_str().unwrap(), mnt.path().to_str().unwrap());
    mount(&["mount", part, mnt_path]);
    std::fs::create_dir_all(mnt.path().join("boot")).unwrap();
    std::fs::write(mnt.path().join("boot/vmlinuz-6.1.0-kiln"), vec![0u8; 4096]).unwrap();
    std::fs::write(mnt.path().join("boot/initrd.img-6.1.0-kiln"), vec![0u8; 4096]).unwrap();
    mount(&["umount", mnt_path]);

    let whole = disk.whole.path.to_str().unwrap();
    // The hub's README example.
    let (wf, logs) =
        run(&action("grub2disk", &[("GRUB_INSTALL_PATH", whole), ("GRUB_DISK", part), ("FS_TYPE", "ext4")]));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let bytes = disk.bytes();
    assert!(bytes[..512].windows(4).any(|w| w == b"GRUB"), "GRUB's boot code is in the MBR");
    mount(&["mount", "-o", "ro", part, mnt_path]);
    let cfg = std::fs::read_to_string(mnt.path().join("boot/grub/grub.cfg"));
    let modules = mnt.path().join("boot/grub/i386-pc/normal.mod").exists();
    mount(&["umount", mnt_path]);
    let cfg = cfg.expect("boot/grub/grub.cfg on the root filesystem");
    assert!(modules, "GRUB's i386-pc modules in the target's /boot/grub");
    assert!(cfg.contains("menuentry") && cfg.contains("/boot/vmlinuz-6.1.0-kiln"), "{cfg}");

    let (wf, _) = run(&action("grub2disk", &[("GRUB_DISK", part)]));
    assert_eq!(attempt(&wf)["message"], "GRUB_INSTALL_PATH: is required", "{wf:#}");
}

/// Removes the test's volume group from the host's view however the test ends.
struct VolumeGroupCleanup(String, String);

impl Drop for VolumeGroupCleanup {
    fn drop(&mut self) {
        let _ = Command::new("vgremove").args(["-f", &self.0]).output();
        let _ = Command::new("pvremove").args(["-f", &self.1]).output();
    }
}

#[test]
fn rootio_creates_the_volume_groups_of_the_metadata() {
    let disk = LoopDevice::new(64 * MIB).unwrap();
    let dev = disk.path.to_str().unwrap();
    let vg = format!("kilntest{}", std::process::id());
    let _cleanup = VolumeGroupCleanup(vg.clone(), dev.to_string());
    // Logical volumes need device-mapper, which this host's kernel lacks
    // (the VM has it): the volume group with its tag, here.
    let metadata = serde_json::json!({"metadata": {"instance": {"storage": {"volume_groups": [
        {"name": vg, "physical_volumes": [dev], "tags": ["kiln"]}]}}}});
    let server = HttpServer::start(serde_json::to_vec(&metadata).unwrap(), 200);
    let port = server.addr.port().to_string();
    let env = [("MIRROR_HOST", "127.0.0.1"), ("METADATA_SERVICE_PORT", port.as_str())];
    let (wf, logs) = run(&action_with_command("rootio", "partition", &env));
    assert_eq!(wf["state"], "SUCCESS", "{wf:#}\n{logs}");
    let out =
        Command::new("vgs").args(["--noheadings", "-o", "vg_name,pv_count,vg_tags", &vg]).output().expect("vgs (lvm2)");
    let line = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(line, format!("{vg} 1 kiln"), "{}", String::from_utf8_lossy(&out.stderr));

    // A name LVM would refuse is refused before any command runs.
    let metadata = serde_json::json!({"metadata": {"instance": {"storage": {"volume_groups": [
        {"name": "-bad", "physical_volumes": [dev]}]}}}});
    let server = HttpServer::start(serde_json::to_vec(&metadata).unwrap(), 200);
    let port = server.addr.port().to_string();
    let env = [("MIRROR_HOST", "127.0.0.1"), ("METADATA_SERVICE_PORT", port.as_str())];
    let (wf, logs) = run(&action_with_command("rootio", "partition", &env));
    let a = attempt(&wf);
    assert_eq!(a["reason"], "StepFailed", "{a:#}\n{logs}");
    assert!(a["message"].as_str().unwrap().contains("\"-bad\""), "{a:#}");
    assert!(!logs.contains("pvcreate"), "{logs}");
}
