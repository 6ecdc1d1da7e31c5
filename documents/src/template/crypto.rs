//! Sprig's two deterministic cryptographic functions: `derivePassword`
//! (the Master Password algorithm: scrypt, then HMAC-SHA256 picking
//! characters from a template) and `decryptAES` (AES-256-CBC, the key the
//! password's bytes zero-padded, the IV the first block, PKCS#7-style
//! padding taken on trust as Sprig takes it). Written from Sprig's
//! crypto.go; the differential test checks both against it.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use hmac::Mac;

const SEED: &str = "com.lyndir.masterpassword";

fn templates(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "maximum" => &["anoxxxxxxxxxxxxxxxxx", "axxxxxxxxxxxxxxxxxno"],
        "long" => &[
            "CvcvnoCvcvCvcv",
            "CvcvCvcvnoCvcv",
            "CvcvCvcvCvcvno",
            "CvccnoCvcvCvcv",
            "CvccCvcvnoCvcv",
            "CvccCvcvCvcvno",
            "CvcvnoCvccCvcv",
            "CvcvCvccnoCvcv",
            "CvcvCvccCvcvno",
            "CvcvnoCvcvCvcc",
            "CvcvCvcvnoCvcc",
            "CvcvCvcvCvccno",
            "CvccnoCvccCvcv",
            "CvccCvccnoCvcv",
            "CvccCvccCvcvno",
            "CvcvnoCvccCvcc",
            "CvcvCvccnoCvcc",
            "CvcvCvccCvccno",
            "CvccnoCvcvCvcc",
            "CvccCvcvnoCvcc",
            "CvccCvcvCvccno",
        ],
        "medium" => &["CvcnoCvc", "CvcCvcno"],
        "short" => &["Cvcn"],
        "basic" => &["aaanaaan", "aannaaan", "aaannaaa"],
        "pin" => &["nnnn"],
        _ => return None,
    })
}

fn characters(class: u8) -> &'static [u8] {
    match class {
        b'V' => b"AEIOU",
        b'C' => b"BCDFGHJKLMNPQRSTVWXYZ",
        b'v' => b"aeiou",
        b'c' => b"bcdfghjklmnpqrstvwxyz",
        b'A' => b"AEIOUBCDFGHJKLMNPQRSTVWXYZ",
        b'a' => b"AEIOUaeiouBCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz",
        b'n' => b"0123456789",
        b'o' => b"@&%?,=[]_:-+*$#!'^~;()/.",
        _ => b"AEIOUaeiouBCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz0123456789!@#$%^&*()",
    }
}

/// Sprig's `derivePassword COUNTER TYPE PASSWORD USER SITE`. An unknown
/// type gives Sprig's message as the result, as Sprig does.
pub(super) fn derive_password(counter: u32, kind: &str, password: &str, user: &str, site: &str) -> String {
    let Some(templates) = templates(kind) else {
        return format!("cannot find password template {kind}");
    };
    let mut salt = SEED.as_bytes().to_vec();
    salt.extend_from_slice(&(user.len() as u32).to_be_bytes());
    salt.extend_from_slice(user.as_bytes());
    let mut key = [0u8; 64];
    let params = scrypt::Params::new(15, 8, 2, 64).expect("Master Password's scrypt parameters are valid");
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut key).expect("64 bytes is a valid scrypt output");
    let mut message = SEED.as_bytes().to_vec();
    message.extend_from_slice(&(site.len() as u32).to_be_bytes());
    message.extend_from_slice(site.as_bytes());
    message.extend_from_slice(&counter.to_be_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(&message);
    let seed = mac.finalize().into_bytes();
    let template = templates[usize::from(seed[0]) % templates.len()];
    template
        .bytes()
        .enumerate()
        .map(|(i, class)| {
            let chars = characters(class);
            char::from(chars[usize::from(seed[i + 1]) % chars.len()])
        })
        .collect()
}

/// Sprig's `decryptAES PASSWORD BASE64`: what Go would panic on (a short
/// or ragged ciphertext, padding longer than the text) is an error here,
/// as the panic is one in Go's template engine.
pub(super) fn decrypt_aes(password: &str, crypt64: &str) -> Result<String, String> {
    if crypt64.is_empty() {
        return Ok(String::new());
    }
    let mut key = [0u8; 32];
    let n = password.len().min(32);
    key[..n].copy_from_slice(&password.as_bytes()[..n]);
    // Go's StdEncoding: padded, newlines skipped, trailing bits not checked.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let text: String = crypt64.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    let crypt = engine.decode(text).map_err(|e| format!("illegal base64 data: {e}"))?;
    if crypt.len() < 16 {
        return Err(format!("the ciphertext has {} bytes, less than the 16 of the IV", crypt.len()));
    }
    let (iv, body) = crypt.split_at(16);
    if body.is_empty() || body.len() % 16 != 0 {
        return Err(format!("the ciphertext after the IV is {} bytes, not whole 16-byte blocks", body.len()));
    }
    let mut buf = body.to_vec();
    let plain = cbc::Decryptor::<aes::Aes256>::new(&key.into(), iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|e| format!("decrypting: {e}"))?;
    let pad = usize::from(*plain.last().expect("at least one block"));
    let keep = plain.len().checked_sub(pad).ok_or_else(|| format!("padding of {pad} bytes is longer than the text"))?;
    Ok(String::from_utf8_lossy(&plain[..keep]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_password_vectors() {
        // The Master Password algorithm's published test vector (v3, long).
        assert_eq!(
            derive_password(1, "long", "banana colored duckling", "Robert Lee Mitchell", "masterpasswordapp.com"),
            "Jejr5[RepuSosp"
        );
        assert_eq!(derive_password(1, "nope", "p", "u", "s"), "cannot find password template nope");
    }

    #[test]
    fn decrypts_what_sprig_encrypts_and_refuses_what_go_panics_on() {
        use aes::cipher::BlockEncryptMut;
        let mut key = [0u8; 32];
        key[..6].copy_from_slice(b"secret");
        let iv = [7u8; 16];
        let mut block = *b"hello, kiln\x05\x05\x05\x05\x05";
        cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut block, 16)
            .unwrap();
        let crypt = base64::engine::general_purpose::STANDARD.encode([&iv[..], &block[..]].concat());
        assert_eq!(decrypt_aes("secret", &crypt).unwrap(), "hello, kiln");
        assert_eq!(decrypt_aes("secret", "").unwrap(), "");
        assert!(decrypt_aes("secret", "AAAA").unwrap_err().contains("less than the 16"));
        assert!(decrypt_aes("secret", "!!").unwrap_err().contains("base64"));
    }
}
