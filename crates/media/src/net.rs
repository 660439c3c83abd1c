//! The engine's UDP sockets: which local addresses to use, binding one
//! socket per address (each becomes an ICE host candidate), and reading
//! from all of them in one task.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::task::Poll;

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use crate::MediaError;

/// The addresses to gather host candidates on: `bind_ip` if given, else
/// every non-loopback interface address that ICE can use (no link-local,
/// which needs a scope and is rejected by str0m), else 127.0.0.1.
pub fn local_ips(bind_ip: Option<IpAddr>) -> Vec<IpAddr> {
    if let Some(ip) = bind_ip {
        return vec![ip];
    }
    let mut ips: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs
            .into_iter()
            .filter(|i| !i.is_loopback() && !i.is_link_local() && !is_down(&i.oper_status))
            .map(|i| i.ip())
            .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
            .collect(),
        Err(e) => {
            tracing::warn!("cannot list network interfaces: {e}");
            Vec::new()
        }
    };
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ips
}

/// Down for sure (an unknown status counts as usable).
fn is_down(s: &if_addrs::IfOperStatus) -> bool {
    use if_addrs::IfOperStatus::*;
    matches!(s, Down | NotPresent | LowerLayerDown)
}

/// A bound socket and its address (the host candidate's address).
pub struct Socket {
    /// The tokio socket.
    pub socket: UdpSocket,
    /// Its local address, the `destination` of what it receives.
    pub addr: SocketAddr,
}

/// Binds one UDP socket on an ephemeral port per address. An address that
/// cannot be bound is skipped with a warning; none at all is an error.
/// Must run inside a tokio runtime.
pub fn bind_all(ips: &[IpAddr]) -> Result<Vec<Socket>, MediaError> {
    let mut sockets = Vec::new();
    let mut last_err = None;
    for &ip in ips {
        match bind(ip) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                tracing::warn!("cannot bind a UDP socket on {ip}: {e}");
                last_err = Some(format!("{ip}: {e}"));
            }
        }
    }
    if sockets.is_empty() {
        return Err(MediaError::Socket(
            last_err.unwrap_or_else(|| "no local address to bind".into()),
        ));
    }
    Ok(sockets)
}

fn bind(ip: IpAddr) -> io::Result<Socket> {
    let std_socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
    std_socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(std_socket)?;
    let addr = socket.local_addr()?;
    Ok(Socket { socket, addr })
}

/// A datagram read by [`recv_any`]: which socket, from whom, how long.
pub struct Datagram {
    /// Index into the socket list.
    pub socket: usize,
    /// The sender.
    pub from: SocketAddr,
    /// Bytes at the start of the buffer.
    pub len: usize,
}

/// Waits for a datagram on any of `sockets`, starting the scan at `start`
/// (rotate it so that one busy socket cannot starve the others).
pub async fn recv_any(
    sockets: &[Socket],
    buf: &mut [u8],
    start: usize,
) -> (usize, io::Result<Datagram>) {
    poll_fn(|cx| {
        let n = sockets.len();
        for k in 0..n {
            let i = (start + k) % n;
            let mut rb = ReadBuf::new(buf);
            if let Poll::Ready(r) = sockets[i].socket.poll_recv_from(cx, &mut rb) {
                let len = rb.filled().len();
                return Poll::Ready((
                    i,
                    r.map(|from| Datagram {
                        socket: i,
                        from,
                        len,
                    }),
                ));
            }
        }
        Poll::Pending
    })
    .await
}
