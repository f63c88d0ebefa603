//! The Secrets `<c>-superuser`, `<c>-replication`, `<c>-app` (basic-auth: `username`, `password`)
//! and `<c>-api` (`token`). Generated once from random bytes the caller supplies; the controller
//! creates a missing one and never overwrites an existing one, so users may bring their own.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::Cluster;
use super::statefulset::REPLICATION_USER;

/// 24 random bytes → 32 URL-safe characters: no quoting trouble in libpq or shells.
pub fn password_from(random: &[u8; 24]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
}

fn basic_auth(cluster: &Cluster, name: String, username: &str, password: &str) -> Secret {
    Secret {
        metadata: cluster.meta(name),
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(BTreeMap::from([
            (
                "username".to_string(),
                ByteString(username.as_bytes().to_vec()),
            ),
            (
                "password".to_string(),
                ByteString(password.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

/// The four Secrets with the given secret values (superuser, replication, app, api token).
pub fn secrets(cluster: &Cluster, values: [&str; 4]) -> Vec<Secret> {
    let n = &cluster.names;
    let api = Secret {
        metadata: cluster.meta(n.secret_api()),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            "token".to_string(),
            ByteString(values[3].as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    vec![
        basic_auth(cluster, n.secret_superuser(), "postgres", values[0]),
        basic_auth(cluster, n.secret_replication(), REPLICATION_USER, values[1]),
        basic_auth(
            cluster,
            n.secret_app(),
            &cluster.spec.bootstrap.owner,
            values[2],
        ),
        api,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::build::fixtures::cluster;

    #[test]
    fn secrets_follow_the_contract() {
        let c = cluster(serde_json::json!({}));
        let cluster = Cluster::new(&c, "img", "IfNotPresent").unwrap();
        let s = secrets(&cluster, ["a", "b", "c", "d"]);
        let names: Vec<_> = s.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
        assert_eq!(
            names,
            ["main-superuser", "main-replication", "main-app", "main-api"]
        );
        assert_eq!(s[0].type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let app = s[2].data.as_ref().unwrap();
        assert_eq!(app["username"].0, b"app");
        assert_eq!(app["password"].0, b"c");
        assert_eq!(s[3].data.as_ref().unwrap()["token"].0, b"d");
        let pw = password_from(&[7; 24]);
        assert_eq!(pw.len(), 32);
        assert!(
            pw.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
