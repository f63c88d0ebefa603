//! `pgwarden`: one binary, one role per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Print the PostgresCluster CustomResourceDefinition (YAML).
    Crd,
    /// Run the operator (reconciles PostgresCluster objects).
    Operator,
    /// Run the agent that supervises PostgreSQL in one pod.
    Agent,
    /// Run the in-pod userspace watchdog.
    Softdog,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match pgwarden::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Operator | Command::Agent | Command::Softdog => {
            eprintln!("error: this role is not built yet (see the open issues)");
            ExitCode::from(2)
        }
    }
}
