//! The processes the Kamailio peer starts, and the packet capture that times
//! an INVITE through a server (the stages run it for callinvite-server too).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process killed (with everything it started) when dropped.
pub(crate) struct Proc(pub(super) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // Kamailio's workers are its children, not ours: note them first.
        let pid = self.0.id();
        let family = descendants(pid);
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        for p in family.into_iter().skip(1) {
            if std::path::Path::new(&format!("/proc/{p}")).exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `pid` and every process below it (Linux /proc).
pub(super) fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = vec![];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let me = all[i];
        all.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == me)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    all
}

/// A packet capture on `lo` into `pcap` (at most `count` packets), or
/// None if tcpdump cannot start. While it runs, every packet sent on `lo`
/// also passes its filter (in the kernel, charged to the sender): the
/// stages run the same capture for callinvite-server, so both pay it.
pub(crate) fn capture(filter: &str, pcap: &Path, count: u64) -> Option<Proc> {
    Command::new("tcpdump")
        .args([
            "-i", "lo", "-nn", "-Z", "root", "-s", "700", "-B", "16384", "-U", "-w",
        ])
        .arg(pcap)
        .args(["-c", &count.to_string()])
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .map(Proc)
}
