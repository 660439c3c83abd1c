//! "Start at login, in the tray": the system's entry that starts this app when
//! the user logs in, with [`HIDDEN_FLAG`] so it goes straight to the tray and
//! calls can ring without a window in the way.
//!
//! One entry per profile, named [`Autostart::name`] (`callinvite-app`, or
//! `callinvite-app-PROFILE`), starting the running executable with this
//! profile's `--profile`, `--data-dir` and `--embedded-port` when they differ
//! from the defaults:
//!
//! - **Linux and the BSDs**: an XDG autostart desktop entry,
//!   `$XDG_CONFIG_HOME/autostart/NAME.desktop` (default `~/.config/autostart`),
//!   written here with the `Exec` line quoted as the Desktop Entry
//!   specification asks.
//! - **Windows**: a value in `HKCU\…\CurrentVersion\Run`; **macOS**: a
//!   LaunchAgent, `~/Library/LaunchAgents/NAME.plist` — both through the
//!   `auto-launch` crate, with the arguments quoted (Windows) or escaped
//!   (the plist's XML) here, since the crate pastes them in as they are.
//!
//! The setting is applied when it is saved, and again at every start (so the
//! entry follows the executable when an update moves it).

use std::path::{Path, PathBuf};

use crate::options::{AppOptions, DEFAULT_EMBEDDED_PORT};

/// The flag that starts the app with its window hidden, in the tray.
pub const HIDDEN_FLAG: &str = "--hidden";

/// Why the login entry could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum AutostartError {
    #[error("cannot find this program's own path to start it at login: {0}")]
    Exe(#[source] std::io::Error),
    #[error(
        "neither XDG_CONFIG_HOME nor HOME is set, so there is no autostart folder to put the \
         login entry in; set HOME and try again"
    )]
    NoConfigDir,
    #[error("cannot write the login entry {}: {source} (check that the folder is writable)", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove the login entry {}: {source} (remove it by hand to stop starting at login)", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Windows and macOS: the `auto-launch` crate's error.
    #[error("the system refused the login entry: {0}")]
    System(String),
}

/// This profile's login entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Autostart {
    name: String,
    exe: PathBuf,
    args: Vec<String>,
}

impl Autostart {
    /// The entry that starts the running executable hidden, with `options`'
    /// profile and folders.
    pub fn for_app(options: &AppOptions) -> Result<Self, AutostartError> {
        let exe = std::env::current_exe().map_err(AutostartError::Exe)?;
        Ok(Self::new(options, exe))
    }

    /// The entry that starts `exe` hidden, with `options`' profile and folders.
    pub fn new(options: &AppOptions, exe: PathBuf) -> Self {
        let mut args = vec![HIDDEN_FLAG.to_owned()];
        if options.profile != "default" {
            args.extend(["--profile".to_owned(), options.profile.clone()]);
        }
        if let Some(dir) = &options.data_dir {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            args.extend(["--data-dir".to_owned(), dir.display().to_string()]);
        }
        if options.embedded_port != DEFAULT_EMBEDDED_PORT {
            args.extend([
                "--embedded-port".to_owned(),
                options.embedded_port.to_string(),
            ]);
        }
        Autostart {
            name: entry_name(&options.profile),
            exe,
            args,
        }
    }

    /// The entry's name: its file name without extension (Linux, macOS) or
    /// its registry value (Windows).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arguments the app is started with at login.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Adds (`on`) or removes the entry. Removing one that is not there is fine.
    pub fn set(&self, on: bool) -> Result<(), AutostartError> {
        platform::set(self, on)
    }

    /// Whether the entry is there.
    pub fn is_enabled(&self) -> Result<bool, AutostartError> {
        platform::is_enabled(self)
    }
}

/// `callinvite-app`, or `callinvite-app-PROFILE` with anything but ASCII
/// letters, digits, `-` and `_` in the profile replaced by `_`.
fn entry_name(profile: &str) -> String {
    if profile == "default" {
        return "callinvite-app".to_owned();
    }
    let safe: String = profile
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("callinvite-app-{safe}")
}

/// The XDG autostart folder: `$XDG_CONFIG_HOME/autostart`, else
/// `$HOME/.config/autostart` (an empty or relative `XDG_CONFIG_HOME` is
/// ignored, as the Base Directory specification says).
pub fn xdg_autostart_dir(
    xdg_config_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    let config = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            home.map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".config"))
        })?;
    Some(config.join("autostart"))
}

/// The desktop entry that starts `exe` with `args` at login.
pub fn desktop_entry(exe: &Path, args: &[String]) -> String {
    let exec = std::iter::once(exe.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| desktop_exec_arg(&a))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "[Desktop Entry]\n\
         Type=Application\n\
         Name=callinvite\n\
         Comment=Starts callinvite in the tray, so calls can ring\n\
         Exec={exec}\n\
         Icon=callinvite-app\n\
         Terminal=false\n\
         StartupNotify=false\n\
         X-GNOME-Autostart-enabled=true\n"
    )
}

/// One argument of a desktop entry's `Exec` key: quoted when it has a
/// reserved character, with `"`, `` ` ``, `$` and `\` escaped by a backslash
/// inside the quotes, every backslash then doubled (the key is a string value,
/// unescaped before the quoting rule) and `%` doubled (field codes), per the
/// Desktop Entry specification.
fn desktop_exec_arg(arg: &str) -> String {
    const RESERVED: &[char] = &[
        ' ', '\t', '\n', '"', '\'', '\\', '>', '<', '~', '|', '&', ';', '$', '*', '?', '#', '(',
        ')', '`',
    ];
    let arg = arg.replace('%', "%%");
    if arg.is_empty() || arg.contains(RESERVED) {
        let mut quoted = String::from("\"");
        for c in arg.chars() {
            match c {
                // \$ inside the quotes, its backslash doubled as a string value.
                '"' | '`' | '$' => {
                    quoted.push_str("\\\\");
                    quoted.push(c);
                }
                // An escaped backslash inside the quotes (\\), written as a
                // string value (each backslash doubled): four.
                '\\' => quoted.push_str("\\\\\\\\"),
                '\n' => quoted.push(' '),
                _ => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    } else {
        arg
    }
}

/// One argument on a Windows command line (the Run value), quoted as
/// `CommandLineToArgvW` reads it back.
#[cfg_attr(not(windows), allow(dead_code))]
fn windows_arg(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '"']) {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.push_str(&"\\".repeat(backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            _ => {
                out.push_str(&"\\".repeat(backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.push_str(&"\\".repeat(backslashes * 2));
    out.push('"');
    out
}

/// Text for an XML element of the LaunchAgent plist.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(all(unix, not(target_os = "macos")))]
mod platform {
    use super::*;

    fn file(entry: &Autostart) -> Result<PathBuf, AutostartError> {
        let dir = xdg_autostart_dir(
            std::env::var_os("XDG_CONFIG_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        )
        .ok_or(AutostartError::NoConfigDir)?;
        Ok(dir.join(format!("{}.desktop", entry.name)))
    }

    pub(super) fn set(entry: &Autostart, on: bool) -> Result<(), AutostartError> {
        let path = file(entry)?;
        if on {
            let write = |source| AutostartError::Write {
                path: path.clone(),
                source,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(write)?;
            }
            let tmp = path.with_extension("desktop.tmp");
            std::fs::write(&tmp, desktop_entry(&entry.exe, &entry.args)).map_err(write)?;
            std::fs::rename(&tmp, &path).map_err(write)
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(AutostartError::Remove { path, source }),
            }
        }
    }

    pub(super) fn is_enabled(entry: &Autostart) -> Result<bool, AutostartError> {
        Ok(file(entry)?.is_file())
    }
}

#[cfg(any(windows, target_os = "macos"))]
mod platform {
    use super::*;

    fn launcher(entry: &Autostart) -> Result<auto_launch::AutoLaunch, AutostartError> {
        let exe = entry.exe.display().to_string();
        #[cfg(windows)]
        let (path, args): (String, Vec<String>) = (
            windows_arg(&exe),
            entry.args.iter().map(|a| windows_arg(a)).collect(),
        );
        #[cfg(target_os = "macos")]
        let (path, args): (String, Vec<String>) =
            (exe, entry.args.iter().map(|a| xml_text(a)).collect());
        auto_launch::AutoLaunchBuilder::new()
            .set_app_name(&entry.name)
            .set_app_path(&path)
            .set_args(&args)
            .set_macos_launch_mode(auto_launch::MacOSLaunchMode::LaunchAgent)
            .set_windows_enable_mode(auto_launch::WindowsEnableMode::CurrentUser)
            .build()
            .map_err(|e| AutostartError::System(e.to_string()))
    }

    pub(super) fn set(entry: &Autostart, on: bool) -> Result<(), AutostartError> {
        let launcher = launcher(entry)?;
        let result = if on {
            launcher.enable()
        } else if launcher.is_enabled().unwrap_or(true) {
            launcher.disable()
        } else {
            Ok(())
        };
        result.map_err(|e| AutostartError::System(e.to_string()))
    }

    pub(super) fn is_enabled(entry: &Autostart) -> Result<bool, AutostartError> {
        launcher(entry)?
            .is_enabled()
            .map_err(|e| AutostartError::System(e.to_string()))
    }
}

#[cfg(not(any(unix, windows)))]
mod platform {
    use super::*;

    pub(super) fn set(_: &Autostart, _: bool) -> Result<(), AutostartError> {
        Err(AutostartError::System(
            "starting at login is not supported on this system".into(),
        ))
    }

    pub(super) fn is_enabled(_: &Autostart) -> Result<bool, AutostartError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_entry_starts_this_profile_hidden() {
        let dir = std::env::temp_dir().join("callinvite autostart");
        let mut options = AppOptions::for_test(dir.clone(), DEFAULT_EMBEDDED_PORT);
        options.profile = "default".into();
        options.data_dir = None;
        let plain = Autostart::new(&options, "/usr/bin/callinvite-app".into());
        assert_eq!(plain.name(), "callinvite-app");
        assert_eq!(plain.args(), ["--hidden"]);

        options.profile = "bob smith".into();
        options.data_dir = Some(dir.clone());
        options.embedded_port = 7451;
        let bob = Autostart::new(&options, "/usr/bin/callinvite-app".into());
        assert_eq!(bob.name(), "callinvite-app-bob_smith");
        let dir = dir.display().to_string();
        assert_eq!(
            bob.args(),
            [
                "--hidden",
                "--profile",
                "bob smith",
                "--data-dir",
                &dir,
                "--embedded-port",
                "7451"
            ]
        );
        // The flags are the app's own: they parse back to the same profile.
        let argv = std::iter::once("callinvite-app".to_owned()).chain(bob.args().iter().cloned());
        let parsed = <AppOptions as clap::Parser>::try_parse_from(argv).unwrap();
        assert!(parsed.hidden);
        assert_eq!(parsed.profile, "bob smith");
        assert_eq!(parsed.data_dir.as_deref(), Some(Path::new(&dir)));
        assert_eq!(parsed.embedded_port, 7451);
    }

    #[test]
    fn xdg_folder_follows_the_base_directory_spec() {
        assert_eq!(
            xdg_autostart_dir(Some(OsStr::new("/x/cfg")), Some(OsStr::new("/home/a"))),
            Some(PathBuf::from("/x/cfg/autostart"))
        );
        for ignored in ["", "relative/cfg"] {
            assert_eq!(
                xdg_autostart_dir(Some(OsStr::new(ignored)), Some(OsStr::new("/home/a"))),
                Some(PathBuf::from("/home/a/.config/autostart"))
            );
        }
        assert_eq!(xdg_autostart_dir(None, None), None);
    }

    #[test]
    fn exec_line_is_quoted_as_the_desktop_entry_spec_asks() {
        let entry = desktop_entry(
            Path::new("/opt/call invite/callinvite-app"),
            &["--hidden".into(), "--profile".into(), "50%$\"x\\".into()],
        );
        let exec = entry.lines().find_map(|l| l.strip_prefix("Exec=")).unwrap();
        assert_eq!(
            exec,
            r#""/opt/call invite/callinvite-app" --hidden --profile "50%%\\$\\"x\\\\""#
        );
        assert!(entry.starts_with("[Desktop Entry]\nType=Application\n"));
    }

    #[test]
    fn windows_command_line_quoting() {
        assert_eq!(windows_arg("--hidden"), "--hidden");
        assert_eq!(
            windows_arg(r"C:\Program Files\callinvite\callinvite-app.exe"),
            r#""C:\Program Files\callinvite\callinvite-app.exe""#
        );
        assert_eq!(windows_arg(r"C:\my dir\"), r#""C:\my dir\\""#);
        assert_eq!(windows_arg(r#"a "b""#), r#""a \"b\"""#);
        assert_eq!(windows_arg(""), r#""""#);
    }

    #[test]
    fn plist_text_is_escaped() {
        assert_eq!(xml_text("a&b<c>"), "a&amp;b&lt;c&gt;");
    }
}
