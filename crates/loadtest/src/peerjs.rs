//! The peerjs-server driver: OFFER relayed one way, ANSWER back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::measure::{collect, cpu_seconds, own_cpu_seconds, Run};
use crate::ws::ws_config;

/// peerjs: a_i sends OFFER to b_i, b_i answers with ANSWER at once, again.
pub(crate) async fn drive_peerjs(port: u16, pairs: usize, duration: Duration, pid: u32) -> Run {
    let stop_at = Instant::now() + duration;
    let cpu0 = cpu_seconds(pid);
    let gen0 = own_cpu_seconds();
    let (mut callers, mut callees) = (vec![], vec![]);
    let open = |id: String| async move {
        let url = format!("ws://127.0.0.1:{port}/peerjs?key=peerjs&id={id}&token=t{id}");
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url.as_str(), ws_config(), true, None)
                .await
                .expect("peerjs connect");
        // The server greets with OPEN.
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if t.as_str().contains("OPEN") {
                    break;
                }
            }
        }
        ws
    };
    for i in 0..pairs {
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        let mut bob = open(b.clone()).await;
        let mut alice = open(a.clone()).await;
        let a2 = a.clone();
        let received: Arc<Mutex<HashMap<u64, (Instant, Instant)>>> = Default::default();
        let received2 = received.clone();
        callees.push(tokio::spawn(async move {
            while let Some(Ok(m)) = bob.next().await {
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if v["type"] == "OFFER" {
                    let seq = v["payload"]["seq"].as_u64().unwrap_or(0);
                    let now = Instant::now();
                    received2.lock().unwrap().insert(seq, (now, Instant::now()));
                    let answer = json!({"type": "ANSWER", "dst": a2, "payload": {"seq": seq}});
                    if bob.send(Message::text(answer.to_string())).await.is_err() {
                        break;
                    }
                }
            }
        }));
        callers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut samples = (vec![], vec![]);
            while Instant::now() < stop_at {
                let seq = n;
                n += 1;
                let sent = Instant::now();
                let offer = json!({"type": "OFFER", "dst": b, "payload": {"seq": seq}});
                if alice.send(Message::text(offer.to_string())).await.is_err() {
                    break;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), alice.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("ANSWER") => {
                            let now = Instant::now();
                            if let Some((r, answered)) = received.lock().unwrap().remove(&seq) {
                                samples.0.push(r.saturating_duration_since(sent));
                                samples.1.push(now.saturating_duration_since(answered));
                            }
                            break;
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => return (n, samples),
                    }
                }
            }
            (n, samples)
        }));
    }
    collect(callers, callees, duration, cpu0, gen0, &[pid]).await
}
