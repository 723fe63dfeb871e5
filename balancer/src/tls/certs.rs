//! The certificates the HTTPS listener serves: read from PEM files, chosen by the client's
//! server name (SNI), and replaced when their files change.
//!
//! A [`CertStore`] is rustls's certificate resolver. It holds the current [`CertSet`] in an
//! `ArcSwap`: a handshake reads it without a lock, and a reload swaps in a whole new set,
//! so a handshake never sees half of one. Connections already open keep the session they
//! negotiated; only new handshakes see a new certificate.
//!
//! The reload task ([`spawn_reloader`]) reads every file each `tls.reload_interval` and
//! compares a SHA-256 digest of their contents (not their times: a renewal written by
//! rename, or a bind mount whose target changed, is seen the same way). A changed set is
//! swapped in only if every file parses and every key matches its certificate; otherwise
//! the exact problem (which entry, which file, what) is logged once per distinct content
//! and the old set keeps serving.
//!
//! A certificate obtained by ACME (`tls::acme`) sits beside the file set, in its own slot
//! swapped the same way: it serves its own names first, and is the default when no file
//! certificate is configured. Until there is one, a handshake nothing can serve is
//! refused (rustls sends an alert).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::config::{CertificateSpec, Config};

/// A certificate entry that cannot be served, and why; says where the entry was configured.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: tls.certificates[{index}]: {path}: {problem}")]
pub struct CertError {
    /// Where the entry was set (config file and line, flag or variable).
    pub origin: String,
    pub index: usize,
    pub path: PathBuf,
    pub problem: String,
}

/// One configured entry: its files, and where it was configured (for errors).
#[derive(Debug, Clone)]
struct Entry {
    spec: CertificateSpec,
    origin: String,
}

/// The certificates being served, by name.
#[derive(Debug)]
pub struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates, by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// `None` only when no file certificate is configured (ACME provides them).
    default: Option<Arc<CertifiedKey>>,
    /// The names of each entry, in configured order, for logs and inspection.
    names: Vec<Vec<String>>,
    /// Of the files' contents, to tell a change.
    digest: [u8; 32],
}

impl CertSet {
    /// The certificate for `server_name`: an exact name, else a wildcard covering it, else
    /// the default (as other servers do: the client then reports the mismatch itself).
    pub fn for_name(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key);
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .or(self.default.as_ref())
    }

    /// The DNS names of each configured entry, in order.
    pub fn names(&self) -> &[Vec<String>] {
        &self.names
    }
}

/// A certificate obtained by ACME and the names it serves.
#[derive(Debug)]
pub struct Managed {
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

/// The resolver rustls asks for a certificate on each handshake.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertSet>,
    /// The ACME certificate, once there is one.
    managed: ArcSwapOption<Managed>,
    entries: Vec<Entry>,
    provider: Arc<CryptoProvider>,
    /// Sets swapped in after the first.
    reloads: AtomicU64,
    /// Changed file contents refused (each distinct content counted once).
    refused: AtomicU64,
}

impl CertStore {
    /// Reads every configured certificate; any problem is an error naming the entry.
    pub fn load(config: &Config, provider: Arc<CryptoProvider>) -> Result<Self, CertError> {
        let entries: Vec<Entry> = config
            .tls
            .certificates
            .iter()
            .enumerate()
            .map(|(index, spec)| Entry {
                spec: spec.clone(),
                origin: config.origin_of(&format!("tls.certificates[{index}]")),
            })
            .collect();
        let contents = read_all(&entries)?;
        let set = parse_all(&entries, &contents, &provider)?;
        Ok(Self {
            current: ArcSwap::from_pointee(set),
            managed: ArcSwapOption::empty(),
            entries,
            provider,
            reloads: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// The set being served.
    pub fn current(&self) -> Arc<CertSet> {
        self.current.load_full()
    }

    /// Swaps in the ACME certificate: new handshakes for its names get it.
    pub fn set_managed(&self, managed: Managed) {
        self.managed.store(Some(Arc::new(managed)));
    }

    /// The ACME certificate being served, if any.
    pub fn managed(&self) -> Option<Arc<Managed>> {
        self.managed.load_full()
    }

    /// The certificate a client naming `server_name` (or none) gets, if any.
    pub fn for_name(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let managed = self.managed.load();
        if let (Some(managed), Some(name)) = (managed.as_ref(), server_name) {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if managed.names.contains(&name) {
                return Some(managed.key.clone());
            }
        }
        let set = self.current.load();
        let from_files = match server_name {
            Some(name) => set.for_name(name),
            None => set.default.as_ref(),
        };
        from_files
            .cloned()
            .or_else(|| managed.as_ref().map(|m| m.key.clone()))
    }

    /// How many changed sets were swapped in since start-up.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// How many changed file contents were refused since start-up.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Reads the files again; swaps in the new set when they changed and all of them are
    /// good. `last_refused` is the digest of the last refused content, so a bad file is
    /// reported once, not at every check.
    fn check(&self, last_refused: &mut Option<[u8; 32]>) {
        let contents = match read_all(&self.entries) {
            Ok(contents) => contents,
            Err(error) => {
                // A file missing for a moment (mid-rename) is not a new certificate: keep
                // serving, and say so once until it comes back.
                let digest = Sha256::digest(error.to_string().as_bytes()).into();
                if last_refused.replace(digest) != Some(digest) {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, "certificate reload refused: the previous certificates are still served");
                }
                return;
            }
        };
        let digest = digest_of(&contents);
        if digest == self.current.load().digest {
            // Back to what is served (a bad edit undone): a later bad edit is news again.
            *last_refused = None;
            return;
        }
        if *last_refused == Some(digest) {
            return;
        }
        match parse_all(&self.entries, &contents, &self.provider) {
            Ok(set) => {
                let names = set.names().to_vec();
                self.current.store(Arc::new(set));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                *last_refused = None;
                tracing::info!(?names, "certificates reloaded: new handshakes get them");
            }
            Err(error) => {
                *last_refused = Some(digest);
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "certificate reload refused: the previous certificates are still served");
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.for_name(hello.server_name())
    }
}

/// Checks the files every `interval` until aborted.
pub fn spawn_reloader(store: Arc<CertStore>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut last_refused = None;
        loop {
            ticks.tick().await;
            // File reads may block (a slow disk or network mount): off the async workers.
            let store = store.clone();
            let previous = last_refused;
            let checked = tokio::task::spawn_blocking(move || {
                let mut last = previous;
                store.check(&mut last);
                last
            })
            .await;
            match checked {
                Ok(last) => last_refused = last,
                Err(error) => tracing::error!(%error, "certificate check failed"),
            }
        }
    })
}

/// Each entry's certificate and key file contents.
type Contents = Vec<(Vec<u8>, Vec<u8>)>;

fn read_all(entries: &[Entry]) -> Result<Contents, CertError> {
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let read = |path: &Path| {
                std::fs::read(path).map_err(|error| CertError {
                    origin: entry.origin.clone(),
                    index,
                    path: path.to_owned(),
                    problem: format!("cannot read it: {error}"),
                })
            };
            Ok((read(&entry.spec.cert)?, read(&entry.spec.key)?))
        })
        .collect()
}

fn digest_of(contents: &Contents) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (cert, key) in contents {
        // Lengths first, so moving bytes from one file to the next is a change too.
        hasher.update((cert.len() as u64).to_le_bytes());
        hasher.update(cert);
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key);
    }
    hasher.finalize().into()
}

fn parse_all(
    entries: &[Entry],
    contents: &Contents,
    provider: &CryptoProvider,
) -> Result<CertSet, CertError> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut names = Vec::new();
    let mut default = None;
    let now = SystemTime::now();
    for (index, (entry, (cert, key))) in entries.iter().zip(contents).enumerate() {
        let fail = |path: &Path, problem: String| CertError {
            origin: entry.origin.clone(),
            index,
            path: path.to_owned(),
            problem,
        };
        let spec = &entry.spec;
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(&spec.cert, format!("not a PEM certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(fail(
                &spec.cert,
                "holds no CERTIFICATE block (is it the key file?)".to_owned(),
            ));
        }
        let end_entity = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
            fail(
                &spec.cert,
                format!("its first certificate is not valid X.509: {e}"),
            )
        })?;
        let dns: Vec<String> = end_entity
            .valid_dns_names()
            .map(str::to_ascii_lowercase)
            .collect();
        let private = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
            fail(
                &spec.key,
                format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
            )
        })?;
        let certified = CertifiedKey::from_der(chain, private, provider).map_err(|e| {
            fail(
                &spec.key,
                format!("does not fit the certificate {}: {e}", spec.cert.display()),
            )
        })?;
        if let Some(not_after) = not_after(&certified.cert[0])
            && not_after < now
        {
            // Served anyway: refusing to start would take the site down, and clients report
            // an expired certificate clearly themselves.
            tracing::warn!(
                certificate = %spec.cert.display(),
                expired_secs_ago = now.duration_since(not_after).map_or(0, |d| d.as_secs()),
                "certificate has expired"
            );
        }
        let certified = Arc::new(certified);
        for name in &dns {
            match name.strip_prefix("*.") {
                Some(parent) => wildcard
                    .entry(parent.to_owned())
                    .or_insert_with(|| certified.clone()),
                None => exact
                    .entry(name.clone())
                    .or_insert_with(|| certified.clone()),
            };
        }
        if spec.default || default.is_none() && index == 0 {
            default = Some(certified.clone());
        }
        names.push(dns);
    }
    Ok(CertSet {
        exact,
        wildcard,
        default,
        names,
        digest: digest_of(contents),
    })
}

/// The end of a certificate's validity (`notAfter`), read from its DER; `None` when the
/// structure is not the expected one (webpki already accepted the certificate, so that
/// would be an oddity, not worth refusing it for).
pub(crate) fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    validity(cert).map(|(_, end)| end)
}

/// A certificate's validity (`notBefore`, `notAfter`), read from its DER.
pub(crate) fn validity(cert: &CertificateDer<'_>) -> Option<(SystemTime, SystemTime)> {
    let (_, certificate) = der_item(cert.as_ref(), 0x30)?;
    let (_, mut tbs) = der_item(certificate, 0x30)?;
    // [0] version, optional.
    if tbs.first() == Some(&0xa0) {
        tbs = der_skip(tbs)?;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        tbs = der_skip(tbs)?;
    }
    let (_, validity) = der_item(tbs, 0x30)?;
    let (after_start, start) = der_time(validity)?;
    let (_, end) = der_time(after_start)?;
    Some((start, end))
}

/// The UTCTime or GeneralizedTime at the start of `bytes`: (the rest after it, the time).
fn der_time(bytes: &[u8]) -> Option<(&[u8], SystemTime)> {
    let tag = *bytes.first()?;
    let (rest, time) = der_item(bytes, tag)?;
    let text = std::str::from_utf8(time).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, fields) = match tag {
        // UTCTime: two-digit year, 1950-2049 (RFC 5280 4.1.2.5.1).
        0x17 => {
            let yy: i64 = digits.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        0x18 => (digits.get(..4)?.parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { fields.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some((
        rest,
        UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?),
    ))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The DER item at the start of `bytes` if its tag is `tag`: (the rest after it, its content).
fn der_item(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *bytes.first()? != tag {
        return None;
    }
    let (length, header) = match *bytes.get(1)? {
        short if short < 0x80 => (usize::from(short), 2),
        long => {
            let count = usize::from(long & 0x7f);
            if count == 0 || count > 4 {
                return None;
            }
            let mut length = 0usize;
            for &b in bytes.get(2..2 + count)? {
                length = (length << 8) | usize::from(b);
            }
            (length, 2 + count)
        }
    };
    let end = header.checked_add(length)?;
    Some((bytes.get(end..)?, bytes.get(header..end)?))
}

/// The bytes after the DER item at the start of `bytes`, whatever its tag.
fn der_skip(bytes: &[u8]) -> Option<&[u8]> {
    der_item(bytes, *bytes.first()?).map(|(rest, _)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_count_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn not_after_is_read_from_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let end = not_after(cert.der()).unwrap();
        let days = end.duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
        assert_eq!(days as i64, days_from_civil(2031, 7, 15));
    }

    fn self_signed(name: &str) -> (String, String, Arc<CertifiedKey>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let certified = CertifiedKey::from_der(
            vec![cert.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
            &crate::tls::provider(),
        )
        .unwrap();
        (cert.pem(), key.serialize_pem(), Arc::new(certified))
    }

    #[test]
    fn the_acme_certificate_serves_its_names_and_is_the_default_without_files() {
        let provider = crate::tls::provider();
        // ACME only: nothing to serve until it has a certificate, then it serves all.
        let store = CertStore::load(&Config::default(), provider.clone()).unwrap();
        assert!(store.for_name(Some("app.test")).is_none());
        assert!(store.for_name(None).is_none());
        let (_, _, acme) = self_signed("app.test");
        store.set_managed(Managed {
            names: vec!["app.test".into()],
            key: acme.clone(),
        });
        for name in [
            Some("app.test"),
            Some("APP.test."),
            Some("other.test"),
            None,
        ] {
            assert!(
                Arc::ptr_eq(&store.for_name(name).unwrap(), &acme),
                "{name:?}"
            );
        }

        // Beside a file certificate: each serves its own names, the file is the default.
        let dir = tempfile::tempdir().unwrap();
        let (cert_pem, key_pem, _) = self_signed("files.test");
        std::fs::write(dir.path().join("c.pem"), cert_pem).unwrap();
        std::fs::write(dir.path().join("k.pem"), key_pem).unwrap();
        let mut config = Config::default();
        config.tls.certificates = vec![CertificateSpec {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
            default: false,
        }];
        let store = CertStore::load(&config, provider).unwrap();
        store.set_managed(Managed {
            names: vec!["app.test".into()],
            key: acme.clone(),
        });
        assert!(Arc::ptr_eq(
            &store.for_name(Some("app.test")).unwrap(),
            &acme
        ));
        for name in [Some("files.test"), Some("other.test"), None] {
            assert!(
                !Arc::ptr_eq(&store.for_name(name).unwrap(), &acme),
                "{name:?}"
            );
        }
    }

    #[test]
    fn validity_reads_both_ends() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2049, 12, 31);
        params.not_after = rcgen::date_time_ymd(2050, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (start, end) = validity(cert.der()).unwrap();
        let day = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
        // 2049 is a UTCTime, 2050 a GeneralizedTime (RFC 5280).
        assert_eq!(day(start) as i64, days_from_civil(2049, 12, 31));
        assert_eq!(day(end) as i64, days_from_civil(2050, 1, 2));
    }
}
