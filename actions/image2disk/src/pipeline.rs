//! The write path: three threads joined by bounded channels, so download
//! (+ checksum), decompression and the disk write overlap like the
//! `curl | zstd -dc | dd` pipeline they replace:
//!
//! ```text
//! fetch (HTTP, sha256) --chunks--> decode (this thread) --4 MiB blocks--> write (pwrite)
//!                                               ^------- empty blocks ---------'
//! ```
//!
//! Block devices are written with O_DIRECT: it skips a copy into the page
//! cache that the in-memory OS cannot spare, and on the loop devices here it
//! is several times faster than buffered writes. Blocks are therefore
//! aligned in memory and on disk; a final partial block goes through the
//! page cache.
//!
//! The first real error wins: a write error over the decode error it causes,
//! a download error (carried through the chunk channel) over a decoder that
//! merely saw its input end.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use kiln_action_kit::checksum::{Algorithm, Hasher};
use kiln_action_kit::decompress::{Format, decoder, sniff};
use kiln_action_kit::disk::{is_block_device, reread_partitions, size_of};
use kiln_action_kit::fetch::{Download, failure_of};
use kiln_action_kit::progress::{Progress, bytes};
use kiln_action_kit::{Failure, OrFail, Result, log};

use crate::config::Config;

const ACTION: &str = "image2disk";
/// Size of each disk write: large and a multiple of every sector and page size.
const BLOCK: usize = 4 << 20;
/// Memory and offset alignment O_DIRECT needs (covers 512 and 4K sectors).
const ALIGN: usize = 4096;
/// Size of each chunk read from the network.
const CHUNK: usize = 1 << 20;
/// What is zeroed at the start of the target when the image proved bad, so a
/// half-written image cannot boot.
const SCRUB: usize = 1 << 20;

struct Fetched {
    downloaded: u64,
    digest: Option<Vec<u8>>,
    resumes: u32,
}

struct Written {
    bytes: u64,
    digest: Option<Vec<u8>>,
}

pub fn write_image(config: &Config) -> Result<()> {
    let started = Instant::now();
    let mut file = OpenOptions::new()
        .write(true)
        .read(config.verify)
        .open(&config.dest)
        .or_fail("OpenFailed", || format!("opening {}", config.dest.display()))?;
    let block_device = is_block_device(&file);
    // A block device has a hard end; a file grows.
    let capacity = if block_device {
        Some(size_of(&file).or_fail("OpenFailed", || format!("size of {}", config.dest.display()))?)
    } else {
        None
    };
    let download = Download::open(&config.url, ACTION, config.retry.clone())?;
    log(
        ACTION,
        format_args!(
            "writing {} ({}) to {}{}",
            config.url,
            download.total().map(bytes).unwrap_or_else(|| "size unknown".into()),
            config.dest.display(),
            capacity.map(|c| format!(" ({})", bytes(c))).unwrap_or_default()
        ),
    );

    let (chunks_tx, chunks_rx) = sync_channel(16);
    let algorithm = config.checksum.as_ref().map(|c| c.algorithm);
    let interval = config.progress_interval;
    let fetcher = thread::spawn(move || fetch(download, algorithm, interval, chunks_tx));

    let (full_tx, full_rx) = sync_channel::<Block>(2);
    let (empty_tx, empty_rx) = channel::<Block>();
    let target = Target {
        buffered: file.try_clone().or_fail("OpenFailed", || "duplicating the target descriptor".into())?,
        direct: if block_device { open_direct(&config.dest) } else { None },
    };
    let hash_written = config.verify;
    let writer = thread::spawn(move || write(target, capacity, hash_written, full_rx, empty_tx));

    let decoded = decode(ChunkReader::new(chunks_rx), config.compressed, full_tx, empty_rx);
    let written = join(writer)?;
    let format = decoded?;
    let fetched = join(fetcher)?;
    if written.bytes == 0 {
        return Err(Failure::new("EmptyImage", format!("{} decompressed to nothing", config.url)));
    }

    if let Some(expected) = &config.checksum
        && let Err(f) = expected.verify(&config.url, fetched.digest.as_deref().unwrap_or_default())
    {
        return Err(scrubbed(&file, f));
    }
    if !block_device {
        // Like dd: the file is the image, not the image over older contents.
        file.set_len(written.bytes).or_fail("WriteFailed", || format!("truncating {}", config.dest.display()))?;
    }
    file.sync_all().or_fail("WriteFailed", || format!("fsync {}", config.dest.display()))?;
    if let Err(e) = reread_partitions(&file) {
        // Loop devices without partition scanning say EINVAL; the table is
        // written all the same.
        log(ACTION, format_args!("warning: the kernel did not re-read the partition table: {e}"));
    }
    let elapsed = started.elapsed();
    log(
        ACTION,
        format_args!(
            "wrote {} ({} {}) in {:.1} s, {}/s{}{}",
            bytes(written.bytes),
            format.name(),
            bytes(fetched.downloaded),
            elapsed.as_secs_f64(),
            bytes((written.bytes as f64 / elapsed.as_secs_f64().max(0.001)) as u64),
            config.checksum.as_ref().map(|c| format!(", {} verified", c.algorithm.name())).unwrap_or_default(),
            if fetched.resumes > 0 { format!(", resumed {} times", fetched.resumes) } else { String::new() },
        ),
    );
    if config.verify {
        read_back(&mut file, written.bytes, written.digest.as_deref().unwrap_or_default())?;
        log(ACTION, format_args!("read-back verification passed ({})", bytes(written.bytes)));
    }
    Ok(())
}

/// Where blocks go: `direct` (O_DIRECT) takes the aligned part when present.
struct Target {
    buffered: File,
    direct: Option<File>,
}

fn open_direct(path: &std::path::Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new().write(true).custom_flags(nix::fcntl::OFlag::O_DIRECT.bits()).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            log(ACTION, format_args!("O_DIRECT not available ({e}); writing through the page cache"));
            None
        }
    }
}

fn join<T>(handle: thread::JoinHandle<Result<T>>) -> Result<T> {
    handle.join().unwrap_or_else(|_| Err(Failure::new("InternalError", "a pipeline thread panicked")))
}

/// Zeroes the start of the target after a failure that proved the image
/// bad, and says so in the failure.
fn scrubbed(file: &File, mut failure: Failure) -> Failure {
    let zeros = vec![0u8; SCRUB];
    match file.write_all_at(&zeros, 0).and_then(|_| file.sync_all()) {
        Ok(()) => failure.message.push_str("; the first 1 MiB of the target was zeroed so the bad image cannot boot"),
        Err(e) => failure.message.push_str(&format!("; zeroing the start of the target failed too: {e}")),
    }
    failure
}

/// Downloads, hashes, and hands chunks on. A download failure travels down
/// the channel so the decoder stops with it.
fn fetch(
    mut download: Download,
    algorithm: Option<Algorithm>,
    interval: Duration,
    out: SyncSender<Result<Vec<u8>>>,
) -> Result<Fetched> {
    let mut hasher: Option<Hasher> = algorithm.map(Algorithm::hasher);
    let mut progress = Progress::new("image", download.total(), interval);
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let n = match read_full(&mut download, &mut chunk) {
            Ok(n) => n,
            Err(e) => {
                let failure = failure_of(e, "DownloadFailed", "reading the image");
                let _ = out.send(Err(failure.clone()));
                return Err(failure);
            }
        };
        if n == 0 {
            break;
        }
        chunk.truncate(n);
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        progress.update(download.offset());
        if out.send(Ok(chunk)).is_err() {
            // The decoder stopped; its error is the one to report.
            break;
        }
    }
    progress.finish(download.offset());
    Ok(Fetched { downloaded: download.offset(), digest: hasher.map(Hasher::finish), resumes: download.resumes() })
}

/// Decompresses into full blocks for the writer; returns the format seen.
fn decode(
    mut input: ChunkReader,
    compressed: bool,
    out: SyncSender<Block>,
    recycled: Receiver<Block>,
) -> Result<Format> {
    let io_failure = |e: io::Error| failure_of(e, "DecompressFailed", "decompressing the image");
    // As Tinkerbell: without COMPRESSED=true the bytes go to disk as they
    // are, even when they look compressed (a zstd-compressed filesystem
    // image written raw on purpose stays raw).
    let format = if compressed { sniff(&mut input).map_err(io_failure)? } else { Format::Raw };
    if compressed && format == Format::Raw {
        return Err(Failure::new(
            "NotCompressed",
            "COMPRESSED=true but the image starts with no gzip, xz, zstd or bzip2 magic number",
        ));
    }
    let mut reader = decoder(format, input).map_err(io_failure)?;
    loop {
        let mut block = recycled.try_recv().unwrap_or_else(|_| Block::new());
        let n = read_full(&mut reader, block.space()).map_err(io_failure)?;
        if n == 0 {
            break;
        }
        block.len = n;
        if out.send(block).is_err() {
            break; // the writer failed; join() reports why
        }
        if n < BLOCK {
            break;
        }
    }
    Ok(format)
}

fn write(
    target: Target,
    capacity: Option<u64>,
    hash: bool,
    blocks: Receiver<Block>,
    recycle: Sender<Block>,
) -> Result<Written> {
    let mut offset = 0u64;
    let mut hasher = hash.then(|| Algorithm::Sha256.hasher());
    for block in blocks {
        let data = block.data();
        let end = offset + data.len() as u64;
        if let Some(cap) = capacity
            && end > cap
        {
            return Err(Failure::new(
                "ImageTooLarge",
                format!("the image is larger than the disk ({}): it does not fit", bytes(cap)),
            ));
        }
        // Every block but the last is full, so `offset` stays aligned.
        let aligned = match &target.direct {
            Some(direct) => {
                let aligned = data.len() / ALIGN * ALIGN;
                direct
                    .write_all_at(&data[..aligned], offset)
                    .or_fail("WriteFailed", || format!("writing at byte {offset}"))?;
                aligned
            }
            None => 0,
        };
        let tail_at = offset + aligned as u64;
        target
            .buffered
            .write_all_at(&data[aligned..], tail_at)
            .or_fail("WriteFailed", || format!("writing at byte {tail_at}"))?;
        if let Some(h) = hasher.as_mut() {
            h.update(data);
        }
        offset = end;
        let _ = recycle.send(block);
    }
    if let Some(direct) = &target.direct {
        direct.sync_all().or_fail("WriteFailed", || "fsync".into())?;
    }
    Ok(Written { bytes: offset, digest: hasher.map(Hasher::finish) })
}

/// A BLOCK-sized buffer whose start is ALIGN-aligned in memory (O_DIRECT
/// needs that), made safely by over-allocating a Vec and starting inside it.
struct Block {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Block {
        let buf = vec![0u8; BLOCK + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        Block { buf, start, len: 0 }
    }

    /// All of the block, to fill.
    fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + BLOCK]
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// Reads what was written back from the device, past the page cache, and
/// compares digests.
fn read_back(file: &mut File, len: u64, expected: &[u8]) -> Result<()> {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    // Dropping the cached pages makes the read come from the disk.
    let _ = posix_fadvise(&*file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    let mut hasher = Algorithm::Sha256.hasher();
    let mut block = vec![0u8; BLOCK];
    let mut offset = 0u64;
    while offset < len {
        let want = BLOCK.min((len - offset) as usize);
        file.read_exact_at(&mut block[..want], offset)
            .or_fail("VerifyFailed", || format!("reading back at {offset}"))?;
        hasher.update(&block[..want]);
        offset += want as u64;
    }
    if hasher.finish() != expected {
        return Err(Failure::new("VerifyFailed", "read-back verification failed: the target holds other bytes"));
    }
    Ok(())
}

/// Reads until `buf` is full or the stream ends.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The chunk channel as a `BufRead`; a download failure becomes an I/O
/// error carrying the [`Failure`].
struct ChunkReader {
    chunks: Receiver<Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    fn new(chunks: Receiver<Result<Vec<u8>>>) -> Self {
        ChunkReader { chunks, current: Vec::new(), pos: 0 }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.current.len() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(failure)) => return Err(io::Error::other(failure)),
                Err(_) => return Ok(&[]), // fetcher finished
            }
        }
        Ok(&self.current[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_for_o_direct() {
        for _ in 0..4 {
            let mut b = Block::new();
            assert_eq!(b.space().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.space().len(), BLOCK);
        }
    }

    #[test]
    fn writes_a_file_target_through_the_whole_pipeline() {
        // No HTTP here: the chunk channel is fed directly, as fetch() would.
        let data: Vec<u8> = (0..(BLOCK * 2 + 777)).map(|i| (i * 31 % 251) as u8).collect();
        let compressed = zstd::encode_all(&data[..], 3).unwrap();
        let (tx, rx) = sync_channel(4);
        for c in compressed.chunks(1000) {
            tx.send(Ok(c.to_vec())).unwrap();
        }
        drop(tx);
        let out = tempfile::NamedTempFile::new().unwrap();
        let target = Target { buffered: out.reopen().unwrap(), direct: None };
        let (full_tx, full_rx) = sync_channel(2);
        let (empty_tx, empty_rx) = channel();
        let writer = thread::spawn(move || write(target, None, true, full_rx, empty_tx));
        let format = decode(ChunkReader::new(rx), true, full_tx, empty_rx).unwrap();
        let written = join(writer).unwrap();
        assert_eq!(format, Format::Zstd);
        assert_eq!(written.bytes, data.len() as u64);
        assert_eq!(std::fs::read(out.path()).unwrap(), data);
    }

    #[test]
    fn a_download_failure_reaches_the_decoder_as_itself() {
        let (tx, rx) = sync_channel(4);
        tx.send(Ok(vec![1, 2, 3])).unwrap();
        tx.send(Err(Failure::new("DownloadFailed", "gone"))).unwrap();
        let (full_tx, _full_rx) = sync_channel(4);
        let (_empty_tx, empty_rx) = channel();
        let err = decode(ChunkReader::new(rx), false, full_tx, empty_rx).unwrap_err();
        assert_eq!(err, Failure::new("DownloadFailed", "gone"));
    }
}
