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
//! response times step by milliseconds.//!
//! Layout: this file starts the peer (Kamailio, a registered sipp callee per
//! transport) and owns it; `config.rs` writes Kamailio's configuration and
//! the sipp scenarios; `process.rs` the processes it starts (killed with
//! their children when dropped) and the packet capture; `drive.rs` one run
//! of calls from a sipp caller, measured; `results.rs` reads sipp's
//! statistics and the capture's in→out times.

mod config;
mod drive;
mod process;
mod results;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::servers::{free_port, server_command, wait_port};
use config::{config, write, BUFFER, CALLEE, CALLER};
pub(crate) use process::capture;
use process::{descendants, Proc};

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
        let child = server_command("kamailio")
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
