//! Measurement: CPU and RSS from /proc, latency percentiles, server gauges
//! from `/metrics`, and the sum of a run.

use std::time::Duration;

/// Latency samples and counts of one run.
#[derive(Default)]
pub(crate) struct Run {
    pub(crate) cycles: u64,
    pub(crate) invite_to_received: Vec<Duration>,
    pub(crate) accept_to_accepted: Vec<Duration>,
    /// CPU of the server's processes over the run.
    pub(crate) cpu_seconds: f64,
    /// CPU of the load generator over the run: this process for callinvite
    /// and peerjs; both sipps and the packet capture for Kamailio.
    pub(crate) gen_cpu_seconds: f64,
    /// The server's memory at the end (RSS; Kamailio: the PSS of all its
    /// processes, since they share one memory pool).
    pub(crate) rss_kib: u64,
    pub(crate) elapsed: Duration,
}

pub(crate) fn pct(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

/// utime+stime of a process, in seconds (Linux /proc).
pub(crate) fn cpu_seconds_all(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Proportional set size of a process (`Pss` of /proc/PID/smaps_rollup):
/// pages shared between processes are counted once in all.
pub(crate) fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// This process's own CPU so far, in seconds.
pub(crate) fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id())
}

/// `/metrics` of the server whose operations port is `port` ("" if it fails).
pub(crate) async fn fetch_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The value of the metric line `name value` (0 if absent).
pub(crate) fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Cycles started by one caller, and its latency samples (invite→received, accept→accepted).
pub(crate) type Samples = (u64, (Vec<Duration>, Vec<Duration>));

/// Waits for the callers (they stop after `duration`), stops the callees, and sums up.
pub(crate) async fn collect(
    callers: Vec<tokio::task::JoinHandle<Samples>>,
    callees: Vec<tokio::task::JoinHandle<()>>,
    duration: Duration,
    cpu0: f64,
    gen0: f64,
    pids: &[u32],
) -> Run {
    let mut run = Run::default();
    for caller in callers {
        // A caller stuck past the run's end plus a generous margin is counted as it stands: nothing.
        if let Ok(Ok((_started, (a, b)))) =
            tokio::time::timeout(duration + Duration::from_secs(15), caller).await
        {
            // Every completed cycle left one invite→received sample.
            run.cycles += a.len() as u64;
            run.invite_to_received.extend(a);
            run.accept_to_accepted.extend(b);
        }
    }
    run.elapsed = duration;
    run.cpu_seconds = cpu_seconds_all(pids) - cpu0;
    run.gen_cpu_seconds = own_cpu_seconds() - gen0;
    run.rss_kib = pids.iter().map(|p| rss_kib(*p)).sum();
    for callee in callees {
        callee.abort();
    }
    run
}
