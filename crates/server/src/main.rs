//! `callinvite-server`: serve, or mint a login token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use callinvite_server::{auth, run, CancellationToken, Config};

/// The default address: loopback only. Use --listen 0.0.0.0:7450 to serve a LAN.
const DEFAULT_LISTEN: &str = "127.0.0.1:7450";

/// Every flag's default is the library's (`Config::default()`), so the two cannot disagree.
static DEFAULTS: LazyLock<Config> = LazyLock::new(Config::default);

/// A cluster node's default timeout, from the library too.
static DEFAULT_NODE_TIMEOUT: LazyLock<Duration> =
    LazyLock::new(|| callinvite_server::cluster::ClusterConfig::new("").node_timeout);

#[derive(Parser)]
#[command(
    name = "callinvite-server",
    version,
    about = "Self-hosted call-invitation signaling server"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a login token for a user (needs the same secret file as the server).
    Token {
        #[arg(long)]
        user: String,
        /// Validity, e.g. 24h, 30m, 7days.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, env = "CALLINVITE_SECRET_FILE")]
        secret_file: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN, env = "CALLINVITE_LISTEN")]
    listen: SocketAddr,
    /// File holding the token secret. Without it the server runs open (development).
    #[arg(long, env = "CALLINVITE_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// How long an invitation to an offline user waits for a device to log in.
    #[arg(long, default_value_t = DEFAULTS.timeouts.offline.into())]
    offline_window: humantime::Duration,
    /// How long a delivered invitation may stay unacknowledged.
    #[arg(long, default_value_t = DEFAULTS.timeouts.no_response.into())]
    no_response_window: humantime::Duration,
    /// How long an invitation may ring before it expires.
    #[arg(long, default_value_t = DEFAULTS.timeouts.ring.into())]
    ring_timeout: humantime::Duration,
    /// How long the caller's cancel waits for the callee devices to acknowledge it.
    #[arg(long, default_value_t = DEFAULTS.timeouts.cancel_ack.into())]
    cancel_ack_timeout: humantime::Duration,
    /// A connection silent for this long is considered dead (pings every third of it).
    #[arg(long, default_value_t = DEFAULTS.heartbeat.into())]
    heartbeat: humantime::Duration,
    /// Largest WebSocket frame in bytes; bigger closes the connection with 1009.
    #[arg(long, default_value_t = DEFAULTS.max_frame_bytes)]
    max_frame_bytes: usize,
    /// Successful logins per user id per second before `too_often` (failed ones do not count).
    #[arg(long, default_value_t = DEFAULTS.logins_per_second)]
    logins_per_second: u32,
    /// Failed logins (token refused) one connection may make before it is closed (0: no limit).
    #[arg(long, default_value_t = DEFAULTS.failed_logins_per_connection)]
    failed_logins_per_connection: u32,
    /// Failed logins one source address may make per minute; beyond that its
    /// failing logins get `too_often` and are disconnected (0: no limit).
    #[arg(long, default_value_t = DEFAULTS.failed_logins_per_address)]
    failed_logins_per_address: u32,
    /// Open TCP connections one source address (IPv4 address or IPv6 /64) may
    /// hold; more are closed at once (0: no limit).
    #[arg(long, default_value_t = DEFAULTS.max_connections_per_address)]
    max_connections_per_address: usize,
    /// Open TCP connections in all; more are closed at once. Default: the
    /// file-descriptor limit (raised to its hard limit at start) less 128 (0: no limit).
    #[arg(long)]
    max_connections: Option<usize>,
    /// A web origin whose pages may connect, e.g. https://app.example.org
    /// (repeatable; "*" allows any). Without it, a handshake carrying an
    /// Origin header (every browser sends one) is refused with 403.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Messages one connection may send per second; more are refused with `rate_limited`.
    #[arg(long, default_value_t = DEFAULTS.messages_per_second)]
    messages_per_second: u32,
    /// Devices one user may have logged in at once.
    #[arg(long, default_value_t = DEFAULTS.max_devices_per_user)]
    max_devices_per_user: usize,
    /// Invitations one user may have ringing at once.
    #[arg(long, default_value_t = DEFAULTS.max_outgoing_invitations)]
    max_outgoing_invitations: usize,
    /// A connection must finish the WebSocket handshake within this.
    #[arg(long, default_value_t = DEFAULTS.handshake_timeout.into())]
    handshake_timeout: humantime::Duration,
    /// A connection must log in within this after its handshake.
    #[arg(long, default_value_t = DEFAULTS.login_timeout.into())]
    login_timeout: humantime::Duration,
    /// At shutdown, how long clients get to leave before their connections are closed.
    #[arg(long, default_value_t = DEFAULTS.shutdown_grace.into())]
    shutdown_grace: humantime::Duration,
    /// How long a device whose connection dropped keeps its session for a resume (0s: off).
    #[arg(long, default_value_t = DEFAULTS.resume_grace.into())]
    resume_grace: humantime::Duration,
    /// Unacknowledged messages kept per device for a resume.
    #[arg(long, default_value_t = DEFAULTS.resume_buffer)]
    resume_buffer: usize,
    /// Where missed calls are kept across restarts (missed-calls.redb; an
    /// older missed-calls.json there is imported once).
    /// Default: $XDG_DATA_HOME/callinvite-server, or ~/.local/share/callinvite-server.
    /// "-" keeps them in memory only.
    #[arg(long, env = "CALLINVITE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Run as one node of a cluster that meets on this Redis (redis://host:port).
    /// All nodes of a cluster name the same Redis; missed calls are kept there.
    #[arg(long, env = "CALLINVITE_REDIS")]
    redis: Option<String>,
    /// With --redis: a node not heard from for this long is treated as dead.
    #[arg(long, default_value_t = (*DEFAULT_NODE_TIMEOUT).into())]
    node_timeout: humantime::Duration,
    /// Missed calls kept per user (the oldest go first).
    #[arg(long, default_value_t = DEFAULTS.missed.per_user)]
    missed_calls_per_user: usize,
    /// Missed calls older than this are dropped.
    #[arg(long, default_value_t = DEFAULTS.missed.max_age.into())]
    missed_calls_max_age: humantime::Duration,
    /// Bytes of missed calls kept per user (content, caller, id, 64 each; the oldest go first).
    #[arg(long, default_value_t = DEFAULTS.missed.per_user_bytes)]
    missed_calls_bytes_per_user: usize,
    /// Missed calls one caller may leave across all users (more replace its oldest).
    #[arg(long, default_value_t = DEFAULTS.missed.per_caller)]
    missed_calls_per_caller: usize,
    /// Missed calls one caller may leave with one user (more replace its oldest there).
    #[arg(long, default_value_t = DEFAULTS.missed.per_caller_per_user)]
    missed_calls_per_caller_per_user: usize,
    /// Missed calls kept in all (when full, the oldest overall go first).
    #[arg(long, default_value_t = DEFAULTS.missed.max_total)]
    missed_calls_total: usize,
    /// Bytes of missed calls kept in all (when full, the oldest overall go first).
    #[arg(long, default_value_t = DEFAULTS.missed.max_total_bytes)]
    missed_calls_total_bytes: usize,
    /// Certificate chain (PEM) to serve wss:// (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve /healthz and /metrics (Prometheus) on this address, e.g. 127.0.0.1:7451.
    #[arg(long, env = "CALLINVITE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// A STUN server for clients' media, e.g. stun:turn.example.org:3478 (repeatable).
    #[arg(long = "stun-url", value_name = "URL")]
    stun_urls: Vec<String>,
    /// A TURN server sharing --turn-secret-file, e.g. turn:turn.example.org:3478?transport=udp
    /// (repeatable). Clients get short-lived credentials for it at login.
    #[arg(long = "turn-url", value_name = "URL", requires = "turn_secret_file")]
    turn_urls: Vec<String>,
    /// File holding the TURN server's shared secret (coturn: static-auth-secret).
    #[arg(long, env = "CALLINVITE_TURN_SECRET_FILE", requires = "turn_urls")]
    turn_secret_file: Option<PathBuf>,
    /// How long a TURN credential handed to a client stays valid.
    #[arg(long, default_value_t = DEFAULTS.ice.turn_ttl.into())]
    turn_ttl: humantime::Duration,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, default_value = "info", env = "CALLINVITE_LOG")]
    log: String,
}

fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    // The secret is the file's bytes as they are, less surrounding ASCII white space
    // (a trailing newline from an editor), so other JWT tools can use the same file.
    let trimmed = bytes.trim_ascii().to_vec();
    if trimmed.len() < 16 {
        return Err(format!(
            "secret file {} holds {} bytes; use at least 16 random bytes",
            path.display(),
            trimmed.len()
        ));
    }
    Ok(trimmed)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Token {
            user,
            ttl,
            secret_file,
        }) => {
            if let Err(e) = callinvite_protocol::UserId::parse(&user) {
                eprintln!("error: --user: {e}");
                return ExitCode::from(2);
            }
            match read_secret(&secret_file) {
                Ok(secret) => {
                    println!("{}", auth::mint(&secret, &user, ttl));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        None => serve(cli.serve),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Each connection holds a file descriptor, and the default soft limit
    // (often 1024) is far below what the server can hold: take the hard limit.
    match callinvite_server::raise_fd_limit() {
        Ok((old, new)) if new > old => {
            tracing::info!(from = old, to = new, "raised the file-descriptor limit")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the file-descriptor limit"),
    }
    if *args.heartbeat < Duration::from_secs(1) {
        eprintln!("error: --heartbeat must be at least 1s");
        return ExitCode::from(2);
    }
    let secret = match args.secret_file.as_deref().map(read_secret).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match callinvite_server::tls::Tls::from_pem_files(cert, key) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let mut config = Config {
        secret,
        tls,
        heartbeat: *args.heartbeat,
        max_frame_bytes: args.max_frame_bytes,
        ..Config::default()
    };
    config.logins_per_second = args.logins_per_second;
    config.failed_logins_per_connection = args.failed_logins_per_connection;
    config.failed_logins_per_address = args.failed_logins_per_address;
    config.max_connections_per_address = args.max_connections_per_address;
    config.max_connections = args.max_connections;
    for origin in &args.allowed_origins {
        let o = origin.trim_end_matches('/');
        let ok = o == "*"
            || o == "null"
            || ((o.starts_with("https://") || o.starts_with("http://"))
                && !o
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.is_empty() || rest.contains('/')));
        if !ok {
            eprintln!("error: --allowed-origin {origin:?} is not an origin: give scheme://host[:port], such as https://app.example.org, or *");
            return ExitCode::from(2);
        }
    }
    config.allowed_origins = args.allowed_origins.clone();
    config.messages_per_second = args.messages_per_second;
    config.max_devices_per_user = args.max_devices_per_user;
    config.max_outgoing_invitations = args.max_outgoing_invitations;
    config.handshake_timeout = *args.handshake_timeout;
    config.login_timeout = *args.login_timeout;
    config.shutdown_grace = *args.shutdown_grace;
    config.resume_grace = *args.resume_grace;
    config.missed.per_user = args.missed_calls_per_user.max(1);
    config.missed.max_age = *args.missed_calls_max_age;
    config.missed.per_user_bytes = args.missed_calls_bytes_per_user;
    config.missed.per_caller = args.missed_calls_per_caller.max(1);
    config.missed.per_caller_per_user = args.missed_calls_per_caller_per_user.max(1);
    config.missed.max_total = args.missed_calls_total.max(1);
    config.missed.max_total_bytes = args.missed_calls_total_bytes;
    if let Some(url) = &args.redis {
        let mut cluster = callinvite_server::cluster::ClusterConfig::new(url);
        cluster.node_timeout = (*args.node_timeout).max(Duration::from_millis(500));
        cluster.heartbeat_every = cluster.node_timeout / 3;
        config.cluster = Some(cluster);
    }
    config.missed.file = match &args.data_dir {
        // In a cluster, Redis keeps them.
        _ if args.redis.is_some() => None,
        Some(d) if d.as_os_str() == "-" => None,
        Some(d) => Some(d.join("missed-calls.redb")),
        None => std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .map(|d| d.join("callinvite-server").join("missed-calls.redb")),
    };
    config.resume_buffer = args.resume_buffer.max(1);
    config.timeouts.offline = *args.offline_window;
    config.timeouts.no_response = *args.no_response_window;
    config.timeouts.ring = *args.ring_timeout;
    config.timeouts.cancel_ack = *args.cancel_ack_timeout;
    config.ice.stun_urls = args.stun_urls.clone();
    config.ice.turn_urls = args.turn_urls.clone();
    config.ice.turn_ttl = *args.turn_ttl;
    if let Some(path) = &args.turn_secret_file {
        match read_secret(path) {
            Ok(s) => config.ice.turn_secret = Some(s),
            Err(e) => {
                eprintln!("error: --turn-secret-file: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for url in config.ice.stun_urls.iter().chain(&config.ice.turn_urls) {
        let scheme_ok = if config.ice.stun_urls.contains(url) {
            url.starts_with("stun:") || url.starts_with("stuns:")
        } else {
            url.starts_with("turn:") || url.starts_with("turns:")
        };
        if !scheme_ok {
            eprintln!("error: {url:?} is not a STUN (stun:host:port) or TURN (turn:host:port) URL of the flag it was given to");
            return ExitCode::from(2);
        }
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e} (is another server running? choose another --listen)", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        if let Some(addr) = args.metrics_listen {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    tokio::spawn(callinvite_server::http::serve(l, config.metrics.clone(), shutdown.clone()));
                }
                Err(e) => {
                    eprintln!("error: cannot listen on {addr} for metrics: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            on_signal.cancel();
        });
        #[cfg(unix)]
        {
            let on_term = shutdown.clone();
            if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                tokio::spawn(async move {
                    term.recv().await;
                    on_term.cancel();
                });
            }
        }
        match run(listener, config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
