//! A certificate authority of your own, for HTTPS on your machine: the lab's mkcert.
//!
//! Browsers and curl trust a certificate when it is signed by an authority they
//! already trust. Public authorities only sign for names you prove you own, and
//! `app.localhost` is nobody's. So for local work you make your *own* root CA,
//! tell your browser (or `curl --cacert`) to trust it, and sign a certificate
//! for any local name with it.
//!
//! ```text
//! proxy cert init                          # once: rootCA.pem + rootCA-key.pem
//! proxy cert issue app.localhost 127.0.0.1 # app.localhost.pem + app.localhost-key.pem
//! curl --cacert ~/.local/share/proxy-lab/ca/rootCA.pem https://app.localhost:8443/
//! ```
//!
//! Anyone holding `rootCA-key.pem` can make certificates your machine trusts
//! for *any* site, so it is written readable by you alone (mode 0600), and it
//! should never leave your machine.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// File name of the root certificate (the one to trust).
pub const ROOT_CERT_FILE: &str = "rootCA.pem";
/// File name of the root's private key (the one to keep secret).
pub const ROOT_KEY_FILE: &str = "rootCA-key.pem";

/// How long the root is valid: long, so a learner sets up trust once.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long an issued certificate is valid.
const LEAF_VALIDITY: Duration = Duration::from_secs(825 * 24 * 3600);
/// Issued certificates start slightly in the past, to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A local root CA, loaded from (or created in) a folder.
pub struct LocalCa {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, followed by nothing else (the root is trusted separately).
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// What went wrong with the local CA; every message names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// No folder was given and none could be derived from the environment.
    #[error("no folder for the local CA: set PROXY_LAB_CA_DIR or HOME, or pass --dir")]
    NoDefaultDir,
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The CA folder exists but holds no CA.
    #[error("no local CA in {}: run `proxy cert init` first", dir.display())]
    Missing {
        /// The folder searched.
        dir: PathBuf,
    },
    /// A file of the CA is damaged.
    #[error("{}: not a valid CA file ({reason}); move the folder away and run `proxy cert init` again", path.display())]
    Invalid {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A name cannot go into a certificate.
    #[error("`{name}` cannot be put in a certificate: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why not.
        reason: String,
    },
}

impl LocalCa {
    /// The per-user folder for the CA: `$PROXY_LAB_CA_DIR`, else
    /// `$XDG_DATA_HOME/proxy-lab/ca`, else `~/.local/share/proxy-lab/ca`.
    pub fn default_dir() -> Result<PathBuf, CaError> {
        let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = non_empty("PROXY_LAB_CA_DIR") {
            return Ok(PathBuf::from(dir));
        }
        if let Some(data) = non_empty("XDG_DATA_HOME") {
            return Ok(PathBuf::from(data).join("proxy-lab").join("ca"));
        }
        let home = non_empty("HOME").ok_or(CaError::NoDefaultDir)?;
        Ok(PathBuf::from(home).join(".local/share/proxy-lab/ca"))
    }

    /// Loads the CA in `dir`.
    pub fn open(dir: &Path) -> Result<LocalCa, CaError> {
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        if !cert_path.exists() && !key_path.exists() {
            return Err(CaError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CaError::Invalid {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(LocalCa {
            dir: dir.to_path_buf(),
            cert_pem,
            issuer,
        })
    }

    /// Loads the CA in `dir`, or creates one there if the folder has none.
    /// Returns whether it was created.
    pub fn open_or_create(dir: &Path) -> Result<(LocalCa, bool), CaError> {
        match LocalCa::open(dir) {
            Ok(ca) => Ok((ca, false)),
            Err(CaError::Missing { .. }) => Ok((LocalCa::create(dir)?, true)),
            Err(err) => Err(err),
        }
    }

    fn create(dir: &Path) -> Result<LocalCa, CaError> {
        create_dir(dir)?;
        let key = KeyPair::generate().map_err(|e| invalid(dir, e))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "proxy-lab local development CA");
        // A name of its own, so a client holding another lab CA's root reports
        // "unknown issuer" rather than a confusing bad signature.
        let made = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        name.push(
            DnType::CommonName,
            format!("proxy-lab CA ({}, {made:x})", owner()),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_VALIDITY).into();
        let cert = params.self_signed(&key).map_err(|e| invalid(dir, e))?;
        write_private(&dir.join(ROOT_KEY_FILE), &key.serialize_pem())?;
        write_public(&dir.join(ROOT_CERT_FILE), &cert.pem())?;
        Ok(LocalCa {
            dir: dir.to_path_buf(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The folder the CA lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root certificate's path: the file clients must trust.
    pub fn root_cert_path(&self) -> PathBuf {
        self.dir.join(ROOT_CERT_FILE)
    }

    /// The root certificate, PEM.
    pub fn root_cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a server certificate for `names`: host names (`app.localhost`,
    /// `*.app.localhost`) and IP addresses (`127.0.0.1`, `::1`).
    pub fn issue(&self, names: &[String]) -> Result<IssuedCert, CaError> {
        if names.is_empty() {
            return Err(CaError::BadName {
                name: String::new(),
                reason: "give at least one host name or IP address".into(),
            });
        }
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| CaError::BadName {
            name: names.join(" "),
            reason: e.to_string(),
        })?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::OrganizationName,
            "proxy-lab local development certificate",
        );
        dn.push(DnType::CommonName, names[0].clone());
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + LEAF_VALIDITY).into();
        let key = KeyPair::generate().map_err(|e| invalid(&self.dir, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| invalid(&self.dir, e))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl IssuedCert {
    /// Writes `BASE.pem` (readable by all) and `BASE-key.pem` (mode 0600) into
    /// `dir`, like mkcert. Returns both paths.
    pub fn write(&self, dir: &Path, base: &str) -> Result<(PathBuf, PathBuf), CaError> {
        create_dir(dir)?;
        let cert = dir.join(format!("{base}.pem"));
        let key = dir.join(format!("{base}-key.pem"));
        write_private(&key, &self.key_pem)?;
        write_public(&cert, &self.cert_pem)?;
        Ok((cert, key))
    }
}

/// A file name for a certificate of `names`: the first name, with `*` spelled out.
pub fn file_base(names: &[String]) -> String {
    let first = names.first().map(String::as_str).unwrap_or("cert");
    let base: String = first
        .replace('*', "_wildcard")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if names.len() > 1 {
        format!("{base}+{}", names.len() - 1)
    } else {
        base
    }
}

fn owner() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "local user".into())
}

fn invalid(dir: &Path, err: rcgen::Error) -> CaError {
    CaError::Invalid {
        path: dir.to_path_buf(),
        reason: err.to_string(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(io(path))
}

fn create_dir(dir: &Path) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(io(dir))
}

fn write_public(path: &Path, text: &str) -> Result<(), CaError> {
    fs::write(path, text).map_err(io(path))
}

/// Writes a secret: created with mode 0600 (owner only) before any byte is
/// written, so it is never readable by others, not even for a moment.
fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // An existing file keeps its old mode on open: tighten it too.
        if path.exists() {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))?;
        }
    }
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(text.as_bytes()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_ca_can_be_opened_again_and_issues_for_names_and_ips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, created) = LocalCa::open_or_create(dir.path()).expect("create");
        assert!(created);
        let (again, created) = LocalCa::open_or_create(dir.path()).expect("open");
        assert!(!created);
        assert_eq!(ca.root_cert_pem(), again.root_cert_pem());
        let issued = again
            .issue(&[
                "app.localhost".into(),
                "*.app.localhost".into(),
                "127.0.0.1".into(),
            ])
            .expect("issue");
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key_pem.contains("PRIVATE KEY"));
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, _) = LocalCa::open_or_create(dir.path()).expect("create");
        let (cert, key) = ca
            .issue(&["app.localhost".into()])
            .expect("issue")
            .write(dir.path(), "app.localhost")
            .expect("write");
        for secret in [dir.path().join(ROOT_KEY_FILE), key] {
            let mode = fs::metadata(&secret).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", secret.display());
        }
        assert!(cert.ends_with("app.localhost.pem"));
    }

    #[test]
    fn opening_an_empty_folder_says_to_run_init() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = LocalCa::open(dir.path()).expect_err("no CA yet");
        assert!(
            err.to_string().contains("run `proxy cert init` first"),
            "{err}"
        );
    }

    #[test]
    fn file_names_follow_mkcert() {
        assert_eq!(file_base(&["app.localhost".into()]), "app.localhost");
        assert_eq!(
            file_base(&["*.app.localhost".into(), "x".into()]),
            "_wildcard.app.localhost+1"
        );
    }
}
