//! TLS termination: the proxy speaks HTTPS to clients and plain HTTP to upstreams.
//!
//! The client's TLS connection ends at the proxy, which holds the certificate
//! and its private key; backends never see TLS and need no certificates.
//! Requests still tell the upstream the client used HTTPS (`X-Forwarded-Proto`).
//!
//! - **Certificates per name (SNI).** A client names the host it wants in the
//!   first TLS message (Server Name Indication), before any HTTP is sent, so
//!   the proxy can present the right certificate for each virtual server.
//!   A name no server lists gets the default certificate.
//! - **ALPN.** In the same message the client lists the protocols it speaks;
//!   the proxy picks `h2` (HTTP/2) when offered, else `http/1.1`.
//! - **Versions.** TLS 1.2 and 1.3 only; rustls has nothing older.
//!
//! Certificate files are checked when the config is loaded, not at the first
//! handshake: a missing file, a key that does not belong to the certificate or
//! an expired certificate is a config error naming the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate chain with its private key, checked and ready to serve.
pub type ServerCert = Arc<CertifiedKey>;

/// Why a certificate or key file cannot be used. Each message says which file
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No `BEGIN CERTIFICATE` block in the certificate file.
    #[error("{} holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No private key block in the key file.
    #[error("{} holds no PEM private key (expected -----BEGIN PRIVATE KEY----- or similar)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key or certificate is of a kind rustls cannot use, or is damaged.
    #[error("{} cannot be used: {reason}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the key in {} does not belong to the certificate in {}; use the key file issued with that certificate", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate's validity period is over (or has not begun).
    #[error("the certificate in {} is {state} (valid {not_before} to {not_after}); issue a new one, e.g. `proxy cert issue NAME`", path.display())]
    OutOfDate {
        /// The file.
        path: PathBuf,
        /// "expired" or "not valid yet".
        state: &'static str,
        /// Start of validity.
        not_before: String,
        /// End of validity.
        not_after: String,
    },
}

/// Loads a certificate chain and its private key from PEM files and checks
/// that they can serve: the key matches, and the certificate is valid now.
pub fn load_cert(cert_path: &Path, key_path: &Path) -> Result<ServerCert, CertError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    load_cert_pem(&cert_pem, &key_pem, cert_path, key_path)
}

/// Like [`load_cert`], from PEM text already read; the paths name it in errors.
pub fn load_cert_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<ServerCert, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Unusable {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    check_validity(leaf, cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => CertError::NoKey {
            path: key_path.to_path_buf(),
        },
        other => CertError::Unusable {
            path: key_path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => CertError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            },
            other => CertError::Unusable {
                path: key_path.to_path_buf(),
                reason: other.to_string(),
            },
        })
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn check_validity(leaf: &CertificateDer<'_>, path: &Path) -> Result<(), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| CertError::Unusable {
        path: path.to_path_buf(),
        reason: format!("not a valid X.509 certificate: {e}"),
    })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    let state = if now > validity.not_after {
        "expired"
    } else if now < validity.not_before {
        "not valid yet"
    } else {
        return Ok(());
    };
    Err(CertError::OutOfDate {
        path: path.to_path_buf(),
        state,
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
    })
}

/// Picks the certificate for each handshake by the SNI name: an exact name,
/// then the longest wildcard (`*.example.com`), then the default certificate.
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<String, ServerCert>,
    /// `(".example.com", cert)`, longest suffix first.
    wildcard: Vec<(String, ServerCert)>,
    default: Option<ServerCert>,
}

impl SniResolver {
    /// An empty resolver: add names, then a default.
    pub fn new() -> SniResolver {
        SniResolver::default()
    }

    /// Serves `cert` for `name` (lower case); `*.suffix` is a wildcard. The
    /// first certificate added for a name wins.
    pub fn add(&mut self, name: &str, cert: ServerCert) {
        match name.strip_prefix('*') {
            Some(suffix) => {
                self.wildcard.push((suffix.to_owned(), cert));
                self.wildcard
                    .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
            }
            None => {
                self.exact.entry(name.to_owned()).or_insert(cert);
            }
        }
    }

    /// Serves `cert` to clients whose name matches nothing (or who send none).
    pub fn set_default(&mut self, cert: ServerCert) {
        self.default = Some(cert);
    }

    /// Whether any certificate at all was added.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }

    /// The certificate for `sni` (already lower case, as rustls gives it).
    pub fn lookup(&self, sni: Option<&str>) -> Option<ServerCert> {
        if let Some(name) = sni {
            if let Some(cert) = self.exact.get(name) {
                return Some(cert.clone());
            }
            for (suffix, cert) in &self.wildcard {
                if name.len() > suffix.len() && name.ends_with(suffix.as_str()) {
                    return Some(cert.clone());
                }
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}

/// A certificate for `names` from the local CA, for `tls = { auto_local = true }`.
///
/// Issued once and cached in the CA's folder under `auto/`; the cache file's
/// name includes a checksum of the names and of the root certificate, so a
/// changed name list or a new CA gets a new certificate. A cached certificate
/// that no longer loads (expired, damaged) is issued again.
pub fn auto_local_cert(
    ca: &crate::local_ca::LocalCa,
    names: &[String],
) -> Result<ServerCert, AutoLocalError> {
    let mut checksum = 0xcbf2_9ce4_8422_2325u64; // FNV-1a
    for byte in names.join("\n").bytes().chain(ca.root_cert_pem().bytes()) {
        checksum = (checksum ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let dir = ca.dir().join("auto");
    let base = format!(
        "{}-{:08x}",
        crate::local_ca::file_base(names),
        checksum as u32
    );
    let (cert_path, key_path) = (
        dir.join(format!("{base}.pem")),
        dir.join(format!("{base}-key.pem")),
    );
    if let Ok(cached) = load_cert(&cert_path, &key_path) {
        return Ok(cached);
    }
    let (cert_path, key_path) = ca.issue(names)?.write(&dir, &base)?;
    tracing::info!(
        "issued a certificate for {} from the local CA: {}",
        names.join(", "),
        cert_path.display()
    );
    Ok(load_cert(&cert_path, &key_path)?)
}

/// Why an `auto_local` certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AutoLocalError {
    /// The CA could not be opened, created or used.
    #[error(transparent)]
    Ca(#[from] crate::local_ca::CaError),
    /// The issued certificate could not be loaded back.
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// The rustls configuration for HTTPS listeners: TLS 1.2 and 1.3, ALPN `h2`
/// then `http/1.1`, certificates chosen by `resolver`.
pub fn server_config(resolver: SniResolver) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_ca::LocalCa;

    fn issue(ca: &LocalCa, name: &str) -> ServerCert {
        let issued = ca.issue(&[name.to_owned()]).expect("issue");
        load_cert_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            Path::new("cert.pem"),
            Path::new("key.pem"),
        )
        .expect("load")
    }

    #[test]
    fn sni_picks_exact_then_longest_wildcard_then_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _) = LocalCa::open_or_create(dir.path()).expect("ca");
        let (app, any, eu, fallback) = (
            issue(&ca, "app.localhost"),
            issue(&ca, "*.example.com"),
            issue(&ca, "*.eu.example.com"),
            issue(&ca, "default.localhost"),
        );
        let mut resolver = SniResolver::new();
        resolver.add("app.localhost", app.clone());
        resolver.add("*.example.com", any.clone());
        resolver.add("*.eu.example.com", eu.clone());
        resolver.set_default(fallback.clone());
        let pick = |sni| resolver.lookup(sni).expect("a certificate");
        assert!(Arc::ptr_eq(&pick(Some("app.localhost")), &app));
        assert!(Arc::ptr_eq(&pick(Some("www.example.com")), &any));
        assert!(Arc::ptr_eq(&pick(Some("shop.eu.example.com")), &eu));
        assert!(Arc::ptr_eq(&pick(Some("example.com")), &fallback));
        assert!(Arc::ptr_eq(&pick(None), &fallback));
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _) = LocalCa::open_or_create(dir.path()).expect("ca");
        let one = ca.issue(&["one.localhost".into()]).expect("issue");
        let two = ca.issue(&["two.localhost".into()]).expect("issue");
        let err = load_cert_pem(
            one.cert_pem.as_bytes(),
            two.key_pem.as_bytes(),
            Path::new("one.pem"),
            Path::new("two-key.pem"),
        )
        .expect_err("mismatch");
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn files_without_pem_blocks_are_named_in_the_error() {
        let err = load_cert_pem(b"hello", b"", Path::new("a.pem"), Path::new("a-key.pem"))
            .expect_err("not PEM");
        assert_eq!(
            err.to_string(),
            "a.pem holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)"
        );
    }
}
