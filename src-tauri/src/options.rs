//! Command-line options of the app (all optional).

use std::path::PathBuf;

use clap::Parser;

/// The default port of the built-in server; a second instance or profile joins it.
pub const DEFAULT_EMBEDDED_PORT: u16 = 7450;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "callinvite-app",
    version,
    about = "callinvite desktop app",
    ignore_errors = true
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
    /// Log filter (error, warn, info, debug).
    #[arg(long, env = "CALLINVITE_LOG", default_value = "info")]
    pub log: String,
}

impl AppOptions {
    /// Parses the process arguments, ignoring ones it does not know (WebDriver adds its own).
    pub fn from_args() -> Self {
        AppOptions::try_parse().unwrap_or_else(|_| AppOptions::parse_from(["callinvite-app"]))
    }

    /// Options for tests: a profile in `dir`, a given embedded port.
    pub fn for_test(dir: PathBuf, embedded_port: u16) -> Self {
        AppOptions {
            profile: "test".into(),
            data_dir: Some(dir),
            embedded_port,
            log: "warn".into(),
        }
    }
}
