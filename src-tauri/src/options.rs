//! Command-line options of the app (all optional).

use std::path::PathBuf;

use clap::Parser;

/// The default port of the built-in server; a second instance or profile joins it.
pub const DEFAULT_EMBEDDED_PORT: u16 = 7450;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "callinvite-app",
    version,
    about = "callinvite desktop app: call a user id, answer from the notification",
    long_about = "callinvite desktop app: call a user id, answer from the notification.\n\n\
        With no server configured at sign-in it serves a built-in one on 127.0.0.1:PORT \
        (or joins the one another profile already serves there)."
)]
pub struct AppOptions {
    /// Profile name: each profile has its own settings, history and window.
    /// Run `--profile alice` and `--profile bob` side by side to call yourself.
    #[arg(long, env = "CALLINVITE_PROFILE", default_value = "default")]
    pub profile: String,
    /// Folder for this profile's files (default: the platform's app-data folder).
    #[arg(long, env = "CALLINVITE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Port of the built-in server.
    #[arg(long, env = "CALLINVITE_EMBEDDED_PORT", default_value_t = DEFAULT_EMBEDDED_PORT)]
    pub embedded_port: u16,
    /// The built-in server's secret (created, readable by this account only, on
    /// first use; shared by every profile of the account). Default: in the
    /// app's data folder.
    #[arg(long, env = "CALLINVITE_EMBEDDED_SECRET_FILE", value_name = "FILE")]
    pub embedded_secret_file: Option<PathBuf>,
    /// Log filter (error, warn, info, debug).
    #[arg(long, env = "CALLINVITE_LOG", default_value = "info")]
    pub log: String,
    /// Instead of the microphone, send this in calls: a WAV file (looped),
    /// `tone:FREQ` or `silence` (for tests and headless machines).
    #[arg(long, env = "CALLINVITE_FAKE_AUDIO_INPUT", value_name = "SOURCE")]
    pub fake_audio_input: Option<String>,
    /// Instead of the speaker, record calls to this WAV file (48 kHz mono; a
    /// later call overwrites it).
    #[arg(long, env = "CALLINVITE_FAKE_AUDIO_OUTPUT", value_name = "FILE.wav")]
    pub fake_audio_output: Option<PathBuf>,
    /// Instead of the cameras, offer this one in calls: `pattern` (moving
    /// colour bars, 640x480 at 30 fps) or `none` (as if there were no camera);
    /// for tests and machines without a camera.
    #[arg(long, env = "CALLINVITE_FAKE_VIDEO_INPUT", value_name = "SOURCE", value_parser = ["pattern", "none"])]
    pub fake_video_input: Option<String>,
    /// Use only this local address for call media (e.g. 127.0.0.1); default: every interface.
    #[arg(long, env = "CALLINVITE_MEDIA_IP", value_name = "IP")]
    pub media_ip: Option<std::net::IpAddr>,
    /// Start with the window hidden, in the tray (as the "Start at login"
    /// entry does); the tray's Show, or launching the app again, shows it.
    /// Without a tray the window shows anyway.
    #[arg(long)]
    pub hidden: bool,
    /// Set by WebKit's WebDriver when it starts the app for a test; changes nothing here.
    #[arg(long, hide = true)]
    pub automation: bool,
}

impl AppOptions {
    /// Parses the process arguments. `--help` and `--version` print and exit 0; an unknown
    /// or malformed flag prints what is wrong and the usage, and exits 2, before any window
    /// or display is touched.
    pub fn from_args() -> Self {
        AppOptions::parse()
    }

    /// Options for tests: a profile in `dir`, a given embedded port.
    pub fn for_test(dir: PathBuf, embedded_port: u16) -> Self {
        AppOptions {
            profile: "test".into(),
            data_dir: Some(dir.clone()),
            embedded_port,
            embedded_secret_file: Some(dir.join("embedded-server.secret")),
            log: "warn".into(),
            fake_audio_input: Some("silence".into()),
            fake_audio_output: None,
            fake_video_input: Some("none".into()),
            media_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
            hidden: false,
            automation: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    #[test]
    fn help_and_version_are_answered_not_ignored() {
        let help = AppOptions::try_parse_from(["callinvite-app", "--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("--profile"));
        let version = AppOptions::try_parse_from(["callinvite-app", "--version"]).unwrap_err();
        assert_eq!(version.kind(), ErrorKind::DisplayVersion);
    }

    #[test]
    fn a_misspelled_flag_is_rejected() {
        let err = AppOptions::try_parse_from(["callinvite-app", "--proflie", "bob"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
        assert!(err.to_string().contains("--proflie"));
    }

    #[test]
    fn fake_video_input_is_the_pattern_or_none() {
        let o = AppOptions::try_parse_from(["callinvite-app", "--fake-video-input", "pattern"])
            .unwrap();
        assert_eq!(o.fake_video_input.as_deref(), Some("pattern"));
        assert!(
            AppOptions::try_parse_from(["callinvite-app", "--fake-video-input", "bars"]).is_err()
        );
    }

    #[test]
    fn webdriver_automation_flag_is_accepted() {
        let o = AppOptions::try_parse_from(["callinvite-app", "--automation", "--profile", "e2e"])
            .unwrap();
        assert!(o.automation);
        assert_eq!(o.profile, "e2e");
    }
}
