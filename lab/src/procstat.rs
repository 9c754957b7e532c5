//! What a process (and its children) costs, read from Linux's `/proc`:
//! CPU time and memory, for `lab bench`'s table.
//!
//! - **CPU**: `utime + stime` from `/proc/PID/stat`, in clock ticks (100 per
//!   second on Linux), for the process and every child (nginx's workers are
//!   children of its master). The bench reads it before and after a run.
//! - **Memory**: `VmRSS` (resident now) and `VmHWM` (the peak resident size,
//!   "high water mark") from `/proc/PID/status`, in KiB, summed the same way.
//!
//! On other systems, or when a process is gone, the figures are `None`.

use std::path::Path;

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A process and its children, by the root's process id.
#[derive(Debug, Clone, Copy)]
pub struct ProcessTree {
    /// The root: the proxy, the backend, nginx's master, HAProxy.
    pub pid: u32,
}

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time used so far, user and kernel, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory now, KiB.
    pub rss_kib: u64,
    /// The most resident memory each process ever had, summed, KiB.
    pub peak_rss_kib: u64,
}

impl ProcessTree {
    /// Reads the tree's CPU time and memory now; `None` without `/proc` or
    /// when the root has exited.
    pub fn usage(&self) -> Option<Usage> {
        let mut total = Usage::default();
        let mut found = false;
        for pid in self.pids() {
            let Some(one) = usage_of(pid) else { continue };
            found = true;
            total.cpu_seconds += one.cpu_seconds;
            total.rss_kib += one.rss_kib;
            total.peak_rss_kib += one.peak_rss_kib;
        }
        found.then_some(total)
    }

    /// The root and its descendants.
    fn pids(&self) -> Vec<u32> {
        let mut all = vec![self.pid];
        let mut next = 0;
        while next < all.len() {
            all.extend(children(all[next]));
            next += 1;
        }
        all
    }
}

/// A process's children, from `/proc/PID/task/*/children`.
fn children(pid: u32) -> Vec<u32> {
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn usage_of(pid: u32) -> Option<Usage> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count from after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Some(Usage {
        cpu_seconds: ticks / TICKS_PER_SECOND,
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_counts_a_busy_child() {
        let me = ProcessTree {
            pid: std::process::id(),
        };
        let Some(before) = me.usage() else {
            eprintln!("skipped: no /proc on this system");
            return;
        };
        assert!(before.rss_kib > 0 && before.peak_rss_kib >= before.rss_kib);
        // A child that burns CPU for a moment shows up in the tree's total.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .expect("sh runs");
        let tree = ProcessTree { pid: child.id() };
        let mut busy = 0.0;
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            busy = tree.usage().map_or(0.0, |u| u.cpu_seconds);
            if busy >= 0.05 {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(busy >= 0.05, "the child's CPU time is counted: {busy}");
        assert_eq!(tree.usage(), None, "a process that is gone has no figures");
    }
}
