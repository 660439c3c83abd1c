//! What the app keeps on disk, per profile, in the platform's app-data folder:
//! `settings.json` and `history.json`. A missing file gives the defaults; a
//! corrupt one is reported, moved aside as `*.corrupt`, and replaced — never
//! a crash.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tracing::warn;

/// What to do with a new incoming call while already in one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusyPolicy {
    /// Refuse it as busy at once (the caller sees "busy").
    #[default]
    AutoBusy,
    /// Let it ring (notification) so the user can choose.
    Notify,
}

/// Do not disturb: what happens to incoming calls while it is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoNotDisturb {
    /// Calls ring as usual.
    #[default]
    Off,
    /// Calls are answered busy at once and kept as missed calls.
    Busy,
    /// Calls show (window and notification) without the ringtone.
    Silent,
}

/// User settings of one profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `"embedded"` (the built-in server) or a `ws://` / `wss://` URL.
    pub server: String,
    /// Login token for servers that need one.
    pub token: String,
    /// Serve the built-in server on all interfaces, not just this computer.
    pub share_on_lan: bool,
    pub busy_policy: BusyPolicy,
    /// Opens `https://…/{channel}` with the call's content when a call is accepted. Empty: off.
    pub meeting_url_template: String,
    /// The user id last signed in with (signs in again at start).
    pub last_user: String,
    /// For wss:// servers with a private CA: a PEM file of CA certificates to
    /// trust besides the system's. Empty: the system's roots only.
    pub ca_file: String,
    /// Microphone by name; empty: the system's default.
    pub microphone: String,
    /// Speaker by name; empty: the system's default.
    pub speaker: String,
    /// Calls start with the microphone muted.
    pub start_muted: bool,
    /// Camera by id (as `video_devices` lists them); empty: the first.
    pub camera: String,
    /// Calls start with the camera on (else it stays off until turned on).
    pub start_camera_on: bool,
    /// Do not disturb.
    pub do_not_disturb: DoNotDisturb,
    /// Start this profile when the user logs in, hidden in the tray (see
    /// [`crate::autostart`]).
    pub start_at_login: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: "embedded".into(),
            token: String::new(),
            share_on_lan: false,
            busy_policy: BusyPolicy::AutoBusy,
            meeting_url_template: String::new(),
            last_user: String::new(),
            ca_file: String::new(),
            microphone: String::new(),
            speaker: String::new(),
            start_muted: false,
            camera: String::new(),
            start_camera_on: true,
            do_not_disturb: DoNotDisturb::Off,
            start_at_login: false,
        }
    }
}

/// A setting the user typed that cannot be used; the message says what to type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("server must be \"embedded\" or a ws:// or wss:// URL, not {0:?}")]
    Server(String),
    #[error(
        "the CA certificate file {0:?} does not exist (give the full path of a PEM file, or leave it empty)"
    )]
    CaFileMissing(String),
    #[error("the meeting URL must start with https:// (or http://)")]
    MeetingUrlScheme,
    #[error("the meeting URL must contain {{channel}}, where the call's channel goes")]
    MeetingUrlNoChannel,
}

impl Settings {
    /// Checks values a user can type.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let s = self.server.trim();
        if s != "embedded" && !(s.starts_with("ws://") || s.starts_with("wss://")) {
            return Err(SettingsError::Server(s.to_owned()));
        }
        let ca = self.ca_file.trim();
        if !ca.is_empty() && !Path::new(ca).is_file() {
            return Err(SettingsError::CaFileMissing(ca.to_owned()));
        }
        let t = self.meeting_url_template.trim();
        if !t.is_empty() && !t.starts_with("https://") && !t.starts_with("http://") {
            return Err(SettingsError::MeetingUrlScheme);
        }
        if !t.is_empty() && !t.contains("{channel}") {
            return Err(SettingsError::MeetingUrlNoChannel);
        }
        Ok(())
    }
}

/// One line of call history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The invitation id.
    pub id: String,
    /// `"outgoing"` or `"incoming"`.
    pub direction: String,
    pub peer: String,
    /// Unix ms when the call started (or was accepted).
    pub at_ms: u64,
    /// The outcome word (`accepted`, `busy`, `missed`, …), as in the `call-outcome` event.
    pub outcome: String,
    /// Seconds in call, once an accepted call ended.
    pub duration_s: Option<u64>,
    /// An incoming call nobody here answered.
    pub missed: bool,
}

/// The profile's folder and its files.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// A profile file that could not be read or written. Loading never fails
/// (defaults stand in, see [`LoadReport`]); saving returns these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not read {}: {source}; using defaults", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} was corrupt ({source}); it was moved to {} and replaced with defaults",
        path.display(),
        aside.display()
    )]
    Corrupt {
        path: PathBuf,
        aside: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot create {}: {source} (check that the folder is writable)", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source} (is the disk full or the folder read-only?)", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot replace {}: {source} (check the file's permissions)", path.display())]
    Replace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {name}: {source}")]
    Encode {
        name: String,
        source: serde_json::Error,
    },
}

/// What loading found, for the UI to report.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub problems: Vec<StoreError>,
}

impl LoadReport {
    /// The problems as one line for the UI, or `None` when there were none.
    pub fn summary(&self) -> Option<String> {
        (!self.problems.is_empty()).then(|| {
            self.problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

impl Store {
    pub fn new(dir: PathBuf) -> Self {
        Store { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn load<T: DeserializeOwned + Default>(&self, name: &str, report: &mut LoadReport) -> T {
        let path = self.dir.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return T::default(),
            Err(source) => {
                report.problems.push(StoreError::Read { path, source });
                return T::default();
            }
        };
        match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(source) => {
                let aside = path.with_extension("json.corrupt");
                let _ = std::fs::rename(&path, &aside);
                let problem = StoreError::Corrupt {
                    path,
                    aside,
                    source,
                };
                warn!("{problem}");
                report.problems.push(problem);
                T::default()
            }
        }
    }

    fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StoreError::CreateDir {
            dir: self.dir.clone(),
            source,
        })?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let text = serde_json::to_string_pretty(value).map_err(|source| StoreError::Encode {
            name: name.to_owned(),
            source,
        })?;
        // Write then rename, so a crash mid-write never leaves a half file.
        std::fs::write(&tmp, text).map_err(|source| StoreError::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| StoreError::Replace { path, source })
    }

    pub fn load_settings(&self, report: &mut LoadReport) -> Settings {
        self.load("settings.json", report)
    }

    pub fn save_settings(&self, s: &Settings) -> Result<(), StoreError> {
        self.save("settings.json", s)
    }

    pub fn load_history(&self, report: &mut LoadReport) -> Vec<HistoryEntry> {
        self.load("history.json", report)
    }

    pub fn save_history(&self, h: &[HistoryEntry]) -> Result<(), StoreError> {
        self.save("history.json", &h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> Store {
        let dir =
            std::env::temp_dir().join(format!("callinvite-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store::new(dir)
    }

    #[test]
    fn missing_files_give_defaults_and_round_trip() {
        let store = temp_store("roundtrip");
        let mut report = LoadReport::default();
        assert_eq!(store.load_settings(&mut report), Settings::default());
        assert!(store.load_history(&mut report).is_empty());
        assert!(report.problems.is_empty());
        let s = Settings {
            last_user: "alice".into(),
            busy_policy: BusyPolicy::Notify,
            ..Settings::default()
        };
        store.save_settings(&s).unwrap();
        assert_eq!(store.load_settings(&mut report), s);
    }

    #[test]
    fn corrupt_file_is_reported_moved_aside_and_replaced() {
        let store = temp_store("corrupt");
        std::fs::create_dir_all(store.dir()).unwrap();
        std::fs::write(store.dir().join("history.json"), "[{not json").unwrap();
        let mut report = LoadReport::default();
        assert!(store.load_history(&mut report).is_empty());
        assert_eq!(report.problems.len(), 1);
        assert!(
            matches!(report.problems[0], StoreError::Corrupt { .. }),
            "{:?}",
            report.problems
        );
        assert!(report.summary().is_some_and(|s| s.contains("corrupt")));
        assert!(store.dir().join("history.json.corrupt").exists());
        // Older files with missing fields still load (defaults fill in).
        std::fs::write(store.dir().join("settings.json"), r#"{"last_user":"bob"}"#).unwrap();
        let s = store.load_settings(&mut report);
        assert_eq!(
            (s.last_user.as_str(), s.server.as_str()),
            ("bob", "embedded")
        );
        assert!(
            s.start_camera_on,
            "a file from before video starts calls with the camera on"
        );
    }

    #[test]
    fn settings_validation() {
        let ok = Settings::default();
        assert!(ok.validate().is_ok());
        assert!(Settings {
            server: "http://x".into(),
            ..Settings::default()
        }
        .validate()
        .is_err());
        assert!(Settings {
            server: "wss://calls.example.org".into(),
            ..Settings::default()
        }
        .validate()
        .is_ok());
        assert!(Settings {
            meeting_url_template: "https://meet.example.org/room".into(),
            ..Settings::default()
        }
        .validate()
        .is_err());
        assert!(Settings {
            meeting_url_template: "https://meet.example.org/{channel}".into(),
            ..Settings::default()
        }
        .validate()
        .is_ok());
    }
}
