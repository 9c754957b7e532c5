//! Layer 4: TCP streams proxied as bytes, without reading HTTP.
//!
//! - [`proxy_protocol`]: the PROXY protocol (v1 and v2), which tells a backend
//!   the client's address when the proxy cannot add a header.
//! - [`sni`]: the host name a TLS client asks for, read from its ClientHello
//!   without decrypting anything (nginx `ssl_preread`).

pub mod proxy_protocol;
pub mod sni;
