//! A deterministic simulation of the HA core, first version: three members, each running the
//! agent's real `ha::decide` and the real Lease clock (`common::lease::LeaseClock`, expiry on the
//! member's own clock), with the agent's timing (`HaConfig`, `ha::STOP_ALLOWANCE`, the fence
//! deadline and the watchdog's feeding rule), against a model apiserver (one Lease with a
//! resourceVersion; every write a compare-and-swap applied when the request reaches it) and a
//! model PostgreSQL per member (stopped, starting, replica, primary). A seeded schedule of
//! faults: apiserver outages, slow, dropped and answer-lost requests, agents frozen (the loop and
//! its fencing thread stop; the softdog and PostgreSQL do not), pods killed and restarted,
//! member clocks that drift. After every 10 ms of virtual time it checks that at most one member
//! accepts writes, and after the faults stop that one primary appears within a bound. A failing
//! seed is printed and replays exactly.
//!
//! What it does not model yet (see the issue): the action sequencing is a mirror of
//! `src/agent/act.rs`, not that code; no failsafe, synchronous mode, switchover or pause.
//!
//! `cargo test --test simulate` runs `PGWARDEN_SIM_SEEDS` schedules (default 300);
//! `make simulate SEEDS=N` runs more, in release mode.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pgwarden::agent::ha::{
    self, Action, DataDir, DcsView, HaConfig, Initialize, LeaseView, LocalPostgres, MemberView,
    Observation, PeerAnswer, StartAs,
};
use pgwarden::api::cluster::SynchronousMode;
use pgwarden::common::lease::LeaseClock;

const TICK: Duration = Duration::from_millis(10);
const N: usize = 3;
/// Faults happen in the first part of a schedule; the rest is quiet, for liveness.
const FAULTY: Duration = Duration::from_secs(60);
const QUIET: Duration = Duration::from_secs(45);
/// The watchdog's safety margin (ttl - margin is the fence deadline and the watchdog timeout).
const SAFETY_MARGIN: Duration = Duration::from_secs(2);
/// How soon a primary that could not renew tries again (the agent's RETRY_SOON).
const RETRY_SOON: Duration = Duration::from_millis(500);

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
    }
}

/// SplitMix64, the same sequence on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Virtual time since the start of the schedule.
type Vt = Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pg {
    Stopped,
    /// Starting (crash recovery) or promoting until then; answers no queries meanwhile.
    Starting {
        until: Vt,
        primary: bool,
    },
    Replica,
    Primary,
}

#[derive(Debug, Clone)]
enum Write {
    Renew,
    Acquire,
}

#[derive(Debug, Clone)]
enum Then {
    Nothing,
    Promote,
    StartPrimary,
}

#[derive(Debug, Clone)]
enum Phase {
    Sleeping {
        until: Vt,
    },
    Reading {
        req: usize,
    },
    Writing {
        req: usize,
        kind: Write,
        sent: Vt,
        then: Then,
    },
}

/// One apiserver request in flight.
struct Request {
    /// When the member sent it.
    sent: Vt,
    /// When it reaches the apiserver (`None`: dropped on the way).
    arrives: Option<Vt>,
    /// When the answer reaches the member (`None`: lost).
    answered: Option<Vt>,
    /// For a write: the compare-and-swap (expected version, new holder).
    cas: Option<(u64, Option<String>)>,
    /// Filled when the apiserver handles it: the Lease as read, or whether the write won.
    read: Option<(Option<String>, u64)>,
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
    seen: Option<(Option<String>, u64)>,
    /// The fencing thread's clock: when the last acknowledged renew was sent (member time).
    fence: Option<Instant>,
    /// The softdog: when it was last fed (member time); `None` when disarmed.
    watchdog: Option<Instant>,
    pg: Pg,
    was_primary: bool,
    renew_failed: bool,
    lease_lost: bool,
    lsn: u64,
}

struct Sim {
    rng: Rng,
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
    requests: Vec<Request>,
    members: Vec<Member>,
    log: Vec<String>,
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
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let cfg = config();
        let base = Instant::now();
        let mut apiserver_down = vec![];
        let mut cut = vec![vec![]; N];
        let mut freezes = vec![];
        let mut kills = vec![];
        let faults = 1 + rng.below(6);
        for _ in 0..faults {
            let at = rng.ms(1_000, FAULTY.as_millis() as u64 - 20_000);
            match rng.below(4) {
                0 => apiserver_down.push((at, at + rng.ms(500, 20_000))),
                1 => cut[rng.below(N as u64) as usize].push((at, at + rng.ms(500, 20_000))),
                2 => freezes.push((rng.below(N as u64) as usize, at, at + rng.ms(200, 15_000))),
                _ => kills.push((rng.below(N as u64) as usize, at, rng.ms(500, 5_000))),
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
                    seen: None,
                    fence: (i == 0).then_some(base),
                    watchdog: (i == 0).then_some(base),
                    pg: if i == 0 { Pg::Primary } else { Pg::Replica },
                    was_primary: i == 0,
                    renew_failed: false,
                    lease_lost: false,
                    lsn: 100,
                }
            })
            .collect();
        Sim {
            rng,
            cfg,
            base,
            now: Duration::ZERO,
            holder: Some("m0".into()),
            rv: 1,
            apiserver_down,
            cut,
            freezes,
            kills,
            requests: vec![],
            members,
            log: vec![],
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
    fn send(&mut self, i: usize, cas: Option<(u64, Option<String>)>) -> usize {
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
        self.requests.push(Request {
            sent: self.now,
            arrives: reachable.then_some(arrives),
            answered: (reachable && !answer_lost).then_some(answered),
            cas,
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
            match &r.cas {
                None => r.read = Some((self.holder.clone(), self.rv)),
                Some((expect, holder)) => {
                    let won = *expect == self.rv;
                    if won {
                        self.holder = holder.clone();
                        self.rv += 1;
                    }
                    r.won = Some(won);
                    r.read = Some((self.holder.clone(), self.rv));
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

    fn observation(&mut self, i: usize, read: Option<(Option<String>, u64)>) -> Observation {
        let now_m = self.clock_of(i);
        let m = &self.members[i];
        let dcs = read.map(|(holder, _)| {
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
                        lsn: Some(o.lsn),
                        timeline: Some(1),
                    })
                    .collect(),
                switchover: None,
                sync_standbys: vec![],
                sync_leader: None,
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
                Pg::Replica => Some(true),
                Pg::Primary => Some(false),
                _ => None,
            },
            timeline: Some(1),
            lsn: Some(m.lsn),
            following: None,
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
                lsn: Some(self.members[j].lsn),
                nofailover: false,
            })
            .collect();
        Observation {
            me: m.name.clone(),
            paused: false,
            dcs,
            local,
            peers,
            renew_failed: m.renew_failed,
            lease_lost: m.lease_lost,
            since_renew: m.fence.map(|t| now_m.saturating_duration_since(t)),
            failsafe_confirmed: None,
            failsafe_leader: None,
            not_streaming_for: None,
        }
    }

    fn kill_pg(&mut self, i: usize, why: &str) {
        if self.members[i].pg != Pg::Stopped {
            self.note(format!("{} postgres killed: {why}", self.members[i].name));
        }
        let m = &mut self.members[i];
        m.pg = Pg::Stopped;
    }

    /// One member's agent, one step: handle what is due in its loop.
    fn agent(&mut self, i: usize) {
        if self.members[i].dead_until.is_some() || self.members[i].frozen_until > self.now {
            return;
        }
        let now_m = self.clock_of(i);
        // The fencing thread (a thread of the agent: frozen with it).
        if let Some(t) = self.members[i].fence
            && now_m.saturating_duration_since(t) > self.cfg.fence_after
        {
            self.kill_pg(i, "the fencing thread");
            self.members[i].fence = None;
        }
        match self.members[i].phase.clone() {
            Phase::Sleeping { until } if until <= self.now => {
                let req = self.send(i, None);
                self.members[i].phase = Phase::Reading { req };
            }
            Phase::Reading { req } => {
                let Some(answer) = self.answer(req) else {
                    return;
                };
                let read = answer.and_then(|r| r.read.clone());
                if let Some((holder, rv)) = &read {
                    let obj = lease_object(holder, *rv);
                    self.members[i].clock.observe(Some(&obj), now_m);
                    self.members[i].seen = Some((holder.clone(), *rv));
                }
                let obs = self.observation(i, read.clone());
                let decision = ha::decide(&obs, &self.cfg);
                self.members[i].renew_failed = false;
                self.members[i].lease_lost = false;
                self.act(i, decision.action, read);
            }
            Phase::Writing {
                req,
                kind,
                sent,
                then,
            } => {
                let Some(answer) = self.answer(req).map(|a| a.map(|r| r.won)) else {
                    return;
                };
                let won = answer.flatten();
                let sent_m = self.base + sent.mul_f64(self.members[i].drift);
                match won {
                    Some(true) => {
                        let written = lease_object(
                            &Some(self.members[i].name.clone()),
                            self.requests[req].read.as_ref().map(|r| r.1).unwrap_or(0),
                        );
                        self.members[i].clock.observe(Some(&written), now_m);
                        let m = &mut self.members[i];
                        let took = now_m.saturating_duration_since(sent_m);
                        if matches!(kind, Write::Acquire)
                            || matches!(then, Then::Promote | Then::StartPrimary)
                        {
                            m.watchdog.get_or_insert(now_m);
                        }
                        if took <= SAFETY_MARGIN / 2 && m.watchdog.is_some() {
                            m.watchdog = Some(now_m);
                        }
                        m.fence = Some(sent_m);
                        let primary_start = match then {
                            Then::Promote => Some(self.rng.ms(50, 500)),
                            Then::StartPrimary => Some(self.rng.ms(100, 3_000)),
                            Then::Nothing
                                if matches!(kind, Write::Acquire) && m.pg == Pg::Replica =>
                            {
                                Some(self.rng.ms(50, 500))
                            }
                            Then::Nothing => None,
                        };
                        if let Some(d) = primary_start {
                            let m = &mut self.members[i];
                            m.pg = Pg::Starting {
                                until: self.now + d,
                                primary: true,
                            };
                            let name = m.name.clone();
                            self.note(format!("{name} becoming primary"));
                        }
                    }
                    Some(false) => {
                        let m = &mut self.members[i];
                        m.renew_failed = true;
                        m.lease_lost = true;
                        if matches!(kind, Write::Acquire) {
                            m.watchdog = None;
                        }
                    }
                    None => {
                        let m = &mut self.members[i];
                        m.renew_failed = true;
                        if matches!(kind, Write::Acquire) {
                            m.watchdog = None;
                        }
                    }
                }
                self.sleep(i);
            }
            _ => {}
        }
    }

    fn sleep(&mut self, i: usize) {
        let m = &self.members[i];
        let soon = m.renew_failed && m.pg == Pg::Primary;
        let wait = if soon { RETRY_SOON } else { self.cfg.loop_wait };
        self.members[i].phase = Phase::Sleeping {
            until: self.now + wait,
        };
    }

    fn act(&mut self, i: usize, action: Action, read: Option<(Option<String>, u64)>) {
        let rv = read.as_ref().map(|r| r.1).unwrap_or(0);
        let me = Some(self.members[i].name.clone());
        let write = |s: &mut Sim, kind: Write, then: Then| {
            let req = s.send(i, Some((rv, me.clone())));
            s.members[i].phase = Phase::Writing {
                req,
                kind,
                sent: s.now,
                then,
            };
        };
        match action {
            Action::RenewLease => write(self, Write::Renew, Then::Nothing),
            Action::Promote => write(self, Write::Renew, Then::Promote),
            Action::StartPostgres(StartAs::Primary) => {
                write(self, Write::Renew, Then::StartPrimary)
            }
            Action::AcquireLease => write(self, Write::Acquire, Then::Nothing),
            Action::Demote { .. } => {
                self.members[i].fence = None;
                self.note(format!("{} demotes", self.members[i].name));
                self.members[i].pg = Pg::Stopped;
                self.members[i].watchdog = None;
                self.sleep(i);
            }
            Action::StartPostgres(StartAs::Replica { .. }) => {
                self.members[i].fence = None;
                self.members[i].watchdog = None;
                let d = self.rng.ms(100, 3_000);
                self.members[i].pg = Pg::Starting {
                    until: self.now + d,
                    primary: false,
                };
                self.sleep(i);
            }
            _ => self.sleep(i),
        }
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
        for (who, at, down) in self.kills.clone() {
            if at == self.now {
                self.note(format!("m{who} pod killed"));
                let m = &mut self.members[who];
                m.pg = Pg::Stopped;
                m.fence = None;
                m.watchdog = None;
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
                m.phase = Phase::Sleeping { until: self.now };
                m.renew_failed = false;
                m.lease_lost = false;
                self.note(format!("m{i} pod restarted"));
            }
            // PostgreSQL finishing a start or promotion.
            if let Pg::Starting { until, primary } = self.members[i].pg
                && until <= self.now
            {
                self.members[i].pg = if primary { Pg::Primary } else { Pg::Replica };
                self.members[i].was_primary = primary;
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
        let writable: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.pg == Pg::Primary)
            .map(|m| m.name.as_str())
            .collect();
        if writable.len() > 1 {
            return Err(format!("two members accept writes: {writable:?}"));
        }
        Ok(())
    }
}

/// Run schedule `seed` to the end: how many promotions and fences it saw, or `Err` with the
/// failure and the log of what happened.
fn run(seed: u64) -> Result<(usize, usize), String> {
    let mut sim = Sim::new(seed);
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
    Ok((count("becoming primary"), count("postgres killed")))
}

#[test]
fn simulated_fault_schedules_never_make_two_members_writable() {
    let seeds: u64 = std::env::var("PGWARDEN_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let first: u64 = std::env::var("PGWARDEN_SIM_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let (mut promotions, mut fences) = (0, 0);
    for seed in first..first + seeds {
        match run(seed) {
            Ok((p, f)) => {
                promotions += p;
                fences += f;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "simulated {seeds} schedules of {}s in {took:.1}s ({:.0} schedules/s; {promotions} promotions, {fences} postgres kills); invariants checked every {}ms: at most one writable member; a primary within {}s of the last fault",
        (FAULTY + QUIET).as_secs(),
        seeds as f64 / took.max(1e-9),
        TICK.as_millis(),
        QUIET.as_secs()
    );
}
