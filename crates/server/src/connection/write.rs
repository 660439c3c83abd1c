//! The writer of a connection: the only place that writes frames.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::time::{interval, timeout, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hub::Outbound;

use super::CLOSE_POLICY;

/// The writer: the only place that writes frames, so replies keep their
/// order. It drains the connection's queue and sends heartbeat pings; a
/// write that takes longer than the heartbeat means the peer stopped reading.
pub(super) fn write<S>(
    mut sink: futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<S>, Message>,
    mut out_rx: crate::hub::OutRx,
    writer_kill: CancellationToken,
    config: &Config,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ping_every = (config.heartbeat / 3).max(Duration::from_millis(100));
    let write_timeout = config.heartbeat;
    async move {
        let mut ping = interval(ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            let mut frame = tokio::select! {
                next = out_rx.recv() => match next {
                    Some(Outbound::Text(text)) => Message::text(text),
                    Some(Outbound::Close(code, reason)) => {
                        let _ = timeout(write_timeout, sink.send(close_frame(code, reason))).await;
                        break;
                    }
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Default::default()),
                // Too slow: the queue is full, so the close frame goes straight to the socket.
                _ = writer_kill.cancelled() => {
                    let _ = timeout(write_timeout, sink.send(close_frame(CLOSE_POLICY, "too slow: outbound queue full"))).await;
                    break;
                }
            };
            // Everything already queued (up to 64 frames) goes out with one
            // flush: each is buffered as the next one is taken, the last sent.
            let mut close = None;
            if matches!(frame, Message::Text(_)) {
                for _ in 1..64 {
                    let next = match out_rx.try_recv() {
                        Ok(Outbound::Text(t)) => Message::text(t),
                        Ok(Outbound::Close(code, reason)) => {
                            close = Some((code, reason));
                            break;
                        }
                        Err(_) => break,
                    };
                    let buffered = std::mem::replace(&mut frame, next);
                    if !matches!(
                        timeout(write_timeout, sink.feed(buffered)).await,
                        Ok(Ok(()))
                    ) {
                        return;
                    }
                }
            }
            if let Some((code, reason)) = close {
                let _ = timeout(write_timeout, sink.feed(frame)).await;
                let _ = timeout(write_timeout, sink.send(close_frame(code, reason))).await;
                break;
            }
            match timeout(write_timeout, sink.send(frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    writer_kill.cancel();
                    break;
                }
            }
        }
    }
}
fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}
