//! What the benchmarks print and read: seconds to one decimal, a median with its range, and
//! the number of trials from the environment.

#![allow(dead_code)]

use std::time::Duration;

pub fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// "median s (median of n; min–max)"; `v` must not be empty.
pub fn summary(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    let median = v[v.len() / 2];
    format!(
        "{} s (median of {}; {}–{})",
        secs(median),
        v.len(),
        secs(v[0]),
        secs(*v.last().unwrap())
    )
}

/// The count in environment variable `name`, or `default` when it is unset or not a number.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A section of BENCHMARKS.md one benchmark keeps: the lines between `begin` and `end`.
pub struct Section {
    pub begin: &'static str,
    pub end: &'static str,
    /// Where a first run puts it: on the line after this marker (or at the end).
    pub after: &'static str,
}

pub const NODE_ROWS: Section = Section {
    begin: "<!-- node rows: kept by make bench-nodes -->",
    end: "<!-- end of node rows -->",
    after: "<!-- notes: kept by make bench -->",
};

pub const BACKUP_ROWS: Section = Section {
    begin: "<!-- backup rows: kept by make bench-backups -->",
    end: "<!-- end of backup rows -->",
    after: NODE_ROWS.end,
};

/// `doc` with `section`'s lines replaced by `rows` (each ending in a newline).
pub fn with_section(doc: &str, section: &Section, rows: &str) -> String {
    let block = format!("{}\n{rows}{}", section.begin, section.end);
    if let (Some(b), Some(e)) = (doc.find(section.begin), doc.find(section.end))
        && b < e
    {
        return format!("{}{block}{}", &doc[..b], &doc[e + section.end.len()..]);
    }
    match doc.find(section.after) {
        Some(i) => {
            let at = i + section.after.len();
            format!("{}\n{block}{}", &doc[..at], &doc[at..])
        }
        None => format!("{doc}\n{block}\n"),
    }
}

/// Replace `section` of the benchmark file (`BENCH_OUT`, or BENCHMARKS.md) with `rows`; the
/// rest of the file is kept as it is.
pub fn keep_section(section: &Section, rows: &str) {
    let out = std::env::var("BENCH_OUT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md").into());
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    std::fs::write(&out, with_section(&old, section, rows)).expect("write BENCHMARKS.md");
}

#[test]
fn a_section_is_put_after_its_marker_once_then_replaced_in_place() {
    let doc = "# B\n\n| t |\n\n<!-- notes: kept by make bench -->\n## notes\n";
    let once = with_section(doc, &NODE_ROWS, "rows 1\n");
    assert_eq!(
        once,
        "# B\n\n| t |\n\n<!-- notes: kept by make bench -->\n<!-- node rows: kept by make \
         bench-nodes -->\nrows 1\n<!-- end of node rows -->\n## notes\n"
    );
    assert_eq!(
        with_section(&once, &NODE_ROWS, "rows 2\n"),
        once.replace("rows 1", "rows 2")
    );
    let both = with_section(&once, &BACKUP_ROWS, "backups\n");
    assert_eq!(
        both,
        once.replace(
            "<!-- end of node rows -->\n",
            "<!-- end of node rows -->\n<!-- backup rows: kept by make bench-backups -->\n\
             backups\n<!-- end of backup rows -->\n"
        )
    );
    assert_eq!(
        with_section("", &BACKUP_ROWS, "x\n"),
        format!("\n{}\nx\n{}\n", BACKUP_ROWS.begin, BACKUP_ROWS.end)
    );
}
