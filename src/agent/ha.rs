//! The HA decision: a pure function from one observation of the world (the DCS as read this
//! cycle, the local PostgreSQL, peers' answers) to one action with a human-readable reason.
//! Patroni's `ha.py` cascade without its I/O: pause → DCS reachable? → bootstrap → system id →
//! postgres down: recover → leader lease mine / someone else's / free: renew, follow, or race.
//! The caller performs the action; nothing here touches a clock, a socket or a file.

use std::time::Duration;

use crate::api::cluster::SynchronousMode;

/// Settings the decision depends on.
#[derive(Debug, Clone)]
pub struct HaConfig {
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub retry_timeout: Duration,
    pub maximum_lag_on_failover: u64,
    pub synchronous_mode: SynchronousMode,
    /// This member must never be promoted.
    pub nofailover: bool,
    /// Keep a primary running without the apiserver while every member confirms it.
    pub failsafe_mode: bool,
    /// Watchdog mode `required` and no working watchdog: never become primary.
    pub watchdog_blocks_promotion: bool,
    /// The fence deadline: the fencing thread kills postgres this long after the last renew was
    /// sent (`ttl - safetyMargin`: no other member may take the Lease before `ttl`).
    pub fence_after: Duration,
    /// Patroni's primary_start_timeout: how long a Lease holder may try to get PostgreSQL
    /// running as primary (a failed start, a crash recovery) before it releases the Lease to a
    /// member that can take over.
    pub primary_start_timeout: Duration,
}

/// How long a primary allows itself to stop postgres in an orderly way before the fencing
/// thread would kill it: it stops holding on to an unrenewed lease this much before the fence.
pub const STOP_ALLOWANCE: Duration = Duration::from_secs(1);

/// How long a replica on an older timeline than the cluster's may fail to stream from its
/// leader before it is rewound: longer than a WAL receiver's reconnects (every 5 s) take, since
/// pg_rewind stops it.
pub const REWIND_AFTER: Duration = Duration::from_secs(15);

/// The leader Lease as this member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseView {
    /// No holder (released, never taken, or the object does not exist yet).
    Free,
    /// Held by `holder`; `expired` is judged on this member's own monotonic clock: `ttl` since it
    /// last saw the Lease change.
    Held { holder: String, expired: bool },
}

/// The `initialize` key of `<cluster>-state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initialize {
    /// Nobody has claimed the bootstrap yet.
    Absent,
    /// `member` won the race and is running initdb.
    Claimed { member: String },
    /// The cluster exists; its system identifier.
    Done { sysid: String },
}

/// A switchover (or manual failover) request from the state ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchoverRequest {
    /// The primary to move away from; `None` for a failover request.
    pub leader: Option<String>,
    /// The member to promote; `None` lets the healthiest win.
    pub candidate: Option<String>,
}

/// A member as published in its pod annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub name: String,
    pub running: bool,
    pub nofailover: bool,
    pub lsn: Option<u64>,
    pub timeline: Option<u32>,
}

/// What this cycle read from the apiserver.
#[derive(Debug, Clone)]
pub struct DcsView {
    pub lease: LeaseView,
    pub initialize: Initialize,
    /// The primary's last published WAL position (written at every renew and at release).
    pub leader_optime: Option<u64>,
    /// The cluster's current timeline, from the history (last entry + 1, or 1).
    pub cluster_timeline: u32,
    pub members: Vec<MemberView>,
    pub switchover: Option<SwitchoverRequest>,
    /// Members in the published synchronous set (`sync` key).
    pub sync_standbys: Vec<String>,
    /// The `sync` key's leader: the primary that published it, which has every commit it
    /// acknowledged (Patroni's `sync.matches(name, check_leader=True)`).
    pub sync_leader: Option<String>,
}

impl DcsView {
    /// In synchronous mode only these may take over: the published standbys and the primary
    /// that published them.
    fn in_sync_set(&self, name: &str) -> bool {
        self.sync_standbys.iter().any(|s| s == name) || self.sync_leader.as_deref() == Some(name)
    }
}

/// State of the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// Missing or empty: needs initdb or a basebackup.
    Empty,
    /// A cluster with this system identifier; `was_primary` when its control file says it last ran
    /// out of recovery (so following a new leader may need pg_rewind).
    Initialized {
        sysid: String,
        was_primary: bool,
        timeline: u32,
    },
}

/// The local PostgreSQL as observed this cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalPostgres {
    pub data: DataDir,
    pub running: bool,
    /// `Some(true)` when running and `pg_is_in_recovery()`; `None` when it could not be asked.
    pub in_recovery: Option<bool>,
    pub timeline: Option<u32>,
    /// Write LSN on a primary, last received/replayed on a replica.
    pub lsn: Option<u64>,
    /// The member `primary_conninfo` points at, when running as a replica.
    pub following: Option<String>,
    /// A promotion was signalled (`pg_promote` without waiting) and postgres has not left
    /// recovery yet: it may become writable any moment, so it counts as primary for fencing.
    pub promoting: bool,
}

/// A peer's answer to `GET /patroni`, asked only when racing for the lease.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerAnswer {
    pub name: String,
    pub is_primary: bool,
    pub lsn: Option<u64>,
    pub nofailover: bool,
}

/// Everything one decision looks at.
#[derive(Debug, Clone)]
pub struct Observation {
    pub me: String,
    pub paused: bool,
    /// `None` when the apiserver could not be read within `retry_timeout`.
    pub dcs: Option<DcsView>,
    pub local: LocalPostgres,
    /// Peers that answered (unreachable ones are absent); asked only when the lease is free.
    pub peers: Vec<PeerAnswer>,
    /// The renew this cycle failed (conflict, lost holder, or timeout).
    pub renew_failed: bool,
    /// The renew failed because the Lease is not ours any more (another holder, a lost
    /// compare-and-swap): no grace.
    pub lease_lost: bool,
    /// How long ago the last acknowledged renew (or failsafe confirmation) was sent, while this
    /// member acts as primary; `None` otherwise.
    pub since_renew: Option<Duration>,
    /// Failsafe: with the apiserver unreachable, did every known member confirm this primary
    /// over REST this cycle? `None` when not asked.
    pub failsafe_confirmed: Option<bool>,
    /// Failsafe: the leader that pinged this member's `POST /failsafe` within ttl; its lease is
    /// treated as valid even if this member saw no renewal (the apiserver was away).
    pub failsafe_leader: Option<String>,
    /// A replica following a leader: how long its WAL receiver has not been streaming.
    pub not_streaming_for: Option<Duration>,
    /// Holding the Lease: how long PostgreSQL has been down or not answering (a failed start, a
    /// crash recovery), since it last ran as primary or this member took the Lease.
    pub primary_start_for: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Checkpoint first, clean shutdown (SIGINT): the WAL ends at the shutdown checkpoint.
    Fast,
    /// SIGQUIT: no checkpoint; for fencing, where speed is safety.
    Immediate,
}

/// How to start PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAs {
    Primary,
    /// Streaming from `leader` (or, with `None`, read-only without a primary to follow).
    Replica {
        leader: Option<String>,
        rewind: bool,
    },
}

/// What the agent does this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Try to claim the `initialize` key (create-only; the CAS decides the winner).
    ClaimInitialize,
    /// We own the `initialize` claim: (re)run initdb from scratch, start, create users, record the
    /// system id, take the lease.
    Bootstrap,
    /// Create this member's data directory with pg_basebackup from the leader.
    CloneFrom {
        leader: String,
    },
    StartPostgres(StartAs),
    /// Renew the held lease (and feed the watchdog on success).
    RenewLease,
    /// Take the free or expired lease by compare-and-swap, then promote when in recovery.
    AcquireLease,
    /// Hold the lease but still in recovery: promote.
    Promote,
    /// Point the running replica at `leader` (rewrites primary_conninfo when it changed).
    Follow {
        leader: Option<String>,
    },
    /// Stop PostgreSQL; release the lease after a clean stop when `release`. The next cycle starts
    /// it again as a replica of whoever leads then.
    Demote {
        mode: StopMode,
        release: bool,
    },
    /// Record our system id under `initialize` (the key went missing while we lead).
    RecordInitialize {
        sysid: String,
    },
    /// Our data belongs to another cluster: stop and refuse to run.
    Halt,
    /// Failsafe: the apiserver is away but every member confirmed us; stay primary and feed the
    /// watchdog.
    KeepPrimary,
    /// Paused: renew the Lease this running primary holds, and nothing else (no fence, no
    /// watchdog: pause manages nothing), so it is still valid on resume and nobody races then
    /// (Patroni renews while paused).
    HoldLease,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
}

fn d(action: Action, reason: impl Into<String>) -> Decision {
    Decision {
        action,
        reason: reason.into(),
    }
}

/// A primary that could not renew keeps running while no other member can have taken the
/// Lease: until [`STOP_ALLOWANCE`] before the fence deadline, counted from when its last
/// acknowledged renew was sent (the apiserver accepted it no earlier, and followers wait `ttl`
/// from when they saw it).
fn grace(obs: &Observation, cfg: &HaConfig) -> Option<Decision> {
    let age = obs.since_renew?;
    let keep_until = cfg.fence_after.saturating_sub(STOP_ALLOWANCE);
    (age < keep_until).then(|| {
        d(
            Action::Nothing,
            format!(
                "cannot renew the leader lease now; staying primary: the last renew was sent {:.1}s ago, no one can take the lease before {}s, the fence comes at {}s",
                age.as_secs_f64(),
                cfg.ttl.as_secs(),
                cfg.fence_after.as_secs()
            ),
        )
    })
}

/// One HA decision. See the module documentation for the cascade.
pub fn decide(obs: &Observation, cfg: &HaConfig) -> Decision {
    let local = &obs.local;
    let is_primary = local.running && local.in_recovery == Some(false);
    // What must be fenced: a primary, or a replica told to promote (it becomes writable when
    // its replay ends, whatever the agent does meanwhile).
    let may_be_primary = is_primary || (local.running && local.promoting);
    if obs.paused {
        if is_primary
            && let Some(dcs) = &obs.dcs
            && matches!(&dcs.lease, LeaseView::Held { holder, .. } if *holder == obs.me)
        {
            return d(
                Action::HoldLease,
                "paused: renewing the leader lease of this primary, managing and fencing nothing",
            );
        }
        return d(Action::Nothing, "paused: managing nothing, fencing nothing");
    }

    let Some(dcs) = &obs.dcs else {
        // Without the apiserver we cannot know whether someone else holds the lease: a primary
        // must stop accepting writes before anyone could have taken over, unless (failsafe)
        // every member it knows has just confirmed over REST that none of them will. Until the
        // fence deadline nobody can have taken it: a failed call is no reason to demote yet.
        if is_primary && cfg.failsafe_mode && obs.failsafe_confirmed == Some(true) {
            return d(
                Action::KeepPrimary,
                "failsafe: the apiserver cannot be reached, every member confirmed this primary; staying primary",
            );
        }
        if may_be_primary && let Some(grace) = grace(obs, cfg) {
            return grace;
        }
        if may_be_primary {
            return d(
                Action::Demote {
                    mode: StopMode::Immediate,
                    release: false,
                },
                "demoting: the apiserver cannot be reached, so the leader lease cannot be renewed",
            );
        }
        return d(Action::Nothing, "the apiserver cannot be reached; waiting");
    };

    let leader = match &dcs.lease {
        LeaseView::Held {
            holder,
            expired: false,
        } => Some(holder.as_str()),
        LeaseView::Held {
            holder,
            expired: true,
        } if obs.failsafe_leader.as_deref() == Some(holder.as_str()) => Some(holder.as_str()),
        _ => None,
    };
    let i_hold_lease = matches!(&dcs.lease, LeaseView::Held { holder, .. } if *holder == obs.me);

    // Bootstrap.
    match (&local.data, &dcs.initialize) {
        (_, Initialize::Claimed { member }) if *member == obs.me => {
            if let DataDir::Initialized { sysid, .. } = &local.data
                && local.running
                && i_hold_lease
            {
                return d(
                    Action::RecordInitialize {
                        sysid: sysid.clone(),
                    },
                    "recording the new cluster's system identifier",
                );
            }
            return d(
                Action::Bootstrap,
                "won the initialize key: bootstrapping a new cluster",
            );
        }
        (DataDir::Empty, Initialize::Absent) => {
            return match leader {
                Some(l) => d(
                    Action::CloneFrom {
                        leader: l.to_string(),
                    },
                    format!("cloning from leader {l}"),
                ),
                None => d(
                    Action::ClaimInitialize,
                    "no cluster yet: racing for the initialize key",
                ),
            };
        }
        (DataDir::Empty, Initialize::Claimed { member }) => {
            return d(
                Action::Nothing,
                format!("waiting for {member} to bootstrap the cluster"),
            );
        }
        (DataDir::Empty, Initialize::Done { .. }) => {
            return match leader {
                Some(l) if l != obs.me => d(
                    Action::CloneFrom {
                        leader: l.to_string(),
                    },
                    format!("creating a replica from leader {l}"),
                ),
                _ => d(Action::Nothing, "no leader to clone from; waiting"),
            };
        }
        (DataDir::Initialized { sysid: mine, .. }, Initialize::Done { sysid }) if mine != sysid => {
            return d(
                Action::Halt,
                format!(
                    "data directory belongs to system {mine}, the cluster is {sysid}: refusing to join"
                ),
            );
        }
        (DataDir::Initialized { sysid, .. }, Initialize::Absent) if i_hold_lease && is_primary => {
            return d(
                Action::RecordInitialize {
                    sysid: sysid.clone(),
                },
                "the initialize key is missing: recording our system identifier",
            );
        }
        _ => {}
    }
    let DataDir::Initialized {
        was_primary,
        timeline: data_timeline,
        ..
    } = &local.data
    else {
        return d(Action::Nothing, "waiting for a cluster to join");
    };

    // Patroni's primary_start_timeout: a Lease holder that has not got PostgreSQL running for
    // that long hands the Lease to a member that can take over, rather than hold it forever.
    if i_hold_lease
        && !obs.renew_failed
        && !local.promoting
        && (!local.running || local.in_recovery.is_none())
        && let Some(t) = obs.primary_start_for
        && t >= cfg.primary_start_timeout
        && let Some(other) = dcs.members.iter().find(|m| {
            m.name != obs.me && m.running && !m.nofailover && failover_target(cfg, dcs, &m.name)
        })
    {
        return d(
            Action::Demote {
                mode: StopMode::Immediate,
                release: true,
            },
            format!(
                "primary start timed out: postgres has not run as primary for {}s (primaryStartTimeout {}s); releasing the leader lease for {} and the others to take over",
                t.as_secs(),
                cfg.primary_start_timeout.as_secs(),
                other.name
            ),
        );
    }

    // PostgreSQL is down: bring it back in the role the lease says.
    if !local.running {
        if i_hold_lease && !obs.renew_failed && leader == Some(obs.me.as_str()) {
            return d(
                Action::StartPostgres(StartAs::Primary),
                "starting postgres as primary: this member holds the leader lease",
            );
        }
        return match leader {
            Some(l) if l != obs.me => {
                // A former primary may have WAL the new timeline never saw.
                let rewind = *was_primary && *data_timeline < dcs.cluster_timeline;
                d(
                    Action::StartPostgres(StartAs::Replica {
                        leader: Some(l.to_string()),
                        rewind,
                    }),
                    if rewind {
                        format!(
                            "rewinding and starting as a replica of {l}: this member was primary on an older timeline"
                        )
                    } else {
                        format!("starting postgres as a replica of {l}")
                    },
                )
            }
            _ => d(
                Action::StartPostgres(StartAs::Replica {
                    leader: None,
                    rewind: false,
                }),
                "starting postgres read-only: there is no leader to follow yet",
            ),
        };
    }

    if i_hold_lease {
        if obs.renew_failed
            && !obs.lease_lost
            && may_be_primary
            && let Some(grace) = grace(obs, cfg)
        {
            return grace;
        }
        if obs.renew_failed {
            return d(
                Action::Demote {
                    mode: StopMode::Immediate,
                    release: false,
                },
                "demoting: failed to renew the leader lease",
            );
        }
        if !is_primary {
            if local.promoting {
                // Patroni's "updated leader lock during promote": the replay may take long; the
                // Lease (and with it the fences) is renewed every loop meanwhile, and the
                // promotion is never signalled twice.
                return match obs.since_renew {
                    Some(age) if age < cfg.loop_wait => d(
                        Action::Nothing,
                        "promotion in progress: postgres is still replaying its WAL",
                    ),
                    _ => d(
                        Action::RenewLease,
                        "promotion in progress: renewed the leader lease while postgres replays its WAL",
                    ),
                };
            }
            if local.in_recovery.is_none() {
                return d(
                    Action::RenewLease,
                    "holding the lease while postgres answers no queries",
                );
            }
            return d(
                Action::Promote,
                "promoting: this member holds the leader lease",
            );
        }
        if let Some(sw) = &dcs.switchover
            && sw.leader.as_deref().is_none_or(|l| l == obs.me)
        {
            match switchover_target_ok(sw, dcs, obs, cfg) {
                Ok(()) => {
                    return d(
                        Action::Demote {
                            mode: StopMode::Fast,
                            release: true,
                        },
                        match &sw.candidate {
                            Some(c) => format!(
                                "switchover to {c}: demoting with a checkpoint, then releasing the lease"
                            ),
                            None => {
                                "switchover: demoting with a checkpoint, then releasing the lease"
                                    .to_string()
                            }
                        },
                    );
                }
                Err(why) => {
                    return d(
                        Action::RenewLease,
                        format!("renewed the leader lease; ignoring the switchover request: {why}"),
                    );
                }
            }
        }
        return d(Action::RenewLease, "renewed the leader lease as primary");
    }

    if let Some(l) = leader {
        if may_be_primary {
            return d(
                Action::Demote {
                    mode: StopMode::Immediate,
                    release: false,
                },
                format!("demoting: {l} holds the leader lease"),
            );
        }
        // A member that ran as primary, then started read-only (fenced during an outage, a
        // restart with nobody leading), may hold WAL the new leader never had: it then never
        // streams ("not a child of this server's history"). Its control file no longer says it
        // was primary, so the sign is this: following, not streaming, on an older timeline.
        // pg_rewind changes nothing when nothing diverged.
        if local.in_recovery == Some(true)
            && local.following.as_deref() == Some(l)
            && obs.not_streaming_for.is_some_and(|t| t >= REWIND_AFTER)
            && local.timeline.is_some_and(|t| t < dcs.cluster_timeline)
        {
            return d(
                Action::StartPostgres(StartAs::Replica {
                    leader: Some(l.to_string()),
                    rewind: true,
                }),
                format!(
                    "rewinding and restarting as a replica of {l}: not streaming for {}s, on an older timeline than the cluster's",
                    REWIND_AFTER.as_secs()
                ),
            );
        }
        return d(
            Action::Follow {
                leader: Some(l.to_string()),
            },
            format!("following leader {l}"),
        );
    }

    // No valid leader: race, if this member is fit to lead.
    match healthiest(obs, dcs, cfg) {
        Ok(()) => d(
            Action::AcquireLease,
            if is_primary {
                "acquiring the free leader lease as the running primary".to_string()
            } else {
                "promoting: the leader lease is free and this member is the healthiest".to_string()
            },
        ),
        Err(why) => d(
            Action::Follow { leader: None },
            format!("not racing for the lease: {why}"),
        ),
    }
}

/// May member `name` take over at all (synchronous mode: only the synchronous set)?
fn failover_target(cfg: &HaConfig, dcs: &DcsView, name: &str) -> bool {
    cfg.synchronous_mode == SynchronousMode::Off || dcs.in_sync_set(name)
}

/// Patroni's `is_healthiest_node`: may this member take the free lease?
fn healthiest(obs: &Observation, dcs: &DcsView, cfg: &HaConfig) -> Result<(), String> {
    let local = &obs.local;
    if local.running && local.in_recovery == Some(false) {
        // Already primary (a lost lease, e.g. released while paused): keep it if our timeline is
        // current.
        return match local.timeline {
            Some(tl) if tl >= dcs.cluster_timeline => Ok(()),
            _ => Err("this primary's timeline is behind the cluster's".into()),
        };
    }
    if cfg.nofailover {
        return Err("this member is tagged nofailover".into());
    }
    if cfg.watchdog_blocks_promotion {
        return Err("the watchdog is required but not working".into());
    }
    // The named candidate of a switchover races alone while it answers, fit to take over; one
    // that died or cannot take over leaves the race to everyone (Patroni), or a dead candidate
    // would leave the cluster without a primary for good.
    let mut candidate = false;
    if let Some(sw) = &dcs.switchover {
        match &sw.candidate {
            Some(c) if *c == obs.me => candidate = true,
            Some(c)
                if obs
                    .peers
                    .iter()
                    .any(|p| p.name == *c && !p.nofailover && p.lsn.is_some()) =>
            {
                return Err(format!("a switchover to {c} is in progress"));
            }
            Some(_) => {}
            None if sw.leader.as_deref() == Some(obs.me.as_str()) => {
                return Err("this member is the one being switched away from".into());
            }
            None => {}
        }
    }
    if !failover_target(cfg, dcs, &obs.me) {
        return Err("synchronous mode is on and this member is not a synchronous standby".into());
    }
    let Some(my_lsn) = local.lsn else {
        return Err("this member's WAL position is unknown".into());
    };
    if candidate {
        // The switchover's candidate: the old primary checked its lag before releasing; only
        // a member still running as primary stops it.
        return match obs.peers.iter().find(|p| p.name != obs.me && p.is_primary) {
            Some(p) => Err(format!("{} is still running as primary", p.name)),
            None => Ok(()),
        };
    }
    if let Some(optime) = dcs.leader_optime {
        let lag = optime.saturating_sub(my_lsn);
        if lag > cfg.maximum_lag_on_failover {
            return Err(format!(
                "lag {lag} B behind the last primary exceeds maximumLagOnFailover {} B",
                cfg.maximum_lag_on_failover
            ));
        }
    }
    for p in obs
        .peers
        .iter()
        .filter(|p| p.name != obs.me && !p.nofailover)
    {
        if p.is_primary {
            return Err(format!("{} is still running as primary", p.name));
        }
        if !failover_target(cfg, dcs, &p.name) {
            continue;
        }
        if let Some(their) = p.lsn
            && their > my_lsn
        {
            return Err(format!("{} is ahead ({their} > {my_lsn})", p.name));
        }
    }
    Ok(())
}

/// Is the switchover request one the primary can honour now? The candidate (or, unnamed, some
/// member) must be running, may fail over, is within `maximumLagOnFailover` of this primary's
/// position (as last published), and in synchronous mode is a published synchronous standby:
/// once the primary stops and releases the Lease, only such a member can take over.
fn switchover_target_ok(
    sw: &SwitchoverRequest,
    dcs: &DcsView,
    obs: &Observation,
    cfg: &HaConfig,
) -> Result<(), String> {
    let me = obs.me.as_str();
    let caught_up = |m: &MemberView| match (obs.local.lsn, m.lsn) {
        (Some(mine), Some(theirs)) => mine.saturating_sub(theirs) <= cfg.maximum_lag_on_failover,
        _ => false,
    };
    let in_sync = |m: &MemberView| {
        cfg.synchronous_mode == SynchronousMode::Off || dcs.sync_standbys.contains(&m.name)
    };
    let eligible =
        |m: &MemberView| m.name != me && m.running && !m.nofailover && caught_up(m) && in_sync(m);
    match &sw.candidate {
        Some(c) => match dcs.members.iter().find(|m| m.name == *c) {
            None => Err(format!("candidate {c} does not exist")),
            Some(m) if !m.running || m.nofailover => Err(format!(
                "candidate {c} is not running or is tagged nofailover"
            )),
            Some(m) if !in_sync(m) => Err(format!("candidate {c} is not a synchronous standby")),
            Some(m) if !caught_up(m) => Err(format!(
                "candidate {c} lags more than maximumLagOnFailover behind"
            )),
            Some(_) => Ok(()),
        },
        None if dcs.members.iter().any(eligible) => Ok(()),
        None => Err("no member can take over".into()),
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
