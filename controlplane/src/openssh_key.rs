//! Reading OpenSSH private key files that `ssh-key` refuses although
//! OpenSSH writes them: an ECDSA private scalar is an `mpint`, so OpenSSH
//! drops its leading zero bytes (one P-256 key in 256 has a 31-byte
//! scalar), and `ssh-key` 0.7 wants at least the curve's size
//! ("length invalid"). Such a key is rewritten with the scalar zero-padded
//! to the curve's size, then parsed; the key itself is unchanged.

use base64::Engine;
use russh::keys::PrivateKey;

const MAGIC: &[u8] = b"openssh-key-v1\0";
const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";

/// Parses an OpenSSH private key, repairing a short ECDSA scalar.
pub fn parse(pem: &str) -> Result<PrivateKey, russh::keys::ssh_key::Error> {
    match PrivateKey::from_openssh(pem) {
        Ok(k) => Ok(k),
        Err(e) => match rewrite_ecdsa_scalar(pem, pad) {
            Some(fixed) => PrivateKey::from_openssh(&fixed),
            None => Err(e),
        },
    }
}

/// `scalar` left-padded with zeros to `size` bytes (None when it is not
/// shorter: nothing to repair).
fn pad(scalar: &[u8], size: usize) -> Option<Vec<u8>> {
    if scalar.is_empty() || scalar.len() >= size {
        return None;
    }
    let mut out = vec![0u8; size - scalar.len()];
    out.extend_from_slice(scalar);
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// Rebuilds an unencrypted single-key ECDSA file with its private scalar
/// replaced by `f(scalar, curve size)`; None when the file is not one or
/// `f` changes nothing.
fn rewrite_ecdsa_scalar(pem: &str, f: impl Fn(&[u8], usize) -> Option<Vec<u8>>) -> Option<String> {
    let body: String = pem
        .trim()
        .strip_prefix(BEGIN)?
        .strip_suffix(END)?
        .split_whitespace()
        .collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let mut r = Reader(blob.strip_prefix(MAGIC)?);
    let (cipher, kdf, kdf_options) = (r.string()?, r.string()?, r.string()?);
    if cipher != b"none" || r.u32()? != 1 {
        return None;
    }
    let public = r.string()?;
    let mut p = Reader(r.string()?);
    let (check1, check2) = (p.u32()?, p.u32()?);
    let key_type = p.string()?;
    let curve = p.string()?;
    let size = match curve {
        b"nistp256" => 32,
        b"nistp384" => 48,
        b"nistp521" => 66,
        _ => return None,
    };
    let point = p.string()?;
    let scalar = f(p.string()?, size)?;
    let comment = p.string()?;

    let mut private = Vec::new();
    private.extend_from_slice(&check1.to_be_bytes());
    private.extend_from_slice(&check2.to_be_bytes());
    for s in [key_type, curve, point, &scalar, comment] {
        put_string(&mut private, s);
    }
    let mut n = 1u8;
    while private.len() % 8 != 0 {
        private.push(n);
        n += 1;
    }
    let mut out = MAGIC.to_vec();
    for s in [cipher, kdf, kdf_options] {
        put_string(&mut out, s);
    }
    out.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut out, public);
    put_string(&mut out, &private);
    let text = base64::engine::general_purpose::STANDARD.encode(out);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(70)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    Some(format!("{BEGIN}\n{}\n{END}\n", lines.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::LineEnding;
    use russh::keys::{Algorithm, EcdsaCurve};

    /// A P-256 key whose scalar starts with a zero byte, written the way
    /// OpenSSH writes it (the mpint without that byte).
    fn openssh_style_short_key() -> (PrivateKey, String) {
        let mut rng = rand::rng();
        loop {
            let key = PrivateKey::random(
                &mut rng,
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
            )
            .unwrap();
            let pem = key.to_openssh(LineEnding::LF).unwrap().to_string();
            let strip = |s: &[u8], _size: usize| match s {
                [0, rest @ ..] if rest.first().is_some_and(|b| *b < 0x80) => Some(rest.to_vec()),
                _ => None,
            };
            if let Some(short) = rewrite_ecdsa_scalar(&pem, strip) {
                return (key, short);
            }
        }
    }

    #[test]
    fn short_ecdsa_scalars_as_openssh_writes_them_are_read() {
        let (key, short) = openssh_style_short_key();
        assert!(
            PrivateKey::from_openssh(&short).is_err(),
            "ssh-key refuses it on its own"
        );
        let read = parse(&short).unwrap();
        assert_eq!(read.public_key(), key.public_key());
        assert_eq!(read.key_data(), key.key_data());
        // Re-encoded, it reads without help (what edges receive).
        let again = read.to_openssh(LineEnding::LF).unwrap();
        assert_eq!(
            PrivateKey::from_openssh(&again).unwrap().key_data(),
            key.key_data()
        );
    }

    #[test]
    fn other_keys_and_garbage_are_left_alone() {
        assert!(parse("not a key").is_err());
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let pem = key.to_openssh(LineEnding::LF).unwrap();
        assert_eq!(parse(&pem).unwrap().key_data(), key.key_data());
        assert!(rewrite_ecdsa_scalar(&pem, pad).is_none());
    }
}
