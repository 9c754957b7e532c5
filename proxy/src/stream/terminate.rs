//! TLS termination at layer 4 (`[[stream]] tls = ...`): the proxy completes
//! the TLS handshake with the client, with a certificate of its own (the
//! same files or local CA as HTTPS servers), and sends the decrypted bytes to
//! the upstream in plain TCP.
//!
//! ```text
//!   passthrough (sni = {...})              termination (tls = {...})
//!   client ══TLS══▶ proxy ══TLS══▶ db       client ══TLS══▶ proxy ──TCP──▶ db
//!          reads the name only,                    holds the key, decrypts,
//!          the key stays on db                     db sees plain bytes
//! ```
//!
//! Against passthrough ([`super::sni`]): the proxy needs the certificate and
//! key, and spends the handshake's CPU; in return the upstream needs no TLS
//! at all, and the proxy could see the bytes (it does not look at them).

use std::sync::Arc;

use crate::config::{Config, StreamTls};
use crate::local_ca::{CaError, LocalCa};
use crate::tls::{self, AutoLocalError, SniResolver};

/// Why a stream's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TerminateError {
    /// The local CA could not be opened or created.
    #[error("cannot open the local CA for a stream's auto_local certificate: {0}")]
    Ca(#[from] CaError),
    /// The certificate could not be issued or loaded back.
    #[error("cannot issue a stream's auto_local certificate: {0}")]
    AutoLocal(#[from] AutoLocalError),
    /// rustls refused the settings (a bug: they are fixed).
    #[error("cannot set up a stream's TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The TLS settings for a terminating stream: its one certificate for every
/// client, whatever name it asks for, and no ALPN (the bytes inside are
/// not known to be HTTP).
pub fn acceptor(
    config: &Config,
    tls: &StreamTls,
) -> Result<Arc<rustls::ServerConfig>, TerminateError> {
    let cert = match tls {
        StreamTls::Files { loaded, .. } => loaded.clone(),
        StreamTls::AutoLocal { names } => {
            let dir = match &config.local_ca_dir {
                Some(dir) => dir.clone(),
                None => LocalCa::default_dir()?,
            };
            let (ca, _created) = LocalCa::open_or_create(&dir)?;
            tls::auto_local_cert(&ca, names)?
        }
    };
    let mut resolver = SniResolver::new();
    resolver.set_default(cert);
    let mut server = tls::server_config(resolver)?;
    server.alpn_protocols.clear();
    Ok(Arc::new(server))
}

/// The TLS settings of each stream of `config`, in order (`None`: the stream does
/// not terminate TLS, or its certificate could not be had, which is logged;
/// its connections are then closed).
pub fn acceptors(config: &Config) -> Vec<Option<Arc<rustls::ServerConfig>>> {
    config
        .streams
        .iter()
        .map(|stream| {
            let tls = stream.tls.as_ref()?;
            match acceptor(config, tls) {
                Ok(acceptor) => Some(acceptor),
                Err(err) => {
                    tracing::error!(stream = %stream.addr, "{err}");
                    None
                }
            }
        })
        .collect()
}
