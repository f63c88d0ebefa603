//! The commands: read through [`Session`], check with [`model`], render with [`render`], ask,
//! act, and report in patronictl's words.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use crate::api::patroni::{PatroniStatus, paths};

use super::error::{CliError, Result, capitalize};
use super::k8s::Session;
use super::model::{self, Action, Plan, Role, Topology};
use super::render;
use super::{BackupKind, Cli, Command, Output};
use crate::api::postgres_backup::BackupType;
use crate::api::{PostgresBackup, PostgresBackupSpec, PostgresBackupStatus};
use kube::Api;
use kube::api::PostParams;

/// How long switchover, failover and `--wait` wait for the outcome.
const WAIT: Duration = Duration::from_secs(60);

/// Write to stdout; a closed pipe (`| head`) ends the program quietly.
fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    if o.write_all(s.as_bytes()).and_then(|_| o.flush()).is_err() {
        std::process::exit(0);
    }
}

fn outln(s: &str) {
    out(&format!("{s}\n"));
}

fn warn(topo: &Topology) {
    for w in &topo.warnings {
        eprintln!("warning: {w}");
    }
}

/// Ask on the terminal; anything but y/yes (or no terminal input at all) is no.
fn confirm(question: &str) -> bool {
    out(&format!("{question} [y/N]: "));
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => {
            outln("");
            false
        }
        Ok(_) => matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
    }
}

/// patronictl's timestamp in front of an agent's answer.
fn timestamp() -> String {
    jiff::Zoned::now()
        .strftime("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

pub async fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let s = Session::connect(
        g.kubeconfig.as_deref(),
        g.context.as_deref(),
        g.namespace.as_deref(),
    )
    .await?;
    match cli.command {
        Command::List {
            cluster,
            output,
            watch,
        } => list(&s, cluster.as_deref(), output, watch).await,
        Command::Switchover {
            cluster,
            candidate,
            leader,
            scheduled,
            force,
        } => {
            manual(
                &s,
                &cluster,
                Action::Switchover,
                leader.as_deref(),
                candidate.as_deref(),
                scheduled.as_deref(),
                force,
            )
            .await
        }
        Command::Failover {
            cluster,
            candidate,
            leader,
            force,
        } => {
            let action = if leader.is_some() {
                eprintln!(
                    "warning: naming the leader makes this a switchover (as in Patroni); use \
                     `kubectl pgwarden switchover` instead"
                );
                Action::Switchover
            } else {
                Action::Failover
            };
            manual(
                &s,
                &cluster,
                action,
                leader.as_deref(),
                Some(&candidate),
                None,
                force,
            )
            .await
        }
        Command::Restart {
            cluster,
            pod,
            pending,
            force,
        } => restart(&s, &cluster, pod.as_deref(), pending, force).await,
        Command::Reinit {
            cluster,
            pod,
            force,
        } => reinit(&s, &cluster, &pod, force).await,
        Command::Reload { cluster, force } => reload(&s, &cluster, force).await,
        Command::Pause { cluster, wait } => toggle_pause(&s, &cluster, true, wait).await,
        Command::Resume { cluster, wait } => toggle_pause(&s, &cluster, false, wait).await,
        Command::History { cluster, output } => history(&s, &cluster, output).await,
        Command::Status { cluster } => status(&s, &cluster).await,
        Command::Backups { cluster, output } => backups(&s, &cluster, output).await,
        Command::Backup {
            cluster,
            type_,
            name,
            wait,
        } => backup(&s, &cluster, type_, name, wait).await,
        Command::Completion { .. } => Ok(()),
    }
}

async fn topologies(s: &Session, names: &[String]) -> Result<Vec<Topology>> {
    let mut out = vec![];
    for n in names {
        out.push(model::topology(&s.snapshot(n).await?));
    }
    Ok(out)
}

fn render_list(topos: &[Topology], output: Output) -> String {
    match output {
        Output::Table => topos
            .iter()
            .map(render::list_table)
            .collect::<Vec<_>>()
            .join("\n"),
        Output::Json => render::list_json(topos),
        Output::Yaml => render::list_yaml(topos),
    }
}

async fn list(s: &Session, cluster: Option<&str>, output: Output, watch: bool) -> Result<()> {
    let names = match cluster {
        Some(c) => vec![c.to_string()],
        None => s.cluster_names().await?,
    };
    if names.is_empty() {
        eprintln!("No PostgresClusters found in namespace {}.", s.namespace);
        return Ok(());
    }
    if !watch {
        let topos = topologies(s, &names).await?;
        for t in &topos {
            warn(t);
        }
        out(&render_list(&topos, output));
        return Ok(());
    }
    loop {
        let screen = match topologies(s, &names).await {
            Ok(topos) => {
                let warnings: String = topos
                    .iter()
                    .flat_map(|t| t.warnings.iter())
                    .map(|w| format!("warning: {w}\n"))
                    .collect();
                render_list(&topos, output) + &warnings
            }
            Err(e) => format!("error: {e}\n"),
        };
        // Clear the screen, like `watch`.
        out(&format!(
            "\x1b[2J\x1b[H{}\n{screen}",
            jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S %Z")
        ));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn manual(
    s: &Session,
    cluster: &str,
    action: Action,
    leader: Option<&str>,
    candidate: Option<&str>,
    scheduled: Option<&str>,
    force: bool,
) -> Result<()> {
    let snap = s.snapshot(cluster).await?;
    let topo = model::topology(&snap);
    outln("Current cluster topology");
    out(&render::list_table(&topo));
    warn(&topo);
    let scheduled_at = model::parse_scheduled(scheduled, &jiff::tz::TimeZone::system())?;
    let plan = model::plan(&topo, action, leader, candidate, scheduled_at)?;
    if !force
        && action == Action::Failover
        && snap.cluster.spec.ha.synchronous_mode != crate::api::cluster::SynchronousMode::Off
        && !topo.sync_standbys.is_empty()
        && let Some(c) = &plan.candidate
        && !topo.sync_standbys.contains(c)
        && !confirm(&format!(
            "Are you sure you want to failover to the asynchronous node {c}?"
        ))
    {
        return Err(CliError::aborted(action.as_str()));
    }
    if !force && !confirm(&plan.question(cluster)) {
        return Err(CliError::aborted(&match plan.scheduled_at {
            Some(_) => format!("scheduled {}", action.as_str()),
            None => action.as_str().to_string(),
        }));
    }
    let token = s.token(cluster).await?;
    let targets = plan.targets(&topo);
    if targets.is_empty() {
        return Err(CliError::failed(format!(
            "no pod of cluster {cluster} can take the {} request (the leader {} has no pod)",
            action.as_str(),
            plan.leader.as_deref().unwrap_or("-")
        )));
    }
    let body = plan.body();
    let mut reply = None;
    let mut last_err = None;
    for t in &targets {
        match s
            .agent(t, Method::POST, action.as_str(), Some(&body), Some(&token))
            .await
        {
            Ok(r) => {
                reply = Some(r);
                break;
            }
            Err(e) => {
                eprintln!("warning: {e}");
                last_err = Some(e);
            }
        }
    }
    let Some(reply) = reply else {
        return Err(last_err.unwrap_or_else(|| CliError::failed("no agent answered")));
    };
    if !matches!(reply.code, 200 | 202) {
        return Err(CliError::agent_refused(
            action.as_str(),
            reply.code,
            &reply.body,
        ));
    }
    outln(&format!("{} {}", timestamp(), reply.body.trim()));
    if reply.code == 202 {
        return Ok(());
    }
    let (topo, done) = wait_for_new_leader(s, cluster, &plan).await?;
    out(&render::list_table(&topo));
    warn(&topo);
    if !done {
        return Err(CliError::failed(format!(
            "{} requested, but no new leader is running after {} s",
            capitalize(action.as_str()),
            WAIT.as_secs()
        )));
    }
    Ok(())
}

/// Until the new leader holds the Lease and runs as primary (or [`WAIT`] runs out).
async fn wait_for_new_leader(s: &Session, cluster: &str, plan: &Plan) -> Result<(Topology, bool)> {
    let start = Instant::now();
    loop {
        let topo = model::topology(&s.snapshot(cluster).await?);
        let done = topo.leader.as_ref().is_some_and(|l| {
            Some(l) != plan.leader.as_ref()
                && plan.candidate.as_ref().is_none_or(|c| c == l)
                && topo.member(l).is_some_and(|m| {
                    m.status.as_ref().is_some_and(|st| {
                        st.role == crate::api::member::MemberRole::Primary
                            && st.state == crate::api::member::MemberState::Running
                    })
                })
        });
        if done || start.elapsed() >= WAIT {
            return Ok((topo, done));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// patronictl's answer lines for member actions; returns whether it worked.
fn report(action: &str, member: &str, code: u16, body: &str) -> bool {
    if code >= 400 {
        outln(&format!(
            "Failed: {action} for member {member}, status code={code}, ({})",
            body.trim()
        ));
        false
    } else {
        outln(&format!("Success: {action} for member {member}"));
        true
    }
}

/// The line for a member whose agent could not be asked.
pub fn unanswered(action: &str, member: &str, e: &CliError) -> String {
    format!("Failed: {action} for member {member}, ({e})")
}

fn failed_members(action: &str, failed: &[String], total: usize) -> Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    Err(CliError::failed(format!(
        "{action} failed on {} of {total} member(s): {}",
        failed.len(),
        failed.join(", ")
    )))
}

async fn restart(
    s: &Session,
    cluster: &str,
    pod: Option<&str>,
    pending: bool,
    force: bool,
) -> Result<()> {
    let topo = model::topology(&s.snapshot(cluster).await?);
    out(&render::list_table(&topo));
    warn(&topo);
    let mut members: Vec<&model::Member> = match pod {
        Some(p) => vec![
            topo.member(p)
                .ok_or_else(|| CliError::not_a_member(p, cluster))?,
        ],
        None => topo.members.iter().collect(),
    };
    if pending {
        members.retain(|m| m.pending_restart);
        if members.is_empty() {
            outln(&format!(
                "No member of cluster {cluster} is pending a restart"
            ));
            return Ok(());
        }
    }
    if members.is_empty() {
        return Err(CliError::failed(format!(
            "{cluster} cluster doesn't have any members"
        )));
    }
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    if !force
        && !confirm(&format!(
            "Are you sure you want to restart members {}?",
            names.join(", ")
        ))
    {
        return Err(CliError::failed("Aborted restart"));
    }
    let token = s.token(cluster).await?;
    let body = if pending {
        json!({"restart_pending": true})
    } else {
        json!({})
    };
    let mut failed = vec![];
    for name in &names {
        match s
            .agent(
                name,
                Method::POST,
                paths::RESTART,
                Some(&body),
                Some(&token),
            )
            .await
        {
            Ok(r) => match r.code {
                200 => outln(&format!("Success: restart on member {name}")),
                202 => outln(&format!("Success: restart scheduled on member {name}")),
                409 => {
                    outln(&format!(
                        "Failed: another restart is already scheduled on member {name}"
                    ));
                    failed.push(name.clone());
                }
                code => {
                    report("restart", name, code, &r.body);
                    failed.push(name.clone());
                }
            },
            Err(e) => {
                outln(&unanswered("restart", name, &e));
                failed.push(name.clone());
            }
        }
    }
    failed_members("restart", &failed, names.len())
}

async fn reinit(s: &Session, cluster: &str, pod: &str, force: bool) -> Result<()> {
    let topo = model::topology(&s.snapshot(cluster).await?);
    out(&render::list_table(&topo));
    warn(&topo);
    let member = topo
        .member(pod)
        .ok_or_else(|| CliError::not_a_member(pod, cluster))?;
    if member.role == Role::Leader {
        return Err(CliError::failed("No replica among provided members"));
    }
    if !force
        && !confirm(&format!(
            "Are you sure you want to reinitialize members {pod}?"
        ))
    {
        return Err(CliError::failed("Aborted reinitialize"));
    }
    let token = s.token(cluster).await?;
    let r = s
        .agent(
            pod,
            Method::POST,
            paths::REINITIALIZE,
            Some(&json!({"force": force})),
            Some(&token),
        )
        .await?;
    if report("reinitialize", pod, r.code, &r.body) {
        Ok(())
    } else {
        Err(CliError::failed(format!("reinitialize failed on {pod}")))
    }
}

async fn reload(s: &Session, cluster: &str, force: bool) -> Result<()> {
    let snap = s.snapshot(cluster).await?;
    let loop_wait = snap.cluster.spec.ha.loop_wait;
    let topo = model::topology(&snap);
    out(&render::list_table(&topo));
    warn(&topo);
    if topo.members.is_empty() {
        return Err(CliError::failed(format!(
            "{cluster} cluster doesn't have any members"
        )));
    }
    let names: Vec<String> = topo.members.iter().map(|m| m.name.clone()).collect();
    if !force
        && !confirm(&format!(
            "Are you sure you want to reload members {}?",
            names.join(", ")
        ))
    {
        return Err(CliError::failed("Aborted reload"));
    }
    let token = s.token(cluster).await?;
    let mut failed = vec![];
    for name in &names {
        match s
            .agent(name, Method::POST, paths::RELOAD, None, Some(&token))
            .await
        {
            Ok(r) if r.code == 200 => outln(&format!("No changes to apply on member {name}")),
            Ok(r) if r.code == 202 => outln(&format!(
                "Reload request received for member {name} and will be processed within \
                 {loop_wait} seconds"
            )),
            Ok(r) => {
                report("reload", name, r.code, &r.body);
                failed.push(name.clone());
            }
            Err(e) => {
                outln(&unanswered("reload", name, &e));
                failed.push(name.clone());
            }
        }
    }
    failed_members("reload", &failed, names.len())
}

/// What a member's agent says about maintenance mode (`GET /patroni`); `None` when it does not
/// answer.
async fn member_paused(s: &Session, pod: &str) -> Option<bool> {
    let r = s
        .agent(pod, Method::GET, paths::PATRONI, None, None)
        .await
        .ok()?;
    let status: PatroniStatus = serde_json::from_str(&r.body).ok()?;
    Some(status.pause)
}

async fn toggle_pause(s: &Session, cluster: &str, pause: bool, wait: bool) -> Result<()> {
    let c = s.cluster(cluster).await?;
    if c.spec.pause == pause {
        return Err(CliError::failed(if pause {
            "Cluster is already paused"
        } else {
            "Cluster is not paused"
        }));
    }
    s.set_pause(cluster, pause).await?;
    let word = if pause { "paused" } else { "resumed" };
    if !wait {
        outln(&format!("Success: cluster management is {word}"));
        return Ok(());
    }
    outln(&format!(
        "'{}' request sent, waiting until it is recognized by all nodes",
        if pause { "pause" } else { "resume" }
    ));
    let start = Instant::now();
    let mut pending: Vec<String> = vec![];
    loop {
        let snap = s.snapshot(cluster).await?;
        let topo = model::topology(&snap);
        let mut answered = 0;
        pending.clear();
        for m in &topo.members {
            match member_paused(s, &m.name).await {
                Some(p) => {
                    answered += 1;
                    if p != pause {
                        pending.push(m.name.clone());
                    }
                }
                None => pending.push(format!("{} (no answer)", m.name)),
            }
        }
        let reachable_done = answered > 0 && pending.iter().all(|p| p.ends_with("(no answer)"));
        // No agent answers at all: the operator's view is all there is.
        let st = snap.cluster.status.clone().unwrap_or_default();
        let phase_done = answered == 0
            && st.observed_generation >= snap.cluster.metadata.generation
            && (st.phase.as_deref() == Some("Paused")) == pause;
        if reachable_done || phase_done {
            for p in &pending {
                eprintln!("warning: {p} did not confirm");
            }
            outln(&format!("Success: cluster management is {word}"));
            return Ok(());
        }
        if start.elapsed() >= WAIT {
            return Err(CliError::failed(format!(
                "{} members didn't recognize the {} state after {} seconds",
                pending.join(", "),
                if pause { "pause" } else { "resume" },
                WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn history(s: &Session, cluster: &str, output: Output) -> Result<()> {
    let snap = s.snapshot(cluster).await?;
    let rows = model::history_rows(&snap.state, cluster)?;
    out(&match output {
        Output::Table => render::history_table(&rows),
        Output::Json => {
            serde_json::to_string_pretty(&render::history_records(&rows))
                .unwrap_or_else(|_| "[]".into())
                + "\n"
        }
        Output::Yaml if rows.is_empty() => "[]\n".into(),
        Output::Yaml => {
            serde_saphyr::to_string(&render::history_records(&rows)).unwrap_or_default()
        }
    });
    Ok(())
}

async fn backup(
    s: &Session,
    cluster: &str,
    kind: BackupKind,
    name: Option<String>,
    wait: bool,
) -> Result<()> {
    let c = s.cluster(cluster).await?;
    if c.spec.backup.is_none() {
        return Err(CliError::failed(format!(
            "cluster {cluster} has no backup repository (spec.backup)"
        )));
    }
    let name = name.unwrap_or_else(|| {
        format!(
            "{cluster}-{}",
            jiff::Timestamp::now().strftime("%Y%m%d%H%M%S")
        )
    });
    let type_ = match kind {
        BackupKind::Full => BackupType::Full,
        BackupKind::Diff => BackupType::Diff,
        BackupKind::Incr => BackupType::Incr,
    };
    let api: Api<PostgresBackup> = Api::namespaced(s.client.clone(), &s.namespace);
    let obj = PostgresBackup::new(
        &name,
        PostgresBackupSpec {
            cluster: cluster.to_string(),
            type_,
        },
    );
    api.create(&PostParams::default(), &obj)
        .await
        .map_err(|e| s.error(e, &format!("cannot create PostgresBackup {name}")))?;
    out(&format!(
        "postgresbackup/{name} created: a backup of {cluster} (type {})\n",
        type_.as_pgbackrest()
    ));
    if !wait {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut last_phase = String::new();
    loop {
        let b = api
            .get(&name)
            .await
            .map_err(|e| s.error(e, &format!("cannot read PostgresBackup {name}")))?;
        let st = b.status.unwrap_or_default();
        let phase = st.phase.clone().unwrap_or_else(|| "Pending".into());
        if phase != last_phase {
            out(&format!(
                "{phase}{}\n",
                st.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
            last_phase = phase.clone();
        }
        match phase.as_str() {
            PostgresBackupStatus::COMPLETED => {
                out(&format!("label {}\n", st.label.unwrap_or_default()));
                return Ok(());
            }
            PostgresBackupStatus::FAILED => {
                return Err(CliError::failed(format!(
                    "backup {name} failed: {}",
                    st.message.unwrap_or_default()
                )));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(CliError::failed(format!(
                "backup {name} is still {phase} after an hour"
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn backups(s: &Session, cluster: &str, output: Output) -> Result<()> {
    let c = s.cluster(cluster).await?;
    if c.spec.backup.is_none() {
        return Err(CliError::failed(format!(
            "cluster {cluster} has no backup repository (spec.backup)"
        )));
    }
    let st = c.status.clone().unwrap_or_default();
    out(&match output {
        Output::Table => render::backups(&st),
        Output::Json => {
            serde_json::to_string_pretty(&st.backups).unwrap_or_else(|_| "[]".into()) + "\n"
        }
        Output::Yaml if st.backups.is_empty() => "[]\n".into(),
        Output::Yaml => serde_saphyr::to_string(&st.backups).unwrap_or_default(),
    });
    Ok(())
}

async fn status(s: &Session, cluster: &str) -> Result<()> {
    let c = s.cluster(cluster).await?;
    let events = s.events(cluster).await?;
    out(&render::status(
        &c,
        &s.namespace,
        &events,
        jiff::Timestamp::now(),
    ));
    Ok(())
}
