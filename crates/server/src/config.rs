//! Server configuration: every window and limit, with Agora-like defaults.
//!
//! [`Config::default`] is the one place the defaults are written: the
//! `callinvite-server` command line shows and uses these (its flags' defaults
//! are read from here), and embedders start from it.

use std::time::Duration;

use std::sync::Arc;

use callinvite_protocol::invitation::Timeouts;

use crate::metrics::Metrics;

/// Everything [`crate::run`] needs besides the listener.
#[derive(Clone, Debug)]
pub struct Config {
    /// The invitation windows (offline, no response, ring, cancel ack, retention).
    pub timeouts: Timeouts,
    /// A connection that sends nothing (not even a pong) for this long is
    /// dead; the server pings every third of it.
    pub heartbeat: Duration,
    /// Largest WebSocket frame or message accepted; larger closes the
    /// connection with 1009 "message too big".
    pub max_frame_bytes: usize,
    /// Token secret. `None` runs the server open (development): any valid
    /// user id may log in without a token.
    pub secret: Option<Vec<u8>>,
    /// Successful logins allowed per user id per second; one more is answered
    /// `too_often`. Failed logins do not count here (a stranger naming the
    /// user cannot lock them out): they count per connection and per address.
    pub logins_per_second: u32,
    /// Failed logins (a token refused) one connection may make; the last is
    /// answered and the connection is closed (1008). 0: no limit.
    pub failed_logins_per_connection: u32,
    /// Failed logins one source address may make per minute; beyond that its
    /// failing logins are answered `too_often` and their connections closed.
    /// A valid token still gets in. 0: no limit.
    pub failed_logins_per_address: u32,
    /// Open TCP connections one source address (an IPv4 address, or an IPv6
    /// /64) may hold; more are closed right after accept. 0: no limit.
    pub max_connections_per_address: usize,
    /// Open TCP connections the server holds in all; more are closed right
    /// after accept. `None`: the file-descriptor limit less
    /// [`crate::guard::FD_RESERVE`]; `Some(0)`: no limit.
    pub max_connections: Option<usize>,
    /// Web origins (`https://app.example.org`) whose pages may open a
    /// WebSocket to this server. A handshake with an `Origin` header not in
    /// this list is refused with 403 (browsers always send one; native
    /// clients send none). Empty: no web page may connect. `"*"`: any may.
    pub allowed_origins: Vec<String>,
    /// How long a new connection has to finish the WebSocket handshake.
    pub handshake_timeout: Duration,
    /// Messages queued for one connection before it is considered too slow
    /// and closed (so one stuck client cannot grow the server's memory).
    pub outbound_queue: usize,
    /// Messages one connection may send per second (a token bucket of this
    /// size, refilled at this rate); more are answered `rate_limited` and dropped.
    pub messages_per_second: u32,
    /// Devices (connections) one user may have logged in at once.
    pub max_devices_per_user: usize,
    /// Invitations one user may have ringing at once.
    pub max_outgoing_invitations: usize,
    /// A connection that has not logged in this long after its handshake is closed (1008).
    pub login_timeout: Duration,
    /// Serve `wss://` with this certificate; `None` serves plain `ws://`.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::Tls>,
    /// Where the server counts things; serve it with [`crate::http::serve`].
    pub metrics: Arc<Metrics>,
    /// How long a device whose connection dropped (without a close frame or a
    /// logout) keeps its session, invitations, calls and presence while it
    /// may `resume` on a new connection. Zero ends sessions with their connection.
    pub resume_grace: Duration,
    /// Unacknowledged messages kept per device for a resume; a device that
    /// falls further behind cannot resume and must log in again.
    pub resume_buffer: usize,
    /// Run as one node of a cluster on Redis; `None` is a single node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Where missed calls are kept and their bounds.
    pub missed: crate::missed::MissedConfig,
    /// At shutdown, how long clients get to read their `going_away` and close
    /// before the remaining connections are closed.
    pub shutdown_grace: Duration,
    /// STUN/TURN servers for the media of calls, handed out at login.
    pub ice: crate::ice::IceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeouts: Timeouts::default(),
            heartbeat: Duration::from_secs(15),
            max_frame_bytes: 64 * 1024,
            secret: None,
            logins_per_second: 5,
            failed_logins_per_connection: 5,
            failed_logins_per_address: 30,
            max_connections_per_address: 256,
            max_connections: None,
            allowed_origins: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            outbound_queue: 1024,
            shutdown_grace: Duration::from_secs(2),
            metrics: Arc::new(Metrics::new()),
            #[cfg(feature = "tls")]
            tls: None,
            messages_per_second: 60,
            max_devices_per_user: 10,
            max_outgoing_invitations: 10,
            login_timeout: Duration::from_secs(10),
            resume_grace: Duration::from_secs(10),
            resume_buffer: 1024,
            missed: Default::default(),
            cluster: None,
            ice: crate::ice::IceConfig {
                turn_ttl: Duration::from_secs(24 * 3600),
                ..Default::default()
            },
        }
    }
}
