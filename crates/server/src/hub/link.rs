//! How the hub reaches a connection: the connection's outbound queue, the
//! handle a connection gives the hub when it logs in or resumes
//! ([`ConnHandle`]), and a session's [`Link`] to the connection it is
//! attached to, here or on another node.

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use callinvite_protocol::limits::{CLOSE_GOING_AWAY, CLOSE_NORMAL};

use crate::cluster::{Bus, Envelope, Target};

/// Close code for a connection whose session was resumed on another one.
pub(super) const CLOSE_TAKEN_OVER: u16 = 4001;
/// Close code 1008: policy violation (here: too slow to keep up).
pub(super) const CLOSE_POLICY: u16 = 1008;

/// The reason text sent with a close code.
pub(crate) fn close_reason(code: u16) -> &'static str {
    match code {
        CLOSE_NORMAL => "logged out",
        CLOSE_GOING_AWAY => "server shutting down",
        CLOSE_TAKEN_OVER => "session resumed on another connection",
        _ => "too slow: outbound queue full",
    }
}

/// What the hub asks a connection's writer to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// The sending side of a connection's outbound queue (bounded: a full queue
/// means a client too slow to keep up). See [`crate::outq`] for why it is
/// not tokio's channel.
#[derive(Clone, Debug)]
pub(crate) struct OutTx(crate::outq::Sender<Outbound>);

/// The writer's side of the queue.
pub(crate) struct OutRx(crate::outq::Receiver<Outbound>);

/// A connection's outbound queue holding at most `capacity` messages.
pub(crate) fn out_queue(capacity: usize) -> (OutTx, OutRx) {
    let (tx, rx) = crate::outq::queue(capacity);
    (OutTx(tx), OutRx(rx))
}

impl OutTx {
    pub(crate) fn try_send(
        &self,
        frame: Outbound,
    ) -> Result<(), mpsc::error::TrySendError<Outbound>> {
        self.0.try_send(frame)
    }

    /// Waits for room (the connection's own replies, which may wait).
    pub(crate) fn send(&self, frame: Outbound) -> Sending<'_> {
        match self.0.try_send(frame) {
            Ok(()) => Sending::Done(true),
            Err(mpsc::error::TrySendError::Closed(_)) => Sending::Done(false),
            Err(mpsc::error::TrySendError::Full(frame)) => {
                Sending::Waiting(Box::pin(self.0.send(frame)))
            }
        }
    }
}

impl OutRx {
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        self.0.recv().await
    }

    pub(crate) fn try_recv(&mut self) -> Result<Outbound, mpsc::error::TryRecvError> {
        self.0.try_recv()
    }
}

/// A send on a bounded channel that takes no room in the future awaiting it
/// unless it must wait: done at once when the channel has room (almost
/// always), else a boxed wait. A connection's task holds whatever its
/// awaits may hold for as long as it lives, so its sends are kept small.
pub(crate) enum Sending<'a> {
    /// Sent (true), or the receiver is gone (false).
    Done(bool),
    Waiting(std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>),
}

impl std::future::Future for Sending<'_> {
    type Output = bool;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<bool> {
        match self.get_mut() {
            Sending::Done(sent) => std::task::Poll::Ready(*sent),
            Sending::Waiting(wait) => wait.as_mut().poll(cx),
        }
    }
}

/// Sends `value` on `tx`: see [`Sending`].
pub(crate) fn sending<T: Send + 'static>(tx: &mpsc::Sender<T>, value: T) -> Sending<'_> {
    use mpsc::error::TrySendError;
    match tx.try_send(value) {
        Ok(()) => Sending::Done(true),
        Err(TrySendError::Closed(_)) => Sending::Done(false),
        Err(TrySendError::Full(value)) => {
            Sending::Waiting(Box::pin(async move { tx.send(value).await.is_ok() }))
        }
    }
}

/// A connection on this node as the hub holds it: its number, its writer's
/// queue, and the token that makes it close itself.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    /// The connection's number on this node (so a stale connection's
    /// requests are ignored after its session was resumed elsewhere).
    pub(crate) id: u64,
    /// Its writer's queue.
    pub(crate) out: OutTx,
    /// Cancelled to make the connection close itself (too slow).
    pub(crate) kill: CancellationToken,
}

impl ConnHandle {
    /// Queues one unnumbered message (about the connection, not the session).
    pub(crate) fn put_text(&self, text: impl Into<Utf8Bytes>) {
        let _ = self.out.try_send(Outbound::Text(text.into()));
    }
}

/// The connection a session is attached to.
pub(super) struct Link {
    /// The node the connection is on, and its number there (so a stale
    /// connection's requests are ignored after a resume).
    pub(super) node: u32,
    pub(super) conn: u64,
    pub(super) via: Via,
}

/// How to reach a connection.
pub(super) enum Via {
    /// On this node: its queue and kill switch (the handle's number is
    /// [`Link::conn`]).
    Local { out: OutTx, kill: CancellationToken },
    /// On another node (the session was resumed there): frames travel as
    /// [`Envelope::ToConn`].
    Remote,
}

impl Link {
    /// A connection on this node (`node` is this node's number).
    pub(super) fn local(node: u32, conn: ConnHandle) -> Link {
        Link {
            node,
            conn: conn.id,
            via: Via::Local {
                out: conn.out,
                kill: conn.kill,
            },
        }
    }

    /// Queues a frame for the link's connection (here, or through `bus` on
    /// another node); false if its queue is full.
    pub(super) fn put(&self, bus: &dyn Bus, frame: Outbound) -> bool {
        match &self.via {
            Via::Local { out, .. } => {
                !matches!(out.try_send(frame), Err(mpsc::error::TrySendError::Full(_)))
            }
            Via::Remote => {
                let frame = match frame {
                    Outbound::Text(t) => crate::cluster::Frame::Text(t.as_str().to_owned()),
                    Outbound::Close(code, _) => crate::cluster::Frame::Close(code),
                };
                bus.publish(
                    Target::Node(self.node),
                    &Envelope::ToConn {
                        conn: self.conn,
                        frame,
                    },
                );
                true
            }
        }
    }

    /// Makes the link's connection close itself as too slow.
    pub(super) fn kill(&self, bus: &dyn Bus) {
        match &self.via {
            Via::Local { kill, .. } => kill.cancel(),
            Via::Remote => {
                self.put(bus, Outbound::Close(CLOSE_POLICY, ""));
            }
        }
    }
}
