//! The encrypted file format, byte for byte what
//! `openssl enc -aes-256-cbc -salt -pbkdf2 -md sha256 -iter 600000` writes:
//! `Salted__`, an 8-byte salt, then AES-256-CBC ciphertext with PKCS#7
//! padding, key and IV being the first 48 bytes of PBKDF2-HMAC-SHA256 over
//! the password and the salt.
//!
//! CBC alone detects nothing: a changed byte garbles a block, and a wrong
//! password still yields valid padding once in 256 tries. So the plaintext
//! ends with an integrity line, a tfvars comment that plain `openssl enc -d`
//! shows and Terraform ignores:
//!
//! ```text
//! <the user's tfvars, byte for byte>
//!
//! # xtask-secrets-mac: v2 <64 hex digits>
//! ```
//!
//! The digits are HMAC-SHA256 over a label, the salt and the user's content,
//! keyed with a key only the password gives: in v2, HMAC-SHA256 of the
//! cipher's own PBKDF2 output (key and IV, never stored) over a label and the
//! salt, the expand step of HKDF (RFC 5869, section 2.3). v1 keyed it with a
//! second PBKDF2 run of the password over label + salt: half again the cost
//! of every read and write for no added strength, since both stand or fall
//! with the password. v1 files are still read (and rewritten as v2 by any
//! change or `rekey`). The line always starts with its own newline and has a
//! fixed length, so the user's content is recovered exactly, whether or not
//! it ended with a newline.

use std::fmt;

use openssl::{
    error::ErrorStack,
    hash::MessageDigest,
    pkcs5,
    pkey::PKey,
    sign::Signer,
    symm::{Cipher, Crypter, Mode},
};

use zeroize::{Zeroize, Zeroizing};

use crate::support::fs::hex;

/// PBKDF2 iterations of every file the command line writes and reads
/// (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const ITERATIONS: u32 = 600_000;

/// How the key and IV are derived from the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// `openssl enc -pbkdf2 -md sha256 -iter N`.
    Pbkdf2 { iterations: u32 },
    /// `openssl enc` without `-pbkdf2`: OpenSSL's EVP_BytesToKey, one round.
    Legacy(LegacyDigest),
}

/// The `-md` of a legacy file: MD5 was openssl's default before 1.1.0,
/// SHA-256 after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LegacyDigest {
    Md5,
    Sha256,
}

/// What `decrypt` accepts beyond a file it wrote itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptOptions {
    pub kdf: Kdf,
    /// Accept a file without an integrity line (written by plain openssl).
    /// Legacy files never have one, so `Kdf::Legacy` implies this.
    pub allow_unauthenticated: bool,
}

/// A decrypted file: the user's content without the integrity line, wiped
/// from memory when dropped.
pub struct Decrypted {
    pub content: Zeroizing<Vec<u8>>,
    /// False for a file read with `allow_unauthenticated` or a legacy KDF.
    pub authenticated: bool,
}

/// Why a file did not decrypt. Each kind asks for a different fix, so each
/// has its own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecryptError {
    /// No `Salted__` header: not something `openssl enc -salt` wrote.
    NotOpenssl { hint: String },
    /// The password is right but the bytes are not what was written.
    Corrupted { reason: String },
    /// The key did not fit; most likely the password, possibly other options.
    WrongPassword { kdf: Kdf },
    /// The password is right for the legacy KDF with this digest.
    LegacyKdf { digest: LegacyDigest },
    /// A plain openssl file read without `allow_unauthenticated`.
    Unauthenticated,
    /// The crypto library itself failed (not the file).
    Crypto(String),
}

impl fmt::Display for DecryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecryptError::NotOpenssl { hint } => {
                write!(f, "not an openssl-encrypted file: it does not start with `Salted__`")?;
                if !hint.is_empty() {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            DecryptError::Corrupted { reason } => {
                write!(f, "the file is corrupted or was tampered with: {reason}")
            }
            DecryptError::WrongPassword { kdf } => {
                write!(
                    f,
                    "wrong password, or the file was written with a different -iter/-md (tried `{kdf}`): \
                     check SECRETS_PASSWORD (or the file given by --password-file / SECRETS_PASSWORD_FILE)"
                )
            }
            DecryptError::LegacyKdf { digest } => {
                let md = digest.name();
                write!(
                    f,
                    "the file was written by `openssl enc` without -pbkdf2 (legacy key derivation, -md {md}): \
                     read it with --legacy-kdf {md}, then run `cargo xtask secrets rekey` to upgrade it"
                )
            }
            DecryptError::Unauthenticated => write!(
                f,
                "the file has no integrity line, so a change to it cannot be detected (written by plain `openssl enc`?): \
                 read it with --allow-unauthenticated, then run `cargo xtask secrets rekey` to add one"
            ),
            DecryptError::Crypto(message) => write!(f, "openssl failed: {message}"),
        }
    }
}

impl std::error::Error for DecryptError {}

impl From<ErrorStack> for DecryptError {
    fn from(err: ErrorStack) -> DecryptError {
        DecryptError::Crypto(err.to_string())
    }
}

impl fmt::Display for Kdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kdf::Pbkdf2 { iterations } => write!(f, "-pbkdf2 -md sha256 -iter {iterations}"),
            Kdf::Legacy(digest) => write!(f, "-md {} without -pbkdf2", digest.name()),
        }
    }
}

impl LegacyDigest {
    pub fn name(self) -> &'static str {
        match self {
            LegacyDigest::Md5 => "md5",
            LegacyDigest::Sha256 => "sha256",
        }
    }

    fn message_digest(self) -> MessageDigest {
        match self {
            LegacyDigest::Md5 => MessageDigest::md5(),
            LegacyDigest::Sha256 => MessageDigest::sha256(),
        }
    }
}

impl fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Decrypted {{ content: <{} bytes redacted>, authenticated: {} }}",
            self.content.len(),
            self.authenticated
        )
    }
}

/// Encrypts `content` with a fresh random salt, PBKDF2 with `iterations`,
/// and an integrity line.
pub fn encrypt(content: &[u8], password: &[u8], iterations: u32) -> Result<Vec<u8>, DecryptError> {
    let mut salt = [0u8; SALT_LEN];
    openssl::rand::rand_bytes(&mut salt)?;
    encrypt_with_salt(content, password, iterations, &salt)
}

/// Decrypts a file, verifying its integrity line; see `DecryptError` for
/// what can go wrong. Never panics, whatever the bytes.
pub fn decrypt(file: &[u8], password: &[u8], options: &DecryptOptions) -> Result<Decrypted, DecryptError> {
    let (salt, ciphertext) = split_header(file)?;
    let keys = derive_keys(password, salt, options.kdf)?;
    let raw = Zeroizing::new(aes_256_cbc(Mode::Decrypt, &keys, ciphertext, false)?);
    let Some(plaintext_len) = unpadded_len(&raw) else {
        return Err(diagnose(file, password, options.kdf, &raw));
    };
    let plaintext = &raw[..plaintext_len];

    if let Kdf::Pbkdf2 { iterations } = options.kdf
        && let Some((content, version, mac_hex)) = split_mac_line(plaintext)
    {
        let mac_key = mac_key(version, password, salt, &keys, iterations)?;
        let expected = mac(version, &mac_key, salt, content)?;
        let expected_hex = hex(&expected);
        if openssl::memcmp::eq(expected_hex.as_bytes(), mac_hex) {
            return Ok(Decrypted { content: Zeroizing::new(content.to_vec()), authenticated: true });
        }
        return Err(DecryptError::Corrupted {
            reason: "the integrity line does not match the content, which was changed without xtask \
                     (if you edited it with plain openssl, delete the `# xtask-secrets-mac` line, read it once \
                     with --allow-unauthenticated and run `cargo xtask secrets rekey`)"
                .to_owned(),
        });
    }
    if !is_text(plaintext) {
        return Err(diagnose(file, password, options.kdf, &raw));
    }
    if contains(plaintext, MAC_MARKER) {
        return Err(DecryptError::Corrupted { reason: "the integrity line is damaged".to_owned() });
    }
    if options.allow_unauthenticated || matches!(options.kdf, Kdf::Legacy(_)) {
        return Ok(Decrypted { content: Zeroizing::new(plaintext.to_vec()), authenticated: false });
    }
    Err(DecryptError::Unauthenticated)
}

const MAGIC: &[u8; 8] = b"Salted__";
const SALT_LEN: usize = 8;
const HEADER_LEN: usize = MAGIC.len() + SALT_LEN;
const BLOCK_LEN: usize = 16;
const MAC_MARKER: &[u8] = b"xtask-secrets-mac";
const MAC_HEX_LEN: usize = 64;
const MAC_LINE_LEN: usize = MacVersion::V2.prefix().len() + MAC_HEX_LEN + 1;

/// How an integrity line's key was made (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MacVersion {
    /// A second PBKDF2 run of the password; read, no longer written.
    V1,
    /// HMAC of the cipher's PBKDF2 output; what `encrypt` writes.
    V2,
}

impl MacVersion {
    /// The integrity line, up to its digits; the leading newline separates
    /// it from content that does not end with one. Both have one length.
    const fn prefix(self) -> &'static [u8] {
        match self {
            MacVersion::V1 => b"\n# xtask-secrets-mac: v1 ",
            MacVersion::V2 => b"\n# xtask-secrets-mac: v2 ",
        }
    }

    /// Domain separation: the MAC key's derivation and the MAC input start
    /// with this, so neither can collide with the cipher key's derivation
    /// or with the other version's.
    fn label(self) -> &'static [u8] {
        match self {
            MacVersion::V1 => b"xtask-secrets-mac-v1\0",
            MacVersion::V2 => b"xtask-secrets-mac-v2\0",
        }
    }
}

pub(super) fn encrypt_with_salt(
    content: &[u8],
    password: &[u8],
    iterations: u32,
    salt: &[u8; SALT_LEN],
) -> Result<Vec<u8>, DecryptError> {
    let keys = derive_keys(password, salt, Kdf::Pbkdf2 { iterations })?;
    let mac_key = mac_key(MacVersion::V2, password, salt, &keys, iterations)?;
    let plaintext = sealed_plaintext(content, salt, &mac_key)?;
    let ciphertext = aes_256_cbc(Mode::Encrypt, &keys, &plaintext, true)?;
    let mut file = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(salt);
    file.extend_from_slice(&ciphertext);
    Ok(file)
}

/// The user's content followed by its integrity line.
fn sealed_plaintext(content: &[u8], salt: &[u8], mac_key: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, ErrorStack> {
    // Sized up front: a reallocation would leave a copy of the content behind.
    let mut plaintext = Zeroizing::new(Vec::with_capacity(content.len() + MAC_LINE_LEN));
    plaintext.extend_from_slice(content);
    plaintext.extend_from_slice(MacVersion::V2.prefix());
    plaintext.extend_from_slice(hex(&mac(MacVersion::V2, mac_key, salt, content)?).as_bytes());
    plaintext.push(b'\n');
    Ok(plaintext)
}

struct Keys {
    cipher_key: [u8; 32],
    iv: [u8; 16],
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.cipher_key.zeroize();
        self.iv.zeroize();
    }
}

/// The integrity line's key. Only files of the PBKDF2 format carry one.
fn mac_key(
    version: MacVersion,
    password: &[u8],
    salt: &[u8],
    keys: &Keys,
    iterations: u32,
) -> Result<Zeroizing<[u8; 32]>, ErrorStack> {
    let mut mac_key = Zeroizing::new([0u8; 32]);
    let mut info = version.label().to_vec();
    info.extend_from_slice(salt);
    match version {
        MacVersion::V1 => {
            let iterations = iterations.max(1) as usize;
            pkcs5::pbkdf2_hmac(password, &info, iterations, MessageDigest::sha256(), mac_key.as_mut())?;
        }
        MacVersion::V2 => {
            let mut material = Zeroizing::new([0u8; 48]);
            material[..32].copy_from_slice(&keys.cipher_key);
            material[32..].copy_from_slice(&keys.iv);
            let key = PKey::hmac(material.as_ref())?;
            let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
            signer.update(&info)?;
            let written = signer.sign(mac_key.as_mut())?;
            debug_assert_eq!(written, 32);
        }
    }
    Ok(mac_key)
}

fn derive_keys(password: &[u8], salt: &[u8], kdf: Kdf) -> Result<Keys, ErrorStack> {
    match kdf {
        Kdf::Pbkdf2 { iterations } => {
            let iterations = iterations.max(1) as usize;
            let mut key_iv = Zeroizing::new([0u8; 48]);
            pkcs5::pbkdf2_hmac(password, salt, iterations, MessageDigest::sha256(), key_iv.as_mut())?;
            Ok(Keys {
                cipher_key: key_iv[..32].try_into().expect("32 bytes"),
                iv: key_iv[32..].try_into().expect("16 bytes"),
            })
        }
        Kdf::Legacy(digest) => {
            let mut pair =
                pkcs5::bytes_to_key(Cipher::aes_256_cbc(), digest.message_digest(), password, Some(salt), 1)?;
            let mut iv = pair.iv.take().unwrap_or_default();
            let keys = Keys {
                cipher_key: pair.key.as_slice().try_into().expect("AES-256 has a 32-byte key"),
                iv: iv.as_slice().try_into().expect("AES-CBC has a 16-byte IV"),
            };
            pair.key.zeroize();
            iv.zeroize();
            Ok(keys)
        }
    }
}

fn aes_256_cbc(mode: Mode, keys: &Keys, input: &[u8], pad: bool) -> Result<Vec<u8>, ErrorStack> {
    let cipher = Cipher::aes_256_cbc();
    let mut crypter = Crypter::new(cipher, mode, &keys.cipher_key, Some(&keys.iv))?;
    crypter.pad(pad);
    let mut output = vec![0; input.len() + cipher.block_size()];
    let mut written = crypter.update(input, &mut output)?;
    written += crypter.finalize(&mut output[written..])?;
    output.truncate(written);
    Ok(output)
}

fn mac(version: MacVersion, mac_key: &[u8; 32], salt: &[u8], content: &[u8]) -> Result<Vec<u8>, ErrorStack> {
    let key = PKey::hmac(mac_key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    signer.update(version.label())?;
    signer.update(salt)?;
    signer.update(content)?;
    signer.sign_to_vec()
}

/// The salt and the ciphertext, or why the file cannot be one of ours.
fn split_header(file: &[u8]) -> Result<(&[u8], &[u8]), DecryptError> {
    if file.starts_with(MAGIC) {
        if file.len() < HEADER_LEN + BLOCK_LEN {
            return Err(DecryptError::Corrupted {
                reason: format!(
                    "it is only {} bytes, less than the 16-byte header and one 16-byte block: it was truncated",
                    file.len()
                ),
            });
        }
        let ciphertext_len = file.len() - HEADER_LEN;
        if !ciphertext_len.is_multiple_of(BLOCK_LEN) {
            return Err(DecryptError::Corrupted {
                reason: format!(
                    "its {ciphertext_len} bytes of ciphertext are not whole 16-byte blocks: it was truncated or bytes were appended"
                ),
            });
        }
        return Ok((&file[MAGIC.len()..HEADER_LEN], &file[HEADER_LEN..]));
    }
    if !file.is_empty() && MAGIC.starts_with(file) {
        return Err(DecryptError::Corrupted { reason: format!("it is only {} bytes: it was truncated", file.len()) });
    }
    let hint = if file.is_empty() {
        "the file is empty"
    } else if file.starts_with(b"U2FsdGVkX1") {
        "it looks base64-encoded, as `openssl enc -a` writes: decode it with `base64 -d` first"
    } else if is_text(file) {
        "it is plain text: is it the decrypted file?"
    } else {
        ""
    };
    Err(DecryptError::NotOpenssl { hint: hint.to_owned() })
}

/// The plaintext length after removing PKCS#7 padding, if the padding is valid.
fn unpadded_len(raw: &[u8]) -> Option<usize> {
    let &last = raw.last()?;
    let padding = usize::from(last);
    if padding == 0 || padding > BLOCK_LEN || padding > raw.len() {
        return None;
    }
    raw[raw.len() - padding..].iter().all(|&byte| byte == last).then(|| raw.len() - padding)
}

/// Splits a well-formed integrity line off the end of the plaintext.
fn split_mac_line(plaintext: &[u8]) -> Option<(&[u8], MacVersion, &[u8])> {
    let start = plaintext.len().checked_sub(MAC_LINE_LEN)?;
    let (content, line) = plaintext.split_at(start);
    let (version, rest) = [MacVersion::V2, MacVersion::V1]
        .into_iter()
        .find_map(|version| line.strip_prefix(version.prefix()).map(|rest| (version, rest)))?;
    let digits = rest.strip_suffix(b"\n")?;
    digits.iter().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')).then_some((content, version, digits))
}

/// Tells a wrong key from a damaged file when the plaintext is garbage.
///
/// With the right key a changed ciphertext byte garbles one or two blocks and
/// leaves the others readable, and every file we write ends with at least
/// four blocks of ASCII (the integrity line). With a wrong key every block is
/// random, and a random block is printable ASCII with probability about
/// (98/256)^16, roughly 2e-7.
fn diagnose(file: &[u8], password: &[u8], tried: Kdf, raw: &[u8]) -> DecryptError {
    let blocks = raw.chunks(BLOCK_LEN).count();
    let ascii_blocks = raw.chunks(BLOCK_LEN).filter(|block| block.iter().all(|&byte| is_ascii_text(byte))).count();
    if blocks > 0 && ascii_blocks >= blocks.min(2) {
        return DecryptError::Corrupted {
            reason: "part of it does not decrypt: it was truncated, extended or altered".to_owned(),
        };
    }
    // A legacy file read as PBKDF2 looks like a wrong password; trying the
    // two legacy derivations costs microseconds and names the real fix.
    for digest in [LegacyDigest::Md5, LegacyDigest::Sha256] {
        if tried != Kdf::Legacy(digest) && decrypts_as_text(file, password, Kdf::Legacy(digest)) {
            return DecryptError::LegacyKdf { digest };
        }
    }
    DecryptError::WrongPassword { kdf: tried }
}

fn decrypts_as_text(file: &[u8], password: &[u8], kdf: Kdf) -> bool {
    let Ok((salt, ciphertext)) = split_header(file) else {
        return false;
    };
    let Ok(keys) = derive_keys(password, salt, kdf) else {
        return false;
    };
    let Ok(raw) = aes_256_cbc(Mode::Decrypt, &keys, ciphertext, false) else {
        return false;
    };
    let raw = Zeroizing::new(raw);
    unpadded_len(&raw).is_some_and(|len| is_text(&raw[..len]))
}

/// UTF-8 without control characters other than tab, CR and LF.
fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .is_ok_and(|text| text.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')))
}

fn is_ascii_text(byte: u8) -> bool {
    matches!(byte, b' '..=b'~' | b'\t' | b'\n' | b'\r')
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[cfg(test)]
pub(super) mod test_support {
    //! What the tests need beyond the public API: files as plain openssl
    //! writes them, and a small seeded RNG.

    use super::*;

    /// Exactly what `openssl enc` writes with these options, without an
    /// integrity line.
    pub fn encrypt_unauthenticated(plaintext: &[u8], password: &[u8], salt: &[u8; 8], kdf: Kdf) -> Vec<u8> {
        let keys = derive_keys(password, salt, kdf).unwrap();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(salt);
        file.extend_from_slice(&aes_256_cbc(Mode::Encrypt, &keys, plaintext, true).unwrap());
        file
    }

    /// The plaintext `encrypt_with_salt` encrypts: content + integrity line.
    pub fn sealed(content: &[u8], password: &[u8], salt: &[u8; 8], iterations: u32) -> Vec<u8> {
        let keys = derive_keys(password, salt, Kdf::Pbkdf2 { iterations }).unwrap();
        let mac_key = mac_key(MacVersion::V2, password, salt, &keys, iterations).unwrap();
        sealed_plaintext(content, salt, &mac_key).unwrap().to_vec()
    }

    /// A file as xtask wrote it before v2: the integrity line keyed by a
    /// second PBKDF2 run.
    pub fn encrypt_v1(content: &[u8], password: &[u8], salt: &[u8; 8], iterations: u32) -> Vec<u8> {
        let kdf = Kdf::Pbkdf2 { iterations };
        let keys = derive_keys(password, salt, kdf).unwrap();
        let mac_key = mac_key(MacVersion::V1, password, salt, &keys, iterations).unwrap();
        let mut plaintext = content.to_vec();
        plaintext.extend_from_slice(MacVersion::V1.prefix());
        plaintext.extend_from_slice(hex(&mac(MacVersion::V1, &mac_key, salt, content).unwrap()).as_bytes());
        plaintext.push(b'\n');
        encrypt_unauthenticated(&plaintext, password, salt, kdf)
    }

    /// xorshift64*: deterministic, dependency-free, good enough for test data.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.max(1))
        }

        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub fn below(&mut self, bound: usize) -> usize {
            (self.next_u64() % bound as u64) as usize
        }

        pub fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next_u64() as u8).collect()
        }

        pub fn salt(&mut self) -> [u8; 8] {
            self.next_u64().to_le_bytes()
        }

        /// Text with ASCII, accented letters, CJK and emoji, `chars` long.
        pub fn text(&mut self, chars: usize) -> String {
            const ALPHABET: &[char] = &[
                'a', 'b', 'z', 'A', 'Q', '0', '7', ' ', '=', '"', '\\', '#', '\n', '\t', 'é', 'ß', 'Ω', 'ж', '日',
                '本', '🔑', '€',
            ];
            (0..chars).map(|_| ALPHABET[self.below(ALPHABET.len())]).collect()
        }

        /// A printable password of 1 to 40 characters, some non-ASCII.
        pub fn password(&mut self) -> String {
            const ALPHABET: &[char] = &['a', 'k', 'Z', '3', '-', '_', ' ', '!', '$', '\'', 'é', '密'];
            let len = 1 + self.below(40);
            (0..len).map(|_| ALPHABET[self.below(ALPHABET.len())]).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };

    use super::{
        test_support::{Rng, encrypt_unauthenticated, encrypt_v1, sealed},
        *,
    };

    /// Low iteration counts keep hundreds of cases fast. Whether a key is
    /// accepted does not depend on the count: PBKDF2 with 1,000 or 600,000
    /// iterations yields a key unrelated to the right one for any other
    /// password, so only the cost differs. One test per direction runs the
    /// real count through the real CLI.
    const FAST: u32 = 1000;

    fn pbkdf2(iterations: u32) -> DecryptOptions {
        DecryptOptions { kdf: Kdf::Pbkdf2 { iterations }, allow_unauthenticated: false }
    }

    fn sample() -> Vec<u8> {
        b"# demo\ndb_password = \"correct-horse-battery-staple\"\napi_keys = { a = \"1\", b = \"2\" }\n".to_vec()
    }

    /// Runs `openssl enc` on `input`; the password goes through the child's
    /// environment, never its argv.
    fn openssl(args: &[&str], password: &str, input: &[u8]) -> Vec<u8> {
        let mut child = Command::new("openssl")
            .args(args)
            .args(["-pass", "env:XTASK_TEST_PASSWORD"])
            .env("XTASK_TEST_PASSWORD", password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("`openssl` is on PATH (apt-get install openssl)");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }

    fn openssl_kdf_args(kdf: Kdf) -> Vec<String> {
        match kdf {
            Kdf::Pbkdf2 { iterations } => {
                vec!["-pbkdf2".into(), "-md".into(), "sha256".into(), "-iter".into(), iterations.to_string()]
            }
            Kdf::Legacy(digest) => vec!["-md".into(), digest.name().into()],
        }
    }

    fn openssl_decrypt(file: &[u8], password: &str, kdf: Kdf) -> Vec<u8> {
        let mut args = vec!["enc", "-d", "-aes-256-cbc"];
        let kdf_args = openssl_kdf_args(kdf);
        args.extend(kdf_args.iter().map(String::as_str));
        openssl(&args, password, file)
    }

    fn openssl_encrypt(plaintext: &[u8], password: &str, kdf: Kdf, salt: Option<[u8; 8]>) -> Vec<u8> {
        let mut args = vec!["enc", "-aes-256-cbc", "-salt"];
        let kdf_args = openssl_kdf_args(kdf);
        args.extend(kdf_args.iter().map(String::as_str));
        let salt_hex = salt.map(|salt| hex(&salt));
        if let Some(salt_hex) = &salt_hex {
            args.extend(["-S", salt_hex]);
        }
        let output = openssl(&args, password, plaintext);
        match salt {
            // OpenSSL 3 leaves the header out when the salt is given with -S.
            Some(salt) if !output.starts_with(MAGIC) => [MAGIC.as_slice(), &salt, &output].concat(),
            _ => output,
        }
    }

    /// Plaintexts of the sizes that matter for CBC: empty, 1 byte, block
    /// aligned, one off, large; as bytes (any value) and as text.
    fn plaintexts(rng: &mut Rng) -> Vec<Vec<u8>> {
        let mut cases = Vec::new();
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 48, 100_000] {
            cases.push(rng.bytes(len));
        }
        for chars in [1, 5, 16, 40, 300] {
            cases.push(rng.text(chars).into_bytes());
        }
        cases.push("db_password = \"pässwörd-日本-🔑\"\n".as_bytes().to_vec());
        cases
    }

    fn text_plaintexts(rng: &mut Rng) -> Vec<Vec<u8>> {
        let mut cases = vec![
            Vec::new(),
            b"x".to_vec(),
            b"0123456789abcdef".to_vec(),
            b"0123456789abcdef0123456789abcde\n".to_vec(),
        ];
        for chars in [1, 7, 16, 33, 500] {
            cases.push(rng.text(chars).into_bytes());
        }
        let mut large = String::new();
        while large.len() < 100_000 {
            large.push_str(&format!("key_{} = \"{}\"\n", large.len(), rng.text(20).replace(['"', '\\', '\n'], "_")));
        }
        cases.push(large.into_bytes());
        cases
    }

    #[test]
    fn round_trips_random_plaintexts_and_passwords() {
        let mut rng = Rng::new(1);
        for content in plaintexts(&mut rng) {
            let password = rng.password();
            let file = encrypt(&content, password.as_bytes(), FAST).unwrap();
            let decrypted = decrypt(&file, password.as_bytes(), &pbkdf2(FAST)).unwrap();
            assert_eq!(*decrypted.content, content);
            assert!(decrypted.authenticated);
        }
    }

    #[test]
    fn openssl_cli_decrypts_our_files_to_content_plus_integrity_line() {
        let mut rng = Rng::new(2);
        for content in plaintexts(&mut rng) {
            let password = rng.password();
            let file = encrypt(&content, password.as_bytes(), FAST).unwrap();
            let plaintext = openssl_decrypt(&file, &password, Kdf::Pbkdf2 { iterations: FAST });
            assert_eq!(plaintext.len(), content.len() + MAC_LINE_LEN);
            assert_eq!(&plaintext[..content.len()], &content[..]);
            let line = std::str::from_utf8(&plaintext[content.len()..]).unwrap();
            assert!(line.starts_with("\n# xtask-secrets-mac: v2 ") && line.ends_with('\n'), "{line:?}");
        }
    }

    #[test]
    fn we_decrypt_what_the_openssl_cli_encrypts_with_our_integrity_line() {
        // openssl picks the salt with -S, we compute the integrity line for
        // it: the file is then byte for byte one we could have written.
        let mut rng = Rng::new(3);
        for content in plaintexts(&mut rng) {
            let password = rng.password();
            let salt = rng.salt();
            let plaintext = sealed(&content, password.as_bytes(), &salt, FAST);
            let file = openssl_encrypt(&plaintext, &password, Kdf::Pbkdf2 { iterations: FAST }, Some(salt));
            assert_eq!(file, encrypt_with_salt(&content, password.as_bytes(), FAST, &salt).unwrap());
            assert_eq!(*decrypt(&file, password.as_bytes(), &pbkdf2(FAST)).unwrap().content, content);
        }
    }

    #[test]
    fn plain_openssl_files_need_allow_unauthenticated_for_every_kdf() {
        let mut rng = Rng::new(4);
        for kdf in [Kdf::Pbkdf2 { iterations: FAST }, Kdf::Legacy(LegacyDigest::Md5), Kdf::Legacy(LegacyDigest::Sha256)]
        {
            for content in text_plaintexts(&mut rng) {
                let password = rng.password();
                let file = openssl_encrypt(&content, &password, kdf, None);
                let allowed = DecryptOptions { kdf, allow_unauthenticated: true };
                let decrypted = decrypt(&file, password.as_bytes(), &allowed).unwrap();
                assert_eq!(*decrypted.content, content, "{kdf}");
                assert!(!decrypted.authenticated);
                if let Kdf::Pbkdf2 { .. } = kdf {
                    let refused = decrypt(&file, password.as_bytes(), &pbkdf2(FAST)).unwrap_err();
                    assert_eq!(refused, DecryptError::Unauthenticated);
                }
            }
        }
    }

    #[test]
    fn openssl_cli_decrypts_what_we_write_with_every_kdf() {
        // We only ever write PBKDF2 files with an integrity line; the raw
        // encryption underneath must still be openssl's for every KDF, or
        // reading legacy files would be wrong too.
        let mut rng = Rng::new(5);
        for kdf in [Kdf::Pbkdf2 { iterations: FAST }, Kdf::Legacy(LegacyDigest::Md5), Kdf::Legacy(LegacyDigest::Sha256)]
        {
            for content in plaintexts(&mut rng) {
                let password = rng.password();
                let file = encrypt_unauthenticated(&content, password.as_bytes(), &rng.salt(), kdf);
                assert_eq!(openssl_decrypt(&file, &password, kdf), content, "{kdf}");
            }
        }
    }

    #[test]
    fn legacy_files_are_named_when_read_as_pbkdf2() {
        let mut rng = Rng::new(6);
        for digest in [LegacyDigest::Md5, LegacyDigest::Sha256] {
            let file = openssl_encrypt(&sample(), "legacy-password", Kdf::Legacy(digest), None);
            let err = decrypt(&file, b"legacy-password", &pbkdf2(FAST)).unwrap_err();
            assert_eq!(err, DecryptError::LegacyKdf { digest });
            assert!(err.to_string().contains(&format!("--legacy-kdf {}", digest.name())), "{err}");
            let wrong = decrypt(&file, rng.password().as_bytes(), &pbkdf2(FAST)).unwrap_err();
            assert!(matches!(wrong, DecryptError::WrongPassword { .. }), "{wrong:?}");
            let legacy = DecryptOptions { kdf: Kdf::Legacy(digest), allow_unauthenticated: false };
            assert_eq!(*decrypt(&file, b"legacy-password", &legacy).unwrap().content, sample());
            let wrong = decrypt(&file, b"not-the-password", &legacy).unwrap_err();
            assert!(matches!(wrong, DecryptError::WrongPassword { .. }), "{wrong:?}");
        }
    }

    #[test]
    fn real_iteration_count_round_trips_through_the_openssl_cli() {
        let content = sample();
        let password = "a real-length password, ünïcödé";
        let kdf = Kdf::Pbkdf2 { iterations: ITERATIONS };
        let ours = encrypt(&content, password.as_bytes(), ITERATIONS).unwrap();
        assert!(openssl_decrypt(&ours, password, kdf).starts_with(&content));

        let salt = [7u8; 8];
        let theirs =
            openssl_encrypt(&sealed(&content, password.as_bytes(), &salt, ITERATIONS), password, kdf, Some(salt));
        let options = DecryptOptions { kdf, allow_unauthenticated: false };
        assert_eq!(*decrypt(&theirs, password.as_bytes(), &options).unwrap().content, content);

        let mismatch = decrypt(&theirs, password.as_bytes(), &pbkdf2(10_000)).unwrap_err();
        assert!(mismatch.to_string().starts_with("wrong password, or the file was written with a different -iter/-md"));
    }

    #[test]
    fn every_flipped_byte_is_rejected_and_named() {
        let password = b"tamper-test";
        let file = encrypt(&sample(), password, FAST).unwrap();
        for position in 0..file.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut tampered = file.clone();
                tampered[position] ^= flip;
                let err = decrypt(&tampered, password, &pbkdf2(FAST)).unwrap_err();
                let allowed = DecryptOptions { kdf: Kdf::Pbkdf2 { iterations: FAST }, allow_unauthenticated: true };
                assert!(decrypt(&tampered, password, &allowed).is_err(), "byte {position} ^ {flip:#x} accepted");
                match position {
                    // The header: no longer an openssl file.
                    0..8 => assert!(matches!(err, DecryptError::NotOpenssl { .. }), "{position}: {err:?}"),
                    // The salt: a different key, indistinguishable from a wrong password.
                    8..16 => assert!(matches!(err, DecryptError::WrongPassword { .. }), "{position}: {err:?}"),
                    _ => assert!(matches!(err, DecryptError::Corrupted { .. }), "{position}: {err:?}"),
                }
            }
        }
    }

    #[test]
    fn truncated_and_extended_files_are_rejected() {
        let mut rng = Rng::new(7);
        let password = b"truncate-test";
        let file = encrypt(&sample(), password, FAST).unwrap();
        for len in 0..file.len() {
            let err = decrypt(&file[..len], password, &pbkdf2(FAST)).unwrap_err();
            if len >= 8 {
                assert!(matches!(err, DecryptError::Corrupted { .. }), "truncated to {len}: {err:?}");
            }
        }
        for extra in 1..=64 {
            let mut extended = file.clone();
            extended.extend(rng.bytes(extra));
            let err = decrypt(&extended, password, &pbkdf2(FAST)).unwrap_err();
            assert!(matches!(err, DecryptError::Corrupted { .. }), "{extra} bytes appended: {err:?}");
        }
    }

    #[test]
    fn two_thousand_wrong_passwords_are_all_refused() {
        let mut rng = Rng::new(8);
        let file = encrypt(&sample(), b"the-right-password", FAST).unwrap();
        let mut accepted = 0;
        for attempt in 0..2000 {
            let guess = format!("{}{attempt}", rng.password());
            match decrypt(&file, guess.as_bytes(), &pbkdf2(FAST)) {
                Ok(_) => accepted += 1,
                Err(err) => assert!(matches!(err, DecryptError::WrongPassword { .. }), "{guess:?}: {err:?}"),
            }
        }
        assert_eq!(accepted, 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_decrypt() {
        let mut rng = Rng::new(9);
        let kdfs = [Kdf::Pbkdf2 { iterations: 1 }, Kdf::Legacy(LegacyDigest::Md5), Kdf::Legacy(LegacyDigest::Sha256)];
        for case in 0..4000 {
            let len = if case % 4 == 0 { rng.below(200) } else { rng.below(65) };
            let mut bytes = rng.bytes(len);
            if case % 2 == 0 {
                let mut prefixed = MAGIC.to_vec();
                prefixed.append(&mut bytes);
                bytes = prefixed;
            }
            let options = DecryptOptions { kdf: kdfs[case % 3], allow_unauthenticated: case % 5 == 0 };
            let result = decrypt(&bytes, b"pw", &options);
            assert!(result.is_err(), "case {case}: {} random bytes decrypted", bytes.len());
        }
    }

    #[test]
    fn files_with_a_v1_integrity_line_are_still_read_and_checked() {
        let mut rng = Rng::new(9);
        for content in text_plaintexts(&mut rng) {
            let password = rng.password();
            let file = encrypt_v1(&content, password.as_bytes(), &rng.salt(), FAST);
            let decrypted = decrypt(&file, password.as_bytes(), &pbkdf2(FAST)).unwrap();
            assert_eq!(&decrypted.content[..], &content[..]);
            assert!(decrypted.authenticated);
            // The v1 key is not the v2 one: a v1 line relabelled v2 fails.
            let mut plaintext = openssl_decrypt(&file, &password, Kdf::Pbkdf2 { iterations: FAST });
            let version = content.len() + b"\n# xtask-secrets-mac: v".len();
            plaintext[version] = b'2';
            let relabelled = openssl_encrypt(&plaintext, &password, Kdf::Pbkdf2 { iterations: FAST }, None);
            let err = decrypt(&relabelled, password.as_bytes(), &pbkdf2(FAST)).unwrap_err();
            assert!(matches!(err, DecryptError::Corrupted { .. }), "{err}");
        }
    }

    #[test]
    fn content_edited_with_plain_openssl_fails_the_integrity_check() {
        let password = "edited";
        let file = encrypt(&sample(), password.as_bytes(), FAST).unwrap();
        let kdf = Kdf::Pbkdf2 { iterations: FAST };
        let mut plaintext = openssl_decrypt(&file, password, kdf);
        plaintext.splice(0..0, b"extra = 1\n".iter().copied());
        let edited = openssl_encrypt(&plaintext, password, kdf, None);
        let err = decrypt(&edited, password.as_bytes(), &pbkdf2(FAST)).unwrap_err();
        assert!(matches!(err, DecryptError::Corrupted { .. }), "{err:?}");
        assert!(err.to_string().contains("does not match the content"), "{err}");
    }

    #[test]
    fn files_that_are_not_openssl_files_say_what_they_look_like() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "empty"),
            (b"db_password = \"x\"\n", "plain text"),
            (b"U2FsdGVkX1+abcdefghijklmnop==\n", "base64"),
            (&[0, 159, 146, 150, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], ""),
        ];
        for (bytes, hint) in cases {
            let err = decrypt(bytes, b"pw", &pbkdf2(FAST)).unwrap_err();
            assert!(matches!(err, DecryptError::NotOpenssl { .. }), "{err:?}");
            assert!(err.to_string().contains(hint), "{err}");
        }
    }

    #[test]
    fn debug_output_never_shows_plaintext() {
        let decrypted =
            Decrypted { content: Zeroizing::new(b"db_password = \"hunter2\"".to_vec()), authenticated: true };
        assert!(!format!("{decrypted:?}").contains("hunter2"));
    }

    #[test]
    fn padding_is_checked_exactly() {
        assert_eq!(unpadded_len(&[b'a'; 15].iter().copied().chain([1]).collect::<Vec<_>>()), Some(15));
        assert_eq!(unpadded_len(&[16; 16]), Some(0));
        assert_eq!(unpadded_len(&[0; 16]), None);
        assert_eq!(unpadded_len(&[17; 16]), None);
        assert_eq!(unpadded_len(&[3, 3, 2, 3]), None);
        assert_eq!(unpadded_len(&[]), None);
    }
}
