//! The Prometheus text exposition format (version 0.0.4), written by hand: `/metrics` of the
//! agent and of the operator. A metric is a `# HELP` and `# TYPE` head, then its samples.

use std::fmt::{Display, Write};

/// One `/metrics` body being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Self {
        Self::default()
    }

    /// `# HELP` and `# TYPE` of the metric whose samples follow.
    pub fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    /// A head with a comment line between `# HELP` and `# TYPE` (Patroni's state legend).
    pub fn head_noted(&mut self, name: &str, kind: &str, help: &str, note: &str) {
        let _ = write!(
            self.out,
            "# HELP {name} {help}\n# {note}\n# TYPE {name} {kind}\n"
        );
    }

    /// One sample; `labels` is what goes between the braces (`k="v",…`, values escaped with
    /// [`escape`]), or empty for none.
    pub fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the format escapes it: backslash, double quote and newline.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as Prometheus writes it: integers without a fraction.
pub fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_samples_and_escaping() {
        let mut t = Text::new();
        t.head("m", "gauge", "A metric.");
        t.sample("m", "", 1);
        t.sample("m", &format!("name=\"{}\"", escape("a\"b\\c\nd")), 2.5);
        assert_eq!(
            t.finish(),
            "# HELP m A metric.\n# TYPE m gauge\nm 1\nm{name=\"a\\\"b\\\\c\\nd\"} 2.5\n"
        );
    }

    #[test]
    fn integers_print_without_a_fraction() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(1e16), "10000000000000000");
    }
}
