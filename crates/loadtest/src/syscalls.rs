//! System calls and context switches of a server's processes over a stage
//! (`--syscalls`), counted by Linux perf (`perf stat`, Debian `linux-perf`).
//!
//! Why: both servers compared in `--stages` spend most of a cycle in the
//! kernel's loopback path, so how often each enters the kernel per completed
//! cycle (a read, a write, a wait for readiness, a wake-up of another thread)
//! is what sets the floor of its CPU per cycle. The counts are exact, not
//! sampled, and cost the counted process little (two counters per thread).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What `perf stat` counted over one stage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Counts {
    /// Entries into the kernel (`raw_syscalls:sys_enter`), every kind.
    pub(crate) syscalls: u64,
    /// Times a thread of the process was switched out (it waited or was
    /// preempted).
    pub(crate) context_switches: u64,
}

/// A running `perf stat` attached to a set of processes.
pub(crate) struct Counting {
    child: Child,
    /// Where perf writes its CSV when it is interrupted.
    out: PathBuf,
}

impl Counting {
    /// Starts counting for `pids` (every thread of each); `None`, said on
    /// stderr, when perf cannot be started.
    pub(crate) async fn start(pids: &[u32], tag: &str) -> Option<Counting> {
        let out = std::env::temp_dir().join(format!(
            "callinvite-load-{}-{}.perf.csv",
            std::process::id(),
            tag.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ));
        let pids = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let spawned = Command::new("perf")
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                "raw_syscalls:sys_enter,context-switches",
            ])
            .args(["-p", &pids, "-o"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => {
                // perf needs a moment to open a counter on every thread.
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some(Counting { child, out })
            }
            Err(e) => {
                eprintln!("--syscalls: cannot run perf ({e}): apt-get install -y linux-perf");
                None
            }
        }
    }

    /// Stops counting (SIGINT makes perf write its figures) and reads them.
    pub(crate) fn finish(mut self) -> Option<Counts> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out);
        let _ = std::fs::remove_file(&self.out);
        match text.ok().and_then(|t| parse(&t)) {
            Some(c) => Some(c),
            None => {
                eprintln!("--syscalls: perf wrote no counts (is perf_event_paranoid too strict for this user?)");
                None
            }
        }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        // Only if `finish` was not reached (it waits for the child).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `perf stat -x,` output: `value,unit,event,...` per counter, `#` comments.
fn parse(text: &str) -> Option<Counts> {
    let mut syscalls = None;
    let mut switches = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(value), Some(event)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        match event.trim() {
            "raw_syscalls:sys_enter" => syscalls = Some(value),
            "context-switches" => switches = Some(value),
            _ => {}
        }
    }
    Some(Counts {
        syscalls: syscalls?,
        context_switches: switches?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_stat_csv() {
        let text = "# started on Mon Nov 30 19:00:00 2026\n\n\
                    1234567,,raw_syscalls:sys_enter,6004512345,100.00,,\n\
                    45678,,context-switches,6004512345,100.00,,\n";
        assert_eq!(
            parse(text),
            Some(Counts {
                syscalls: 1_234_567,
                context_switches: 45_678
            })
        );
    }

    #[test]
    fn a_counter_perf_could_not_read_is_no_figure() {
        let text = "<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n\
                    45678,,context-switches,6004512345,100.00,,\n";
        assert_eq!(parse(text), None);
    }
}
