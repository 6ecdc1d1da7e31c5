//! Decompression chosen by the stream's first bytes, never by a file name
//! (Tinkerbell's image2disk trusts the URL suffix, so `disk.img?x=.gz`
//! writes garbage). Every decoder here reports a truncated stream as an
//! error rather than a short success.

use std::io::{self, BufRead, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Gzip,
    Xz,
    Zstd,
    Bzip2,
}

impl Format {
    /// Recognises the magic number at the start of `head` (which should hold
    /// at least 6 bytes unless the stream is shorter).
    pub fn detect(head: &[u8]) -> Format {
        if head.starts_with(&[0x1f, 0x8b]) {
            Format::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Format::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::Zstd
        } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
            Format::Bzip2
        } else {
            Format::Raw
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
            Format::Bzip2 => "bzip2",
        }
    }
}

/// Peeks at `input` (without consuming) and returns its format.
pub fn sniff<R: BufRead>(input: &mut R) -> io::Result<Format> {
    // fill_buf may return fewer bytes than a magic number even when more
    // follow, and no retry is made: every reader used here is a BufReader
    // whose buffer (64 KiB and more) is filled by one read of a file or of
    // an HTTP body, which yields at least 6 bytes unless the input is
    // shorter (then it is raw anyway).
    let head = input.fill_buf()?;
    Ok(Format::detect(head))
}

/// A reader of the decompressed bytes. Concatenated members/frames (as
/// `pigz`, `pzstd` and `pbzip2` write them) are all read.
pub fn decoder<'a, R: BufRead + Send + 'a>(format: Format, input: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match format {
        Format::Raw => Box::new(input),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Format::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        Format::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Write};

    fn sample() -> Vec<u8> {
        // Compressible but not trivial: a disk image is mostly like this.
        (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    fn compress(format: Format, data: &[u8]) -> Vec<u8> {
        match format {
            Format::Raw => data.to_vec(),
            Format::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Format::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Format::Zstd => zstd::encode_all(data, 3).unwrap(),
            Format::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    fn decode(bytes: &[u8]) -> (Format, io::Result<Vec<u8>>) {
        let mut input = BufReader::new(bytes);
        let format = sniff(&mut input).unwrap();
        let mut out = Vec::new();
        let result = decoder(format, input).unwrap().read_to_end(&mut out).map(|_| out);
        (format, result)
    }

    const ALL: [Format; 5] = [Format::Raw, Format::Gzip, Format::Xz, Format::Zstd, Format::Bzip2];

    #[test]
    fn every_format_is_detected_and_round_trips() {
        let data = sample();
        for format in ALL {
            let (detected, out) = decode(&compress(format, &data));
            assert_eq!(detected, format);
            assert!(out.unwrap() == data, "{} did not round-trip", format.name());
        }
    }

    #[test]
    fn concatenated_members_are_all_read() {
        let data = sample();
        for format in [Format::Gzip, Format::Xz, Format::Zstd, Format::Bzip2] {
            let mut twice = compress(format, &data);
            twice.extend(compress(format, &data));
            let out = decode(&twice).1.unwrap();
            assert_eq!(out.len(), data.len() * 2, "{}", format.name());
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_short_success() {
        let data = sample();
        for format in [Format::Gzip, Format::Xz, Format::Zstd, Format::Bzip2] {
            let full = compress(format, &data);
            let cut = &full[..full.len() * 2 / 3];
            assert!(decode(cut).1.is_err(), "{} accepted a truncated stream", format.name());
        }
    }
}
