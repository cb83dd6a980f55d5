//! The `unio` binary: wiring only. `unio serve` (the default), `unio migrate`,
//! `unio create-admin --email E --password-stdin`; `--config FILE` adds
//! KEY=VALUE settings under the environment.

use std::{io::BufRead, path::PathBuf, process::ExitCode};

use unio::{
    config::Config,
    domain::{Email, Password},
};

const USAGE: &str = "\
usage: unio [serve|migrate|create-admin] [--config FILE]
       unio create-admin --email EMAIL --password-stdin

  serve          run the gRPC / gRPC-Web server (default)
  migrate        apply database migrations and exit
  create-admin   create an admin account, or promote an existing one;
                 reads the password from the first line of standard input

Configuration comes from UNIO_* environment variables (see README.md).";

enum Command {
    Serve,
    Migrate,
    CreateAdmin { email: String },
}

fn main() -> ExitCode {
    let (command, config_file) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("unio: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(config_file.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("unio: {err}");
            return ExitCode::from(2);
        }
    };
    unio::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("unio: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => serve(config).await,
            Command::Migrate => unio::open_database(&config)
                .await
                .map(|_| println!("migrations applied"))
                .map_err(|e| e.to_string()),
            Command::CreateAdmin { email } => create_admin(config, &email).await,
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

fn parse_args(
    args: impl Iterator<Item = String>,
) -> Result<Option<(Command, Option<PathBuf>)>, String> {
    let mut args = args.peekable();
    let mut command = None;
    let mut config = None;
    let mut email = None;
    let mut password_stdin = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" | "help" => return Ok(None),
            "-V" | "--version" => {
                println!("unio {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--config" => config = Some(PathBuf::from(args.next().ok_or("--config needs a file")?)),
            "--email" => email = Some(args.next().ok_or("--email needs an address")?),
            "--password-stdin" => password_stdin = true,
            "serve" | "migrate" | "create-admin" if command.is_none() => command = Some(arg),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let command = match command.as_deref().unwrap_or("serve") {
        "create-admin" => {
            let email = email.ok_or("create-admin needs --email")?;
            if !password_stdin {
                return Err("create-admin needs --password-stdin (the password is read from standard input)".into());
            }
            Command::CreateAdmin { email }
        }
        _ if email.is_some() || password_stdin => {
            return Err("--email and --password-stdin belong to create-admin".into());
        }
        "migrate" => Command::Migrate,
        _ => Command::Serve,
    };
    Ok(Some((command, config)))
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
