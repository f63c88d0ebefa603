//! What a member tells the world after each cycle, as pure functions of what it observed: the
//! member status annotation (Patroni's member fields), the role label (the rule in
//! `api::member::role_label`) and the REST view that `/patroni`, the health checks and `/metrics`
//! answer from. The loop reads postgres and writes the results; nothing here does I/O.

use std::time::Instant;

use super::dcs::Snapshot;
use super::ha::DataDir;
use super::postgres::{LiveState, ReplicationRow};
use super::rest::RestView;
use crate::api::backup::{ArchiverStats, RepositoryInfo};
use crate::api::member::{
    MemberRole, MemberState, MemberStatus, MemberTags, api_url, conn_url, role_label,
};

/// Who this member is and what it runs with (fixed between cycles but for `config`).
pub struct Identity<'a> {
    pub address: &'a str,
    pub pg_port: u16,
    pub api_port: u16,
    pub tags: &'a MemberTags,
    /// Fingerprint of the dynamic configuration taken up.
    pub config: Option<String>,
}

/// What the loop saw of the local PostgreSQL while publishing.
pub struct Seen<'a> {
    pub running: bool,
    pub live: Option<&'a LiveState>,
    pub data: Option<&'a DataDir>,
    /// The state published last time.
    pub previous_state: MemberState,
    /// This cycle runs a basebackup: keep the state it set (`creating replica`).
    pub cloning: bool,
    /// Holds the leader Lease (or, without the apiserver, is a failsafe-confirmed primary).
    pub holds_lease: bool,
    /// pg_hba.conf rejects clients (the routing gate): no role label, no reads.
    pub clients_fenced: bool,
    /// `pg_stat_archiver`, read on a primary that archives WAL.
    pub archiver: Option<&'a ArchiverStats>,
    /// What the repository holds, as this primary last read it.
    pub repository: Option<&'a RepositoryInfo>,
    /// Why the repository cannot be prepared (stanza-create's error), while it cannot.
    pub stanza_error: Option<&'a str>,
    /// Why this member's last bootstrap failed, until one succeeds.
    pub bootstrap_error: Option<&'a str>,
}

/// The role PostgreSQL plays, from a live answer, or else from its data directory.
pub fn role(live: Option<&LiveState>, data: Option<&DataDir>) -> MemberRole {
    match (live, data) {
        (Some(l), _) if !l.in_recovery => MemberRole::Primary,
        (Some(_), _) => MemberRole::Replica,
        (None, Some(DataDir::Empty)) | (None, None) => MemberRole::Uninitialized,
        (None, Some(_)) => MemberRole::Replica,
    }
}

/// Patroni's member `state`.
pub fn state(seen: &Seen<'_>) -> MemberState {
    match (seen.live, seen.running) {
        (Some(_), _) => MemberState::Running,
        (None, true) => MemberState::Starting,
        (None, false) if seen.cloning => seen.previous_state,
        (None, false) => MemberState::Stopped,
    }
}

/// The `pgwarden.io/status` annotation.
pub fn member_status(me: &Identity<'_>, seen: &Seen<'_>) -> MemberStatus {
    let live = seen.live;
    MemberStatus {
        conn_url: conn_url(me.address, me.pg_port),
        api_url: api_url(me.address, me.api_port),
        state: state(seen),
        role: role(live, seen.data),
        xlog_location: live.and_then(|l| l.lsn),
        replication_state: live
            .filter(|l| l.in_recovery && l.streaming)
            .map(|_| "streaming".to_string()),
        timeline: live.and_then(|l| l.timeline),
        tags: me.tags.clone(),
        pending_restart: live.is_some_and(|l| l.pending_restart),
        version: env!("CARGO_PKG_VERSION").to_string(),
        config: me.config.clone(),
        archiver: seen.archiver.cloned(),
        bootstrap_error: seen.bootstrap_error.map(str::to_string),
        stanza_error: seen.stanza_error.map(str::to_string),
        repository: seen.repository.cloned(),
    }
}

/// The other pods whose `primary` label this member removes: all of them, once its own pod is
/// labelled primary (it runs as primary and the Lease names it, so none of them can be). The
/// former primary's agent removes its own label when it demotes, and the operator's label
/// updater when the pod stops answering; neither happens when the node under it is dead, frozen
/// or cut off with the operator on it, and until then `-rw` would keep sending half the new
/// connections to a member that cannot take them (Patroni's leader writes the Endpoints itself).
pub fn stale_primary_labels<'a>(mine: Option<&str>, others: &'a [String]) -> &'a [String] {
    if mine == Some(crate::api::names::ROLE_PRIMARY) {
        others
    } else {
        &[]
    }
}

/// The role label for this member's own pod.
pub fn label(status: &MemberStatus, seen: &Seen<'_>) -> Option<&'static str> {
    let holds_lease = seen.holds_lease;
    // A fenced replica is on no Service: -ro would send readers to a member that rejects them.
    let running = status.state == MemberState::Running && !seen.clients_fenced;
    role_label(
        status.role == MemberRole::Primary && running,
        holds_lease,
        status.role == MemberRole::Replica && running,
    )
}

/// Bring the REST view up to date with this cycle.
pub fn update_view(
    v: &mut RestView,
    status: &MemberStatus,
    seen: &Seen<'_>,
    replication: Vec<ReplicationRow>,
    snap: Option<&Snapshot>,
    now: Instant,
) {
    let live = seen.live;
    v.role = status.role;
    v.state = status.state;
    v.holds_lease = seen.holds_lease;
    v.clients_fenced = seen.clients_fenced;
    v.timeline = status.timeline;
    v.lsn = status.xlog_location;
    v.received_lsn = live.and_then(|l| l.received_lsn);
    v.replayed_lsn = live.and_then(|l| l.replayed_lsn);
    v.streaming = live.is_some_and(|l| l.streaming);
    v.replay_paused = live.is_some_and(|l| l.replay_paused);
    v.replayed_timestamp = live.and_then(|l| l.replayed_timestamp);
    v.archive_recovery = live.is_some_and(|l| l.archive_recovery);
    if let Some(sv) = live.and_then(|l| l.server_version) {
        v.server_version = Some(sv);
    }
    v.pending_restart = status.pending_restart;
    v.archiver = status.archiver.clone();
    v.repository = status.repository.clone();
    v.sysid = match seen.data {
        Some(DataDir::Initialized { sysid, .. }) => Some(sysid.clone()),
        _ => None,
    };
    v.replication = replication;
    v.last_cycle = now;
    if let Some(s) = snap {
        v.lease_holder = s.holder().map(str::to_string);
        v.leader_optime = s.leader_optime;
        v.paused = s.paused;
        v.members = s.members.clone();
        v.history = s.history.clone();
        v.sync_standbys = s.sync.sync_standby.clone();
        v.scheduled_switchover = s.switchover_scheduled_at.and_then(|at| {
            s.switchover
                .as_ref()
                .map(|sw| (at.to_string(), sw.leader.clone(), sw.candidate.clone()))
        });
        v.dcs_last_seen = jiff::Timestamp::now().as_second();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::names::{ROLE_PRIMARY, ROLE_REPLICA};

    fn live(in_recovery: bool) -> LiveState {
        LiveState {
            in_recovery,
            timeline: Some(3),
            lsn: Some(0x3000060),
            streaming: in_recovery,
            received_lsn: None,
            replayed_lsn: None,
            pending_restart: false,
            server_version: Some(150004),
            replay_paused: false,
            replayed_timestamp: None,
            archive_recovery: false,
        }
    }

    fn seen<'a>(live: Option<&'a LiveState>, running: bool, holds: bool) -> Seen<'a> {
        Seen {
            running,
            live,
            data: None,
            previous_state: MemberState::Stopped,
            cloning: false,
            holds_lease: holds,
            clients_fenced: false,
            archiver: None,
            repository: None,
            stanza_error: None,
            bootstrap_error: None,
        }
    }

    fn status(seen: &Seen<'_>) -> MemberStatus {
        let tags = MemberTags::default();
        member_status(
            &Identity {
                address: "10.0.0.7",
                pg_port: 5432,
                api_port: 8008,
                tags: &tags,
                config: None,
            },
            seen,
        )
    }

    #[test]
    fn the_archivers_statistics_go_into_the_member_status_and_round_trip() {
        let l = live(false);
        let stats = ArchiverStats {
            archived_count: 7,
            last_archived_wal: Some("000000010000000000000007".into()),
            last_archived_time: Some(1_764_000_000),
            ..Default::default()
        };
        let s = Seen {
            archiver: Some(&stats),
            ..seen(Some(&l), true, true)
        };
        let published = status(&s);
        assert_eq!(published.archiver.as_ref(), Some(&stats));
        let back = MemberStatus::parse(&published.to_annotation()).expect("round trip");
        assert_eq!(back.archiver, Some(stats));
        assert!(
            !status(&seen(Some(&l), true, true))
                .to_annotation()
                .contains("archiver"),
            "left out when not archiving"
        );
    }

    #[test]
    fn a_primary_is_labelled_only_while_it_holds_the_lease() {
        let l = live(false);
        let s = seen(Some(&l), true, true);
        assert_eq!(label(&status(&s), &s), Some(ROLE_PRIMARY));
        let s = seen(Some(&l), true, false);
        assert_eq!(label(&status(&s), &s), None);
    }

    #[test]
    fn only_a_member_labelled_primary_removes_the_others_primary_labels() {
        let others = vec!["pg-0".to_string()];
        assert_eq!(
            stale_primary_labels(Some(ROLE_PRIMARY), &others),
            &others[..]
        );
        assert!(stale_primary_labels(Some(ROLE_REPLICA), &others).is_empty());
        assert!(stale_primary_labels(None, &others).is_empty());
    }

    #[test]
    fn a_running_replica_is_labelled_replica_a_starting_one_is_not() {
        let l = live(true);
        let s = seen(Some(&l), true, false);
        let st = status(&s);
        assert_eq!(st.replication_state.as_deref(), Some("streaming"));
        assert_eq!(label(&st, &s), Some(ROLE_REPLICA));
        let mut fenced = seen(Some(&l), true, false);
        fenced.clients_fenced = true;
        assert_eq!(
            label(&status(&fenced), &fenced),
            None,
            "clients fenced: on no Service"
        );
        let s = seen(None, true, false);
        let st = status(&s);
        assert_eq!(st.state, MemberState::Starting);
        assert_eq!(label(&st, &s), None);
    }

    #[test]
    fn a_stopped_member_reads_its_role_from_the_data_directory() {
        assert_eq!(role(None, None), MemberRole::Uninitialized);
        assert_eq!(role(None, Some(&DataDir::Empty)), MemberRole::Uninitialized);
        let data = DataDir::Initialized {
            sysid: "7".into(),
            was_primary: true,
            timeline: 2,
        };
        assert_eq!(role(None, Some(&data)), MemberRole::Replica);
    }

    #[test]
    fn a_basebackup_keeps_the_creating_replica_state() {
        let mut s = seen(None, false, false);
        s.previous_state = MemberState::CreatingReplica;
        assert_eq!(state(&s), MemberState::Stopped);
        s.cloning = true;
        assert_eq!(state(&s), MemberState::CreatingReplica);
    }
}
