//! `kubectl pgwarden`: patronictl, the Kubernetes way. It reads the cluster through the
//! apiserver (the `PostgresCluster`, its pods' `pgwarden.io/status` annotations, the Lease
//! `<c>-leader`, the ConfigMap `<c>-state`) and talks to the agents' Patroni REST API through the
//! apiserver's pod proxy, so it works wherever the kubeconfig works. It imports only
//! `crate::api`, never the agent or the operator.
//!
//! Exit codes: 0 done, 1 refused or failed, 2 bad command line.

mod commands;
pub mod error;
pub mod k8s;
pub mod model;
pub mod render;

#[cfg(test)]
mod golden;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

pub use error::{CliError, Exit};

const ABOUT: &str = "Manage pgwarden PostgreSQL clusters (patronictl, the Kubernetes way)";

const MAIN_HELP: &str = "\
Examples:
  kubectl pgwarden list                         # every cluster in the namespace
  kubectl pgwarden list demo -w                 # watch one cluster, every 2 s
  kubectl pgwarden switchover demo --candidate demo-1
  kubectl pgwarden pause demo --wait            # maintenance mode
  kubectl pgwarden status demo -n prod

The agents are reached through the apiserver's pod proxy (pods/proxy), so the commands work
wherever your kubeconfig works. Write commands read the cluster's API token from the Secret
<cluster>-api.

Exit codes: 0 done, 1 refused or failed, 2 bad command line.";

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-pgwarden",
    bin_name = "kubectl pgwarden",
    version,
    about = ABOUT,
    after_help = MAIN_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context)
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the cluster (default: the context's namespace, else `default`)
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupKind {
    Full,
    Diff,
    Incr,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the members of a cluster (or of every cluster in the namespace)
    #[command(after_help = "\
Examples:
  kubectl pgwarden list
  kubectl pgwarden list demo
  kubectl pgwarden list demo -o json
  kubectl pgwarden list demo --watch

Columns (patronictl's): Member (pod), Host (pod IP), Role (Leader = holder of the Lease
<cluster>-leader, Sync Standby = listed in the sync key of <cluster>-state, else Replica), State,
TL (timeline), Lag in MB (behind the leader's WAL position). The header carries the system
identifier; the footer says when maintenance mode is on or a switchover is pending.")]
    List {
        /// The cluster (default: every PostgresCluster in the namespace)
        cluster: Option<String>,
        /// Output format
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Refresh every 2 seconds until Ctrl-C
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Move the primary to a replica, in a planned way
    #[command(after_help = "\
Examples:
  kubectl pgwarden switchover demo                       # to the healthiest replica
  kubectl pgwarden switchover demo --candidate demo-1
  kubectl pgwarden switchover demo --candidate demo-1 --force
  kubectl pgwarden switchover demo --candidate demo-1 --scheduled 2030-01-01T03:00:00Z

The current leader's agent carries it out (POST /switchover); the command waits up to 60 s for
the new leader and shows the cluster before and after.")]
    Switchover {
        /// Name of the PostgresCluster
        cluster: String,
        /// The member to promote (default: the agent picks the healthiest)
        #[arg(long, value_name = "POD")]
        candidate: Option<String>,
        /// The current leader; refused if it is not (patronictl's --leader/--primary/--master)
        #[arg(long, visible_alias = "primary", alias = "master", value_name = "POD")]
        leader: Option<String>,
        /// When: `now`, or an ISO 8601 timestamp
        #[arg(long, value_name = "TIME")]
        scheduled: Option<String>,
        /// Do not ask for confirmation
        #[arg(long)]
        force: bool,
    },
    /// Promote a named replica, even when the cluster has no healthy leader
    #[command(after_help = "\
Examples:
  kubectl pgwarden failover demo --candidate demo-2
  kubectl pgwarden failover demo --candidate demo-2 --force

The request goes to the candidate's agent first (POST /failover), then to any other member that
answers; the command waits up to 60 s for the candidate to lead.")]
    Failover {
        /// Name of the PostgresCluster
        cluster: String,
        /// The member to promote
        #[arg(long, value_name = "POD", required = true)]
        candidate: String,
        /// Deprecated in patronictl: naming the leader makes it a switchover
        #[arg(
            long,
            alias = "primary",
            alias = "master",
            hide = true,
            value_name = "POD"
        )]
        leader: Option<String>,
        /// Do not ask for confirmation
        #[arg(long)]
        force: bool,
    },
    /// Restart PostgreSQL on every member, or on one
    #[command(after_help = "\
Examples:
  kubectl pgwarden restart demo                 # every member, one after the other
  kubectl pgwarden restart demo demo-2
  kubectl pgwarden restart demo --pending       # only members whose settings need a restart
  kubectl pgwarden restart demo --force")]
    Restart {
        /// Name of the PostgresCluster
        cluster: String,
        /// Only this member
        pod: Option<String>,
        /// Only members that report pending_restart
        #[arg(long)]
        pending: bool,
        /// Do not ask for confirmation
        #[arg(long)]
        force: bool,
    },
    /// Wipe a replica and clone it again from the leader
    #[command(after_help = "\
Examples:
  kubectl pgwarden reinit demo demo-2
  kubectl pgwarden reinit demo demo-2 --force")]
    Reinit {
        /// Name of the PostgresCluster
        cluster: String,
        /// The replica to reinitialize
        pod: String,
        /// Do not ask for confirmation (and cancel a reinitialization in progress)
        #[arg(long)]
        force: bool,
    },
    /// Rewrite the configuration and reload PostgreSQL on every member
    #[command(after_help = "\
Examples:
  kubectl pgwarden reload demo
  kubectl pgwarden reload demo --force")]
    Reload {
        /// Name of the PostgresCluster
        cluster: String,
        /// Do not ask for confirmation
        #[arg(long)]
        force: bool,
    },
    /// Maintenance mode: the agents stop managing and fencing (sets spec.pause)
    #[command(after_help = "\
Examples:
  kubectl pgwarden pause demo
  kubectl pgwarden pause demo --wait            # until every agent reports it (60 s at most)")]
    Pause {
        /// Name of the PostgresCluster
        cluster: String,
        /// Wait until every member reports the pause
        #[arg(long)]
        wait: bool,
    },
    /// Leave maintenance mode (clears spec.pause)
    #[command(after_help = "\
Examples:
  kubectl pgwarden resume demo
  kubectl pgwarden resume demo --wait")]
    Resume {
        /// Name of the PostgresCluster
        cluster: String,
        /// Wait until every member reports it is managed again
        #[arg(long)]
        wait: bool,
    },
    /// Show the history of failovers and switchovers (timelines)
    #[command(after_help = "\
Examples:
  kubectl pgwarden history demo
  kubectl pgwarden history demo -o json")]
    History {
        /// Name of the PostgresCluster
        cluster: String,
        /// Output format
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Take a base backup now: creates a PostgresBackup the operator queues for the primary
    #[command(after_help = "\
Examples:
  kubectl pgwarden backup demo
  kubectl pgwarden backup demo --type incr
  kubectl pgwarden backup demo --name before-migration --wait

The PostgresBackup is named <cluster>-<UTC time> unless --name says otherwise; `kubectl get
postgresbackups` shows it. With --wait the command returns when it completed (exit 0) or failed.")]
    Backup {
        /// Name of the PostgresCluster
        cluster: String,
        /// pgBackRest's backup type
        #[arg(long = "type", value_enum, default_value_t = BackupKind::Full)]
        type_: BackupKind,
        /// Name of the PostgresBackup to create
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Wait (up to an hour) until the backup completed or failed
        #[arg(long)]
        wait: bool,
    },
    /// List the backups the cluster's repository holds (spec.backup)
    #[command(after_help = "\
Examples:
  kubectl pgwarden backups demo
  kubectl pgwarden backups demo -o json

Newest first, as the primary last read `pgbackrest info` (after each backup and every 5
minutes). The header names the earliest point a restore can reach, the last WAL segment
archived and the latest backup asked for, with its outcome.")]
    Backups {
        /// Name of the PostgresCluster
        cluster: String,
        /// Output format
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Phase, primary, readiness, conditions, last failover and switchover, recent Events
    #[command(after_help = "\
Examples:
  kubectl pgwarden status demo
  kubectl pgwarden status demo -n prod")]
    Status {
        /// Name of the PostgresCluster
        cluster: String,
    },
    /// Print a shell completion script
    #[command(after_help = "\
Examples:
  source <(kubectl-pgwarden completion bash)
  kubectl-pgwarden completion zsh > \"${fpath[1]}/_kubectl-pgwarden\"
  kubectl-pgwarden completion fish > ~/.config/fish/completions/kubectl-pgwarden.fish")]
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// The completion script for the executable `kubectl-pgwarden`.
pub fn completion(shell: Shell) -> String {
    let mut cmd = Cli::command().bin_name("kubectl-pgwarden");
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = vec![];
    clap_complete::generate(shell, &mut cmd, "kubectl-pgwarden", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Run the plugin with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    if let Command::Completion { shell } = &cli.command {
        let _ = std::io::Write::write_all(&mut std::io::stdout(), completion(*shell).as_bytes());
        return 0;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return Exit::Failed as i32;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit as i32
        }
    }
}
