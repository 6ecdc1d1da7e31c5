//! Writing the file into the mounted filesystem.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use kiln_action_kit::mount::inside;
use kiln_action_kit::{Failure, OrFail, Result};

use crate::config::Config;
#[cfg(test)]
use crate::config::Source;

pub fn write_into(root: &Path, c: &Config, contents: &[u8]) -> Result<()> {
    let target = inside(root, &c.dest).map_err(|e| Failure::new("InvalidConfig", format!("DEST_PATH: {e}")))?;
    let parent = target.parent().expect("DEST_PATH has a parent");
    // Only directories created here get DIRMODE and the owner; existing ones
    // are left as the image made them.
    let mut missing: Vec<&Path> =
        parent.ancestors().take_while(|p| *p != root && fs::symlink_metadata(p).is_err()).collect();
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
    // An absolute symlink among the image's directories (/var/run -> /run)
    // points into the action's container, not the image: following it would
    // write on the wrong filesystem.
    let real_parent = parent.canonicalize().or_fail("WriteFailed", || format!("resolving {}", parent.display()))?;
    let real_root = root.canonicalize().or_fail("WriteFailed", || format!("resolving {}", root.display()))?;
    if !real_parent.starts_with(&real_root) {
        return Err(Failure::new(
            "WriteFailed",
            format!(
                "the directory of {} is a symlink that leaves the filesystem (to {})",
                c.dest,
                real_parent.display()
            ),
        ));
    }
    if target.is_dir() {
        return Err(Failure::new("WriteFailed", format!("{} is a directory", c.dest)));
    }
    // Written beside the target and renamed over it: a reader (or a power
    // cut) sees the old file or the new one, never half of one.
    let name = target.file_name().expect("a file name").to_string_lossy();
    let tmp = parent.join(format!(".{name}.kiln-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        std::os::unix::fs::fchown(&f, Some(c.uid), Some(c.gid))?;
        // After the chown, which clears setuid/setgid bits.
        f.set_permissions(fs::Permissions::from_mode(c.mode))?;
        f.write_all(contents)?;
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
    use std::os::unix::fs::MetadataExt;

    fn config(dest: &str) -> Config {
        Config {
            disk: "/dev/null".into(),
            fs_type: None,
            dest: dest.into(),
            source: Source::Bytes(Vec::new()),
            uid: 1000,
            gid: 1001,
            mode: 0o4750,
            dirmode: 0o750,
        }
    }

    #[test]
    fn writes_with_mode_owner_and_new_directories() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::set_permissions(root.path().join("etc"), fs::Permissions::from_mode(0o711)).unwrap();
        let c = config("/etc/netplan/sub/01.yaml");
        write_into(root.path(), &c, b"network: {}\n").unwrap();
        let file = root.path().join("etc/netplan/sub/01.yaml");
        assert_eq!(fs::read(&file).unwrap(), b"network: {}\n");
        let m = fs::metadata(&file).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4750, 1000, 1001));
        for d in ["etc/netplan", "etc/netplan/sub"] {
            let m = fs::metadata(root.path().join(d)).unwrap();
            assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 1000, 1001), "{d}");
        }
        let etc = fs::metadata(root.path().join("etc")).unwrap();
        assert_eq!((etc.mode() & 0o7777, etc.uid()), (0o711, 0), "existing dirs untouched");
        // Overwrite, and no temporary file left behind.
        write_into(root.path(), &c, b"v2").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"v2");
        assert_eq!(fs::read_dir(root.path().join("etc/netplan/sub")).unwrap().count(), 1);
    }

    #[test]
    fn refuses_symlinks_out_of_the_filesystem_and_directories() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("var")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("var/run")).unwrap();
        let err = write_into(root.path(), &config("/var/run/x.pid"), b"1").unwrap_err();
        assert!(err.message.contains("leaves the filesystem"), "{}", err.message);
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // A relative link that stays inside is fine.
        fs::create_dir(root.path().join("run")).unwrap();
        std::os::unix::fs::symlink("../run", root.path().join("var/lock")).unwrap();
        write_into(root.path(), &config("/var/lock/y"), b"2").unwrap();
        assert_eq!(fs::read(root.path().join("run/y")).unwrap(), b"2");
        fs::create_dir(root.path().join("dir")).unwrap();
        assert!(write_into(root.path(), &config("/dir"), b"").unwrap_err().message.contains("is a directory"));
    }
}
