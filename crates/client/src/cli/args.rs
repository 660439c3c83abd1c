//! The command line: global options, the subcommands, and the media options
//! `call` and `answer` share.

use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "callinvite",
    version,
    about = "Call-invitation command-line client"
)]
pub(crate) struct Cli {
    /// Server URL.
    #[arg(
        long,
        global = true,
        default_value = "ws://127.0.0.1:7450",
        env = "CALLINVITE_SERVER"
    )]
    pub(crate) server: String,
    /// Your user id.
    #[arg(long, global = true, env = "CALLINVITE_USER", default_value = "")]
    pub(crate) user: String,
    /// Login token, when the server requires one (`callinvite-server token --user ID`).
    #[arg(long, global = true, env = "CALLINVITE_TOKEN")]
    pub(crate) token: Option<String>,
    /// For wss://: extra CA certificates (PEM) to trust besides the system's.
    #[arg(long, global = true, env = "CALLINVITE_CA_FILE")]
    pub(crate) ca_file: Option<std::path::PathBuf>,
    /// Log filter for diagnostics on stderr.
    #[arg(long, global = true, default_value = "warn", env = "CALLINVITE_LOG")]
    pub(crate) log: String,
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
pub(crate) struct MediaArgs {
    /// Talk in accepted calls, sending this: a WAV file (16-bit PCM, any rate;
    /// looped), `tone:FREQ` (a sine, e.g. tone:440) or `silence`. Without
    /// --play and --record the call has no media.
    #[arg(long, value_name = "SOURCE")]
    pub(crate) play: Option<String>,
    /// Record what the peer sends to this WAV file (48 kHz mono).
    #[arg(long, value_name = "FILE.wav")]
    pub(crate) record: Option<std::path::PathBuf>,
    /// Media only through a TURN relay (the server must hand one out).
    #[arg(long)]
    pub(crate) relay_only: bool,
    /// Use only this local address for media (e.g. 127.0.0.1); default: every interface.
    #[arg(long, value_name = "IP")]
    pub(crate) media_ip: Option<std::net::IpAddr>,
    /// Video in accepted calls, sending this: `pattern` (moving colour bars,
    /// 640x480 at 30 fps), `camera` or `camera:ID` (built with the `camera`
    /// feature), `screen` or `screen:ID` (X11; the `screen` feature), or
    /// `off` (receive only). The peer's pictures are decoded; media_stats
    /// says how many, their size, and how far their colour bars are from
    /// the test pattern's (`pattern_error`, 0-255).
    #[arg(long, value_name = "SOURCE", value_parser = parse_video_arg)]
    pub(crate) video: Option<String>,
}

impl MediaArgs {
    pub(crate) fn enabled(&self) -> bool {
        self.play.is_some() || self.record.is_some() || self.video.is_some()
    }
}

/// Checks `--video` when the command line is read, so a misspelled source
/// fails at once rather than when a call is accepted.
pub(crate) fn parse_video_arg(s: &str) -> Result<String, String> {
    let kind = s.split_once(':').map_or(s, |(k, _)| k);
    match kind {
        "off" | "pattern" if kind == s => Ok(s.to_owned()),
        "camera" | "screen" => Ok(s.to_owned()),
        _ => Err("choose pattern, off, camera[:ID] or screen[:ID]".into()),
    }
}
