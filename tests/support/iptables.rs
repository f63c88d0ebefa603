//! Network faults on the loopback addresses: an iptables rule that drops packets to one
//! member's address and port (a cut REST or PostgreSQL port), removed when dropped.

#![allow(dead_code)]

/// An iptables rule that drops every packet to one address and port; removed on drop.
pub struct Cut {
    rule: Vec<String>,
}

impl Cut {
    pub fn port(ip: &str, port: u16) -> Cut {
        let rule: Vec<String> = [
            "OUTPUT",
            "-d",
            ip,
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let st = std::process::Command::new("iptables")
            .arg("-I")
            .args(&rule)
            .status()
            .expect("iptables");
        assert!(st.success(), "iptables -I {rule:?}");
        Cut { rule }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables")
            .arg("-D")
            .args(&self.rule)
            .status();
    }
}
