//! The Services: `<c>-rw` (role=primary), `<c>-ro` (role=replica), `<c>-r` (any ready instance)
//! and the headless `<c>-pods` that gives each pod a stable name. Routing follows the role label
//! that the agents and the label updater keep on the pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;
use crate::api::cluster::ServiceTemplate;
use crate::api::names::{LABEL_ROLE, POSTGRES_PORT, REST_PORT, ROLE_PRIMARY, ROLE_REPLICA};

fn port(name: &str, number: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number.into(),
        target_port: Some(IntOrString::Int(number.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn client_service(
    cluster: &Cluster,
    name: String,
    role: Option<&str>,
    template: &ServiceTemplate,
) -> Service {
    let mut selector = cluster.labels();
    if let Some(role) = role {
        selector.insert(LABEL_ROLE.into(), role.into());
    }
    let mut meta = cluster.meta(name);
    if !template.annotations.is_empty() {
        meta.annotations = Some(template.annotations.clone());
    }
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(template.type_.as_str().into()),
            selector: Some(selector),
            ports: Some(vec![port("postgresql", POSTGRES_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The four Services, in the order they are applied.
pub fn services(cluster: &Cluster) -> Vec<Service> {
    let s = &cluster.spec.services;
    let n = &cluster.names;
    let headless = Service {
        metadata: cluster.meta(n.service_pods()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Members must reach each other (basebackup, peers' REST) before they are Ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(cluster.labels()),
            ports: Some(vec![
                port("postgresql", POSTGRES_PORT),
                port("api", REST_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        headless,
        client_service(cluster, n.service_rw(), Some(ROLE_PRIMARY), &s.rw),
        client_service(cluster, n.service_ro(), Some(ROLE_REPLICA), &s.ro),
        client_service(cluster, n.service_r(), None, &s.r),
    ]
}

/// Selector of the `-rw` Service, for tests and the CLI.
pub fn primary_selector(cluster: &str) -> BTreeMap<String, String> {
    let mut s = crate::api::names::cluster_labels(cluster);
    s.insert(LABEL_ROLE.into(), ROLE_PRIMARY.into());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::fixtures::cluster;

    #[test]
    fn rw_selects_the_primary_and_ro_the_replicas() {
        let c = cluster(serde_json::json!({
            "services": {"rw": {"type": "LoadBalancer", "annotations": {"lb": "internal"}}}
        }));
        let cluster = Cluster::new(&c, "img", "IfNotPresent").unwrap();
        let all = services(&cluster);
        let names: Vec<_> = all
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["main-pods", "main-rw", "main-ro", "main-r"]);
        let rw = all[1].spec.as_ref().unwrap();
        assert_eq!(rw.selector.as_ref().unwrap(), &primary_selector("main"));
        assert_eq!(rw.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(
            all[1]
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .get("lb")
                .map(String::as_str),
            Some("internal")
        );
        let ro = all[2].spec.as_ref().unwrap();
        assert_eq!(
            ro.selector
                .as_ref()
                .unwrap()
                .get(LABEL_ROLE)
                .map(String::as_str),
            Some("replica")
        );
        let r = all[3].spec.as_ref().unwrap();
        assert!(!r.selector.as_ref().unwrap().contains_key(LABEL_ROLE));
        assert_eq!(
            all[0].spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        for s in &all {
            assert_eq!(
                s.metadata.owner_references.as_ref().unwrap()[0].controller,
                Some(true)
            );
        }
    }
}
