//! One run of calls through Kamailio from a sipp caller: CPU of the server
//! and of the load generator, memory, calls completed, INVITE in→out times.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{capture, Proc};
use super::results::{in_to_out, successful_calls};
use super::{Kamailio, Transport, BUFFER};
use crate::measure::{cpu_seconds, cpu_seconds_all, pss_kib, Run};
use crate::servers::free_port;

impl Kamailio {
    /// Drives calls through Kamailio over `transport`: at `rate` calls/s for
    /// `duration` (`-r`, `-m`), or, without a rate, as many as `limit`
    /// concurrent calls allow (`-l`) until `duration` is over. Server CPU is
    /// all of Kamailio's processes; the load generator's is both sipps' and
    /// the capture's (reported apart in `gen_cpu_seconds`).
    pub(crate) async fn drive(
        &self,
        transport: Transport,
        rate: Option<f64>,
        duration: Duration,
        limit: usize,
    ) -> Run {
        let Some(callee) = self.callees.iter().find(|c| c.transport == transport) else {
            return Run::default();
        };
        let user = &callee.user;
        let tag = format!(
            "{}-{}",
            transport.uri(),
            rate.map_or("sat".into(), |r| format!("{r:.0}"))
        );
        let stat = self.dir.join(format!("stat-{tag}.csv"));
        let pcap = self.dir.join(format!("invites-{tag}.pcap"));
        let count = rate.map(|r| (r * duration.as_secs_f64()).round() as u64);
        // The capture (fixed rates only: at saturation it would take CPU the
        // servers are measured without).
        let capture = match count {
            Some(n) => {
                // INVITEs to Kamailio and from it to the callee (over TCP
                // from a port of its own).
                let ports = format!("(port {} or port {})", self.port, callee.port);
                let filter = match transport {
                    Transport::Udp => format!("udp and {ports} and udp[8:4] = 0x494e5649"),
                    Transport::Tcp => {
                        format!("tcp and {ports} and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x494e5649")
                    }
                };
                capture(&filter, &pcap, 2 * n + 100)
            }
            None => None,
        };
        if capture.is_some() {
            // tcpdump needs a moment to attach.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let cap_pid = capture.as_ref().map(|c| c.0.id());
        let pids = self.pids();
        let cpu0 = cpu_seconds_all(&pids);
        let callee_pid = callee.sipp.0.id();
        let mut gen_pids = vec![callee_pid];
        let caller_port = free_port();
        let mut cmd = Command::new("sipp");
        cmd.arg(format!("127.0.0.1:{}", self.port))
            .arg("-sf")
            .arg(self.dir.join("caller.xml"))
            .args(["-i", "127.0.0.1", "-p", &caller_port.to_string()])
            .args(["-t", transport.sipp(), "-s", user])
            .args(["-buff_size", BUFFER, "-nostdin", "-max_socket", "4096"])
            .args(["-l", &limit.to_string()])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            .args([
                "-timeout",
                &format!("{}s", duration.as_secs() + 20),
                "-timeout_error",
            ])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match (rate, count) {
            (Some(r), Some(n)) => {
                cmd.args(["-r", &format!("{r:.0}"), "-rp", "1000"])
                    .args(["-m", &n.to_string()]);
            }
            _ => {
                cmd.args(["-r", "1000000", "-rp", "1000"]);
            }
        }
        let start = Instant::now();
        let gen0 = cpu_seconds(callee_pid) + cap_pid.map_or(0.0, cpu_seconds);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("could not start sipp: {e}");
                return Run::default();
            }
        };
        let caller_pid = child.id();
        gen_pids.push(caller_pid);
        let mut caller = Proc(child);
        // The caller's own CPU is read just before it ends (its /proc entry
        // goes when it is reaped).
        let mut caller_cpu = 0.0;
        let stop_at = start + duration;
        let hard_stop = stop_at + Duration::from_secs(20);
        let mut told = false;
        loop {
            if let Ok(Some(_)) = caller.0.try_wait() {
                break;
            }
            let now = Instant::now();
            if count.is_none() && now >= stop_at && !told {
                // sipp's SIGUSR1: place no new calls, end when the calls in flight end.
                caller_cpu = cpu_seconds(caller_pid);
                let _ = Command::new("kill")
                    .args(["-USR1", &caller_pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
                told = true;
            }
            if now >= hard_stop {
                break;
            }
            let c = cpu_seconds(caller_pid);
            if c.is_finite() {
                caller_cpu = c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = start.elapsed();
        let cpu = cpu_seconds_all(&pids) - cpu0;
        let gen = caller_cpu + cpu_seconds(callee_pid) + cap_pid.map_or(0.0, cpu_seconds) - gen0;
        let rss_kib = pids.iter().map(|p| pss_kib(*p)).sum();
        drop(caller);
        drop(capture);
        let cycles = successful_calls(&stat);
        let mut run = Run {
            cycles,
            cpu_seconds: cpu,
            gen_cpu_seconds: gen,
            rss_kib,
            elapsed,
            ..Run::default()
        };
        if count.is_some() {
            run.invite_to_received = in_to_out(&pcap, self.port);
        }
        run
    }
}
