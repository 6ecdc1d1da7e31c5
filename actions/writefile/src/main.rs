//! writefile: writes one file into a filesystem on a disk (netplan,
//! cloud-init, a machine's identity), with its owner and mode, creating
//! missing directories, atomically, and unmounting even when it fails.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kiln_action_kit::env::Env;
use kiln_action_kit::mount::{Mounts, inside};
use kiln_action_kit::{Failure, OrFail, Result, log};

const ACTION: &str = "writefile";

#[derive(Debug)]
struct Config {
    disk: PathBuf,
    fs_type: Option<String>,
    dest: String,
    contents: Vec<u8>,
    uid: u32,
    gid: u32,
    mode: u32,
    dirmode: u32,
}

impl Config {
    fn from_env(mut env: Env) -> Result<Config> {
        let disk = env.parse_with("DEST_DISK", true, kiln_action_kit::disk::resolve);
        let fs_type = env.optional("FS_TYPE");
        let dest = env.parse_with("DEST_PATH", true, |v| {
            if !v.starts_with('/') {
                return Err(format!("must be an absolute path, got {v:?}"));
            }
            if v.ends_with('/') {
                return Err(format!("{v:?} names a directory, not a file"));
            }
            inside(Path::new("/"), v).map(|_| v.to_string())
        });
        let contents = match (env.raw("CONTENTS").map(str::to_string), env.optional("CONTENTS_BASE64")) {
            (Some(_), Some(_)) => {
                env.invalid("CONTENTS_BASE64", "give CONTENTS or CONTENTS_BASE64, not both");
                None
            }
            (Some(text), None) => Some(text.into_bytes()),
            (None, Some(b64)) => env.parse_with("CONTENTS_BASE64", true, |_| decode_base64(&b64)),
            (None, None) => {
                env.invalid("CONTENTS", "is required (it may be empty: CONTENTS=\"\")");
                None
            }
        };
        let uid = env.number::<u32>("UID", false).unwrap_or(0);
        let gid = env.number::<u32>("GID", false).unwrap_or(0);
        let mode = env.octal("MODE", false, 0o7777).unwrap_or(0o644);
        let dirmode = env.octal("DIRMODE", false, 0o7777).unwrap_or(0o755);
        env.finish()?;
        Ok(Config {
            disk: disk.expect("checked by finish"),
            fs_type,
            dest: dest.expect("checked by finish"),
            contents: contents.expect("checked by finish"),
            uid,
            gid,
            mode,
            dirmode,
        })
    }
}

fn decode_base64(text: &str) -> std::result::Result<Vec<u8>, String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = ALPHABET.iter().position(|a| *a == c).ok_or_else(|| format!("{:?} is not base64", c as char))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let config = Config::from_env(Env::from_process())?;
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.disk, config.fs_type.as_deref(), &root)?;
        let written = write_into(&root, &config);
        // Unmounted whatever happened; an unmount error is reported because
        // it can mean the write never reached the disk.
        let unmounted = mounts.unmount_all();
        let _ = fs::remove_dir(&root);
        written?;
        unmounted?;
        log(
            ACTION,
            format_args!(
                "wrote {} ({} bytes, mode {:04o}, owner {}:{}) on {}",
                config.dest,
                config.contents.len(),
                config.mode,
                config.uid,
                config.gid,
                config.disk.display()
            ),
        );
        Ok(())
    })
}

fn write_into(root: &Path, c: &Config) -> Result<()> {
    let target = inside(root, &c.dest).map_err(|e| Failure::new("InvalidConfig", format!("DEST_PATH: {e}")))?;
    let parent = target.parent().expect("DEST_PATH has a parent");
    // Only directories created here get DIRMODE and the owner; existing ones
    // are left as the image made them.
    let mut missing: Vec<&Path> = parent.ancestors().take_while(|p| *p != root && !p.exists()).collect();
    missing.reverse();
    for dir in missing {
        DirBuilder::new()
            .mode(c.dirmode)
            .create(dir)
            .or_fail("WriteFailed", || format!("creating {}", dir.display()))?;
        // The umask may have cut bits off the mode asked for.
        fs::set_permissions(dir, fs::Permissions::from_mode(c.dirmode))
            .or_fail("WriteFailed", || format!("chmod {}", dir.display()))?;
        std::os::unix::fs::chown(dir, Some(c.uid), Some(c.gid))
            .or_fail("WriteFailed", || format!("chown {}", dir.display()))?;
    }
    if target.is_dir() {
        return Err(Failure::new("WriteFailed", format!("{} is a directory", c.dest)));
    }
    // Written beside the target and renamed over it: a reader (or a power
    // cut) sees the old file or the new one, never half of one.
    let name = target.file_name().expect("a file name").to_string_lossy();
    let tmp = parent.join(format!(".{name}.kiln-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        std::os::unix::fs::fchown(&f, Some(c.uid), Some(c.gid))?;
        f.set_permissions(fs::Permissions::from_mode(c.mode))?;
        f.write_all(&c.contents)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        fs::File::open(parent)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.or_fail("WriteFailed", || format!("writing {}", c.dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn every_bad_variable_is_named() {
        let err = Config::from_env(env(&[("DEST_PATH", "etc/x"), ("MODE", "999"), ("UID", "-1")])).unwrap_err();
        for v in
            ["DEST_DISK: is required", "DEST_PATH: must be an absolute path", "CONTENTS: is required", "MODE:", "UID:"]
        {
            assert!(err.message.contains(v), "{v} missing: {}", err.message);
        }
        let err =
            Config::from_env(env(&[("DEST_DISK", "/"), ("DEST_PATH", "/etc/../../x"), ("CONTENTS", "")])).unwrap_err();
        assert!(err.message.contains("DEST_PATH: \"/etc/../../x\" must not contain '..'"), "{}", err.message);
    }

    #[test]
    fn empty_contents_and_defaults() {
        let c = Config::from_env(env(&[("DEST_DISK", "/"), ("DEST_PATH", "/etc/empty"), ("CONTENTS", "")])).unwrap();
        assert!(c.contents.is_empty());
        assert_eq!((c.uid, c.gid, c.mode, c.dirmode), (0, 0, 0o644, 0o755));
    }

    #[test]
    fn writes_with_mode_owner_and_new_directories() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::set_permissions(root.path().join("etc"), fs::Permissions::from_mode(0o711)).unwrap();
        let c = Config {
            disk: "/dev/null".into(),
            fs_type: None,
            dest: "/etc/netplan/sub/01.yaml".into(),
            contents: b"network: {}\n".to_vec(),
            uid: 1000,
            gid: 1001,
            mode: 0o600,
            dirmode: 0o750,
        };
        write_into(root.path(), &c).unwrap();
        use std::os::unix::fs::MetadataExt;
        let file = root.path().join("etc/netplan/sub/01.yaml");
        assert_eq!(fs::read(&file).unwrap(), b"network: {}\n");
        let m = fs::metadata(&file).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 1000, 1001));
        for d in ["etc/netplan", "etc/netplan/sub"] {
            let m = fs::metadata(root.path().join(d)).unwrap();
            assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 1000, 1001), "{d}");
        }
        assert_eq!(fs::metadata(root.path().join("etc")).unwrap().mode() & 0o7777, 0o711, "existing dirs untouched");
        // Overwrite, and no temporary file left behind.
        write_into(root.path(), &Config { contents: b"v2".to_vec(), ..c }).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"v2");
        assert_eq!(fs::read_dir(root.path().join("etc/netplan/sub")).unwrap().count(), 1);
    }

    #[test]
    fn base64_contents() {
        assert_eq!(decode_base64("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert!(decode_base64("!!").is_err());
    }
}
