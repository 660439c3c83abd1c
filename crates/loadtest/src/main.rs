//! `callinvite-load`: a benchmark, not a test. It starts `callinvite-server`
//! (and, with `--peerjs`, peerjs-server from npm) on 127.0.0.1, drives
//! invitation cycles between P concurrent caller/callee pairs —
//! send → callee received → accept → caller accepted → hang-up — and the
//! equivalent OFFER → ANSWER relay through peerjs-server, then prints cycles/s,
//! latency percentiles, server CPU and RSS for both, and the ratios. With
//! `--idle N` it also measures the server's memory per idle connection. With
//! `--rate R` the pairs start R cycles per second in all instead of running
//! back to back, and `--rss-every` prints the server's RSS over the run. With
//! `--cluster` it also runs the cycle across two server nodes on a private
//! redis-server (callers on one node, callees on the other).
//! With `--stages 2000,8000,sat` it runs the comparison of #14 instead: every
//! server at each fixed rate and in the closed loop, server CPU per cycle,
//! the load generator's own CPU, latency percentiles and memory, and with
//! `--kamailio` Kamailio + sipp over UDP and TCP as the peer (see
//! `kamailio/`), ending with the ratios.
//! Everything stays on loopback; every loop is bounded in time and count.

mod args;
mod callinvite;
mod idle;
mod kamailio;
mod measure;
mod peerjs;
mod report;
mod servers;
mod stages;
mod syscalls;
mod ws;

use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;

use args::Args;
use callinvite::{drive_callinvite, drive_callinvite_raw, Pace};
use idle::{idle_memory, idle_memory_cluster, open_idle};
use measure::pct;
use peerjs::drive_peerjs;
use report::print_row;
use servers::{
    ensure_peerjs, free_port, start_callinvite, start_node, start_redis, wait_port, Server,
};

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(port) = args.idle_worker {
        // A worker: open the connections, say how many, hold them until stdin closes.
        let conns = open_idle(port, args.idle, &args.idle_prefix).await;
        println!("ready {}", conns.alive());
        // A thread reads stdin: each line asks how many are open; EOF ends.
        let (tx, mut asks) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                if line.is_err() || tx.send(()).is_err() {
                    break;
                }
            }
        });
        while asks.recv().await.is_some() {
            println!("alive {}", conns.alive());
        }
        drop(conns);
        return;
    }
    if let Some(cpus) = &args.server_cpus {
        let _ = servers::SERVER_CPUS.set(cpus.clone());
    }
    if !args.stages.is_empty() {
        stages::run(&args).await;
        return;
    }
    println!(
        "{} pairs, {:?} per server, on {} cores",
        args.pairs,
        args.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "(callinvite driven by {}; peerjs by raw WebSocket frames)",
        if args.client_library {
            "the client library"
        } else {
            "raw WebSocket frames"
        }
    );
    if let Some(rate) = args.rate {
        println!("(fixed rate: {rate} cycles/s offered in all)");
    }
    println!("\n| server | cycles/s | invite→received p50/p99/p999 ms | accept→accepted p50/p99/p999 ms | server CPU | server RSS |\n|---|---|---|---|---|---|");
    let (server, port) = start_callinvite(&args).await;
    let pid = server.child.id();
    let drive = |caller: u16, callee: u16, pids: Vec<u32>, metrics: Vec<u16>| {
        let (pairs, duration, library) = (args.pairs, args.duration, args.client_library);
        let pace = Pace {
            rate: args.rate,
            rss_every: args.rss_every,
            metrics,
            users: String::new(),
        };
        async move {
            if library {
                drive_callinvite(caller, callee, pairs, duration, &pids).await
            } else {
                drive_callinvite_raw(caller, callee, pairs, duration, &pids, pace).await
            }
        }
    };
    let mut ci = drive(port, port, vec![pid], server.metrics.into_iter().collect()).await;
    print_row("callinvite-server", &mut ci);
    if args.only_single {
        return;
    }
    if args.cluster {
        let (redis, url) = start_redis().await;
        let (a, port_a) = start_node(&args, Some(&url)).await;
        let (b, port_b) = start_node(&args, Some(&url)).await;
        // Let the nodes hear of each other.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pids = [a.child.id(), b.child.id(), redis.child.id()];
        let metrics = a.metrics.into_iter().chain(b.metrics).collect();
        let mut cl = drive(port_a, port_b, pids.to_vec(), metrics).await;
        print_row("callinvite, 2 nodes + Redis (CPU, RSS: all three)", &mut cl);
        let ratio = cl.cycles as f64 / ci.cycles.max(1) as f64;
        println!("\n2 nodes / 1 node throughput: {ratio:.2}×\n");
        drop((a, b, redis));
    }
    if args.idle > 0 && args.idle_nodes > 1 {
        drop(server);
        idle_memory_cluster(&args).await;
    } else if args.idle > 0 {
        drop(server);
        let (server, port) = start_callinvite(&args).await;
        idle_memory(port, server.child.id(), args.idle).await;
        drop(server);
    }
    if args.peerjs {
        let script = ensure_peerjs(&args.npm_dir);
        let port = free_port();
        let child = Command::new("node")
            .arg(&script)
            .args(["--port", &port.to_string(), "--key", "peerjs"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start peerjs-server (is node installed?)");
        let server = Server {
            child,
            metrics: None,
        };
        wait_port(port).await;
        let mut pj = drive_peerjs(port, args.pairs, args.duration, server.child.id()).await;
        print_row("peerjs-server", &mut pj);
        let ratio = ci.cycles as f64 / pj.cycles.max(1) as f64;
        let p99 = pct(&mut ci.invite_to_received, 0.99) / pct(&mut pj.invite_to_received, 0.99);
        println!("\nthroughput ratio callinvite/peerjs: {ratio:.2}×; invite→received p99 ratio: {p99:.2} (below 1 is better)");
    }
}
