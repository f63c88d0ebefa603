//! `kubectl pgwarden`: the kubectl plugin (patronictl's counterpart).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kubectl-pgwarden",
    version,
    about = "Manage pgwarden PostgreSQL clusters"
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("kubectl pgwarden: no commands yet; see `kubectl pgwarden --help`");
    std::process::exit(2);
}
