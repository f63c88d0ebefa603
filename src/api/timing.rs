//! Patroni's timing rules in one pure place: the operator's spec validation and the agent's start
//! check call [`HaTiming::check`]; the CRD's CEL rules on `spec.ha` say the same (a test below
//! keeps them in step). See docs/architecture.md for why the rules hold a primary safe.

/// The HA loop's timings, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaTiming {
    /// How long a leader lease is valid without renewal.
    pub ttl: i64,
    /// Time between two runs of the HA loop.
    pub loop_wait: i64,
    /// How long a primary keeps trying to renew before it demotes itself.
    pub retry_timeout: i64,
    /// The watchdog fires `ttl - safety_margin` after the last renew.
    pub safety_margin: i64,
}

/// A broken timing rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// A primary that cannot renew must demote itself before a follower may take over.
    #[error(
        "loopWait ({loop_wait}s) + 2*retryTimeout ({retry_timeout}s) must not exceed ttl ({ttl}s)"
    )]
    Renew {
        ttl: i64,
        loop_wait: i64,
        retry_timeout: i64,
    },
    /// The watchdog must leave a full loop to renew before it fires.
    #[error(
        "watchdog safety margin {margin}s leaves no time for a loop (ttl {ttl}s, loopWait {loop_wait}s)"
    )]
    Watchdog {
        ttl: i64,
        loop_wait: i64,
        margin: i64,
    },
}

impl HaTiming {
    /// Every broken rule, in the order of [`HaTiming::check`].
    pub fn problems(&self) -> Vec<TimingError> {
        let Self {
            ttl,
            loop_wait,
            retry_timeout,
            safety_margin,
        } = *self;
        let mut out = vec![];
        // CEL: self.loopWait + 2 * self.retryTimeout <= self.ttl (the schema keeps both >= 1).
        if loop_wait < 1
            || retry_timeout < 1
            || loop_wait.saturating_add(retry_timeout.saturating_mul(2)) > ttl
        {
            out.push(TimingError::Renew {
                ttl,
                loop_wait,
                retry_timeout,
            });
        }
        // CEL: self.ttl - self.watchdog.safetyMargin >= self.loopWait.
        if ttl.saturating_sub(safety_margin) < loop_wait {
            out.push(TimingError::Watchdog {
                ttl,
                loop_wait,
                margin: safety_margin,
            });
        }
        out
    }

    /// The first broken rule, if any.
    pub fn check(&self) -> Result<(), TimingError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;
    use crate::api::PostgresCluster;

    fn timing(ttl: i64, loop_wait: i64, retry_timeout: i64, safety_margin: i64) -> HaTiming {
        HaTiming {
            ttl,
            loop_wait,
            retry_timeout,
            safety_margin,
        }
    }

    /// The `x-kubernetes-validations` rules on `spec.ha` in the generated CRD.
    fn ha_rules() -> Vec<String> {
        let crd = serde_json::to_value(PostgresCluster::crd()).expect("CRD serialises");
        let ha = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["ha"];
        ha["x-kubernetes-validations"]
            .as_array()
            .expect("spec.ha has CEL rules")
            .iter()
            .map(|r| r["rule"].as_str().expect("a rule is a string").to_string())
            .collect()
    }

    #[test]
    fn the_cel_rules_are_the_arithmetic_check_implements() {
        // If a rule changes, change `problems` and the table below with it.
        assert_eq!(
            ha_rules(),
            [
                "self.loopWait + 2 * self.retryTimeout <= self.ttl",
                "self.ttl - self.watchdog.safetyMargin >= self.loopWait",
            ]
        );
    }

    #[test]
    fn check_accepts_exactly_what_the_cel_rules_accept() {
        // (ttl, loopWait, retryTimeout, safetyMargin) within the schema's ranges, on both sides
        // of each rule's boundary; the two booleans are the CEL rules' verdicts.
        let table = [
            (8, 2, 3, 2, true, true),    // the defaults: 2 + 6 <= 8, 8 - 2 >= 2
            (8, 2, 4, 2, false, true),   // 2 + 8 > 8
            (8, 4, 3, 2, false, true),   // 4 + 6 > 8
            (10, 4, 3, 6, true, true),   // 4 + 6 <= 10, 10 - 6 >= 4
            (10, 4, 3, 7, true, false),  // 10 - 7 < 4
            (8, 2, 3, 6, true, true),    // 8 - 6 >= 2
            (8, 2, 3, 7, true, false),   // 8 - 7 < 2
            (4, 1, 1, 3, true, true),    // the smallest ttl
            (4, 1, 2, 3, false, true),   // 1 + 4 > 4
            (4, 1, 1, 4, true, false),   // 4 - 4 < 1
            (30, 10, 10, 5, true, true), // Patroni's defaults
        ];
        for (ttl, loop_wait, retry_timeout, margin, renew_ok, watchdog_ok) in table {
            let t = timing(ttl, loop_wait, retry_timeout, margin);
            let p = t.problems();
            let renew = !p.iter().any(|e| matches!(e, TimingError::Renew { .. }));
            let watchdog = !p.iter().any(|e| matches!(e, TimingError::Watchdog { .. }));
            assert_eq!((renew, watchdog), (renew_ok, watchdog_ok), "{t:?}");
            assert_eq!(t.check().is_ok(), renew_ok && watchdog_ok, "{t:?}");
        }
    }

    #[test]
    fn check_reports_the_renew_rule_first_with_the_values() {
        let e = timing(4, 2, 3, 4).check().unwrap_err();
        assert_eq!(
            e.to_string(),
            "loopWait (2s) + 2*retryTimeout (3s) must not exceed ttl (4s)"
        );
        let e = timing(8, 2, 3, 7).check().unwrap_err();
        assert_eq!(
            e.to_string(),
            "watchdog safety margin 7s leaves no time for a loop (ttl 8s, loopWait 2s)"
        );
    }

    #[test]
    fn a_loop_or_retry_under_a_second_breaks_the_renew_rule() {
        assert!(matches!(
            timing(8, 0, 3, 2).check(),
            Err(TimingError::Renew { .. })
        ));
        assert!(matches!(
            timing(8, 2, 0, 2).check(),
            Err(TimingError::Renew { .. })
        ));
    }
}
