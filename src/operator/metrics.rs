//! The operator's Prometheus metrics: reconcile counts, durations and errors, and the label
//! updater's probe results. Plain atomics rendered in the text exposition format.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    reconcile_errors: AtomicU64,
    reconcile_micros: AtomicU64,
    probes_answered: AtomicU64,
    probes_unanswered: AtomicU64,
    label_changes: AtomicU64,
    leader: AtomicBool,
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

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in lines {
                out.push_str(&format!("{name}{labels} {value}\n"));
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
                    "{answered=\"true\"}".into(),
                    get(&self.probes_answered).to_string(),
                ),
                (
                    "{answered=\"false\"}".into(),
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
        out
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
}
