//! The comparison run of #14 (`--stages`): every server does the same
//! stages in turn (fixed rates, then the closed loop), interleaved so that
//! the noise of a shared machine falls on all of them alike, and the run
//! ends with the ratios against Kamailio.

use std::path::PathBuf;

use crate::args::Args;
use crate::callinvite::{drive_callinvite_raw, Pace};
use crate::kamailio::{capture, Kamailio, Transport};
use crate::measure::{pct, Run};
use crate::servers::{server_bin, start_node_bin, Server};
use crate::syscalls::{Counting, Counts};

/// One stage: a fixed rate (cycles/s offered in all) or the closed loop.
#[derive(Clone, Copy)]
enum Stage {
    Rate(f64),
    Saturated,
}

impl Stage {
    fn parse(s: &str) -> Option<Stage> {
        match s.trim() {
            "sat" | "saturated" => Some(Stage::Saturated),
            r => r.parse().ok().filter(|r: &f64| *r > 0.0).map(Stage::Rate),
        }
    }
    fn rate(self) -> Option<f64> {
        match self {
            Stage::Rate(r) => Some(r),
            Stage::Saturated => None,
        }
    }
    fn name(self) -> String {
        match self {
            Stage::Rate(r) => format!("{r:.0}/s"),
            Stage::Saturated => "saturated".into(),
        }
    }
}

/// A row's figures, kept for the ratios.
struct Figures {
    server: String,
    stage: usize,
    cycles_per_second: f64,
    cpu_us: f64,
    p99: f64,
    p999: f64,
}

/// The CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status).
fn cpus_allowed() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

/// The load average (1, 5, 15 min) of the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One table row; `syscalls` adds the kernel-entry column of `--syscalls`.
fn row(
    stage: Stage,
    si: usize,
    server: &str,
    latency: &str,
    run: &mut Run,
    syscalls: Option<Counts>,
) -> Figures {
    let secs = run.elapsed.as_secs_f64().max(1e-9);
    let cycles = run.cycles.max(1) as f64;
    let cps = run.cycles as f64 / secs;
    let cpu_us = run.cpu_seconds * 1e6 / cycles;
    let gen_us = run.gen_cpu_seconds * 1e6 / cycles;
    let kernel = match syscalls {
        Some(c) => format!(
            " {:.1} / {:.1} |",
            c.syscalls as f64 / cycles,
            c.context_switches as f64 / cycles
        ),
        None => String::new(),
    };
    let (p50, p99, p999) = (
        pct(&mut run.invite_to_received, 0.5),
        pct(&mut run.invite_to_received, 0.99),
        pct(&mut run.invite_to_received, 0.999),
    );
    println!(
        "| {} | {server} | {cps:.0} | {cpu_us:.1} ({:.0} %) | {gen_us:.1} ({:.0} %) | {p50:.2} / {p99:.2} / {p999:.2} ({latency}, {} samples) | {} |{kernel}",
        stage.name(),
        run.cpu_seconds / secs * 100.0,
        run.gen_cpu_seconds / secs * 100.0,
        run.invite_to_received.len(),
        run.rss_kib / 1024,
    );
    Figures {
        server: server.to_owned(),
        stage: si,
        cycles_per_second: cps,
        cpu_us,
        p99,
        p999,
    }
}

/// Runs `--stages` for callinvite-server (and each `--compare-bin`), and
/// Kamailio over UDP and TCP with `--kamailio`.
pub(crate) async fn run(args: &Args) {
    let stages: Vec<Stage> = args.stages.iter().filter_map(|s| Stage::parse(s)).collect();
    if stages.len() != args.stages.len() {
        eprintln!("--stages takes rates (cycles/s) and `sat`, comma-separated");
        return;
    }
    let mut bins: Vec<(String, PathBuf)> = vec![("callinvite-server".into(), server_bin(args))];
    for (k, bin) in args.compare_bin.iter().enumerate() {
        bins.push((
            format!("callinvite-server #{} ({})", k + 2, bin.display()),
            bin.clone(),
        ));
    }
    let mut ours: Vec<(String, Server, u16)> = vec![];
    for (name, bin) in &bins {
        let (server, port) = start_node_bin(bin, None).await;
        ours.push((name.clone(), server, port));
    }
    let kamailio = if args.kamailio {
        match Kamailio::start().await {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("Kamailio peer left out: {e}");
                None
            }
        }
    } else {
        None
    };
    println!(
        "{} pairs (sipp: {} calls in flight at most), {:?} per stage, on {} cores; load average at start {}",
        args.pairs,
        args.pairs,
        args.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!("Server CPU: utime+stime of all its processes (/proc) over the stage, per completed cycle, and as % of one core. Load generator: this process (callinvite), or both sipps + the packet capture (Kamailio).");
    println!("Latency: callinvite invite→received measured in the load process (client send → callee's receipt, through the server); Kamailio INVITE in→out at its port (packet capture; fixed rates only).");
    println!("Memory: callinvite RSS; Kamailio PSS of all its processes (one shared pool), at the end of the stage.\n");
    if let Some(cpus) = &args.server_cpus {
        println!(
            "Servers on CPU(s) {cpus} (taskset); the load tool, sipp and tcpdump on CPU(s) {}.",
            cpus_allowed()
        );
    }
    if args.syscalls {
        println!("Syscalls: the server's entries into the kernel and its threads' context switches (perf stat, every thread of every process), per completed cycle.\n");
    }
    let (kernel_head, kernel_rule) = match args.syscalls {
        true => (" syscalls / context switches per cycle |", "---|"),
        false => ("", ""),
    };
    println!("| stage | server | cycles/s | server CPU µs/cycle (% core) | load generator CPU µs/cycle (% core) | latency p50 / p99 / p999 ms | memory MiB |{kernel_head}\n|---|---|---|---|---|---|---|{kernel_rule}");
    let mut figures = vec![];
    for (si, stage) in stages.iter().enumerate() {
        for (name, server, port) in &ours {
            let pace = Pace {
                rate: stage.rate(),
                rss_every: args.rss_every,
                metrics: server.metrics.into_iter().collect(),
                users: format!("s{si}-"),
            };
            let pid = server.child.id();
            // The same capture as Kamailio's at fixed rates (see `capture`);
            // its filter matches none of these packets.
            let _capture = match (&kamailio, stage.rate()) {
                (Some(k), Some(r)) => {
                    let n = (r * args.duration.as_secs_f64()) as u64;
                    let filter = format!(
                        "tcp port {port} and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x494e5649"
                    );
                    let c = capture(&filter, &k.dir().join("callinvite.pcap"), 2 * n + 100);
                    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                    c
                }
                _ => None,
            };
            let counting = match args.syscalls {
                true => Counting::start(&[pid], &format!("{name}-{si}")).await,
                false => None,
            };
            let mut run =
                drive_callinvite_raw(*port, *port, args.pairs, args.duration, &[pid], pace).await;
            let counts = counting.and_then(Counting::finish);
            figures.push(row(*stage, si, name, "invite→received", &mut run, counts));
        }
        if let Some(k) = &kamailio {
            for t in [Transport::Udp, Transport::Tcp] {
                let name = format!("Kamailio {}", t.name());
                let counting = match args.syscalls {
                    true => Counting::start(&k.pids(), &format!("{name}-{si}")).await,
                    false => None,
                };
                let mut run = k.drive(t, stage.rate(), args.duration, args.pairs).await;
                let counts = counting.and_then(Counting::finish);
                figures.push(row(*stage, si, &name, "INVITE in→out", &mut run, counts));
            }
        }
    }
    println!("\nload average at the end: {}", load_average());
    if kamailio.is_none() {
        return;
    }
    println!("\n| stage | server | CPU per cycle ÷ Kamailio UDP | ÷ Kamailio TCP | p99 ms (Kamailio UDP / TCP in→out p99) | p999 ms | cycles/s ÷ Kamailio UDP / TCP |\n|---|---|---|---|---|---|---|");
    for (si, stage) in stages.iter().enumerate() {
        let of = |name: &str| figures.iter().find(|f| f.stage == si && f.server == name);
        let (Some(udp), Some(tcp)) = (of("Kamailio UDP"), of("Kamailio TCP")) else {
            continue;
        };
        for (name, _, _) in &ours {
            let Some(f) = of(name) else { continue };
            println!(
                "| {} | {name} | {:.2}× | {:.2}× | {:.2} ({:.2} / {:.2}) | {:.2} | {:.2}× / {:.2}× |",
                stage.name(),
                f.cpu_us / udp.cpu_us,
                f.cpu_us / tcp.cpu_us,
                f.p99,
                udp.p99,
                tcp.p99,
                f.p999,
                f.cycles_per_second / udp.cycles_per_second,
                f.cycles_per_second / tcp.cycles_per_second,
            );
        }
    }
}
