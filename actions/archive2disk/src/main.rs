//! archive2disk: unpacks a tar archive (plain, gzip, zstd, xz, bzip2) from
//! HTTP(S) into a filesystem on a disk. The checksum is required (unless
//! explicitly waived) and checked BEFORE anything is unpacked: the archive
//! is first downloaded onto the target filesystem itself, so a bad or
//! truncated archive writes nothing.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kiln_action_kit::checksum::Checksum;
use kiln_action_kit::decompress::{Format, decoder, sniff};
use kiln_action_kit::env::Env;
use kiln_action_kit::fetch::{Download, RetryPolicy, failure_of, parse_url};
use kiln_action_kit::mount::{Mounts, inside};
use kiln_action_kit::progress::{Progress, bytes};
use kiln_action_kit::{Failure, OrFail, Result, log};

const ACTION: &str = "archive2disk";

#[derive(Debug)]
struct Config {
    disk: PathBuf,
    fs_type: Option<String>,
    url: String,
    /// None: whatever the magic bytes say.
    format: Option<Format>,
    dest: String,
    checksum: Option<Checksum>,
    retry: RetryPolicy,
}

fn archive_type(v: &str) -> std::result::Result<Format, String> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "tar" => Format::Raw,
        "targz" | "tar.gz" | "tgz" => Format::Gzip,
        "tarzst" | "tar.zst" | "tzst" => Format::Zstd,
        "tarxz" | "tar.xz" | "txz" => Format::Xz,
        "tarbz2" | "tar.bz2" | "tbz2" => Format::Bzip2,
        other => return Err(format!("{other:?} is not one of tar, targz, tarzst, tarxz, tarbz2")),
    })
}

impl Config {
    fn from_env(mut env: Env) -> Result<Config> {
        let disk = env.parse_with("DEST_DISK", true, kiln_action_kit::disk::resolve);
        let fs_type = env.optional("FS_TYPE");
        let url = env.parse_with("ARCHIVE_URL", true, parse_url);
        let format = env.parse_with("ARCHIVE_TYPE", false, archive_type);
        let dest = env.absolute_path("DEST_PATH", false).unwrap_or_else(|| "/".into());
        let insecure = env.flag("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", false);
        let checksum = env.parse_with("TARFILE_CHECKSUM", !insecure, Checksum::parse);
        if insecure && checksum.is_some() {
            env.invalid("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", "is set together with TARFILE_CHECKSUM; drop one");
        }
        let retry = RetryPolicy::from_env(&mut env);
        if let Err(e) = inside(Path::new("/"), &dest) {
            env.invalid("DEST_PATH", e);
        }
        env.finish()?;
        Ok(Config {
            disk: disk.expect("checked by finish"),
            fs_type,
            url: url.expect("checked by finish"),
            format,
            dest,
            checksum,
            retry,
        })
    }
}

fn main() -> ExitCode {
    kiln_action_kit::run(ACTION, || {
        let config = Config::from_env(Env::from_process())?;
        let root = PathBuf::from(format!("/tmp/kiln-{ACTION}-{}", std::process::id()));
        let mut mounts = Mounts::new();
        mounts.mount_device(&config.disk, config.fs_type.as_deref(), &root)?;
        let result = install(&root, &config);
        let unmounted = mounts.unmount_all();
        let _ = std::fs::remove_dir(&root);
        let (entries, unpacked) = result?;
        unmounted?;
        log(
            ACTION,
            format_args!(
                "unpacked {entries} entries ({}) into {} on {}",
                bytes(unpacked),
                config.dest,
                config.disk.display()
            ),
        );
        Ok(())
    })
}

/// Returns (entries, bytes unpacked).
fn install(root: &Path, c: &Config) -> Result<(u64, u64)> {
    let dest = inside(root, &c.dest).map_err(|e| Failure::new("InvalidConfig", format!("DEST_PATH: {e}")))?;
    std::fs::create_dir_all(&dest).or_fail("UnpackFailed", || format!("creating {}", c.dest))?;
    let download = Download::open(&c.url, ACTION, c.retry.clone())?;
    let Some(expected) = &c.checksum else {
        log(ACTION, "no checksum: unpacking as it downloads (INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION)");
        return unpack(Box::new(download), &dest, c.format);
    };
    let staged = root.join(format!(".kiln-archive-{}", std::process::id()));
    let result = (|| {
        let digest = stage(download, &staged, expected)?;
        expected.verify(&c.url, &digest)?;
        log(ACTION, format_args!("{} verified", expected.algorithm.name()));
        let file = File::open(&staged).or_fail("UnpackFailed", || "reopening the archive".into())?;
        unpack(Box::new(file), &dest, c.format)
    })();
    let _ = std::fs::remove_file(&staged);
    result
}

/// Downloads to `path`, hashing on the way; returns the digest.
fn stage(mut download: Download, path: &Path, expected: &Checksum) -> Result<Vec<u8>> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .or_fail("UnpackFailed", || format!("creating {}", path.display()))?;
    let mut hasher = expected.algorithm.hasher();
    let mut progress = Progress::new("archive", download.total(), Duration::from_secs(3));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = download.read(&mut buf).map_err(|e| failure_of(e, "DownloadFailed", "downloading the archive"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).or_fail("UnpackFailed", || "writing the downloaded archive".into())?;
        progress.update(download.offset());
    }
    progress.finish(download.offset());
    out.sync_all().or_fail("UnpackFailed", || "fsync of the downloaded archive".into())?;
    Ok(hasher.finish())
}

fn unpack(input: Box<dyn Read + Send>, dest: &Path, want: Option<Format>) -> Result<(u64, u64)> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let found = sniff(&mut input).map_err(|e| failure_of(e, "DownloadFailed", "reading the archive"))?;
    if let Some(w) = want
        && w != found
    {
        return Err(Failure::new(
            "ArchiveTypeMismatch",
            format!("ARCHIVE_TYPE says {} but the archive is {}", w.name(), found.name()),
        ));
    }
    let reader = decoder(found, input).or_fail("UnpackFailed", || "starting the decompressor".into())?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let (mut entries, mut total) = (0u64, 0u64);
    let io_fail = |e: std::io::Error| failure_of(e, "UnpackFailed", "reading the archive");
    for entry in archive.entries().map_err(io_fail)? {
        let mut entry = entry.map_err(io_fail)?;
        total += entry.size();
        let path = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
        // unpack_in refuses paths that leave `dest` (`..`, absolute links).
        let inside = entry.unpack_in(dest).map_err(|e| failure_of(e, "UnpackFailed", &format!("unpacking {path}")))?;
        if !inside {
            return Err(Failure::new("UnpackFailed", format!("{path:?} would land outside DEST_PATH")));
        }
        entries += 1;
    }
    Ok((entries, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn the_checksum_is_required_unless_waived() {
        let err = Config::from_env(env(&[("DEST_DISK", "/"), ("ARCHIVE_URL", "http://h/a.tar.gz")])).unwrap_err();
        assert!(err.message.contains("TARFILE_CHECKSUM: is required"), "{}", err.message);
        let c = Config::from_env(env(&[
            ("DEST_DISK", "/"),
            ("ARCHIVE_URL", "http://h/a.tar"),
            ("INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION", "true"),
            ("ARCHIVE_TYPE", "targz"),
        ]))
        .unwrap();
        assert!(c.checksum.is_none());
        assert_eq!((c.format, c.dest.as_str()), (Some(Format::Gzip), "/"));
    }

    #[test]
    fn every_bad_variable_is_named() {
        let err = Config::from_env(env(&[
            ("ARCHIVE_URL", "file:///x"),
            ("ARCHIVE_TYPE", "zip"),
            ("TARFILE_CHECKSUM", "sha1:00"),
            ("DEST_PATH", "opt"),
        ]))
        .unwrap_err();
        for v in ["DEST_DISK: is required", "ARCHIVE_URL:", "ARCHIVE_TYPE:", "TARFILE_CHECKSUM:", "DEST_PATH:"] {
            assert!(err.message.contains(v), "{v} missing: {}", err.message);
        }
    }

    #[test]
    fn unpacks_modes_and_refuses_a_type_mismatch() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o751);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        builder.append_data(&mut h, "usr/bin/tool", &b"hello"[..]).unwrap();
        let tar_bytes = builder.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (n, size) =
            unpack(Box::new(std::io::Cursor::new(tar_bytes.clone())), dir.path(), Some(Format::Raw)).unwrap();
        assert_eq!((n, size), (1, 5));
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(dir.path().join("usr/bin/tool")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o751);
        let err = unpack(Box::new(std::io::Cursor::new(tar_bytes)), dir.path(), Some(Format::Gzip)).unwrap_err();
        assert_eq!(err.reason, "ArchiveTypeMismatch");
    }
}
