//! The Kamailio + sipp peer: the same job as the invitation cycle, done by the
//! most widely deployed open-source SIP proxy (see the Kamailio anchor in
//! docs/PERFORMANCE.md). Kamailio runs stateful (tm's `t_relay`), record-routes
//! so ACK and BYE pass it, and routes by `lookup("location")` after the callee
//! REGISTERs (usrloc in memory): per call it reads 6 messages and sends 7.
//! It runs with the tlsf allocator (`-x tlsf -X tlsf`), 4 GB of shared memory
//! (tm keeps every transaction 5 s after its final reply), 4 MB socket buffers,
//! 2 UDP and 2 TCP workers, on 127.0.0.1. sipp is the caller (INVITE, ACK, BYE
//! following Record-Route) and the callee (180, 200, 200 for BYE).
//!
//! Latency is Kamailio's own in→out: the time between an INVITE reaching its
//! port and the INVITE leaving it, from a packet capture (`tcpdump` on `lo`,
//! filtered in the kernel to packets that begin with `INVITE`); sipp's own
//! response times step by milliseconds.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::measure::{cpu_seconds, cpu_seconds_all, pss_kib, Run};
use crate::servers::{free_port, wait_port};

/// What is missing to run the Kamailio peer, and how to get it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("`{0}` is not installed: apt-get install -y kamailio sip-tester tcpdump")]
    Missing(&'static str),
    #[error("could not write the Kamailio/sipp files into {dir}: {source}")]
    Files {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("could not start {what}: {source}")]
    Start {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("kamailio did not listen on 127.0.0.1:{0} (its log is above)")]
    NoListen(u16),
    #[error("the callee's REGISTER got no 200 from kamailio: {0}")]
    Register(String),
}

/// Kamailio's modules directory on Debian.
const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/";

fn installed(tool: &'static str) -> Result<(), PeerError> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file();
    if found {
        Ok(())
    } else {
        Err(PeerError::Missing(tool))
    }
}

/// A process killed (with everything it started) when dropped.
pub(crate) struct Proc(Child);

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
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
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

/// Kamailio on 127.0.0.1 (UDP and TCP on one port) and a registered sipp
/// callee per transport.
pub(crate) struct Kamailio {
    dir: PathBuf,
    port: u16,
    main: Proc,
    callees: Vec<Callee>,
}

/// A registered sipp callee.
struct Callee {
    transport: Transport,
    user: String,
    port: u16,
    sipp: Proc,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
    fn sipp(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
    fn uri(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

const BUFFER: &str = "4194304";

fn config(port: u16) -> String {
    format!(
        r#"#!KAMAILIO
debug=0
log_stderror=yes
memdbg=5
memlog=5
children=2
tcp_children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
alias="127.0.0.1:{port}"
tcp_connection_lifetime=3605
tcp_max_connections=4096
tcp_rd_buf_size=65536
udp4_raw=0
dns=no
rev_dns=no
use_dns_cache=no

mpath="{MODULES}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "pv.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

modparam("usrloc", "db_mode", 0)
modparam("rr", "enable_full_lr", 0)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    t_check_trans();
    if (is_method("REGISTER")) {{
        save("location");
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
    }}
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    t_relay();
}}
"#
    )
}

/// The caller: INVITE, 200 (following its Record-Route), ACK, BYE, 200; no pause.
const CALLER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="callinvite-load caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Call-ID: [call_id]
      From: <sip:alice@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      CSeq: 1 INVITE
      Contact: <sip:alice@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Call-ID: [call_id]
      From: <sip:alice@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      CSeq: 1 ACK
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Call-ID: [call_id]
      From: <sip:alice@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      CSeq: 2 BYE
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"#;

/// The callee: INVITE → 180, 200 (echoing Record-Route), ACK, BYE → 200.
const CALLEE: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="callinvite-load callee">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" optional="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, PeerError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| PeerError::Files {
        dir: dir.to_owned(),
        source,
    })?;
    Ok(path)
}

impl Kamailio {
    /// Writes the files into a fresh directory under the system's temp dir,
    /// starts Kamailio in the foreground (not as a service) and a registered
    /// sipp callee per transport.
    pub(crate) async fn start() -> Result<Kamailio, PeerError> {
        for tool in ["kamailio", "sipp", "tcpdump"] {
            installed(tool)?;
        }
        let dir = std::env::temp_dir().join(format!("callinvite-load-sip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| PeerError::Files {
            dir: dir.clone(),
            source,
        })?;
        let port = free_port();
        let cfg = write(&dir, "kamailio.cfg", &config(port))?;
        write(&dir, "caller.xml", CALLER)?;
        write(&dir, "callee.xml", CALLEE)?;
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&cfg)
            // Foreground, log to stderr, no pid file or run dir of the service.
            .args(["-DD", "-E", "-Y"])
            .arg(&dir)
            .args(["-x", "tlsf", "-X", "tlsf", "-m", "4096", "-M", "64"])
            .args(["-b", BUFFER])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| PeerError::Start {
                what: "kamailio",
                source,
            })?;
        let main = Proc(child);
        if tokio::time::timeout(Duration::from_secs(8), wait_port(port))
            .await
            .is_err()
        {
            return Err(PeerError::NoListen(port));
        }
        let mut k = Kamailio {
            dir,
            port,
            main,
            callees: vec![],
        };
        for t in [Transport::Udp, Transport::Tcp] {
            let user = format!("bob{}", t.uri());
            let uas_port = free_port();
            let child = Command::new("sipp")
                .arg("-sf")
                .arg(k.dir.join("callee.xml"))
                .args(["-i", "127.0.0.1", "-p", &uas_port.to_string()])
                .args(["-t", t.sipp(), "-s", &user])
                .args(["-buff_size", BUFFER, "-nostdin", "-max_socket", "4096"])
                .args(["-timeout", "600s", "-trace_err"])
                .current_dir(&k.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|source| PeerError::Start {
                    what: "sipp (callee)",
                    source,
                })?;
            k.callees.push(Callee {
                transport: t,
                user: user.clone(),
                port: uas_port,
                sipp: Proc(child),
            });
            register(port, &user, uas_port, t)?;
        }
        Ok(k)
    }

    /// Kamailio's main process and its workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        descendants(self.main.0.id())
    }

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

impl Kamailio {
    /// The directory of its files (captures go there too).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.callees.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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

/// REGISTERs `user` at Kamailio over UDP with the sipp callee's address as
/// its contact, and waits for the 200.
fn register(port: u16, user: &str, contact_port: u16, t: Transport) -> Result<(), PeerError> {
    let sock =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| PeerError::Register(e.to_string()))?;
    let me = sock
        .local_addr()
        .map_err(|e| PeerError::Register(e.to_string()))?;
    let msg = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-reg-{user}\r\n\
         From: <sip:{user}@127.0.0.1:{port}>;tag=reg{user}\r\n\
         To: <sip:{user}@127.0.0.1:{port}>\r\n\
         Call-ID: reg-{user}@127.0.0.1\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@127.0.0.1:{contact_port};transport={}>\r\n\
         Expires: 3600\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        t.uri()
    );
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| PeerError::Register(e.to_string()))?;
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        sock.send_to(msg.as_bytes(), ("127.0.0.1", port))
            .map_err(|e| PeerError::Register(e.to_string()))?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let reply = String::from_utf8_lossy(&buf[..n]);
            if reply.starts_with("SIP/2.0 200") {
                return Ok(());
            }
            return Err(PeerError::Register(
                reply.lines().next().unwrap_or("").to_owned(),
            ));
        }
    }
    Err(PeerError::Register("no answer in 6 s".into()))
}

/// `SuccessfulCall(C)` of the last line of sipp's statistics file (0 if none).
fn successful_calls(stat: &Path) -> u64 {
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
fn in_to_out(pcap: &Path, port: u16) -> Vec<Duration> {
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
