//! What a run left behind, read back: sipp's count of successful calls and
//! Kamailio's INVITE in→out times from the packet capture.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `SuccessfulCall(C)` of the last line of sipp's statistics file (0 if none).
pub(super) fn successful_calls(stat: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(stat) else {
        return 0;
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return 0 };
    let Some(col) = header.split(';').position(|h| h == "SuccessfulCall(C)") else {
        return 0;
    };
    text.lines()
        .last()
        .and_then(|l| l.split(';').nth(col))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Kamailio's INVITE in→out times from the capture: for each Call-ID, the
/// first INVITE sent to its port and the first it sent.
pub(super) fn in_to_out(pcap: &Path, port: u16) -> Vec<Duration> {
    let Ok(out) = Command::new("tcpdump")
        .args(["-r"])
        .arg(pcap)
        .args(["-nn", "-tt", "-A"])
        .stderr(Stdio::null())
        .output()
    else {
        return vec![];
    };
    let to_us = format!("> 127.0.0.1.{port}:");
    let mut ins: HashMap<String, f64> = HashMap::new();
    let mut outs: HashMap<String, f64> = HashMap::new();
    // The packet being read: (time, sent by Kamailio).
    let mut current: Option<(f64, bool)> = None;
    for line in out.stdout.as_slice().lines().map_while(Result::ok) {
        if let Some((t, rest)) = line.split_once(" IP ") {
            current = t.parse::<f64>().ok().map(|t| (t, !rest.contains(&to_us)));
            continue;
        }
        let Some(id) = line
            .find("Call-ID: ")
            .map(|i| line[i + 9..].trim_end_matches(['.', '\r']).to_owned())
        else {
            continue;
        };
        if let Some((t, sent)) = current.take() {
            let map = if sent { &mut outs } else { &mut ins };
            map.entry(id).or_insert(t);
        }
    }
    ins.iter()
        .filter_map(|(id, t_in)| {
            let t_out = outs.get(id)?;
            (t_out >= t_in).then(|| Duration::from_secs_f64(t_out - t_in))
        })
        .collect()
}
