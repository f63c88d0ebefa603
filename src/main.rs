//! `pgwarden`: one binary, one role per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgwarden::agent::{config::AgentArgs, softdog::SoftdogArgs};

#[derive(Parser)]
#[command(
    name = "pgwarden",
    version,
    about = "Patroni-style high availability for PostgreSQL on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (YAML): every one, or the one of PLURAL
    /// (`postgresclusters`, `postgresbackups`).
    Crd { plural: Option<String> },
    /// Run the operator (reconciles PostgresCluster objects).
    Operator(pgwarden::operator::OperatorArgs),
    /// Run the agent that supervises PostgreSQL in one pod.
    Agent(Box<AgentArgs>),
    /// Run the in-pod userspace watchdog.
    Softdog(SoftdogArgs),
    /// Copy this binary to DEST (the init container that puts the agent into any PostgreSQL
    /// image).
    #[command(hide = true)]
    Install { dest: std::path::PathBuf },
}

/// The kube-client request tracing, silenced unless PGWARDEN_LOG names kube_client.
const QUIET_KUBE_CLIENT: &str = "kube_client::client::builder=off";

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("PGWARDEN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // kube-client logs every failed request at ERROR, one line per call: through an apiserver
    // outage that is several lines a second per agent. pgwarden logs each failure itself, once
    // per interval with a count; a directive in PGWARDEN_LOG still turns it back on.
    let named = std::env::var("PGWARDEN_LOG").is_ok_and(|v| v.contains("kube_client"));
    let filter = match QUIET_KUBE_CLIENT.parse() {
        Ok(quiet) if !named => filter.add_directive(quiet),
        _ => filter,
    };
    let json = std::env::var("PGWARDEN_LOG_FORMAT").is_ok_and(|v| v == "json");
    if json {
        fmt()
            .with_env_filter(filter)
            .json()
            .with_writer(std::io::stderr)
            .init();
    } else {
        fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    }
}

/// Copy the running binary to `dest`, executable, through a temporary name so a half-written
/// file is never run.
fn install(dest: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe()?;
    let tmp = dest.with_extension("tmp");
    std::fs::copy(&me, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, dest)?;
    println!("installed {} to {}", me.display(), dest.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { plural } => {
            let yaml = match plural.as_deref() {
                None => Some(pgwarden::crd::all_yaml()),
                Some(p) => pgwarden::crd::crd_yaml_of(p),
            };
            match yaml {
                Some(Ok(yaml)) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Some(Err(e)) => {
                    eprintln!("error: cannot render the CRD: {e}");
                    ExitCode::FAILURE
                }
                None => {
                    eprintln!(
                        "error: no CRD named {}; pgwarden defines postgresclusters and postgresbackups",
                        plural.unwrap_or_default()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Command::Agent(args) => {
            init_logging();
            // One thread: the agent's work is a loop every loopWait plus a few REST requests, all
            // I/O-bound; fencing runs on a thread of its own. Fewer threads, fewer malloc arenas.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(pgwarden::agent::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "agent stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Softdog(args) => {
            init_logging();
            match pgwarden::agent::softdog::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "softdog stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Operator(args) => {
            init_logging();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(pgwarden::operator::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Install { dest } => match install(&dest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot install pgwarden to {}: {e}", dest.display());
                ExitCode::FAILURE
            }
        },
    }
}
