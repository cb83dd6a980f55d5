//! The `unio` binary: wiring only. `unio serve` (the default), `unio migrate`,
//! `unio create-admin --email E --password-stdin`; every setting is a flag
//! and a `UNIO_*` variable (`unio --help`), and `--config FILE` adds
//! KEY=VALUE settings under both. The command line itself is `unio::cli`.

use std::{io::BufRead, process::ExitCode};

use clap::Parser;
use unio::{
    cli::{Cli, Command},
    config::Config,
    domain::{Email, Password},
};

/// mimalloc rather than glibc's malloc: a server holding thousands of
/// long-lived streams keeps far less memory it no longer uses (README,
/// Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.settings, cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("unio: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("unio: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _inside = runtime.enter();
        unio::telemetry::init(&config.log, config.otlp_endpoint.as_deref())
    };
    let _telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("unio: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => unio::open_database(&config)
                .await
                .map(|_| println!("migrations applied"))
                .map_err(|e| e.to_string()),
            Command::CreateAdmin { email, .. } => create_admin(config, &email).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("unio: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("UNIO_ADDR: cannot listen on {}: {e}", config.addr))?;
    unio::run(config, listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn create_admin(config: Config, email: &str) -> Result<(), String> {
    let email = Email::parse(email).map_err(|e| format!("--email: {e}"))?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']);
    let password = Password::parse(password, Some(&email)).map_err(|e| format!("password: {e}"))?;
    let state = unio::build_state(config).await.map_err(|e| e.to_string())?;
    let (user, created) = state
        .accounts
        .create_admin(&email, &password)
        .await
        .map_err(|e| e.to_string())?;
    let verb = if created { "created" } else { "promoted" };
    println!("admin {} {verb} (id {})", user.email, user.id);
    Ok(())
}
