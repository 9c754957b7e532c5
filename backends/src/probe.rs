//! `--probe`: is a copy of this service answering? A health check for
//! containers whose image holds nothing but the binary.
//!
//! A compose healthcheck runs a command inside the container
//! (`test: ["CMD", "/usr/local/bin/whoami", "--probe"]`). The lab's images
//! have no shell and no curl, so each binary can probe itself: it connects to
//! the address it would listen on (`LISTEN`, with `0.0.0.0` read as
//! 127.0.0.1), sends `GET PATH`, and exits 0 on a 2xx answer, 1 otherwise,
//! printing one line that Docker keeps in `docker inspect`'s health log.
//!
//! Plain blocking std code: one request, a timeout, no runtime.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// How long the probe waits to connect, and then for the answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Probes `GET path` on the service listening on `listen`, and says how it went.
pub fn probe(listen: &str, path: &str) -> ExitCode {
    match check(listen, path) {
        Ok(status_line) => {
            println!("healthy: GET {path} on {listen}: {status_line}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("unhealthy: GET {path} on {listen}: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// The address to connect to for a listen address: a wildcard address
/// (`0.0.0.0`, `[::]`) means "every interface", so the loopback one is asked.
fn target(listen: &str) -> Result<SocketAddr, String> {
    let addr = listen
        .to_socket_addrs()
        .map_err(|err| format!("cannot read the address: {err}"))?
        .next()
        .ok_or("the address has no IP")?;
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, addr.port()))
}

/// The answer's status line when it is a 2xx, else why not.
fn check(listen: &str, path: &str) -> Result<String, String> {
    let addr = target(listen)?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|err| format!("cannot set a timeout: {err}"))?;
    // One write: the whole request in one segment.
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|err| format!("cannot send the request: {err}"))?;
    // The status line is all that is needed: at most one small read's worth.
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream
            .read(&mut buf)
            .map_err(|err| format!("no answer: {err}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    let status = line.split_whitespace().nth(1).unwrap_or_default();
    if line.starts_with("HTTP/") && status.starts_with('2') && status.len() == 3 {
        Ok(line)
    } else if line.is_empty() {
        Err("the connection closed without an answer".into())
    } else {
        Err(format!("answered `{line}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_probed_on_loopback() {
        assert_eq!(
            target("0.0.0.0:5000").expect("an address"),
            SocketAddr::from(([127, 0, 0, 1], 5000))
        );
        assert_eq!(
            target("[::]:8000").expect("an address"),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 8000))
        );
        assert_eq!(
            target("10.1.2.3:80").expect("an address"),
            SocketAddr::from(([10, 1, 2, 3], 80))
        );
        assert!(target("nonsense").is_err());
    }

    #[test]
    fn a_closed_port_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let err = check(&addr.to_string(), "/health").expect_err("nothing listens");
        assert!(err.contains("cannot connect"), "{err}");
    }

    #[test]
    fn only_a_2xx_answer_is_healthy() {
        for (answer, healthy) in [
            ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true),
            ("HTTP/1.1 204 No Content\r\n\r\n", true),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
            ("", false),
        ] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = stream.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                stream.write_all(answer.as_bytes()).expect("write");
                String::from_utf8_lossy(&request).into_owned()
            });
            let verdict = check(&addr.to_string(), "/health");
            let request = server.join().expect("the server thread");
            assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
            assert_eq!(verdict.is_ok(), healthy, "{answer:?}: {verdict:?}");
        }
    }
}
