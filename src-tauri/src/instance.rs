//! One running app per profile: the first instance listens on a loopback
//! port recorded in the profile folder; a second launch of the same profile
//! asks it to come forward, then exits.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use tracing::{debug, info};

const FILE: &str = "instance.port";
const HELLO: &str = "callinvite-focus";

/// Asks a running instance of this profile to show itself. True if one answered.
pub fn focus_running(dir: &Path) -> bool {
    let Ok(port) = std::fs::read_to_string(dir.join(FILE)) else {
        return false;
    };
    let Ok(port) = port.trim().parse::<u16>() else {
        return false;
    };
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if writeln!(stream, "{HELLO}").is_err() {
        return false;
    }
    let mut answer = String::new();
    let ok = BufReader::new(stream).read_line(&mut answer).is_ok() && answer.trim() == "ok";
    if ok {
        info!("this profile is already running; asked it to come forward");
    }
    ok
}

/// Becomes the instance of this profile: `on_focus` runs when another launch asks.
pub fn listen(dir: &Path, on_focus: impl Fn() + Send + 'static) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    std::fs::write(dir.join(FILE), listener.local_addr()?.port().to_string())?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_ok() && line.trim() == HELLO {
                on_focus();
                let _ = (&stream).write_all(b"ok\n");
            } else {
                debug!("ignored a stray connection on the instance port");
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn second_launch_focuses_the_first() {
        let dir = std::env::temp_dir().join(format!("callinvite-instance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!focus_running(&dir), "nothing runs yet");
        let focused = Arc::new(AtomicUsize::new(0));
        let f = focused.clone();
        listen(&dir, move || {
            f.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert!(focus_running(&dir));
        assert_eq!(focused.load(Ordering::SeqCst), 1);
        // A stale port file (nobody listening) is not mistaken for a running instance.
        std::fs::write(dir.join(FILE), "1").unwrap();
        assert!(!focus_running(&dir));
    }
}
