//! Expected digests (`sha256:HEX` / `sha384:HEX` / `sha512:HEX`, the OCI
//! digest algorithms Tinkerbell's archive2disk accepts) and the hashers that check
//! them on a stream.

use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::{Failure, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

impl Checksum {
    /// Parses `sha256:HEX`, `sha384:HEX` or `sha512:HEX` (hex in either case).
    pub fn parse(text: &str) -> std::result::Result<Checksum, String> {
        let (algo, hex_digest) = text
            .split_once(':')
            .ok_or_else(|| format!("expected sha256:HEX, sha384:HEX or sha512:HEX, got {text:?}"))?;
        let algorithm = match algo.to_ascii_lowercase().as_str() {
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            other => return Err(format!("unsupported digest algorithm {other:?} (use sha256, sha384 or sha512)")),
        };
        let digest = hex::decode(hex_digest.trim()).map_err(|e| format!("digest is not hex: {e}"))?;
        if digest.len() != algorithm.digest_len() {
            return Err(format!(
                "a {} digest has {} hex digits, got {}",
                algorithm.name(),
                algorithm.digest_len() * 2,
                hex_digest.trim().len()
            ));
        }
        Ok(Checksum { algorithm, digest })
    }

    /// Compares with what was computed; a mismatch says both values.
    pub fn verify(&self, what: &str, computed: &[u8]) -> Result<()> {
        if computed == self.digest.as_slice() {
            Ok(())
        } else {
            Err(Failure::new(
                "ChecksumMismatch",
                format!(
                    "checksum mismatch for {what}: expected {self}, got {}:{}",
                    self.algorithm.name(),
                    hex::encode(computed)
                ),
            ))
        }
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), hex::encode(&self.digest))
    }
}

#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_verifies() {
        let c = Checksum::parse(&format!("SHA256:{}", EMPTY_SHA256.to_uppercase())).unwrap();
        assert_eq!(c.to_string(), format!("sha256:{EMPTY_SHA256}"));
        c.verify("x", &Algorithm::Sha256.hasher().finish()).unwrap();
        let err = c.verify("the image", &[0; 32]).unwrap_err();
        assert_eq!(err.reason, "ChecksumMismatch");
        assert!(err.message.contains("expected sha256:e3b0") && err.message.contains("got sha256:0000"));
    }

    /// sha384 and sha512 of "abc" (FIPS 180-2 test vectors).
    #[test]
    fn sha384_and_sha512_work() {
        for (text, algorithm) in [
            (
                "sha384:cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
                Algorithm::Sha384,
            ),
            (
                "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
                Algorithm::Sha512,
            ),
        ] {
            let c = Checksum::parse(text).unwrap();
            assert_eq!(c.algorithm, algorithm);
            let mut h = algorithm.hasher();
            h.update(b"abc");
            c.verify("abc", &h.finish()).unwrap();
        }
        assert!(Checksum::parse("sha384:abcd").unwrap_err().contains("96 hex digits"));
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(Checksum::parse("e3b0").unwrap_err().contains("expected sha256:HEX, sha384:HEX or sha512:HEX"));
        assert!(Checksum::parse("md5:d41d8cd98f00b204e9800998ecf8427e").unwrap_err().contains("unsupported"));
        assert!(Checksum::parse("sha256:zz").unwrap_err().contains("not hex"));
        assert!(Checksum::parse("sha512:abcd").unwrap_err().contains("128 hex digits"));
    }
}
