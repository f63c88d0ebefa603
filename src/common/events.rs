//! Kubernetes Events on the `PostgresCluster`, shared by the operator and the agents.
//!
//! Contract: every promotion, demotion, fencing action, switchover and rolling step is an Event
//! (events.k8s.io/v1) regarding the cluster, with a sentence a person understands in `note`.
//! kube-runtime's `Recorder` folds events with the same type, reason and action into one series
//! that keeps the FIRST note, so the note also goes into `action` (truncated to its 128-byte
//! limit): different decisions stay apart, repeats of the same one still fold.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use crate::api::cluster::PostgresCluster;

/// The API field limit for `action`.
const ACTION_MAX: usize = 128;

/// An Event whose `action` is its note, cut at a character boundary within the API's limit.
pub fn event(type_: EventType, reason: &str, note: String) -> Event {
    let mut action = note.clone();
    if action.len() > ACTION_MAX {
        let mut end = ACTION_MAX;
        while !action.is_char_boundary(end) {
            end -= 1;
        }
        action.truncate(end);
    }
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action,
        secondary: None,
    }
}

/// A reference to a `PostgresCluster` by namespace and name (and uid when known:
/// `kubectl describe` matches events on it).
pub fn cluster_reference(namespace: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some(PostgresCluster::api_version(&()).into_owned()),
        kind: Some(PostgresCluster::kind(&()).into_owned()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: uid.filter(|u| !u.is_empty()).map(str::to_string),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_for_the_action_at_a_char_boundary() {
        let note = format!("{}é{}", "a".repeat(127), "b".repeat(50));
        let ev = event(EventType::Normal, "Promoted", note.clone());
        assert_eq!(ev.note.as_deref(), Some(note.as_str()));
        assert_eq!(ev.action, "a".repeat(127));
        let short = event(EventType::Warning, "Fenced", "short".into());
        assert_eq!(short.action, "short");
    }

    #[test]
    fn the_reference_names_the_cluster_and_drops_an_empty_uid() {
        let r = cluster_reference("ns", "pg", Some(""));
        assert_eq!(r.kind.as_deref(), Some("PostgresCluster"));
        assert_eq!(r.api_version.as_deref(), Some("pgwarden.io/v1alpha1"));
        assert_eq!(r.uid, None);
        assert_eq!(
            cluster_reference("ns", "pg", Some("u-1")).uid.as_deref(),
            Some("u-1")
        );
    }
}
