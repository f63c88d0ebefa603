//! A deterministic simulation of the HA core: three members, each running the agent's real
//! `ha::decide`, the real plan of steps for each decision (`agent::steps::plan`, the order
//! `act.rs` executes: Lease writes, arming and feeding the watchdog, the fencing clock,
//! stopping, starting and promoting PostgreSQL), the real wait between cycles
//! (`steps::next_wait`) and the real Lease clock (`common::lease::LeaseClock`, expiry on the
//! member's own clock, counted from the first sighting of a version: the Lease watch's
//! (`dcs::first_seen`), which here sees every new version the tick the apiserver applies it,
//! while the member's agent runs and reaches the apiserver, or the loop's read), with the
//! agent's timing (`HaConfig`, the fence deadline, the watchdog's feeding rule), against a model apiserver (one Lease with a resourceVersion; every write a
//! compare-and-swap applied when the request reaches it) and a model PostgreSQL per member
//! (stopped, starting, replica, primary, stopping: writable until the stop's safe point).
//!
//! A seeded schedule of faults: apiserver outages, members cut from it, slow, dropped and
//! answer-lost requests, agents frozen for seconds (the loop and its fencing thread stop; the
//! softdog and PostgreSQL do not) and stalls at any step of a plan, postmasters killed, pods
//! killed and restarted, member clocks that drift. After every 10 ms of virtual time it checks
//! that at most one member accepts writes, and after the faults stop that one primary appears
//! within a bound. A failing seed is printed with its schedule and log and replays exactly.
//!
//! Synchronous mode (off, on, strict in turn by seed) runs the real `postgres::sync::plan` and
//! `sync::at_start` on a model of WAL: each member's WAL is a position on a branch (a
//! promotion forks one), replicas stream from the member they follow while their WAL is a
//! prefix of it (a rewind cuts it back), a client commits on the writable member every tick,
//! and a commit is acknowledged as synchronous_standby_names says. Invariant: a member that
//! becomes primary holds every acknowledged commit.
//!
//! What it does not model yet: failsafe, switchover, pause, duplicated requests, the
//! maximum-lag check (the Lease carries no position here).
//!
//! `cargo test --test simulate` runs `PGWARDEN_SIM_SEEDS` schedules (default 2000) and the
//! regression seeds; `make simulate SEEDS=N` runs more, in release mode.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pgwarden::agent::dcs::{self, LeaseSightings};
use pgwarden::agent::ha::{
    self, Action, DataDir, DcsView, HaConfig, Initialize, LeaseView, LocalPostgres, MemberView,
    Observation, PeerAnswer, StopMode,
};
use pgwarden::agent::postgres::conf::quote_identifier;
use pgwarden::agent::postgres::sync;
use pgwarden::agent::steps::{self, Step};
use pgwarden::api::cluster::SynchronousMode;
use pgwarden::api::patroni::ReplicationRow;
use pgwarden::common::lease::LeaseClock;
use pgwarden::common::rng::SplitMix64;

const TICK: Duration = Duration::from_millis(10);
const N: usize = 3;
/// Faults happen in the first part of a schedule; the rest is quiet, for liveness.
const FAULTY: Duration = Duration::from_secs(60);
const QUIET: Duration = Duration::from_secs(45);
/// The chance (percent) that an agent stalls before a step of a plan, while faults happen.
const STALL_PERCENT: u64 = 1;
/// The chance (percent) that the network delivers a Lease write (or another call) twice.
const DUPLICATE_PERCENT: u64 = 2;
/// The watchdog's safety margin (ttl - margin is the fence deadline and the watchdog timeout).
const SAFETY_MARGIN: Duration = Duration::from_secs(2);

fn config() -> HaConfig {
    let ttl = Duration::from_secs(8);
    HaConfig {
        ttl,
        loop_wait: Duration::from_secs(2),
        retry_timeout: Duration::from_secs(3),
        maximum_lag_on_failover: 1 << 20,
        synchronous_mode: SynchronousMode::Off,
        nofailover: false,
        failsafe_mode: false,
        watchdog_blocks_promotion: false,
        fence_after: ttl - SAFETY_MARGIN,
        primary_start_timeout: Duration::from_secs(300),
    }
}

/// The seeded generator (`common::rng`), drawing durations in milliseconds too.
type Rng = SplitMix64;

trait Millis {
    fn ms(&mut self, lo: u64, hi: u64) -> Duration;
}

impl Millis for SplitMix64 {
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.between(lo, hi))
    }
}

/// Virtual time since the start of the schedule.
type Vt = Duration;

/// The `sync` key: its leader and its synchronous standbys.
type SyncKey = (Option<String>, Vec<String>);
/// What a read returns: the Lease holder, the Lease's resourceVersion, the `sync` key.
type Read = (Option<String>, u64, SyncKey);

/// A line of WAL history: a branch forks from `parent` after position `fork` (a promotion).
#[derive(Debug, Clone, Copy)]
struct Branch {
    parent: usize,
    fork: u64,
}

/// Every member's WAL is a position on a branch; branch 0 is the first primary's.
#[derive(Debug, Default)]
struct Wal {
    branches: Vec<Branch>,
}

impl Wal {
    /// The branch that wrote position `at` of a WAL ending on branch `b`.
    fn branch_at(&self, mut b: usize, at: u64) -> usize {
        while b != 0 && at <= self.branches[b].fork {
            b = self.branches[b].parent;
        }
        b
    }
    /// Whether the WAL (`b`, `lsn`) holds the commit written at `at` on branch `on`.
    fn holds(&self, (b, lsn): (usize, u64), (on, at): (usize, u64)) -> bool {
        at <= lsn && self.branch_at(b, at) == on
    }
    /// How far two WALs agree.
    fn common(&self, (b1, l1): (usize, u64), (b2, l2): (usize, u64)) -> u64 {
        let (mut lo, mut hi) = (0, l1.min(l2));
        // Agreement holds up to some position and never after it (a tree of branches).
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.branch_at(b1, mid) == self.branch_at(b2, mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
    /// Whether the WAL `a` is a prefix of `b` (it can stream from it).
    fn is_prefix(&self, a: (usize, u64), b: (usize, u64)) -> bool {
        a.1 <= b.1 && (a.0 == b.0 || self.branch_at(a.0, a.1) == self.branch_at(b.0, a.1))
    }
    fn fork(&mut self, parent: usize, at: u64) -> usize {
        self.branches.push(Branch { parent, fork: at });
        self.branches.len() - 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pg {
    Stopped,
    /// Starting (crash recovery) or promoting until then; answers no queries meanwhile.
    Starting {
        until: Vt,
        primary: bool,
    },
    Replica,
    /// A signalled promotion replaying what it received: answers as a replica, becomes primary
    /// then, whatever its agent does meanwhile.
    Promoting {
        until: Vt,
    },
    Primary,
    /// A stop in progress: writes are taken until the safe point (no client left), then none.
    Stopping {
        safe_at: Vt,
        until: Vt,
        primary: bool,
    },
}

impl Pg {
    fn writable(&self, now: Vt) -> bool {
        match self {
            Pg::Primary => true,
            Pg::Stopping {
                safe_at, primary, ..
            } => *primary && now < *safe_at,
            _ => false,
        }
    }
}

/// What the step being carried out waits for.
#[derive(Debug, Clone)]
enum Wait {
    /// A request to the apiserver; `lease`: a Lease write; `fatal`: its failure ends the plan.
    Request {
        req: usize,
        lease: bool,
        fatal: bool,
    },
    /// PostgreSQL: until then, or until it stops (`fails_if_stopped`).
    Pg { until: Vt, fails_if_stopped: bool },
    /// The step failed at once: the plan ends.
    Failed,
}

/// A decision being carried out: the real plan of `steps::plan`, a step at a time.
#[derive(Debug, Clone)]
struct Acting {
    action: Action,
    steps: Vec<Step>,
    next: usize,
    wait: Option<Wait>,
    /// What was read this cycle.
    read: Option<Read>,
    /// When this cycle's Lease write was sent (virtual time).
    sent: Option<Vt>,
    /// This is already the second decision of the cycle (after a failed renew).
    second: bool,
    renew_failed: bool,
    /// The step `next` has begun; it ends once its wait and `after` are done.
    busy: bool,
    /// What the step does after its wait, in order (a promotion's history record, the
    /// synchronous step's unpublish, set, publish).
    after: Vec<After>,
}

#[derive(Debug, Clone)]
enum After {
    /// An apiserver call whose failure ends the plan (`?` in act.rs).
    Send(Kind),
    /// Set synchronous_standby_names (`Agent::set_synchronous_standby_names`).
    Ssn(Option<String>),
    /// The fences still ahead of their deadline (`Fence::in_time`), or the plan ends.
    InTime,
    /// Signal the promotion (pg_promote without waiting), then wait up to
    /// `steps::PROMOTE_WAIT` for it.
    PromotePg,
    /// `Agent::promoted`: out of recovery, the promotion ends (the history record, whose
    /// failure is only logged and retried next cycle).
    Promoted,
}

#[derive(Debug, Clone)]
enum Phase {
    Sleeping { until: Vt },
    Reading { req: usize },
    Acting(Box<Acting>),
}

/// One apiserver request in flight.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Read,
    /// A Lease write: the compare-and-swap (expected version, new holder).
    Cas(u64, Option<String>),
    /// A call that does not touch the Lease (a label, the history).
    Other,
    /// Write the `sync` key (`Dcs::publish_sync`): only while it is still `expect`, the key as
    /// the cycle read it.
    Sync {
        key: SyncKey,
        expect: SyncKey,
    },
}

struct Request {
    /// When the member sent it.
    sent: Vt,
    /// When it reaches the apiserver (`None`: dropped on the way).
    arrives: Option<Vt>,
    /// When the answer reaches the member (`None`: lost).
    answered: Option<Vt>,
    kind: Kind,
    /// Filled when the apiserver handles it: what was read, or whether the write won.
    read: Option<Read>,
    won: Option<bool>,
    handled: bool,
}

struct Member {
    name: String,
    drift: f64,
    frozen_until: Vt,
    dead_until: Option<Vt>,
    phase: Phase,
    clock: LeaseClock,
    /// The Lease watch: the newest version it delivered, and when (member time).
    sightings: LeaseSightings,
    /// The fencing thread's clock: when the last acknowledged renew was sent (member time).
    fence: Option<Instant>,
    /// The softdog: when it was last fed (member time); `None` when disarmed.
    watchdog: Option<Instant>,
    /// When the agent last armed or fed the watchdog, as the agent knows it (`Fence`): the
    /// softdog firing on its own does not tell the agent.
    fed: Option<Instant>,
    pg: Pg,
    /// The stop in progress disarms the watchdog at its safe point (`Postgres::stop_with`).
    disarm_at_safe_point: bool,
    was_primary: bool,
    /// The last failed Lease write lost a compare-and-swap (not a timeout).
    lease_lost: bool,
    /// This member's WAL: (branch, position).
    wal: (usize, u64),
    /// The member its PostgreSQL streams from (primary_conninfo), while a replica.
    upstream: Option<usize>,
    /// Since when this replica has not been streaming (`Observation.not_streaming_for`).
    not_streaming_since: Option<Vt>,
    /// synchronous_standby_names, and this primary's flush position when it last changed.
    ssn: Option<String>,
    synchronous_since: Option<u64>,
    /// Commits written on this primary that wait for their synchronous acknowledgement.
    /// The first of them (on this member's branch, up to its position); `None`: none waits.
    pending: Option<u64>,
    /// How many WAL positions this replica takes per tick when it streams (0: throttled).
    stream_rate: u64,
    /// The agent's `promotion`: `Some(false)` signalled, `Some(true)` out of recovery but not
    /// recorded yet.
    promotion: Option<bool>,
}

struct Sim {
    rng: Rng,
    mode: SynchronousMode,
    /// The `sync` key as the apiserver holds it.
    sync: SyncKey,
    wal: Wal,
    /// Commits acknowledged to a client: per branch, the furthest position (the ones before it
    /// on that branch were acknowledged first).
    acked: Vec<u64>,
    /// Per member: intervals when its replication connection is cut.
    replication_cut: Vec<Vec<(Vt, Vt)>>,
    cfg: HaConfig,
    base: Instant,
    now: Vt,
    holder: Option<String>,
    rv: u64,
    apiserver_down: Vec<(Vt, Vt)>,
    /// Per member: intervals when its requests do not reach the apiserver.
    cut: Vec<Vec<(Vt, Vt)>>,
    freezes: Vec<(usize, Vt, Vt)>,
    kills: Vec<(usize, Vt, Duration)>,
    /// PostgreSQL killed (kill -9 of the postmaster); the agent and the softdog go on.
    crashes: Vec<(usize, Vt)>,
    requests: Vec<Request>,
    members: Vec<Member>,
    log: Vec<String>,
    /// A broken invariant found during the tick.
    violation: Option<String>,
}

fn lease_object(holder: &Option<String>, rv: u64) -> Lease {
    Lease {
        metadata: ObjectMeta {
            resource_version: Some(rv.to_string()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.clone(),
            ..Default::default()
        }),
    }
}

impl Sim {
    fn new(seed: u64, mode: SynchronousMode) -> Sim {
        let mut rng = SplitMix64(seed);
        let cfg = config();
        let base = Instant::now();
        let mut apiserver_down = vec![];
        let mut cut = vec![vec![]; N];
        let mut freezes = vec![];
        let mut kills = vec![];
        let mut crashes = vec![];
        let mut replication_cut = vec![vec![]; N];
        let faults = 1 + rng.below(6);
        for _ in 0..faults {
            let at = rng.ms(1_000, FAULTY.as_millis() as u64 - 20_000);
            // Faults land on whole ticks, where step() looks for them.
            let at = at - Duration::from_nanos(at.as_nanos() as u64 % TICK.as_nanos() as u64);
            match rng.below(if mode == SynchronousMode::Off { 5 } else { 6 }) {
                0 => apiserver_down.push((at, at + rng.ms(500, 20_000))),
                1 => cut[rng.below(N as u64) as usize].push((at, at + rng.ms(500, 20_000))),
                2 => freezes.push((rng.below(N as u64) as usize, at, at + rng.ms(200, 15_000))),
                3 => crashes.push((rng.below(N as u64) as usize, at)),
                4 if mode != SynchronousMode::Off => replication_cut[rng.below(N as u64) as usize]
                    .push((at, at + rng.ms(500, 20_000))),
                // A pod down for less than ttl (a restart), or for longer (its Lease expires
                // while it is away, and it comes back to a cluster that moved on).
                _ => {
                    let down = if rng.chance(30) {
                        rng.ms(9_000, 30_000)
                    } else {
                        rng.ms(500, 5_000)
                    };
                    kills.push((rng.below(N as u64) as usize, at, down))
                }
            }
        }
        let members = (0..N)
            .map(|i| {
                let drift = 1.0 + (rng.below(4001) as f64 - 2000.0) * 1e-6;
                Member {
                    name: format!("m{i}"),
                    drift,
                    frozen_until: Duration::ZERO,
                    dead_until: None,
                    phase: Phase::Sleeping {
                        until: rng.ms(0, 2_000),
                    },
                    clock: LeaseClock::starting_at(base),
                    sightings: LeaseSightings::default(),
                    fence: (i == 0).then_some(base),
                    watchdog: (i == 0).then_some(base),
                    fed: (i == 0).then_some(base),
                    pg: if i == 0 { Pg::Primary } else { Pg::Replica },
                    disarm_at_safe_point: false,
                    was_primary: i == 0,
                    lease_lost: false,
                    wal: (0, 100),
                    upstream: (i != 0).then_some(0),
                    not_streaming_since: None,
                    ssn: None,
                    synchronous_since: None,
                    pending: None,
                    stream_rate: 1,
                    promotion: None,
                }
            })
            .collect();
        let sync = match mode {
            SynchronousMode::Off => (None, vec![]),
            _ => (Some("m0".to_string()), vec![]),
        };
        Sim {
            rng,
            mode,
            sync,
            wal: Wal {
                branches: vec![Branch { parent: 0, fork: 0 }],
            },
            acked: vec![],
            replication_cut,
            cfg: HaConfig {
                synchronous_mode: mode,
                ..cfg
            },
            base,
            now: Duration::ZERO,
            holder: Some("m0".into()),
            rv: 1,
            apiserver_down,
            cut,
            freezes,
            kills,
            crashes,
            requests: vec![],
            members,
            log: vec![],
            violation: None,
        }
    }

    /// Member `i`'s own monotonic clock now.
    fn clock_of(&self, i: usize) -> Instant {
        self.base + self.now.mul_f64(self.members[i].drift)
    }

    fn during(spans: &[(Vt, Vt)], t: Vt) -> bool {
        spans.iter().any(|(a, b)| t >= *a && t < *b)
    }

    fn note(&mut self, what: String) {
        self.log
            .push(format!("{:>8.2}s {what}", self.now.as_secs_f64()));
    }

    /// Send a request from member `i`: it reaches the apiserver after a delay (or never), and
    /// its answer comes back after another (or is lost).
    fn send(&mut self, i: usize, kind: Kind) -> usize {
        let there = if self.rng.chance(3) {
            self.rng.ms(1_000, 5_000)
        } else {
            self.rng.ms(1, 50)
        };
        let back = if self.rng.chance(3) {
            self.rng.ms(1_000, 5_000)
        } else {
            self.rng.ms(1, 50)
        };
        let arrives = self.now + there;
        let reachable = !Self::during(&self.apiserver_down, arrives)
            && !Self::during(&self.cut[i], arrives)
            && !self.rng.chance(2);
        let answered = arrives + back;
        let answer_lost = self.rng.chance(2)
            || Self::during(&self.apiserver_down, answered)
            || Self::during(&self.cut[i], answered);
        // A Lease write the network delivers twice (a retransmission, a proxy retrying): the
        // copy reaches the apiserver later and nobody waits for its answer. It carries the
        // version the original expected, so it can only win if the original never arrived.
        // (ConfigMap writes carry the resourceVersion they read too; the model's `sync` key
        // has none, so its writes are not duplicated.)
        if matches!(kind, Kind::Cas(..) | Kind::Other) && self.rng.chance(DUPLICATE_PERCENT) {
            let later = arrives + self.rng.ms(1, 5_000);
            self.requests.push(Request {
                sent: self.now,
                arrives: (!Self::during(&self.apiserver_down, later)
                    && !Self::during(&self.cut[i], later))
                .then_some(later),
                answered: None,
                kind: kind.clone(),
                read: None,
                won: None,
                handled: false,
            });
            let name = self.members[i].name.clone();
            self.note(format!(
                "{name} {kind:?} duplicated, the copy arrives at {:.2}s",
                later.as_secs_f64()
            ));
        }
        self.requests.push(Request {
            sent: self.now,
            arrives: reachable.then_some(arrives),
            answered: (reachable && !answer_lost).then_some(answered),
            kind,
            read: None,
            won: None,
            handled: false,
        });
        self.requests.len() - 1
    }

    /// The apiserver handles every request that reaches it now.
    fn serve(&mut self) {
        for r in self.requests.iter_mut() {
            if r.handled || r.arrives.is_none_or(|a| a > self.now) {
                continue;
            }
            r.handled = true;
            match &r.kind {
                Kind::Other => {}
                Kind::Sync { key, expect } => {
                    let won = *expect == self.sync;
                    r.won = Some(won);
                    if won {
                        self.sync = key.clone();
                        let at = self.now.as_secs_f64();
                        self.log
                            .push(format!("{at:>8.2}s apiserver: sync key = {key:?}"));
                    }
                }
                Kind::Read => r.read = Some((self.holder.clone(), self.rv, self.sync.clone())),
                Kind::Cas(expect, holder) => {
                    let won = *expect == self.rv;
                    if won {
                        self.holder = holder.clone();
                        self.rv += 1;
                    }
                    r.won = Some(won);
                    r.read = Some((self.holder.clone(), self.rv, self.sync.clone()));
                }
            }
        }
    }

    /// The answer to request `req` once it is in: `Some(Some(r))` answered within
    /// retry_timeout, `Some(None)` failed or timed out, `None` still waiting.
    fn answer(&self, req: usize) -> Option<Option<&Request>> {
        let r = &self.requests[req];
        match r.answered {
            Some(t) if t <= self.now && t <= r.sent + self.cfg.retry_timeout => Some(Some(r)),
            _ if self.now >= r.sent + self.cfg.retry_timeout => Some(None),
            _ => None,
        }
    }

    fn observation(&mut self, i: usize, read: Option<Read>) -> Observation {
        let now_m = self.clock_of(i);
        let m = &self.members[i];
        let dcs = read.map(|(holder, _, (sync_leader, sync_standbys))| {
            let lease = match &holder {
                None => LeaseView::Free,
                Some(h) => LeaseView::Held {
                    holder: h.clone(),
                    expired: m.clock.expired(self.cfg.ttl, now_m),
                },
            };
            DcsView {
                lease,
                initialize: Initialize::Done { sysid: "7".into() },
                leader_optime: None,
                cluster_timeline: 1,
                members: self
                    .members
                    .iter()
                    .map(|o| MemberView {
                        name: o.name.clone(),
                        running: o.pg != Pg::Stopped,
                        nofailover: false,
                        lsn: Some(o.wal.1),
                        timeline: Some(1),
                    })
                    .collect(),
                switchover: None,
                sync_standbys,
                sync_leader,
            }
        });
        let local = LocalPostgres {
            data: DataDir::Initialized {
                sysid: "7".into(),
                was_primary: m.was_primary,
                timeline: 1,
            },
            running: m.pg != Pg::Stopped,
            in_recovery: match m.pg {
                Pg::Replica | Pg::Promoting { .. } => Some(true),
                Pg::Primary => Some(false),
                _ => None,
            },
            timeline: Some(1),
            lsn: Some(m.wal.1),
            following: None,
            promoting: self.promoting(i),
        };
        // The peer probe: members whose agent answers its REST API now.
        let peers = (0..N)
            .filter(|j| {
                *j != i
                    && self.members[*j].dead_until.is_none()
                    && self.members[*j].frozen_until <= self.now
            })
            .map(|j| PeerAnswer {
                name: self.members[j].name.clone(),
                is_primary: self.members[j].pg == Pg::Primary,
                lsn: Some(self.members[j].wal.1),
                nofailover: false,
            })
            .collect();
        Observation {
            me: m.name.clone(),
            paused: false,
            dcs,
            local,
            peers,
            renew_failed: false,
            lease_lost: false,
            since_renew: m.fence.map(|t| now_m.saturating_duration_since(t)),
            failsafe_confirmed: None,
            failsafe_leader: None,
            not_streaming_for: m.not_streaming_since.map(|t| self.now.saturating_sub(t)),
            // A schedule (105 s) is shorter than the default primaryStartTimeout (300 s).
            primary_start_for: None,
        }
    }

    fn kill_pg(&mut self, i: usize, why: &str) {
        if self.members[i].pg != Pg::Stopped {
            self.note(format!("{} postgres killed: {why}", self.members[i].name));
        }
        let m = &mut self.members[i];
        m.pg = Pg::Stopped;
        m.pending = None;
    }

    /// Member `i`'s virtual time `t` on its own clock.
    fn at(&self, i: usize, t: Vt) -> Instant {
        self.base + t.mul_f64(self.members[i].drift)
    }

    /// One member's agent, one step: handle what is due in its loop.
    fn agent(&mut self, i: usize) {
        if self.members[i].dead_until.is_some() || self.members[i].frozen_until > self.now {
            return;
        }
        let now_m = self.clock_of(i);
        // The fencing thread (a thread of the agent: frozen with it), every 100 ms: while the
        // clock is overdue it kills any postmaster (agent::fence::Fence::spawn_thread).
        if self.now.as_millis().is_multiple_of(100)
            && let Some(t) = self.members[i].fence
            && now_m.saturating_duration_since(t) > self.cfg.fence_after
        {
            self.kill_pg(i, "the fencing thread");
        }
        // The Lease watch: a new version is seen the moment the apiserver applies it (the
        // earliest any member can see it), unless the member cannot reach the apiserver.
        if !Self::during(&self.apiserver_down, self.now) && !Self::during(&self.cut[i], self.now) {
            let rv = self.rv.to_string();
            if self.members[i].sightings.seen_at(&rv).is_none() {
                self.members[i].sightings.record(rv, now_m);
            }
        }
        match self.members[i].phase.clone() {
            Phase::Sleeping { until } if until <= self.now => {
                let req = self.send(i, Kind::Read);
                self.members[i].phase = Phase::Reading { req };
            }
            Phase::Reading { req } => {
                let Some(answer) = self.answer(req) else {
                    return;
                };
                let read = answer.and_then(|r| r.read.clone());
                if let Some((holder, rv, _)) = &read {
                    let obj = lease_object(holder, *rv);
                    let m = &mut self.members[i];
                    let seen = dcs::first_seen(Some(&obj), Some(&m.sightings), now_m);
                    m.clock.observe(Some(&obj), seen);
                }
                self.decide_and_act(i, read, false);
            }
            Phase::Acting(acting) => self.carry_on(i, *acting),
            _ => {}
        }
    }

    /// Decide on what was read (`renew_failed`: the second decision after a failed renew) and
    /// start carrying out the plan.
    fn decide_and_act(&mut self, i: usize, read: Option<Read>, renew_failed: bool) {
        let mut obs = self.observation(i, read.clone());
        obs.renew_failed = renew_failed;
        obs.lease_lost = renew_failed && self.members[i].lease_lost;
        let decision = ha::decide(&obs, &self.cfg);
        if !matches!(
            decision.action,
            Action::Nothing | Action::RenewLease | Action::Follow { .. }
        ) {
            let name = self.members[i].name.clone();
            self.note(format!("{name} {:?}: {}", decision.action, decision.reason));
        }
        let steps = steps::plan(&decision.action, obs.local.in_recovery, false);
        let acting = Acting {
            action: decision.action,
            steps,
            next: 0,
            wait: None,
            read,
            sent: None,
            second: renew_failed,
            renew_failed,
            busy: false,
            after: vec![],
        };
        self.carry_on(i, acting);
    }

    /// Carry out the plan's steps until one has to wait (or the plan ends).
    fn carry_on(&mut self, i: usize, mut a: Acting) {
        loop {
            if let Some(wait) = a.wait.clone() {
                match self.waited(i, &wait) {
                    None => {
                        self.members[i].phase = Phase::Acting(Box::new(a));
                        return;
                    }
                    Some(Ok(())) => {
                        // The history record of a finished promotion went through.
                        if matches!(wait, Wait::Request { fatal: false, .. })
                            && self.members[i].promotion == Some(true)
                        {
                            self.members[i].promotion = None;
                        }
                        a.wait = None
                    }
                    // A call whose failure is only logged (the role label).
                    Some(Err(_)) if matches!(wait, Wait::Request { fatal: false, .. }) => {
                        a.wait = None
                    }
                    Some(Err(lost)) => {
                        let failed = a.steps[a.next].clone();
                        let name = self.members[i].name.clone();
                        self.note(format!(
                            "{name} {failed:?} failed{}",
                            if lost {
                                " (lost the compare-and-swap)"
                            } else {
                                ""
                            }
                        ));
                        a.wait = None;
                        if let Wait::Request { lease: true, .. } = wait {
                            for undo in steps::on_lease_write_failure(&a.steps[..a.next]) {
                                self.instant_step(i, &undo, &a);
                            }
                            if failed == Step::Renew && !a.second {
                                // The agent decides again at once, knowing the renew failed.
                                self.members[i].lease_lost = lost;
                                self.decide_and_act(i, a.read.clone(), true);
                                return;
                            }
                        }
                        self.finish(i, &a, failed == Step::Renew);
                        return;
                    }
                }
                continue;
            }
            if !a.after.is_empty() {
                match a.after.remove(0) {
                    After::Ssn(value) => self.set_ssn(i, value),
                    After::PromotePg => a.wait = Some(self.promote_pg(i)),
                    After::Promoted => a.wait = self.promoted(i),
                    After::InTime => a.wait = self.begin(i, &Step::InTime, &mut a),
                    After::Send(kind) => {
                        let req = self.send(i, kind);
                        a.wait = Some(Wait::Request {
                            req,
                            lease: false,
                            fatal: true,
                        });
                    }
                }
                continue;
            }
            if a.busy {
                a.busy = false;
                a.next += 1;
                continue;
            }
            let Some(step) = a.steps.get(a.next).cloned() else {
                let renew_failed = a.renew_failed;
                self.finish(i, &a, renew_failed);
                return;
            };
            // A stall at any step (a GC pause, CPU starvation, SIGSTOP): the agent and its
            // fencing thread stop here; the softdog and PostgreSQL go on.
            if self.now < FAULTY && self.rng.chance(STALL_PERCENT) {
                let until = self.now + self.rng.ms(200, 12_000);
                self.members[i].frozen_until = until;
                let name = self.members[i].name.clone();
                self.note(format!(
                    "{name} agent stalls before {step:?} until {:.2}s",
                    until.as_secs_f64()
                ));
                self.members[i].phase = Phase::Acting(Box::new(a));
                return;
            }
            a.busy = true;
            a.wait = self.begin(i, &step, &mut a);
        }
    }

    /// pg_promote without waiting: the replay backlog first (sometimes long), then a new
    /// timeline; the step waits up to `steps::PROMOTE_WAIT` for it (`Agent::promote`).
    fn promote_pg(&mut self, i: usize) -> Wait {
        if self.members[i].promotion.is_none() {
            let d = if self.rng.chance(5) {
                self.rng.ms(2_000, 10_000)
            } else {
                self.rng.ms(50, 500)
            };
            if self.members[i].pg == Pg::Stopped {
                return Wait::Failed;
            }
            if self.mode == SynchronousMode::Strict {
                // Not one commit acknowledged asynchronously, even right after it.
                self.set_ssn(i, Some("*".into()));
            }
            self.members[i].pg = Pg::Promoting {
                until: self.now + d,
            };
            // A new timeline from here: replay stops, the WAL forks.
            let (b, lsn) = self.members[i].wal;
            self.members[i].wal = (self.wal.fork(b, lsn), lsn);
            self.members[i].upstream = None;
            self.members[i].promotion = Some(false);
            self.note(format!("{} promotion signalled", self.members[i].name));
        }
        let until = match self.members[i].pg {
            Pg::Promoting { until } => until.min(self.now + steps::PROMOTE_WAIT),
            _ => self.now,
        };
        Wait::Pg {
            until,
            fails_if_stopped: true,
        }
    }

    /// `LocalPostgres::promoting` as the agent computes it: a promotion it signalled, postgres
    /// running and not out of recovery yet.
    fn promoting(&self, i: usize) -> bool {
        let m = &self.members[i];
        m.promotion == Some(false)
            && !matches!(m.pg, Pg::Stopped | Pg::Primary | Pg::Stopping { .. })
    }

    /// `Agent::promoted`, when postgres is out of recovery.
    fn promoted(&mut self, i: usize) -> Option<Wait> {
        if self.members[i].pg != Pg::Primary || self.members[i].promotion.is_none() {
            return None;
        }
        self.members[i].promotion = Some(true);
        let req = self.send(i, Kind::Other);
        Some(Wait::Request {
            req,
            lease: false,
            fatal: false,
        })
    }

    /// `Agent::set_synchronous_standby_names`: a new value, counted from this flush position.
    fn set_ssn(&mut self, i: usize, value: Option<String>) {
        if self.members[i].ssn == value {
            return;
        }
        let (name, at) = (self.members[i].name.clone(), self.members[i].wal);
        self.note(format!(
            "{name} synchronous_standby_names = {value:?} at {at:?}"
        ));
        let m = &mut self.members[i];
        m.synchronous_since = value.is_some().then_some(m.wal.1);
        m.ssn = value;
    }

    /// Whether the wait is over: `Some(Ok)` done, `Some(Err(conflict))` failed, `None` not yet.
    fn waited(&mut self, i: usize, wait: &Wait) -> Option<Result<(), bool>> {
        match wait {
            Wait::Request { req, lease, .. } => {
                let answer = self.answer(*req)?;
                match answer {
                    None => Some(Err(false)),
                    Some(r) if *lease => {
                        let won = r.won == Some(true);
                        if won {
                            let now_m = self.clock_of(i);
                            let rv = r.read.as_ref().map(|r| r.1).unwrap_or(0);
                            let written = lease_object(&Some(self.members[i].name.clone()), rv);
                            self.members[i].clock.observe(Some(&written), now_m);
                            Some(Ok(()))
                        } else {
                            Some(Err(true))
                        }
                    }
                    Some(r) if r.won == Some(false) => Some(Err(true)),
                    Some(_) => Some(Ok(())),
                }
            }
            Wait::Failed => Some(Err(false)),
            Wait::Pg {
                until,
                fails_if_stopped,
            } => {
                if *fails_if_stopped && self.members[i].pg == Pg::Stopped {
                    return Some(Err(false));
                }
                (self.now >= *until).then_some(Ok(()))
            }
        }
    }

    /// Start `step`: what it waits for, or `None` when it is done at once.
    fn begin(&mut self, i: usize, step: &Step, a: &mut Acting) -> Option<Wait> {
        let me = Some(self.members[i].name.clone());
        let rv = a.read.as_ref().map(|r| r.1).unwrap_or(0);
        match step {
            Step::InTime => {
                let now_m = self.clock_of(i);
                let late = |t: Option<Instant>| {
                    t.is_some_and(|t| now_m.saturating_duration_since(t) >= self.cfg.fence_after)
                };
                let overdue = late(self.members[i].fence) || late(self.members[i].fed);
                overdue.then_some(Wait::Failed)
            }
            Step::Renew | Step::Acquire => {
                a.sent = Some(self.now);
                let req = self.send(i, Kind::Cas(rv, me));
                Some(Wait::Request {
                    req,
                    lease: true,
                    fatal: true,
                })
            }
            Step::Release => {
                let req = self.send(i, Kind::Cas(rv, None));
                Some(Wait::Request {
                    req,
                    lease: false,
                    fatal: true,
                })
            }
            // A call that does not touch the Lease (the role label); its failure is only logged.
            Step::Unroute { .. } => {
                let req = self.send(i, Kind::Other);
                Some(Wait::Request {
                    req,
                    lease: false,
                    fatal: false,
                })
            }
            Step::Stop(mode) => {
                let (safe, done) = match mode {
                    StopMode::Immediate => (self.rng.ms(1, 20), self.rng.ms(20, 200)),
                    StopMode::Fast => (self.rng.ms(10, 500), self.rng.ms(500, 3_000)),
                };
                if self.members[i].pg != Pg::Stopped {
                    let primary = self.members[i].pg.writable(self.now);
                    self.members[i].pg = Pg::Stopping {
                        safe_at: self.now + safe,
                        until: self.now + done,
                        primary,
                    };
                    self.members[i].disarm_at_safe_point = true;
                }
                self.members[i].promotion = None;
                Some(Wait::Pg {
                    until: self.now + done,
                    fails_if_stopped: false,
                })
            }
            Step::StartPrimary => {
                // Crash recovery; the agent carries on after PRIMARY_START_WAIT.
                let recovery = if self.rng.chance(5) {
                    self.rng.ms(3_000, 15_000)
                } else {
                    self.rng.ms(100, 2_000)
                };
                self.members[i].pg = Pg::Starting {
                    until: self.now + recovery,
                    primary: true,
                };
                // The standbys the `sync` key names may be promoted (postgres::sync::at_start).
                let published = a.read.as_ref().map(|r| r.2.1.clone()).unwrap_or_default();
                let m = &mut self.members[i];
                m.ssn = sync::at_start(self.mode, &published);
                m.synchronous_since = None;
                m.upstream = None;
                self.note(format!("{} starting as primary", self.members[i].name));
                Some(Wait::Pg {
                    until: self.now + recovery.min(Duration::from_secs(1)),
                    fails_if_stopped: true,
                })
            }
            Step::StartReplica { leader, rewind } => {
                let source = leader.as_deref().and_then(|l| self.index(l));
                let m = &mut self.members[i];
                m.upstream = source;
                m.ssn = None;
                m.synchronous_since = None;
                m.promotion = None;
                if *rewind && let Some(u) = source {
                    // pg_rewind: back to where this member's WAL and the source's agree.
                    let theirs = self.members[u].wal;
                    let common = self.wal.common(self.members[i].wal, theirs);
                    self.members[i].wal = (theirs.0, common);
                }
                let d = self.rng.ms(100, 3_000);
                self.members[i].pg = Pg::Starting {
                    until: self.now + d,
                    primary: false,
                };
                Some(Wait::Pg {
                    until: self.now + d,
                    fails_if_stopped: true,
                })
            }
            Step::Promote => {
                // act.rs `promote`: in synchronous mode the `sync` key is taken over first, then
                // the promotion is signalled (once) and waited for a while, then recorded if it
                // ended.
                if self.members[i].promotion.is_none() {
                    if self.mode != SynchronousMode::Off {
                        let read = a.read.as_ref().map(|r| r.2.clone());
                        a.after.push(After::Send(Kind::Sync {
                            key: (me, vec![]),
                            expect: read.unwrap_or_default(),
                        }));
                    }
                    a.after.push(After::InTime);
                }
                a.after.push(After::PromotePg);
                a.after.push(After::Promoted);
                None
            }
            Step::Follow { leader } => {
                self.members[i].upstream = leader.as_deref().and_then(|l| self.index(l));
                None
            }
            Step::Upkeep => {
                // A promotion left pending by an earlier cycle ends here.
                a.after.push(After::Promoted);
                if self.mode != SynchronousMode::Off {
                    self.synchronous_step(i, a);
                }
                None
            }
            _ => {
                self.instant_step(i, step, a);
                None
            }
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// `Agent::synchronous_step`: the real `postgres::sync::plan` on this primary's
    /// pg_stat_replication, carried out in its order: unpublish, set, publish.
    fn synchronous_step(&mut self, i: usize, a: &mut Acting) {
        let me = self.members[i].name.clone();
        let published = match a.read.as_ref().map(|r| &r.2) {
            Some((Some(l), standbys)) if *l == me => standbys.clone(),
            _ => vec![],
        };
        let rows = self.replication_rows(i);
        let m = &mut self.members[i];
        if m.synchronous_since.is_none() && m.ssn.is_some() {
            m.synchronous_since = Some(m.wal.1);
        }
        let plan = sync::plan(
            self.mode,
            &published,
            &rows,
            &[],
            m.ssn.as_deref(),
            m.synchronous_since,
        );
        let mut expect = a.read.as_ref().map(|r| r.2.clone()).unwrap_or_default();
        if plan.unpublish {
            let key = (Some(me.clone()), vec![]);
            a.after.push(After::Send(Kind::Sync {
                key: key.clone(),
                expect: expect.clone(),
            }));
            expect = key;
        }
        a.after.push(After::Ssn(plan.synchronous_standby_names));
        if let Some(name) = plan.publish {
            a.after.push(After::Send(Kind::Sync {
                key: (Some(me), vec![name]),
                expect: expect.clone(),
            }));
        }
    }

    /// Whether member `j` streams from its upstream now: both running, its replication not
    /// cut, and its WAL a prefix of the upstream's.
    fn streams(&self, j: usize) -> Option<usize> {
        let m = &self.members[j];
        let u = m.upstream?;
        let up = &self.members[u];
        let running = |p: Pg| matches!(p, Pg::Primary | Pg::Replica | Pg::Stopping { .. });
        (m.pg == Pg::Replica
            && running(up.pg)
            && !Self::during(&self.replication_cut[j], self.now)
            && self.wal.is_prefix(m.wal, up.wal))
        .then_some(u)
    }

    /// Primary `i`'s pg_stat_replication.
    fn replication_rows(&self, i: usize) -> Vec<ReplicationRow> {
        let ssn = self.members[i].ssn.clone();
        let mut first_sync = true;
        (0..N)
            .filter(|j| self.streams(*j) == Some(i))
            .map(|j| {
                let name = self.members[j].name.clone();
                let sync_state = match ssn.as_deref() {
                    Some("*") if first_sync => {
                        first_sync = false;
                        "sync"
                    }
                    Some("*") => "potential",
                    Some(q) if q == quote_identifier(&name) => "sync",
                    _ => "async",
                };
                ReplicationRow {
                    application_name: name,
                    state: "streaming".into(),
                    sync_state: sync_state.into(),
                    flush_lsn: Some(self.members[j].wal.1),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// One tick of WAL: each writable member takes a client's commit, replicas stream, and
    /// commits are acknowledged as synchronous_standby_names says.
    fn replicate(&mut self) {
        for i in 0..N {
            if self.members[i].pg.writable(self.now) {
                let m = &mut self.members[i];
                m.wal.1 += 1;
                m.pending.get_or_insert(m.wal.1);
            }
        }
        for j in 0..N {
            match self.streams(j) {
                Some(u) => {
                    let up = self.members[u].wal;
                    let m = &mut self.members[j];
                    m.wal = (up.0, up.1.min(m.wal.1 + m.stream_rate));
                    m.not_streaming_since = None;
                }
                None if self.members[j].pg == Pg::Replica => {
                    let now = self.now;
                    self.members[j].not_streaming_since.get_or_insert(now);
                }
                None => self.members[j].not_streaming_since = None,
            }
        }
        let upstreams: Vec<Option<usize>> = (0..N).map(|j| self.streams(j)).collect();
        for i in 0..N {
            let Some(from) = self.members[i].pending else {
                continue;
            };
            let (branch, lsn) = self.members[i].wal;
            // The standby commits wait for: the named one, or with `*` the first (PostgreSQL
            // reports it `sync`, the others `potential`), while it streams from here.
            let mut standbys = (0..N).filter(|j| upstreams[*j] == Some(i));
            let upto = match self.members[i].ssn.as_deref() {
                None => Some(lsn),
                Some("*") => standbys.next().map(|j| self.members[j].wal.1),
                Some(q) => standbys
                    .find(|j| q == quote_identifier(&self.members[*j].name))
                    .map(|j| self.members[j].wal.1),
            };
            let Some(upto) = upto.map(|u| u.min(lsn)).filter(|u| *u >= from) else {
                continue;
            };
            if self.acked.len() <= branch {
                self.acked.resize(branch + 1, 0);
            }
            self.acked[branch] = self.acked[branch].max(upto);
            self.members[i].pending = (upto < lsn).then_some(upto + 1);
        }
    }

    /// Acknowledged commits member `i` lacks (checked when it becomes primary).
    fn lost_commits(&self, i: usize) -> Vec<(usize, u64)> {
        self.acked
            .iter()
            .enumerate()
            .filter(|(b, at)| **at > 0 && !self.wal.holds(self.members[i].wal, (*b, **at)))
            .map(|(b, at)| (b, *at))
            .collect()
    }

    /// The steps that take no time: the fence's.
    fn instant_step(&mut self, i: usize, step: &Step, a: &Acting) {
        let now_m = self.clock_of(i);
        let sent_m = a.sent.map(|t| self.at(i, t));
        let m = &mut self.members[i];
        match step {
            // Activating an armed watchdog feeds it (watchdog::Watchdog::activate).
            Step::Arm => {
                m.watchdog = Some(now_m);
                m.fed = Some(now_m);
            }
            Step::Holding => m.fence = sent_m,
            Step::Renewed => {
                if let Some(sent) = sent_m {
                    if now_m.saturating_duration_since(sent) <= SAFETY_MARGIN / 2 {
                        m.watchdog = Some(now_m);
                        m.fed = Some(now_m);
                    }
                    m.fence = Some(sent);
                }
            }
            Step::Leaving => m.fence = None,
            Step::Disarm => {
                m.watchdog = None;
                m.fed = None;
            }
            Step::StandDown => {
                m.fence = None;
                m.watchdog = None;
                m.fed = None;
            }
            _ => {}
        }
    }

    /// The cycle is over: sleep as the agent does.
    fn finish(&mut self, i: usize, a: &Acting, renew_failed: bool) {
        let now_m = self.clock_of(i);
        let m = &self.members[i];
        let others = match &a.read {
            Some((Some(h), _, _)) if *h != m.name => Some(m.clock.expires_in(self.cfg.ttl, now_m)),
            _ => None,
        };
        let promoting = self.promoting(i);
        let wait = steps::next_wait(
            self.cfg.loop_wait,
            m.fence.is_some(),
            a.read.is_some(),
            renew_failed,
            promoting,
            &a.action,
            others,
        );
        self.members[i].phase = Phase::Sleeping {
            until: self.now + wait,
        };
    }

    fn step(&mut self) -> Result<(), String> {
        self.serve();
        // Faults that begin or end now.
        for (who, at, until) in self.freezes.clone() {
            if at == self.now {
                self.members[who].frozen_until = until;
                self.note(format!(
                    "m{who} agent frozen until {:.2}s",
                    until.as_secs_f64()
                ));
            }
        }
        for (who, at) in self.crashes.clone() {
            if at == self.now {
                self.kill_pg(who, "kill -9 of the postmaster");
            }
        }
        for (who, at, down) in self.kills.clone() {
            if at == self.now {
                self.note(format!("m{who} pod killed"));
                let m = &mut self.members[who];
                m.pg = Pg::Stopped;
                m.pending = None;
                m.ssn = None;
                m.synchronous_since = None;
                m.fence = None;
                m.watchdog = None;
                m.fed = None;
                m.promotion = None;
                m.dead_until = Some(self.now + down);
            }
        }
        for i in 0..N {
            // A restarted pod: a fresh agent, its Lease clock starting now.
            if self.members[i].dead_until.is_some_and(|t| t <= self.now) {
                let now_m = self.clock_of(i);
                let m = &mut self.members[i];
                m.dead_until = None;
                m.frozen_until = Duration::ZERO;
                m.clock = LeaseClock::starting_at(now_m);
                m.sightings = LeaseSightings::default();
                m.phase = Phase::Sleeping { until: self.now };
                m.lease_lost = false;
                self.note(format!("m{i} pod restarted"));
            }
            // A promotion's replay ending: primary from now on, whatever the agent does.
            if let Pg::Promoting { until } = self.members[i].pg
                && until <= self.now
            {
                self.members[i].pg = Pg::Starting {
                    until: self.now,
                    primary: true,
                };
            }
            // PostgreSQL finishing a start or promotion.
            if let Pg::Starting { until, primary } = self.members[i].pg
                && until <= self.now
            {
                self.members[i].pg = if primary { Pg::Primary } else { Pg::Replica };
                self.members[i].was_primary = primary;
                let name = self.members[i].name.clone();
                let role = if primary { "primary" } else { "replica" };
                self.note(format!("{name} postgres up as {role}"));
                let lost = self.lost_commits(i);
                if primary && self.mode != SynchronousMode::Off && !lost.is_empty() {
                    self.violation = Some(format!(
                        "{name} is primary without acknowledged commits (branch, position) {lost:?}; it has {:?}",
                        self.members[i].wal
                    ));
                }
            }
            // A stop reaching its safe point (the watchdog is disarmed there), then its end.
            if let Pg::Stopping { safe_at, until, .. } = self.members[i].pg {
                if safe_at <= self.now && self.members[i].disarm_at_safe_point {
                    self.members[i].disarm_at_safe_point = false;
                    self.members[i].watchdog = None;
                    self.members[i].fed = None;
                }
                if until <= self.now {
                    let m = &mut self.members[i];
                    m.pg = Pg::Stopped;
                    m.pending = None;
                    m.ssn = None;
                    m.synchronous_since = None;
                }
            }
            // The softdog: a process of its own, frozen only with the pod.
            let now_m = self.clock_of(i);
            if let Some(fed) = self.members[i].watchdog
                && self.members[i].dead_until.is_none()
                && now_m.saturating_duration_since(fed) > self.cfg.fence_after
            {
                self.kill_pg(i, "the softdog");
                self.members[i].watchdog = None;
            }
        }
        for i in 0..N {
            self.agent(i);
        }
        self.replicate();
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        let writable: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.pg.writable(self.now))
            .map(|m| m.name.as_str())
            .collect();
        if writable.len() > 1 {
            let states: Vec<String> = self
                .members
                .iter()
                .map(|m| format!("{} {:?}", m.name, m.pg))
                .collect();
            return Err(format!(
                "two members accept writes: {writable:?} ({states:?})"
            ));
        }
        Ok(())
    }
}

/// Run schedule `seed` to the end: how many promotions and fences it saw, or `Err` with the
/// failure and the log of what happened.
/// The synchronous mode of schedule `seed`: off, on and strict in turn.
fn mode_of(seed: u64) -> SynchronousMode {
    match seed % 3 {
        0 => SynchronousMode::Off,
        1 => SynchronousMode::On,
        _ => SynchronousMode::Strict,
    }
}

fn run(seed: u64, mode: SynchronousMode) -> Result<(usize, usize), String> {
    let mut sim = Sim::new(seed, mode);
    let span = |(a, b): &(Vt, Vt)| format!("{:.2}s-{:.2}s", a.as_secs_f64(), b.as_secs_f64());
    for o in sim.apiserver_down.clone() {
        sim.log
            .push(format!("schedule: apiserver down {}", span(&o)));
    }
    for (i, cuts) in sim.cut.clone().iter().enumerate() {
        for c in cuts {
            sim.log
                .push(format!("schedule: m{i} cut from the apiserver {}", span(c)));
        }
    }
    for (i, m) in sim.members.iter().enumerate() {
        let drift = (m.drift - 1.0) * 1e6;
        sim.log
            .push(format!("schedule: m{i} clock drift {drift:+.0} ppm"));
    }
    let end = FAULTY + QUIET;
    let mut primary_since_quiet: Option<Vt> = None;
    while sim.now < end {
        if let Err(e) = sim.step() {
            return Err(format!(
                "seed {seed} at {:.2}s: {e}\n{}",
                sim.now.as_secs_f64(),
                sim.log.join("\n")
            ));
        }
        if sim.now >= FAULTY
            && primary_since_quiet.is_none()
            && sim.members.iter().any(|m| m.pg == Pg::Primary)
        {
            primary_since_quiet = Some(sim.now);
        }
        sim.now += TICK;
    }
    // Liveness: once the faults stop (the last one ends by FAULTY), a primary within QUIET.
    if primary_since_quiet.is_none() {
        return Err(format!(
            "seed {seed}: no primary {}s after the faults stopped\n{}",
            QUIET.as_secs(),
            sim.log.join("\n")
        ));
    }
    let count = |what: &str| sim.log.iter().filter(|l| l.contains(what)).count();
    Ok((count("promotion signalled"), count("postgres killed")))
}

#[test]
fn simulated_fault_schedules_never_make_two_members_writable() {
    let seeds: u64 = std::env::var("PGWARDEN_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let first: u64 = std::env::var("PGWARDEN_SIM_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let (mut promotions, mut fences) = (0, 0);
    for seed in first..first + seeds {
        match run(seed, mode_of(seed)) {
            Ok((p, f)) => {
                promotions += p;
                fences += f;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "simulated {seeds} schedules of {}s (synchronous mode off, on, strict in turn) in {took:.1}s ({:.0} schedules/s; {promotions} promotions, {fences} postgres kills); invariants checked every {}ms: at most one writable member; no acknowledged commit missing from a new primary; a primary within {}s of the last fault",
        (FAULTY + QUIET).as_secs(),
        seeds as f64 / took.max(1e-9),
        TICK.as_millis(),
        QUIET.as_secs()
    );
}

/// Schedules that found a real hole, each failing on the code before its fix when it was
/// found. A seed names a schedule of one version of the model: a change in how the model draws
/// (the WAL model came after 350, 704 and 7536) leads the same seed elsewhere, so each fix is
/// also pinned where it lives: the order of steps by the tests in `agent::steps`, the fencing
/// thread's persistence by `agent::fence`'s, the sync key's compare-and-swap by seed 115 here.
/// Seeds 593 and 3187 were found afterwards by undoing the fix of holes 4 and 5 of the safety
/// issue in the code (each fails then, and passes with it).
const REGRESSIONS: &[(u64, &str)] = &[
    (
        1639,
        "synchronous mode on: a member that won the Lease stalled before its promotion took \
         the sync key over, and on waking overwrote the key of the member that had taken over \
         meanwhile, naming itself; it was later promoted without that member's acknowledged \
         commits (the takeover is now a compare-and-swap on the key as the cycle read it, and \
         the fences are checked again right before the promotion is signalled)",
    ),
    (
        593,
        "hole 4, strict mode: a primary restarted after a crash ran with an empty \
         synchronous_standby_names while the sync key still named its standby, acknowledged \
         commits only it had, and the standby was promoted without them \
         (postgres::sync::at_start now starts with the key's standby, or `*`)",
    ),
    (
        3187,
        "hole 5, synchronous mode on: a standby was published in the sync key as soon as \
         PostgreSQL called it sync, before it had flushed the commits acknowledged before the \
         switch, and was promoted without them (sync::plan now waits for its flush position)",
    ),
    (
        115,
        "synchronous mode on: a deposed primary stalled before its synchronous step, resumed \
         and overwrote the sync key its successor had written, naming itself; later it was \
         promoted without the successor's acknowledged commits. The key is now written only \
         while it is what the cycle read (Dcs::publish_sync), and a new primary takes it over \
         before pg_promote",
    ),
    (
        350,
        "an agent stalled between renewing the Lease and starting postgres as primary (its \
         fencing thread frozen with it, the softdog firing into no postmaster) resumed and \
         started a primary on a Lease another member had taken: the fencing thread now keeps \
         killing while its clock is overdue, and the plan checks the fences (InTime) first",
    ),
    (
        704,
        "the watchdog was armed after a renew answered late, so it counted from after the \
         apiserver accepted the renew and fired after another member could take over: it is \
         now armed before the Lease write",
    ),
    (
        7536,
        "an agent stalled between arming the watchdog and its Lease write; the softdog fired \
         into no postmaster and disarmed itself, and the resumed plan started a primary \
         guarded by neither fence: InTime also checks when the watchdog was fed",
    ),
    (
        2288,
        "strict mode, a primary promoted with `*`: a second standby connected and PostgreSQL \
         called it `sync` in place of the one that had acknowledged the commits; past the \
         position where `*` took effect, it was published and then promoted without them: a \
         standby is now named in synchronous_standby_names before it is published",
    ),
];

#[test]
fn the_schedules_that_found_holes_stay_safe() {
    for (seed, hole) in REGRESSIONS {
        if let Err(e) = run(*seed, mode_of(*seed)) {
            panic!("regression seed {seed} ({hole}) fails again:\n{e}");
        }
    }
}
