use super::*;
use proptest::prelude::*;
use std::net::UdpSocket;
use std::time::Duration;

#[test]
fn confine_accepts_plain_names_only() {
    assert_eq!(confine("ipxe.efi").unwrap(), PathBuf::from("ipxe.efi"));
    assert_eq!(confine("/ipxe.efi").unwrap(), PathBuf::from("ipxe.efi"));
    assert_eq!(confine("efi/ipxe.efi").unwrap(), PathBuf::from("efi/ipxe.efi"));
    for bad in
        ["", "/", "../etc/passwd", "/../x", "a/../../x", "./ipxe.efi", "//etc/passwd", "a\\..\\b", "a\0b", "a/./b"]
    {
        assert_eq!(confine(bad), Err(Refused::Escape), "{bad:?}");
    }
    assert_eq!(confine(&"a".repeat(256)), Err(Refused::TooLong));
}

/// A TFTP read by hand (RFC 1350 + option negotiation), as small as a test
/// client can be: returns the file or the server's error message.
fn fetch(server: SocketAddr, name: &str, opts: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rrq = vec![0, 1];
    for part in [name, "octet"].iter().chain(opts.iter().flat_map(|(k, v)| [k, v])) {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    s.send_to(&rrq, server).unwrap();
    let (mut blksize, mut window) = (512usize, 1u16);
    let mut data = Vec::new();
    let mut expected = 1u16;
    let mut buf = vec![0u8; 70000];
    loop {
        let (n, peer) = s.recv_from(&mut buf).map_err(|e| format!("no answer: {e}"))?;
        let p = &buf[..n];
        match u16::from_be_bytes([p[0], p[1]]) {
            6 => {
                let fields: Vec<&str> = p[2..].split(|b| *b == 0).map(|f| std::str::from_utf8(f).unwrap()).collect();
                for kv in fields.chunks(2).filter(|kv| kv.len() == 2) {
                    match kv[0] {
                        "blksize" => blksize = kv[1].parse().unwrap(),
                        "windowsize" => window = kv[1].parse().unwrap(),
                        _ => {}
                    }
                }
                s.send_to(&[0, 4, 0, 0], peer).unwrap();
            }
            3 => {
                let block = u16::from_be_bytes([p[2], p[3]]);
                let last = n - 4 < blksize;
                if block == expected {
                    data.extend_from_slice(&p[4..]);
                    if last || block.is_multiple_of(window) {
                        s.send_to(&[0, 4, p[2], p[3]], peer).unwrap();
                    }
                    expected = expected.wrapping_add(1);
                }
                if last && block.wrapping_add(1) == expected {
                    return Ok(data);
                }
            }
            5 => return Err(String::from_utf8_lossy(&p[4..n - 1]).into_owned()),
            other => return Err(format!("opcode {other}")),
        }
    }
}

struct Served {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

fn served() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ipxe");
    std::fs::create_dir(&root).unwrap();
    // Not a multiple of any block size, so the last block is short.
    let file: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("ipxe.efi"), &file).unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let root2 = root.clone();
    rt.spawn(async move { serve(&root2, sock).await });
    Served { addr, dir, _rt: rt }
}

fn expected_file(s: &Served) -> Vec<u8> {
    std::fs::read(s.dir.path().join("ipxe/ipxe.efi")).unwrap()
}

#[test]
fn serves_files_with_blksize_and_windowsize() {
    let s = served();
    let want = expected_file(&s);
    assert_eq!(fetch(s.addr, "ipxe.efi", &[]).unwrap(), want);
    assert_eq!(fetch(s.addr, "/ipxe.efi", &[("blksize", "1024")]).unwrap(), want);
    assert_eq!(fetch(s.addr, "ipxe.efi", &[("blksize", "1400"), ("windowsize", "4"), ("tsize", "0")]).unwrap(), want);
    // Above the limits: the server negotiates down, the transfer works.
    assert_eq!(fetch(s.addr, "ipxe.efi", &[("blksize", "65464"), ("windowsize", "65535")]).unwrap(), want);
}

#[test]
fn refuses_escapes_missing_files_and_writes() {
    let s = served();
    for name in ["../secret", "/../secret", "ipxe/../../secret", "nope.efi", "."] {
        let e = fetch(s.addr, name, &[]).unwrap_err();
        assert!(!e.contains("outside"), "{name}: {e}");
    }
    // A link the directory's owner made is followed (Debian's ipxe.efi is
    // one): the client named an entry of the directory.
    assert_eq!(fetch(s.addr, "link", &[]).unwrap(), b"outside");
    assert!(fetch(s.addr, "../secret", &[]).unwrap_err().contains("not a plain relative path"));
    // A write request is refused with an error packet.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.send_to(b"\x00\x02new.efi\x00octet\x00", s.addr).unwrap();
    let mut buf = [0u8; 600];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0, 5], "{:?}", &buf[..n]);
    assert!(!s.dir.path().join("ipxe/new.efi").exists());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever confine accepts stays under the directory by name.
    #[test]
    fn confine_never_escapes(name in "[a-z./\\\\\0]{0,12}|\\PC{0,40}") {
        if let Ok(p) = confine(&name) {
            prop_assert!(p.components().all(|c| matches!(c, Component::Normal(_))), "{name:?} -> {p:?}");
        }
    }
}

/// Arbitrary datagrams at the server: it survives them all, and a real
/// request afterwards is still served. (The packet parser is async-tftp's
/// own and private; this is the way to reach it.)
#[test]
fn survives_arbitrary_datagrams() {
    let s = served();
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1600),
        // Requests with odd names, modes and options reach further in.
        ("\\PC{0,30}", "octet|netascii|mail|\\PC{0,8}", proptest::collection::vec(("\\PC{0,10}", "\\PC{0,10}"), 0..6))
            .prop_map(|(name, mode, opts)| {
                let mut p = vec![0, 1];
                for part in [name, mode].into_iter().chain(opts.into_iter().flat_map(|(k, v)| [k, v])) {
                    p.extend_from_slice(part.as_bytes());
                    p.push(0);
                }
                p
            }),
    ];
    runner
        .run(&strategy, |bytes| {
            junk.send_to(&bytes, s.addr).unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(fetch(s.addr, "ipxe.efi", &[("blksize", "1024")]).unwrap(), expected_file(&s));
}
