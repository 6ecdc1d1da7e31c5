//! Download, verify, unpack.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiln_action_kit::checksum::Checksum;
use kiln_action_kit::decompress::{Format, decoder, sniff};
use kiln_action_kit::fetch::{Download, failure_of};
use kiln_action_kit::mount::inside;
use kiln_action_kit::progress::Progress;
use kiln_action_kit::{Failure, OrFail, Result, log};
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::ACTION;
use crate::config::Config;

#[derive(Debug, Default, PartialEq)]
pub struct Unpacked {
    pub entries: u64,
    /// Bytes of file contents in the archive.
    pub bytes: u64,
    /// Bytes of the (compressed) archive.
    pub downloaded: u64,
}

pub fn install(root: &Path, c: &Config) -> Result<Unpacked> {
    let dest = inside(root, &c.dest).map_err(|e| Failure::new("InvalidConfig", format!("DEST_PATH: {e}")))?;
    std::fs::create_dir_all(&dest).or_fail("UnpackFailed", || format!("creating {}", c.dest))?;
    // An absolute symlink on the disk (/opt -> /data/opt) points into the
    // action's container, not the disk.
    let real = dest.canonicalize().or_fail("UnpackFailed", || format!("resolving {}", c.dest))?;
    if !real.starts_with(root.canonicalize().or_fail("UnpackFailed", || "resolving the mount point".into())?) {
        return Err(Failure::new(
            "UnpackFailed",
            format!("DEST_PATH {} is a symlink that leaves the filesystem", c.dest),
        ));
    }
    let download = Download::open(&c.url, ACTION, c.retry.clone())?;
    let counted = Counted::new(download);
    let downloaded = counted.count.clone();
    let Some(expected) = &c.checksum else {
        log(ACTION, "no checksum: unpacking as it downloads (INSECURE_NO_TARFILE_CHECKSUM_VERIFICATION)");
        let mut unpacked = unpack(Box::new(counted), &real, c.format)?;
        unpacked.downloaded = downloaded.load(Ordering::Relaxed);
        return Ok(unpacked);
    };
    // On the target filesystem: the only place sure to have room for it,
    // and gone with the disk if the machine dies halfway.
    let staged = root.join(format!(".kiln-archive-{}", std::process::id()));
    let result = (|| {
        let file_digest = stage(counted, &staged, expected)?;
        let reopen = || File::open(&staged).or_fail("UnpackFailed", || "reopening the downloaded archive".into());
        verify(expected, &file_digest, || Ok(Box::new(reopen()?)))?;
        unpack(Box::new(reopen()?), &real, c.format)
    })();
    let _ = std::fs::remove_file(&staged);
    Ok(Unpacked { downloaded: downloaded.load(Ordering::Relaxed), ..result? })
}

/// Counts the bytes read through it and shows them as progress.
struct Counted {
    download: Download,
    count: Arc<AtomicU64>,
    progress: Progress,
    finished: bool,
}

impl Counted {
    fn new(download: Download) -> Counted {
        let progress = Progress::new("archive", download.total(), Duration::from_secs(3));
        Counted { download, count: Arc::default(), progress, finished: false }
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.download.read(buf)?;
        let done = self.count.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if n == 0 && !buf.is_empty() {
            // Readers may be asked again after the end; one final line.
            if !std::mem::replace(&mut self.finished, true) {
                self.progress.finish(done);
            }
        } else {
            self.progress.update(done);
        }
        Ok(n)
    }
}

/// Downloads to `path`, hashing on the way; returns the digest.
fn stage(mut input: impl Read, path: &Path, expected: &Checksum) -> Result<Vec<u8>> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .or_fail("UnpackFailed", || format!("creating {}", path.display()))?;
    let mut hasher = expected.algorithm.hasher();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(|e| failure_of(e, "DownloadFailed", "downloading the archive"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).or_fail("UnpackFailed", || "writing the downloaded archive".into())?;
    }
    out.sync_all().or_fail("UnpackFailed", || "fsync of the downloaded archive".into())?;
    Ok(hasher.finish())
}

/// Checks TARFILE_CHECKSUM. Tinkerbell's archive2disk hashes the
/// decompressed tar stream as its tar reader consumes it: up to and
/// including the two zero blocks that end the archive, without the padding
/// `tar` adds after them. A hub template's checksum is that one. Also
/// accepted: the whole decompressed stream (`gunzip -c a.tgz | sha256sum`,
/// which differs when tar padded its last record) and the file as
/// downloaded (what kiln checked before). The file's digest is at hand;
/// the archive is decompressed again only when it does not match.
fn verify(
    expected: &Checksum,
    file_digest: &[u8],
    archive: impl FnOnce() -> Result<Box<dyn Read + Send>>,
) -> Result<()> {
    let name = expected.algorithm.name();
    if file_digest == expected.digest.as_slice() {
        log(ACTION, format_args!("{name} of the downloaded file verified"));
        return Ok(());
    }
    let (tar_stream, whole) = stream_digests(archive()?, expected)?;
    if tar_stream == expected.digest {
        log(ACTION, format_args!("{name} of the decompressed tar stream verified"));
        return Ok(());
    }
    if whole == expected.digest {
        log(ACTION, format_args!("{name} of the whole decompressed stream verified"));
        return Ok(());
    }
    Err(Failure::new(
        "ChecksumMismatch",
        format!(
            "TARFILE_CHECKSUM is {expected}, but the decompressed tar stream has {name}:{}, the whole \
             decompressed stream {name}:{} and the downloaded file {name}:{}",
            hex(&tar_stream),
            hex(&whole),
            hex(file_digest)
        ),
    ))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: kiln_action_kit::checksum::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The digests of the decompressed stream through the end-of-archive
/// marker (as Go's archive/tar reads it) and of all of it.
fn stream_digests(input: Box<dyn Read + Send>, expected: &Checksum) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let format = sniff(&mut input).map_err(|e| failure_of(e, "UnpackFailed", "reading the archive"))?;
    let reader = decoder(format, input).or_fail("UnpackFailed", || "starting the decompressor".into())?;
    let io_fail = |e: io::Error| failure_of(e, "UnpackFailed", "reading the archive");
    let mut archive = tar::Archive::new(Hashing { inner: reader, hasher: expected.algorithm.hasher() });
    // The tar crate reads exactly what Go's reader reads, header by header
    // and entry by entry (skipped contents are read, not seeked), and stops
    // after the first zero block; Go reads the second one too.
    for entry in archive.entries().map_err(io_fail)? {
        entry.map_err(io_fail)?;
    }
    let mut rest = archive.into_inner();
    let mut second = [0u8; 512];
    let mut got = 0;
    while got < second.len() {
        match rest.read(&mut second[got..]).map_err(io_fail)? {
            0 => break,
            n => got += n,
        }
    }
    let tar_stream = rest.hasher.clone().finish();
    io::copy(&mut rest, &mut io::sink()).map_err(io_fail)?;
    Ok((tar_stream, rest.hasher.finish()))
}

/// Unpacks a tar (compressed as the magic bytes say) into `dest`, keeping
/// modes, numeric owners, mtimes and xattrs.
pub fn unpack(input: Box<dyn Read + Send>, dest: &Path, want: Option<Format>) -> Result<Unpacked> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let found = sniff(&mut input).map_err(|e| failure_of(e, "DownloadFailed", "reading the archive"))?;
    if let Some(w) = want
        && w != found
    {
        return Err(Failure::new(
            "ArchiveTypeMismatch",
            format!("ARCHIVE_TYPE says {} but the archive's first bytes say {}", type_name(w), type_name(found)),
        ));
    }
    let reader = decoder(found, input).or_fail("UnpackFailed", || "starting the decompressor".into())?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let mut done = Unpacked::default();
    let io_fail = |e: io::Error| failure_of(e, "UnpackFailed", "reading the archive");
    let unpack_one = |entry: &mut tar::Entry<'_, _>| -> Result<()> {
        let path = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
        // unpack_in refuses paths that leave `dest` (`..`, links out).
        let inside = entry
            .unpack_in(dest)
            .map_err(|e| Failure::new("UnpackFailed", format!("unpacking {path}: {}", with_causes(&e))))?;
        if !inside {
            return Err(Failure::new("UnsafeArchive", format!("{path:?} would land outside DEST_PATH")));
        }
        Ok(())
    };
    // Directories last, deepest first (as tar's own unpack does): writing
    // their contents would otherwise reset the mtimes just set, and a
    // read-only mode would be in place before the contents are.
    let mut directories = Vec::new();
    for entry in archive.entries().map_err(io_fail)? {
        let mut entry = entry.map_err(io_fail)?;
        done.entries += 1;
        if entry.header().entry_type().is_dir() {
            directories.push(entry);
            continue;
        }
        done.bytes += entry.size();
        unpack_one(&mut entry)?;
    }
    directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut dir in directories {
        unpack_one(&mut dir)?;
        set_dir_mtime(dest, &dir)?;
    }
    // tar stops at its end marker; reading on to the end makes the
    // decompressor check its trailer (gzip's CRC, zstd's checksum) and a
    // cut download show up as an error.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(io_fail)?;
    Ok(done)
}

/// tar sets a directory's mode and owner but not its mtime.
fn set_dir_mtime<R: Read>(dest: &Path, dir: &tar::Entry<'_, R>) -> Result<()> {
    let Ok(mtime) = dir.header().mtime() else { return Ok(()) };
    let path = dir.path().or_fail("UnpackFailed", || "a directory's name".into())?;
    // unpack_in accepted the entry: its name has no `..`, and the rest of
    // the components are dropped the same way unpack_in drops them.
    let relative: PathBuf = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    let time = TimeSpec::new(mtime as i64, 0);
    utimensat(AT_FDCWD, &dest.join(&relative), &time, &time, UtimensatFlags::NoFollowSymlink)
        .or_fail("UnpackFailed", || format!("setting the mtime of {}", relative.display()))
}

/// tar's errors say which file and hide why in their source.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn type_name(f: Format) -> &'static str {
    match f {
        Format::Raw => "tar (uncompressed)",
        Format::Gzip => "targz",
        Format::Zstd => "tarzst",
        Format::Xz => "tarxz",
        Format::Bzip2 => "tarbz2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tar_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_uid(1234);
            h.set_gid(4321);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            builder.append_data(&mut h, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn unpacks_modes_owners_mtimes_and_refuses_a_type_mismatch() {
        let tar_bytes = tar_of(&[("usr/bin/tool", b"hello", 0o4751), ("etc/motd", b"hi\n", 0o644)]);
        let dir = tempfile::tempdir().unwrap();
        let done = unpack(Box::new(io::Cursor::new(tar_bytes.clone())), dir.path(), Some(Format::Raw)).unwrap();
        assert_eq!(done, Unpacked { entries: 2, bytes: 8, downloaded: 0 });
        let m = std::fs::metadata(dir.path().join("usr/bin/tool")).unwrap();
        assert_eq!((m.permissions().mode() & 0o7777, m.uid(), m.gid()), (0o4751, 1234, 4321));
        assert_eq!(m.mtime(), 1_600_000_000);
        assert_eq!(std::fs::read(dir.path().join("etc/motd")).unwrap(), b"hi\n");
        let err = unpack(Box::new(io::Cursor::new(tar_bytes)), dir.path(), Some(Format::Gzip)).unwrap_err();
        assert_eq!(err.reason, "ArchiveTypeMismatch");
        assert!(
            err.message.contains("ARCHIVE_TYPE says targz but the archive's first bytes say tar"),
            "{}",
            err.message
        );
    }

    #[test]
    fn directory_modes_and_mtimes_survive_their_contents() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o555);
        dir.set_uid(0);
        dir.set_gid(0);
        dir.set_mtime(1_500_000_000);
        dir.set_cksum();
        builder.append_data(&mut dir, "ro/", &[][..]).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(1);
        file.set_mode(0o644);
        file.set_uid(0);
        file.set_gid(0);
        file.set_mtime(1_600_000_000);
        file.set_cksum();
        builder.append_data(&mut file, "ro/f", &b"x"[..]).unwrap();
        let dir_path = tempfile::tempdir().unwrap();
        let done = unpack(Box::new(io::Cursor::new(builder.into_inner().unwrap())), dir_path.path(), None).unwrap();
        assert_eq!((done.entries, done.bytes), (2, 1));
        let m = std::fs::metadata(dir_path.path().join("ro")).unwrap();
        assert_eq!((m.permissions().mode() & 0o7777, m.mtime()), (0o555, 1_500_000_000));
    }

    #[test]
    fn entries_escaping_dest_are_refused() {
        let mut raw = tar_of(&[("placeholder-name-of-the-same-len", b"x", 0o644)]);
        // tar::Builder refuses to write `..`, so the name is patched in.
        let evil = b"../../../../../../tmp/kiln-evil\0";
        raw[..evil.len()].copy_from_slice(evil);
        let mut h = tar::Header::from_byte_slice(&raw[..512]).clone();
        h.set_cksum();
        raw[..512].copy_from_slice(h.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(Box::new(io::Cursor::new(raw)), &dir.path().join("sub"), None).unwrap_err();
        assert_eq!(err.reason, "UnsafeArchive", "{}", err.message);
        assert!(!Path::new("/tmp/kiln-evil").exists());
    }

    fn sha256(data: &[u8]) -> Vec<u8> {
        let mut h = kiln_action_kit::checksum::Algorithm::Sha256.hasher();
        h.update(data);
        h.finish()
    }

    /// The hub's digest is of the decompressed stream through the two zero
    /// blocks; the whole stream, padding included, and the downloaded file
    /// also pass, anything else is named in the mismatch.
    #[test]
    fn tarfile_checksum_forms() {
        let mut tar_bytes = tar_of(&[("etc/motd", b"hi\n", 0o644)]);
        // tar::Builder ends with the two zero blocks; GNU tar then pads the
        // last 10 KiB record with more zeros, which the hub never reads.
        let end = tar_bytes.len();
        tar_bytes.resize(10240, 0);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar_bytes).unwrap();
            e.finish().unwrap()
        };
        let hub = sha256(&tar_bytes[..end]);
        let whole = sha256(&tar_bytes);
        let file = sha256(&gz);
        assert_ne!(hub, whole);
        let check = |digest: &[u8], algorithm| {
            let expected = Checksum { algorithm, digest: digest.to_vec() };
            let gz = gz.clone();
            let mut h = kiln_action_kit::checksum::Algorithm::hasher(algorithm);
            h.update(&gz);
            let file_digest = h.finish();
            verify(&expected, &file_digest, move || Ok(Box::new(io::Cursor::new(gz))))
        };
        let sha256 = kiln_action_kit::checksum::Algorithm::Sha256;
        for digest in [&hub, &whole, &file] {
            check(digest, sha256).unwrap();
        }
        let err = check(&[0u8; 32], sha256).unwrap_err();
        assert_eq!(err.reason, "ChecksumMismatch");
        let hex_hub = hex(&hub);
        assert!(err.message.contains(&format!("the decompressed tar stream has sha256:{hex_hub}")), "{}", err.message);
        // sha384 and sha512 of the tar stream, as the hub's go-digest takes.
        for algorithm in [kiln_action_kit::checksum::Algorithm::Sha384, kiln_action_kit::checksum::Algorithm::Sha512] {
            let mut h = algorithm.hasher();
            h.update(&tar_bytes[..end]);
            check(&h.finish(), algorithm).unwrap();
        }
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let tar_bytes = tar_of(&[("big", &[7u8; 100_000], 0o644)]);
        let dir = tempfile::tempdir().unwrap();
        let cut = tar_bytes[..50_000].to_vec();
        let err = unpack(Box::new(io::Cursor::new(cut)), dir.path(), None).unwrap_err();
        assert_eq!(err.reason, "UnpackFailed", "{}", err.message);
    }
}
