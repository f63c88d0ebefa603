//! kubectl, the temporary namespace every scenario lives in, and the reads of the objects the
//! agents publish (the Lease). Both tiers use these; see docs/architecture.md for the objects.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

/// Run kubectl; `Ok(stdout)` on success, `Err(stderr)` otherwise.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (eval \"$(e2e/cluster env)\")");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Run kubectl and panic (failing the test) unless it succeeds; its stdout.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    kubectl(args, stdin).unwrap_or_else(|stderr| panic!("kubectl {args:?} failed: {stderr}"))
}

/// A namespace created for one scenario and deleted when the value is dropped — also when the
/// test fails, since a panic unwinds through the drop — unless the environment variable
/// `keep_env` (if any) is set, to leave it up for a look. The deletion does not wait: the
/// apiserver finishes it while the next scenario runs.
pub struct TempNamespace {
    pub name: String,
    /// Delete it on drop (false once deleted, or when kept).
    armed: bool,
}

impl TempNamespace {
    /// Create namespace `name`; it is kept on drop when `keep_env` names a variable that is set.
    pub fn create(name: &str, keep_env: Option<&str>) -> TempNamespace {
        kubectl_ok(&["create", "namespace", name], None);
        // Pods are refused until the controller-manager made the namespace's default
        // ServiceAccount; right after an apiserver restart its informers take a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while kubectl(&["-n", name, "get", "serviceaccount", "default"], None).is_err()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        TempNamespace {
            name: name.to_string(),
            armed: keep_env.is_none_or(|var| std::env::var(var).is_err()),
        }
    }

    /// Delete it now and wait up to `timeout` (kubectl's syntax, e.g. `180s`) for it to be
    /// gone; a failure is ignored like the deletion on drop. Kept namespaces stay.
    pub fn delete_and_wait(mut self, timeout: &str) {
        if self.armed {
            self.armed = false;
            let _ = kubectl(
                &[
                    "delete",
                    "namespace",
                    &self.name,
                    "--wait=true",
                    &format!("--timeout={timeout}"),
                ],
                None,
            );
        }
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        if self.armed {
            // Never panics: a panic while unwinding would abort the test binary.
            let _ = Command::new("kubectl")
                .args(["delete", "namespace", &self.name, "--wait=false"])
                .output();
        }
    }
}

/// Delete namespace `name` if a previous run left it, and wait until it is gone.
pub fn delete_leftover_namespace(name: &str) {
    let _ = kubectl(
        &[
            "delete",
            "namespace",
            name,
            "--wait=true",
            "--ignore-not-found",
        ],
        None,
    );
}

/// The Lease `<cluster>-leader`, if it exists and can be read.
pub async fn lease(client: &Client, ns: &str, cluster: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(&format!("{cluster}-leader"))
        .await
        .ok()
        .flatten()
}

/// `holderIdentity` of the Lease `<cluster>-leader` (`None` when empty or absent).
pub async fn lease_holder(client: &Client, ns: &str, cluster: &str) -> Option<String> {
    lease(client, ns, cluster)
        .await
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}
