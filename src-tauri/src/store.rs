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
        }
    }
}

impl Settings {
    /// Checks values a user can type.
    pub fn validate(&self) -> Result<(), String> {
        let s = self.server.trim();
        if s != "embedded" && !(s.starts_with("ws://") || s.starts_with("wss://")) {
            return Err(format!(
                "server must be \"embedded\" or a ws:// or wss:// URL, not {s:?}"
            ));
        }
        let ca = self.ca_file.trim();
        if !ca.is_empty() && !Path::new(ca).is_file() {
            return Err(format!(
                "the CA certificate file {ca:?} does not exist (give the full path of a PEM file, or leave it empty)"
            ));
        }
        let t = self.meeting_url_template.trim();
        if !t.is_empty() && !t.starts_with("https://") && !t.starts_with("http://") {
            return Err("the meeting URL must start with https:// (or http://)".into());
        }
        if !t.is_empty() && !t.contains("{channel}") {
            return Err(
                "the meeting URL must contain {channel}, where the call's channel goes".into(),
            );
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

/// What loading found, for the UI to report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub problems: Vec<String>,
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
            Err(e) => {
                report.problems.push(format!(
                    "could not read {}: {e}; using defaults",
                    path.display()
                ));
                return T::default();
            }
        };
        match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                let _ = std::fs::rename(&path, &aside);
                let msg = format!(
                    "{} was corrupt ({e}); it was moved to {} and replaced with defaults",
                    path.display(),
                    aside.display()
                );
                warn!("{msg}");
                report.problems.push(msg);
                T::default()
            }
        }
    }

    fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
        // Write then rename, so a crash mid-write never leaves a half file.
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
    }

    pub fn load_settings(&self, report: &mut LoadReport) -> Settings {
        self.load("settings.json", report)
    }

    pub fn save_settings(&self, s: &Settings) -> Result<(), String> {
        self.save("settings.json", s)
    }

    pub fn load_history(&self, report: &mut LoadReport) -> Vec<HistoryEntry> {
        self.load("history.json", report)
    }

    pub fn save_history(&self, h: &[HistoryEntry]) -> Result<(), String> {
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
            report.problems[0].contains("corrupt"),
            "{:?}",
            report.problems
        );
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
