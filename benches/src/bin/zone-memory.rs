//! How much memory a rate-limit zone takes under a flood of distinct client
//! addresses: the zone's size bounds it, whatever the number of clients.
//!
//! Run with `cargo run --release -p lab-benches --bin zone-memory` (Linux: it
//! reads the process's resident memory from /proc/self/statm).

use proxy::limit::LimitKey;
use proxy::limit::rate::{BYTES_PER_KEY, Burst, RateLimitZone};

const CLIENTS: u32 = 1_000_000;

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn flood(size_bytes: usize) {
    let before = resident_bytes();
    let zone = RateLimitZone::new("flood", 1000, size_bytes / BYTES_PER_KEY);
    let burst = Burst {
        burst: 0,
        no_delay: 0,
    };
    let now = tokio::time::Instant::now();
    for i in 0..CLIENTS {
        // 1,000,000 distinct IPv4 addresses: 10.0.0.0 upwards.
        let ip = std::net::Ipv4Addr::from(0x0a00_0000u32 + i);
        zone.check(LimitKey::ip(ip.into()), burst, now);
    }
    let after = resident_bytes();
    let keys = zone.len();
    let grown = match (before, after) {
        (Some(b), Some(a)) => {
            let grown = a.saturating_sub(b);
            format!(
                "resident memory grew by {:.1} MiB ({} bytes per key), {} the zone's size",
                grown as f64 / 1048576.0,
                grown / keys.max(1) as u64,
                if grown <= size_bytes as u64 {
                    "within"
                } else {
                    "OVER"
                }
            )
        }
        _ => "resident memory unknown (no /proc/self/statm)".into(),
    };
    println!(
        "zone size {:>3} MiB: {CLIENTS} distinct clients -> {keys} keys kept; {grown}",
        size_bytes / 1048576,
    );
}

fn main() {
    // The tutorial's zone=one:10m, then a zone big enough to keep everyone.
    flood(10 * 1024 * 1024);
    flood(64 * 1024 * 1024);
}
