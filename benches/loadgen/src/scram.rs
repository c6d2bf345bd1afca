//! SCRAM hash providers for the `sasl` crate's client that cache the salted
//! password.
//!
//! A SCRAM client must run PBKDF2 (4,096 iterations by default) on every
//! login, while the server only checks a few HMACs against its stored keys:
//! without a cache the load generator would spend more CPU per login than the
//! server it measures. As RFC 5802 §5.1 allows, the SaltedPassword is cached
//! per (hash, password, salt, iteration count); it stays valid as long as the
//! server keeps the account's salt. The cache lives in memory and can be kept
//! in a file between runs (`--scram-cache FILE`), so repeated benchmark runs
//! measure the server rather than the client's PBKDF2.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::digest::InvalidLength;
use sasl::common::scram::{DeriveError, ScramProvider, Sha1, Sha256};
use sasl::common::Password;

/// Cache key: hash name, password fingerprint, salt, iterations.
type Key = (&'static str, Vec<u8>, Vec<u8>, u32);

fn cache() -> &'static Mutex<HashMap<Key, Vec<u8>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Vec<u8>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cached_derive<P: ScramProvider>(
    password: &Password,
    salt: &[u8],
    iterations: u32,
) -> Result<Vec<u8>, DeriveError> {
    let Password::Plain(plain) = password else {
        return P::derive(password, salt, iterations);
    };
    let key: Key = (
        P::name(),
        Sha256::hash(plain.as_bytes()),
        salt.to_vec(),
        iterations,
    );
    if let Some(v) = cache().lock().expect("scram cache").get(&key) {
        return Ok(v.clone());
    }
    let v = P::derive(password, salt, iterations)?;
    cache().lock().expect("scram cache").insert(key, v.clone());
    Ok(v)
}

/// SCRAM-SHA-1 with a cached SaltedPassword.
pub struct CachedSha1;

impl ScramProvider for CachedSha1 {
    type Secret = sasl::secret::Pbkdf2Sha1;

    fn name() -> &'static str {
        Sha1::name()
    }

    fn hash(data: &[u8]) -> Vec<u8> {
        Sha1::hash(data)
    }

    fn hmac(data: &[u8], key: &[u8]) -> Result<Vec<u8>, InvalidLength> {
        Sha1::hmac(data, key)
    }

    fn derive(password: &Password, salt: &[u8], iterations: u32) -> Result<Vec<u8>, DeriveError> {
        cached_derive::<Sha1>(password, salt, iterations)
    }
}

/// SCRAM-SHA-256 with a cached SaltedPassword.
pub struct CachedSha256;

impl ScramProvider for CachedSha256 {
    type Secret = sasl::secret::Pbkdf2Sha256;

    fn name() -> &'static str {
        Sha256::name()
    }

    fn hash(data: &[u8]) -> Vec<u8> {
        Sha256::hash(data)
    }

    fn hmac(data: &[u8], key: &[u8]) -> Result<Vec<u8>, InvalidLength> {
        Sha256::hmac(data, key)
    }

    fn derive(password: &Password, salt: &[u8], iterations: u32) -> Result<Vec<u8>, DeriveError> {
        cached_derive::<Sha256>(password, salt, iterations)
    }
}

fn static_name(s: &str) -> Option<&'static str> {
    match s {
        x if x == Sha1::name() => Some(Sha1::name()),
        x if x == Sha256::name() => Some(Sha256::name()),
        _ => None,
    }
}

/// Loads cached entries from `path` (a missing file is an empty cache).
/// Returns how many entries were loaded.
pub fn load(path: &Path) -> Result<usize, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut map = cache().lock().expect("scram cache");
    let mut n = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 5 {
            continue;
        }
        let (Some(name), Ok(pw), Ok(salt), Ok(it), Ok(v)) = (
            static_name(f[0]),
            B64.decode(f[1]),
            B64.decode(f[2]),
            f[3].parse::<u32>(),
            B64.decode(f[4]),
        ) else {
            continue;
        };
        map.insert((name, pw, salt, it), v);
        n += 1;
    }
    Ok(n)
}

/// Writes the whole cache to `path` (through a temporary file and rename).
pub fn save(path: &Path) -> Result<usize, String> {
    let map = cache().lock().expect("scram cache");
    let tmp = path.with_extension("tmp");
    let mut out = Vec::with_capacity(map.len() * 128);
    for ((name, pw, salt, it), v) in map.iter() {
        writeln!(
            out,
            "{name} {} {} {it} {}",
            B64.encode(pw),
            B64.encode(salt),
            B64.encode(v)
        )
        .expect("write to a Vec");
    }
    std::fs::write(&tmp, &out).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(map.len())
}
