//! What admission cannot check (the CRD's schema and CEL rules catch the rest, with the field
//! named): pure checks whose failure becomes a `SpecValid=False` condition and a Warning Event,
//! never a crash loop.

use crate::api::PostgresCluster;
use crate::api::cluster::{RESERVED_PARAMETERS, SynchronousMode};
use crate::api::names::ObjectNames;

/// Every problem found, each naming its field; empty when the spec can be satisfied.
pub fn problems(cluster: &PostgresCluster) -> Vec<String> {
    let spec = &cluster.spec;
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let names = ObjectNames::new(&name);
    let mut out = vec![];
    for key in spec.postgresql.parameters.keys() {
        if RESERVED_PARAMETERS.contains(&key.as_str()) {
            out.push(format!(
                "spec.postgresql.parameters.{key} is managed by pgwarden"
            ));
        }
    }
    for pod in spec.instance_tags.keys() {
        let known = (0..16u32).any(|i| names.pod(i) == *pod);
        if !known {
            out.push(format!(
                "spec.instanceTags.{pod}: not an instance of cluster {name} (expected {name}-<ordinal>)"
            ));
        }
    }
    if spec.ha.synchronous_mode != SynchronousMode::Off
        && spec.ha.synchronous_node_count >= spec.instances
    {
        out.push(format!(
            "spec.ha.synchronousNodeCount ({}) must be less than spec.instances ({})",
            spec.ha.synchronous_node_count, spec.instances
        ));
    }
    let ha = &spec.ha;
    if ha.loop_wait + 2 * ha.retry_timeout > ha.ttl {
        out.push("spec.ha: loopWait + 2*retryTimeout must not exceed ttl".into());
    }
    if ha.ttl - ha.watchdog.safety_margin < ha.loop_wait {
        out.push("spec.ha.watchdog.safetyMargin leaves the watchdog less than a loopWait".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::fixtures::cluster;

    #[test]
    fn a_default_spec_has_no_problems() {
        assert!(problems(&cluster(serde_json::json!({}))).is_empty());
    }

    #[test]
    fn each_problem_names_its_field() {
        let c = cluster(serde_json::json!({
            "instances": 2,
            "postgresql": {"parameters": {"port": "5433"}},
            "instanceTags": {"other-0": {"nofailover": true}},
            "ha": {"synchronousMode": "on", "synchronousNodeCount": 2, "ttl": 8, "watchdog": {"safetyMargin": 7}}
        }));
        let p = problems(&c);
        assert!(
            p.iter()
                .any(|m| m.starts_with("spec.postgresql.parameters.port")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("spec.instanceTags.other-0")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("spec.ha.synchronousNodeCount")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("spec.ha.watchdog.safetyMargin")),
            "{p:?}"
        );
    }
}
