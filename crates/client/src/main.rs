//! `callinvite`: a command-line client for scripts, tests and bots.
//!
//! Prints one JSON object per event on stdout (the client library's events,
//! then a final `{"event":"done",...}`) and exits with a status that says how
//! the call ended (see `Outcome`).//!
//! The command line itself is in `cli/` (see its module doc); this file
//! starts logging and the runtime, logs in, runs the command and exits.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use tracing_subscriber::EnvFilter;

use callinvite_client::{Client, LoginOptions};

use cli::args::Cli;
use cli::output::{print, print_error, Outcome};

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
            outcome = cli::run(cli.command, &client, &mut events) => outcome,
            _ = tokio::signal::ctrl_c() => Outcome::Error,
        };
        let _ = client.logout().await;
        outcome
    });
    print(&json!({"event": "done", "outcome": outcome.name(), "exit_code": outcome as u8}));
    ExitCode::from(outcome as u8)
}
