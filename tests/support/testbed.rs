//! The test bed's own faults, through `e2e/cluster`: the kube-apiserver killed and started again
//! (`apiserver stop|start`), as a control-plane upgrade or crash does.

#![allow(dead_code)]

use std::time::Instant;

use super::wait::log;

const CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster");

/// Run `e2e/cluster ARGS`; panics with its stderr when it fails.
pub fn testbed(args: &[&str]) {
    let out = std::process::Command::new(CLUSTER)
        .args(args)
        .output()
        .expect("e2e/cluster");
    assert!(
        out.status.success(),
        "e2e/cluster {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kube-apiserver killed (SIGKILL); started again by `start` or, if the test fails first, on
/// drop, so the scenarios after it find a control plane.
pub struct ApiserverDown {
    up: bool,
}

impl ApiserverDown {
    pub fn now() -> Self {
        testbed(&["apiserver", "stop"]);
        log("kube-apiserver killed");
        ApiserverDown { up: false }
    }

    /// Start it again; returns when it answers /readyz.
    pub fn start(mut self) -> Instant {
        testbed(&["apiserver", "start"]);
        log("kube-apiserver started again");
        self.up = true;
        Instant::now()
    }
}

impl Drop for ApiserverDown {
    fn drop(&mut self) {
        if !self.up {
            let _ = std::process::Command::new(CLUSTER)
                .args(["apiserver", "start"])
                .status();
        }
    }
}
