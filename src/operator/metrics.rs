//! The operator's Prometheus metrics: reconcile counts, durations and errors, and the label
//! updater's probe results (totals, and per member from the last round). Plain atomics and one
//! map, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::prom::{Text, escape};

/// One member as the label updater's last probe round found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberProbe {
    pub namespace: String,
    pub cluster: String,
    pub member: String,
    /// Its agent answered the probe (any HTTP status).
    pub up: bool,
    /// Its agent answered and its status annotation says PostgreSQL is running.
    pub running: bool,
}

/// (namespace, cluster, member) → (up, running).
type MemberResults = BTreeMap<(String, String, String), (bool, bool)>;

#[derive(Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    reconcile_errors: AtomicU64,
    reconcile_micros: AtomicU64,
    probes_answered: AtomicU64,
    probes_unanswered: AtomicU64,
    label_changes: AtomicU64,
    leader: AtomicBool,
    /// The last probe round's results, replaced by every round.
    members: Mutex<MemberResults>,
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, ok: bool) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        self.reconcile_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            self.reconcile_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn label_probe(&self, answered: bool) {
        let c = if answered {
            &self.probes_answered
        } else {
            &self.probes_unanswered
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn label_change(&self) {
        self.label_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// The results of one whole probe round; members and clusters it did not see disappear.
    pub fn member_probes(&self, probes: impl IntoIterator<Item = MemberProbe>) {
        let fresh = probes
            .into_iter()
            .map(|p| ((p.namespace, p.cluster, p.member), (p.up, p.running)))
            .collect();
        *self.members.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = Text::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            out.head(name, kind, help);
            for (labels, value) in lines {
                out.sample(name, &labels, value);
            }
        };
        metric(
            "pgwarden_operator_reconciles_total",
            "counter",
            "Reconciles of PostgresCluster objects.",
            vec![(String::new(), get(&self.reconciles).to_string())],
        );
        metric(
            "pgwarden_operator_reconcile_errors_total",
            "counter",
            "Reconciles that ended in an error.",
            vec![(String::new(), get(&self.reconcile_errors).to_string())],
        );
        metric(
            "pgwarden_operator_reconcile_seconds_total",
            "counter",
            "Time spent reconciling.",
            vec![(
                String::new(),
                format!("{:.6}", get(&self.reconcile_micros) as f64 / 1e6),
            )],
        );
        metric(
            "pgwarden_operator_label_probes_total",
            "counter",
            "Agent health probes by the label updater, by whether the agent answered.",
            vec![
                (
                    "answered=\"true\"".into(),
                    get(&self.probes_answered).to_string(),
                ),
                (
                    "answered=\"false\"".into(),
                    get(&self.probes_unanswered).to_string(),
                ),
            ],
        );
        metric(
            "pgwarden_operator_label_changes_total",
            "counter",
            "Role labels the label updater changed.",
            vec![(String::new(), get(&self.label_changes).to_string())],
        );
        metric(
            "pgwarden_operator_leader",
            "gauge",
            "1 while this replica holds the operator's leader lease.",
            vec![(
                String::new(),
                u8::from(self.leader.load(Ordering::Relaxed)).to_string(),
            )],
        );
        let members = self
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let per_member = |pick: fn(&(bool, bool)) -> bool| -> Vec<(String, String)> {
            members
                .iter()
                .map(|((ns, cluster, member), v)| {
                    (
                        format!(
                            "namespace=\"{}\",cluster=\"{}\",member=\"{}\"",
                            escape(ns),
                            escape(cluster),
                            escape(member)
                        ),
                        u8::from(pick(v)).to_string(),
                    )
                })
                .collect()
        };
        metric(
            "pgwarden_operator_member_up",
            "gauge",
            "1 if the member's agent answered the label updater's last probe, 0 otherwise.",
            per_member(|v| v.0),
        );
        metric(
            "pgwarden_operator_member_running",
            "gauge",
            "1 if the member's agent answered the last probe and its status annotation says PostgreSQL is running, 0 otherwise.",
            per_member(|v| v.1),
        );
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(1500), false);
        m.label_probe(true);
        let text = m.render();
        assert!(text.contains("pgwarden_operator_reconciles_total 1\n"));
        assert!(text.contains("pgwarden_operator_reconcile_errors_total 1\n"));
        assert!(text.contains("pgwarden_operator_reconcile_seconds_total 1.500000\n"));
        assert!(text.contains("pgwarden_operator_label_probes_total{answered=\"true\"} 1\n"));
        assert!(text.contains("# TYPE pgwarden_operator_leader gauge\n"));
    }

    fn probe(ns: &str, cluster: &str, member: &str, up: bool, running: bool) -> MemberProbe {
        MemberProbe {
            namespace: ns.into(),
            cluster: cluster.into(),
            member: member.into(),
            up,
            running,
        }
    }

    #[test]
    fn member_probes_are_the_last_rounds_only() {
        let m = Metrics::default();
        assert!(m.render().ends_with(
            "# HELP pgwarden_operator_member_running 1 if the member's agent answered the last probe and its status annotation says PostgreSQL is running, 0 otherwise.\n# TYPE pgwarden_operator_member_running gauge\n"
        ));
        m.member_probes([
            probe("db", "main", "main-1", true, false),
            probe("db", "main", "main-0", true, true),
            probe("other", "gone", "gone-0", false, false),
        ]);
        m.member_probes([
            probe("db", "main", "main-1", false, false),
            probe("db", "main", "main-0", true, true),
        ]);
        let text = m.render();
        let tail: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("# HELP pgwarden_operator_member_up"))
            .collect();
        assert_eq!(
            tail,
            [
                "# HELP pgwarden_operator_member_up 1 if the member's agent answered the label updater's last probe, 0 otherwise.",
                "# TYPE pgwarden_operator_member_up gauge",
                r#"pgwarden_operator_member_up{namespace="db",cluster="main",member="main-0"} 1"#,
                r#"pgwarden_operator_member_up{namespace="db",cluster="main",member="main-1"} 0"#,
                "# HELP pgwarden_operator_member_running 1 if the member's agent answered the last probe and its status annotation says PostgreSQL is running, 0 otherwise.",
                "# TYPE pgwarden_operator_member_running gauge",
                r#"pgwarden_operator_member_running{namespace="db",cluster="main",member="main-0"} 1"#,
                r#"pgwarden_operator_member_running{namespace="db",cluster="main",member="main-1"} 0"#,
            ]
        );
    }
}
