//! Command-line options.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "callinvite-load",
    about = "Invitation-cycle benchmark against callinvite-server and peerjs-server"
)]
pub(crate) struct Args {
    /// Concurrent caller/callee pairs.
    #[arg(long, default_value_t = 50)]
    pub(crate) pairs: usize,
    /// How long to drive cycles, per server.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Idle logged-in connections to open for the memory-per-connection figure (0: skip).
    #[arg(long, default_value_t = 0)]
    pub(crate) idle: usize,
    /// Also drive peerjs-server (npm package `peer`, installed into --npm-dir if missing).
    #[arg(long)]
    pub(crate) peerjs: bool,
    /// Where `npm install peer` goes.
    #[arg(long, default_value = "target/loadtest-npm")]
    pub(crate) npm_dir: PathBuf,
    /// Also run the cycle across two nodes on Redis (starts its own redis-server).
    #[arg(long)]
    pub(crate) cluster: bool,
    /// The server binary (default: next to this binary).
    #[arg(long)]
    pub(crate) server_bin: Option<PathBuf>,
    /// Drive callinvite through the client library (its driver task, state
    /// machines and event stream per client) instead of raw WebSocket
    /// frames. The default, raw frames, is how peerjs-server is driven, so
    /// both rows measure the servers with the same kind of client.
    #[arg(long)]
    pub(crate) client_library: bool,
    /// Hold the `--idle` connections on this many nodes of one cluster on
    /// Redis, each fed by its own worker process: one process may not hold
    /// more file descriptors than its limit (`ulimit -n`), and 100 000
    /// connections need more than one process on each side here.
    #[arg(long, default_value_t = 1)]
    pub(crate) idle_nodes: usize,
    /// (internal) Be an idle-connection worker for the server on this port.
    #[arg(long, hide = true)]
    pub(crate) idle_worker: Option<u16>,
    /// (internal) The worker's user ids start with this.
    #[arg(long, hide = true, default_value = "idle")]
    pub(crate) idle_prefix: String,
    /// Fixed rate: start this many cycles per second in all (spread over the
    /// pairs; a pair whose cycle runs late starts its next one at once).
    /// Without it each pair runs cycles back to back (a closed loop, the
    /// saturated rate). Raw-frame driver only.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Print the servers' RSS this often during the cycles (for memory over
    /// time, e.g. whether it levels off once ended invitations are forgotten).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) rss_every: Option<Duration>,
    /// Only the single callinvite-server row (skip --cluster, --peerjs, --idle).
    #[arg(long)]
    pub(crate) only_single: bool,
    /// The comparison run of #14: each of these stages, for every server in
    /// turn (callinvite-server, each `--compare-bin`, and with `--kamailio`
    /// Kamailio over UDP and over TCP). A number is a fixed rate in cycles
    /// per second; `sat` is the closed loop (`--pairs` cycles in flight).
    /// Example: `--stages 2000,8000,sat`. Each stage lasts `--duration`.
    #[arg(long, value_delimiter = ',')]
    pub(crate) stages: Vec<String>,
    /// Also run Kamailio + sipp in the stages (Debian: `apt-get install -y
    /// kamailio sip-tester tcpdump`).
    #[arg(long)]
    pub(crate) kamailio: bool,
    /// Another callinvite-server build to run in the stages (e.g. before and
    /// after a change, in the same run). May be given more than once.
    #[arg(long)]
    pub(crate) compare_bin: Vec<PathBuf>,
    /// With `--stages`: count each server's system calls and context
    /// switches per completed cycle (Linux perf: `apt-get install -y
    /// linux-perf`), the kernel entries that set the floor of its CPU.
    #[arg(long)]
    pub(crate) syscalls: bool,
    /// Start every server (ours and Kamailio) on these CPUs (`taskset -c`,
    /// e.g. `0`); run the load tool itself on others (`taskset -c 1
    /// callinvite-load …`) so that servers and load generators do not take
    /// each other's cores and the figures are less the scheduler's.
    #[arg(long)]
    pub(crate) server_cpus: Option<String>,
}
