//! `callinvite`: a command-line client for scripts, tests and bots.
//!
//! Prints one JSON object per event on stdout (the client library's events,
//! then a final `{"event":"done",...}`) and exits with a status that says how
//! the call ended (see `Outcome`).

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};
use serde_json::json;
use tracing_subscriber::EnvFilter;

use callinvite_client::media::{
    bars_error, AudioSink, AudioSource, CallMedia, MediaEvent, MediaState, NoProcessing, NullSink,
    Role, SilenceSource, TestPattern, ToneSource, VideoFrame, VideoIo, VideoSink, VideoSource,
    WavSink, WavSource,
};
use callinvite_client::{
    Client, ClientError, Event, EventStream, FailureReason, InvitationId, LoginOptions,
};

#[derive(Parser)]
#[command(
    name = "callinvite",
    version,
    about = "Call-invitation command-line client"
)]
struct Cli {
    /// Server URL.
    #[arg(
        long,
        global = true,
        default_value = "ws://127.0.0.1:7450",
        env = "CALLINVITE_SERVER"
    )]
    server: String,
    /// Your user id.
    #[arg(long, global = true, env = "CALLINVITE_USER", default_value = "")]
    user: String,
    /// Login token, when the server requires one (`callinvite-server token --user ID`).
    #[arg(long, global = true, env = "CALLINVITE_TOKEN")]
    token: Option<String>,
    /// For wss://: extra CA certificates (PEM) to trust besides the system's.
    #[arg(long, global = true, env = "CALLINVITE_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Log filter for diagnostics on stderr.
    #[arg(long, global = true, default_value = "warn", env = "CALLINVITE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Call a user and follow the invitation to its end.
    Call {
        callee: String,
        /// Text sent with the invitation (≤ 8 KiB), e.g. a channel name.
        #[arg(long, default_value = "")]
        content: String,
        /// Cancel if not answered after this long (e.g. 2s).
        #[arg(long, value_parser = humantime::parse_duration)]
        cancel_after: Option<Duration>,
        /// Hang up this long after the call is accepted; otherwise wait for the peer to hang up.
        #[arg(long, value_parser = humantime::parse_duration)]
        hangup_after: Option<Duration>,
        #[command(flatten)]
        media: MediaArgs,
    },
    /// Answer incoming calls as a bot.
    #[command(group(ArgGroup::new("how").required(true).args(["accept", "refuse", "busy", "ignore"])))]
    Answer {
        #[arg(long)]
        accept: bool,
        #[arg(long)]
        refuse: bool,
        /// Refuse as busy.
        #[arg(long)]
        busy: bool,
        /// Let it ring (until the caller cancels or it expires).
        #[arg(long)]
        ignore: bool,
        /// Text returned with the answer.
        #[arg(long, default_value = "")]
        response: String,
        /// Wait this long before answering.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        after: Duration,
        /// Exit after this many invitations have ended (0: run until interrupted).
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Hang up this long after accepting; otherwise wait for the caller to hang up.
        #[arg(long, value_parser = humantime::parse_duration)]
        hangup_after: Option<Duration>,
        #[command(flatten)]
        media: MediaArgs,
    },
    /// Print the online state of users; with --watch, follow changes for a while.
    Presence {
        #[arg(required = true)]
        users: Vec<String>,
        #[arg(long, value_parser = humantime::parse_duration)]
        watch: Option<Duration>,
    },
    /// Hang up an accepted call of yours (from this extra device), by invitation id.
    Hangup { invitation_id: String },
}

/// The sound of an accepted call (`call` and `answer`).
#[derive(clap::Args, Clone, Debug, Default)]
struct MediaArgs {
    /// Talk in accepted calls, sending this: a WAV file (16-bit PCM, any rate;
    /// looped), `tone:FREQ` (a sine, e.g. tone:440) or `silence`. Without
    /// --play and --record the call has no media.
    #[arg(long, value_name = "SOURCE")]
    play: Option<String>,
    /// Record what the peer sends to this WAV file (48 kHz mono).
    #[arg(long, value_name = "FILE.wav")]
    record: Option<std::path::PathBuf>,
    /// Media only through a TURN relay (the server must hand one out).
    #[arg(long)]
    relay_only: bool,
    /// Use only this local address for media (e.g. 127.0.0.1); default: every interface.
    #[arg(long, value_name = "IP")]
    media_ip: Option<std::net::IpAddr>,
    /// Video in accepted calls, sending this: `pattern` (moving colour bars,
    /// 640x480 at 30 fps), `camera` or `camera:ID` (built with the `camera`
    /// feature), `screen` or `screen:ID` (X11; the `screen` feature), or
    /// `off` (receive only). The peer's pictures are decoded; media_stats
    /// says how many, their size, and how far their colour bars are from
    /// the test pattern's (`pattern_error`, 0-255).
    #[arg(long, value_name = "SOURCE", value_parser = parse_video_arg)]
    video: Option<String>,
}

impl MediaArgs {
    fn enabled(&self) -> bool {
        self.play.is_some() || self.record.is_some() || self.video.is_some()
    }
}

/// Checks `--video` when the command line is read, so a misspelled source
/// fails at once rather than when a call is accepted.
fn parse_video_arg(s: &str) -> Result<String, String> {
    let kind = s.split_once(':').map_or(s, |(k, _)| k);
    match kind {
        "off" | "pattern" if kind == s => Ok(s.to_owned()),
        "camera" | "screen" => Ok(s.to_owned()),
        _ => Err("choose pattern, off, camera[:ID] or screen[:ID]".into()),
    }
}

/// The source `--video` names (`None`: off).
fn video_source(what: &str) -> Result<Option<Box<dyn VideoSource>>, String> {
    let (kind, id) = match what.split_once(':') {
        Some((k, id)) => (k, Some(id)),
        None => (what, None),
    };
    match kind {
        "off" => Ok(None),
        "pattern" => Ok(Some(Box::new(
            TestPattern::new(640, 480, 30).map_err(|e| e.to_string())?,
        ))),
        #[cfg(feature = "camera")]
        "camera" => Ok(Some(Box::new(
            callinvite_client::media::video::CameraSource::open(id, 640, 480, 30)
                .map_err(|e| e.to_string())?,
        ))),
        #[cfg(feature = "screen")]
        "screen" => Ok(Some(Box::new(
            callinvite_client::media::video::ScreenSource::open(id, 1280, 720, 15)
                .map_err(|e| e.to_string())?,
        ))),
        #[cfg(not(feature = "camera"))]
        "camera" => Err(without(kind)),
        #[cfg(not(feature = "screen"))]
        "screen" => Err(without(kind)),
        _ => {
            let _ = id;
            Err("choose pattern, off, camera[:ID] or screen[:ID]".into())
        }
    }
}

/// Says that this build lacks the video source `kind`.
#[cfg(not(all(feature = "camera", feature = "screen")))]
fn without(kind: &str) -> String {
    format!(
        "this callinvite was built without the `{kind}` feature \
         (cargo build -p callinvite-client --features {kind})"
    )
}

/// A video sink that checks each received picture against the test
/// pattern (the CLI's way to show the picture got through).
struct PatternCheck(std::sync::Arc<std::sync::Mutex<Option<u8>>>);

impl VideoSink for PatternCheck {
    fn frame(&mut self, frame: &VideoFrame) {
        if let Ok(mut e) = self.0.lock() {
            *e = Some(bars_error(frame));
        }
    }
}

/// How a run ended; the process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Accepted (and the call has ended), or the bot/command did its job.
    Ok = 0,
    Error = 1,
    Refused = 10,
    Busy = 11,
    Canceled = 12,
    PeerOffline = 13,
    NoResponse = 14,
    Expired = 15,
    ConnectionLost = 16,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
            Outcome::Busy => "busy",
            Outcome::Canceled => "canceled",
            Outcome::PeerOffline => "peer_offline",
            Outcome::NoResponse => "no_response",
            Outcome::Expired => "expired",
            Outcome::ConnectionLost => "connection_lost",
        }
    }
    fn from_failure(reason: FailureReason) -> Self {
        match reason {
            FailureReason::PeerOffline => Outcome::PeerOffline,
            FailureReason::NoResponse => Outcome::NoResponse,
            FailureReason::Expired => Outcome::Expired,
            _ => Outcome::ConnectionLost,
        }
    }
}

fn print(value: &serde_json::Value) {
    println!("{value}");
}

fn print_event(event: &Event) {
    match serde_json::to_value(event) {
        Ok(v) => print(&v),
        Err(e) => eprintln!("cannot print event: {e}"),
    }
}

fn print_error(e: &ClientError) {
    print(&json!({"event": "error", "code": e.code(), "message": e.to_string()}));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        if cli.user.is_empty() {
            print(&json!({"event": "error", "code": "invalid_argument", "message": "--user (or CALLINVITE_USER) is required"}));
            return Outcome::Error;
        }
        let mut options = LoginOptions::new(&cli.server, &cli.user);
        options.token = cli.token.clone();
        options.ca_file = cli.ca_file.clone();
        let (client, mut events) = match Client::login(options).await {
            Ok(ok) => ok,
            Err(e) => {
                print_error(&e);
                return Outcome::Error;
            }
        };
        let outcome = tokio::select! {
            outcome = run(cli.command, &client, &mut events) => outcome,
            _ = tokio::signal::ctrl_c() => Outcome::Error,
        };
        let _ = client.logout().await;
        outcome
    });
    print(&json!({"event": "done", "outcome": outcome.name(), "exit_code": outcome as u8}));
    ExitCode::from(outcome as u8)
}

async fn run(command: Cmd, client: &Client, events: &mut EventStream) -> Outcome {
    match command {
        Cmd::Call {
            callee,
            content,
            cancel_after,
            hangup_after,
            media,
        } => {
            let mut calls = Media::new(client, media);
            call(
                client,
                events,
                &mut calls,
                &callee,
                content,
                cancel_after,
                hangup_after,
            )
            .await
        }
        Cmd::Answer {
            accept,
            refuse: _,
            busy,
            ignore,
            response,
            after,
            count,
            hangup_after,
            media,
        } => {
            let mut calls = Media::new(client, media);
            let how = if accept {
                Answer::Accept
            } else if busy {
                Answer::Busy
            } else if ignore {
                Answer::Ignore
            } else {
                Answer::Refuse
            };
            answer(
                client,
                events,
                &mut calls,
                how,
                &response,
                after,
                count,
                hangup_after,
            )
            .await
        }
        Cmd::Presence { users, watch } => presence(client, events, &users, watch).await,
        Cmd::Hangup { invitation_id } => match client.hang_up(&InvitationId(invitation_id)).await {
            Ok(()) => Outcome::Ok,
            Err(e) => {
                print_error(&e);
                Outcome::Error
            }
        },
    }
}

/// Sleeps until `deadline` if there is one; otherwise never returns.
async fn maybe_sleep(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn call(
    client: &Client,
    events: &mut EventStream,
    media: &mut Media,
    callee: &str,
    content: String,
    cancel_after: Option<Duration>,
    hangup_after: Option<Duration>,
) -> Outcome {
    let invitation = match client.create_local_invitation(callee) {
        Ok(i) => i.with_content(content),
        Err(e) => {
            print_error(&e);
            return Outcome::Error;
        }
    };
    let id = match client.send_local_invitation(&invitation).await {
        Ok(id) => id,
        Err(e) => {
            print_error(&e);
            return Outcome::Error;
        }
    };
    let mut cancel_at = cancel_after.map(|d| tokio::time::Instant::now() + d);
    let mut hangup_at = None;
    let mut accepted = false;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Outcome::ConnectionLost };
                if media.on_event(&event) {
                    continue;
                }
                print_event(&event);
                match &event {
                    Event::LocalInvitationAccepted { .. } => {
                        media.start(&id, Role::Offerer).await;
                        accepted = true;
                        cancel_at = None;
                        hangup_at = hangup_after.map(|d| tokio::time::Instant::now() + d);
                    }
                    Event::LocalInvitationRefused { busy: true, .. } => return Outcome::Busy,
                    Event::LocalInvitationRefused { .. } => return Outcome::Refused,
                    Event::LocalInvitationCanceled { .. } => return Outcome::Canceled,
                    Event::LocalInvitationFailure { reason, .. } => return Outcome::from_failure(*reason),
                    Event::CallEnded { invitation_id, reason, .. } if *invitation_id == id => {
                        media.stop(invitation_id).await;
                        return if *reason == callinvite_client::CallEndReason::NotLoggedIn { Outcome::ConnectionLost } else { Outcome::Ok };
                    }
                    Event::ConnectionStateChanged { state: callinvite_client::ConnectionState::Disconnected | callinvite_client::ConnectionState::Aborted, .. } if !accepted => {
                        return Outcome::ConnectionLost
                    }
                    _ => {}
                }
            }
            Some(report) = media.next() => print(&report),
            _ = maybe_sleep(cancel_at) => {
                cancel_at = None;
                if let Err(e) = client.cancel_local_invitation(&invitation).await {
                    print_error(&e);
                }
            }
            _ = maybe_sleep(hangup_at) => {
                hangup_at = None;
                if let Err(e) = client.hang_up(&id).await {
                    print_error(&e);
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accept,
    Refuse,
    Busy,
    Ignore,
}

#[allow(clippy::too_many_arguments)]
async fn answer(
    client: &Client,
    events: &mut EventStream,
    media: &mut Media,
    how: Answer,
    response: &str,
    after: Duration,
    count: u64,
    hangup_after: Option<Duration>,
) -> Outcome {
    use std::collections::BTreeMap;
    use tokio::time::Instant;
    // Invitations waiting for their answer time, and calls waiting for their hang-up time.
    let mut to_answer: BTreeMap<InvitationId, Instant> = BTreeMap::new();
    let mut to_hang_up: BTreeMap<InvitationId, Instant> = BTreeMap::new();
    let mut in_call: std::collections::BTreeSet<InvitationId> = Default::default();
    let mut ended = 0u64;
    loop {
        let next_answer = to_answer
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(id, t)| (id.clone(), *t));
        let next_hangup = to_hang_up
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(id, t)| (id.clone(), *t));
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Outcome::ConnectionLost };
                if media.on_event(&event) {
                    continue;
                }
                print_event(&event);
                let mut finished = false;
                match &event {
                    Event::RemoteInvitationReceived { invitation } if how != Answer::Ignore => {
                        to_answer.insert(invitation.invitation_id.clone(), Instant::now() + after);
                    }
                    Event::RemoteInvitationAccepted { invitation } => {
                        media.start(&invitation.invitation_id, Role::Answerer).await;
                        in_call.insert(invitation.invitation_id.clone());
                        if let Some(d) = hangup_after {
                            to_hang_up.insert(invitation.invitation_id.clone(), Instant::now() + d);
                        }
                    }
                    Event::RemoteInvitationRefused { .. } => finished = true,
                    Event::RemoteInvitationCanceled { invitation } | Event::RemoteInvitationFailure { invitation, .. } => {
                        to_answer.remove(&invitation.invitation_id);
                        finished = true;
                    }
                    Event::CallEnded { invitation_id, .. } => {
                        media.stop(invitation_id).await;
                        to_hang_up.remove(invitation_id);
                        finished = in_call.remove(invitation_id);
                    }
                    Event::ConnectionStateChanged { state: callinvite_client::ConnectionState::Disconnected | callinvite_client::ConnectionState::Aborted, .. } => {
                        return Outcome::ConnectionLost
                    }
                    _ => {}
                }
                if finished {
                    ended += 1;
                    if count != 0 && ended >= count {
                        return Outcome::Ok;
                    }
                }
            }
            Some(report) = media.next() => print(&report),
            _ = maybe_sleep(next_answer.as_ref().map(|(_, t)| *t)) => {
                let Some((id, _)) = next_answer else { continue };
                to_answer.remove(&id);
                let result = match how {
                    Answer::Accept => client.accept_remote_invitation(&id, response).await,
                    Answer::Refuse => client.refuse_remote_invitation(&id, response, false).await,
                    Answer::Busy => client.refuse_remote_invitation(&id, response, true).await,
                    Answer::Ignore => Ok(()),
                };
                if let Err(e) = result {
                    print_error(&e);
                }
            }
            _ = maybe_sleep(next_hangup.as_ref().map(|(_, t)| *t)) => {
                let Some((id, _)) = next_hangup else { continue };
                to_hang_up.remove(&id);
                if let Err(e) = client.hang_up(&id).await {
                    print_error(&e);
                }
            }
        }
    }
}

async fn presence(
    client: &Client,
    events: &mut EventStream,
    users: &[String],
    watch: Option<Duration>,
) -> Outcome {
    let ids: Vec<&str> = users.iter().map(String::as_str).collect();
    let result = match watch {
        None => client.query_presence(&ids).await,
        Some(_) => client.subscribe_presence(&ids).await,
    };
    match result {
        Ok(entries) => print(&json!({"event": "presence", "users": entries})),
        Err(e) => {
            print_error(&e);
            return Outcome::Error;
        }
    }
    if let Some(d) = watch {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(event @ Event::PresenceChanged { .. }) => print_event(&event),
                    Some(_) => {}
                    None => return Outcome::ConnectionLost,
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
    }
    Outcome::Ok
}

/// The media of this run's accepted calls, when --play or --record asked for it.
struct Media {
    client: Client,
    args: MediaArgs,
    calls: std::collections::BTreeMap<InvitationId, CallMedia>,
    /// What the engines report (state, failures, statistics), as JSON lines.
    reports: tokio::sync::mpsc::UnboundedSender<serde_json::Value>,
    reports_rx: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
}

impl Media {
    fn new(client: &Client, args: MediaArgs) -> Self {
        let (reports, reports_rx) = tokio::sync::mpsc::unbounded_channel();
        Media {
            client: client.clone(),
            args,
            calls: Default::default(),
            reports,
            reports_rx,
        }
    }

    fn source(&self) -> Result<Box<dyn AudioSource>, String> {
        match self.args.play.as_deref() {
            None | Some("silence") => Ok(Box::new(SilenceSource)),
            Some(tone) if tone.starts_with("tone:") => {
                let freq: f32 = tone["tone:".len()..].parse().map_err(|_| {
                    format!("--play {tone}: the frequency must be a number of Hz, e.g. tone:440")
                })?;
                if !(20.0..=20_000.0).contains(&freq) {
                    return Err(format!(
                        "--play {tone}: choose a frequency from 20 to 20000 Hz"
                    ));
                }
                Ok(Box::new(ToneSource::new(freq, 0.3)))
            }
            Some(path) => WavSource::open(path)
                .map(|w| Box::new(w.looping(true)) as Box<dyn AudioSource>)
                .map_err(|e| format!("--play {path}: {e}")),
        }
    }

    fn sink(&self, id: &InvitationId) -> Result<Box<dyn AudioSink>, String> {
        match &self.args.record {
            None => Ok(Box::new(NullSink)),
            Some(path) => {
                // Several calls in one run record to FILE.wav, FILE-2.wav, ...
                let path = if self.calls.is_empty() {
                    path.clone()
                } else {
                    path.with_file_name(format!(
                        "{}-{}.wav",
                        path.file_stem()
                            .map(|s| s.to_string_lossy())
                            .unwrap_or_default(),
                        self.calls.len() + 1
                    ))
                };
                WavSink::create(&path)
                    .map(|w| Box::new(w) as Box<dyn AudioSink>)
                    .map_err(|e| format!("--record {} for call {id}: {e}", path.display()))
            }
        }
    }

    /// Starts the media of an accepted call, if asked for.
    async fn start(&mut self, id: &InvitationId, role: Role) {
        if !self.args.enabled() {
            return;
        }
        let started = async {
            let mut config = CallMedia::config(&self.client).await;
            config.relay_only = self.args.relay_only;
            config.bind_ip = self.args.media_ip;
            let (source, sink) = (self.source()?, self.sink(id)?);
            let pattern_error = std::sync::Arc::new(std::sync::Mutex::new(None));
            let video = match self.args.video.as_deref() {
                None => None,
                Some(what) => Some(VideoIo {
                    source: video_source(what).map_err(|e| format!("--video {what}: {e}"))?,
                    preview: None,
                    sink: Box::new(PatternCheck(pattern_error.clone())),
                    encoded: None,
                }),
            };
            CallMedia::start_with_video(
                &self.client,
                id,
                role,
                config,
                source,
                sink,
                Box::new(NoProcessing),
                video,
            )
            .map(|(media, events)| (media, events, pattern_error))
            .map_err(|e| e.to_string())
        };
        match started.await {
            Ok((media, mut events, pattern_error)) => {
                let reports = self.reports.clone();
                let call = id.0.clone();
                // Started as the accept was seen: media_state lines say how long after it.
                let accepted = tokio::time::Instant::now();
                tokio::spawn(async move {
                    while let Some(e) = events.recv().await {
                        let mut report = media_report(&call, e);
                        if report.get("video").is_some_and(|v| v.is_object()) {
                            let error = pattern_error.lock().ok().and_then(|e| *e);
                            report["video"]["pattern_error"] = json!(error);
                        }
                        if report["event"] == "media_state" {
                            report["ms_since_accept"] =
                                json!(accepted.elapsed().as_millis() as u64);
                        }
                        let _ = reports.send(report);
                    }
                });
                self.calls.insert(id.clone(), media);
            }
            Err(message) => {
                print(&json!({"event": "media_failed", "invitation_id": id.0, "message": message}));
            }
        }
    }

    /// Stops the media of a call that ended, and lets its recording be finished.
    async fn stop(&mut self, id: &InvitationId) {
        if let Some(media) = self.calls.remove(id) {
            media.close();
            drop(media);
            // The engine closes its sink (a WAV file is finalized) as it stops.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Routes a media signal to its call's engine.
    fn on_event(&self, event: &Event) -> bool {
        self.calls.values().any(|m| m.on_event(event)) || matches!(event, Event::MediaSignal { .. })
    }

    async fn next(&mut self) -> Option<serde_json::Value> {
        self.reports_rx.recv().await
    }
}

/// One media event as a JSON line.
fn media_report(call: &str, event: MediaEvent) -> serde_json::Value {
    match event {
        MediaEvent::State(state) => {
            let state = match state {
                MediaState::Connecting => "connecting",
                MediaState::Connected => "connected",
                MediaState::Reconnecting => "reconnecting",
                MediaState::Closed => "closed",
            };
            json!({"event": "media_state", "invitation_id": call, "state": state})
        }
        MediaEvent::Failed(e) => {
            json!({"event": "media_failed", "invitation_id": call, "message": e.to_string()})
        }
        MediaEvent::Stats(s) => json!({
            "event": "media_stats", "invitation_id": call,
            "rtt_ms": s.rtt_ms, "loss": s.loss, "jitter_ms": s.jitter_ms,
            "packets_sent": s.packets_sent, "packets_received": s.packets_received,
            "mic_level": s.mic_level, "speaker_level": s.speaker_level,
            "fec_frames": s.fec_frames, "concealed_frames": s.concealed_frames,
            "playout_delay_ms": s.playout_delay_ms,
            "relayed": s.relayed, "relay_packets": s.relay_packets,
            "video": s.video.map(|v| json!({
                "camera_on": v.camera_on,
                "sent_width": v.sent_width, "sent_height": v.sent_height,
                "sent_fps": v.sent_fps, "sent_kbps": v.sent_kbps, "target_kbps": v.target_kbps,
                "frames_sent": v.frames_sent, "keyframes_sent": v.keyframes_sent,
                "keyframe_requests_received": v.keyframe_requests_received,
                "encode_ms": v.encode_ms,
                "receiving": v.receiving,
                "received_width": v.received_width, "received_height": v.received_height,
                "received_fps": v.received_fps, "frames_decoded": v.frames_decoded,
                "frames_dropped": v.frames_dropped, "keyframes_received": v.keyframes_received,
                "keyframes_requested": v.keyframes_requested, "decode_ms": v.decode_ms,
            })),
        }),
        MediaEvent::RemoteVideo(active) => {
            json!({"event": "remote_video", "invitation_id": call, "active": active})
        }
        MediaEvent::Signal(s) => {
            json!({"event": "media_signal", "invitation_id": call, "kind": s.kind()})
        }
    }
}
