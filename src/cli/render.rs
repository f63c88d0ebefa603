//! Pure rendering: typed data in, the exact text out. patronictl's bordered tables for `list`
//! and `history`, kubectl-style columns for `status`, JSON and YAML for scripts.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;

use crate::api::PostgresCluster;
use crate::api::cluster::PrimaryChange;

use super::model::{Lag, PendingSwitchover, Topology};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A patronictl (PrettyTable) table: one space of padding, `+`/`-`/`|` borders, a title written
/// into the top border (`+ Cluster: demo (7412...) ---+----+`).
pub struct Table {
    pub title: Option<String>,
    pub columns: Vec<(String, Align)>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn render(&self) -> String {
        let n = self.columns.len();
        let mut widths: Vec<usize> = self.columns.iter().map(|(c, _)| width(c)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        // Unlike PrettyTable, never cut the title (it carries the system identifier): widen the
        // last column until it fits.
        let title = self.title.as_ref().map(|t| format!(" {t} "));
        if let Some(t) = &title {
            let total: usize = 1 + widths.iter().map(|w| w + 3).sum::<usize>();
            let need = width(t) + 2;
            if total < need
                && let Some(last) = widths.last_mut()
            {
                *last += need - total;
            }
        }
        let hrule: String = {
            let mut s = String::from("+");
            for w in &widths {
                s.push_str(&"-".repeat(w + 2));
                s.push('+');
            }
            s
        };
        let top = match &title {
            None => hrule.clone(),
            Some(t) => {
                let skip = 1 + width(t);
                let rest: String = hrule.chars().skip(skip).collect();
                format!("+{t}{rest}")
            }
        };
        let line = |cells: &[String]| -> String {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w - width(cell);
                match self.columns[i].1 {
                    Align::Left => s.push_str(&format!(" {cell}{} |", " ".repeat(pad))),
                    Align::Right => s.push_str(&format!(" {}{cell} |", " ".repeat(pad))),
                }
            }
            s
        };
        let mut out = vec![top];
        let header: Vec<String> = self.columns.iter().map(|(c, _)| c.clone()).collect();
        out.push(line(&header));
        out.push(hrule.clone());
        for row in &self.rows {
            out.push(line(row));
        }
        out.push(hrule);
        out.join("\n") + "\n"
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Flow-style tags for one cell: `nofailover: true, zone: a`.
fn tags_cell(t: &crate::api::member::MemberTags) -> String {
    let mut parts = vec![];
    if t.nofailover {
        parts.push("nofailover: true".to_string());
    }
    if t.noloadbalance {
        parts.push("noloadbalance: true".to_string());
    }
    if t.nosync {
        parts.push("nosync: true".to_string());
    }
    for (k, v) in &t.other {
        let v = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        parts.push(format!("{k}: {v}"));
    }
    parts.join(", ")
}

fn lag_cell(l: Lag) -> String {
    match l {
        Lag::Leader => String::new(),
        Lag::Unknown => "unknown".into(),
        Lag::Bytes(_) => l.mb().unwrap_or_default().to_string(),
    }
}

/// patronictl's `list` table with its footer (maintenance mode, pending switchover).
pub fn list_table(t: &Topology) -> String {
    let mut columns = vec![
        ("Member".to_string(), Align::Left),
        ("Host".to_string(), Align::Left),
        ("Role".to_string(), Align::Left),
        ("State".to_string(), Align::Left),
        ("TL".to_string(), Align::Right),
        ("Lag in MB".to_string(), Align::Right),
    ];
    // Like patronictl, the optional columns appear when any member has something to show.
    let pending = t.members.iter().any(|m| m.pending_restart);
    let tags = t.members.iter().any(|m| !tags_cell(&m.tags).is_empty());
    if pending {
        columns.push(("Pending restart".into(), Align::Left));
    }
    if tags {
        columns.push(("Tags".into(), Align::Left));
    }
    let rows = t
        .members
        .iter()
        .map(|m| {
            let mut r = vec![
                m.name.clone(),
                m.host.clone(),
                m.role.title().to_string(),
                m.state.clone(),
                m.timeline.map(|tl| tl.to_string()).unwrap_or_default(),
                lag_cell(m.lag),
            ];
            if pending {
                r.push(if m.pending_restart { "*" } else { "" }.into());
            }
            if tags {
                r.push(tags_cell(&m.tags));
            }
            r
        })
        .collect();
    let mut out = Table {
        title: Some(format!("Cluster: {} ({})", t.cluster, t.system_id)),
        columns,
        rows,
    }
    .render();
    let mut info = vec![];
    if t.paused {
        info.push("Maintenance mode: on".to_string());
    }
    if let Some(s) = &t.switchover {
        info.push(switchover_info(s));
    }
    if !info.is_empty() {
        out.push(' ');
        out.push_str(&info.join("\n "));
        out.push('\n');
    }
    out
}

fn switchover_info(s: &PendingSwitchover) -> String {
    let mut info = match &s.scheduled_at {
        Some(at) => format!("Switchover scheduled at: {at}"),
        None => "Switchover requested".to_string(),
    };
    for (label, v) in [("from", &s.from), ("to", &s.to)] {
        if let Some(v) = v {
            info.push_str(&format!("\n{label:>24}: {v}"));
        }
    }
    info
}

/// One member as `-o json|yaml` shows it: patronictl's keys.
#[derive(Serialize)]
pub struct MemberRecord {
    #[serde(rename = "Cluster")]
    pub cluster: String,
    #[serde(rename = "Member")]
    pub member: String,
    #[serde(rename = "Host")]
    pub host: String,
    #[serde(rename = "Role")]
    pub role: String,
    #[serde(rename = "State")]
    pub state: String,
    #[serde(rename = "TL", skip_serializing_if = "Option::is_none")]
    pub tl: Option<u32>,
    /// A number of MB, or `unknown`; absent for the leader.
    #[serde(rename = "Lag in MB", skip_serializing_if = "Option::is_none")]
    pub lag_in_mb: Option<serde_json::Value>,
    #[serde(rename = "Pending restart", skip_serializing_if = "Option::is_none")]
    pub pending_restart: Option<String>,
    #[serde(rename = "Tags", skip_serializing_if = "Option::is_none")]
    pub tags: Option<crate::api::member::MemberTags>,
}

pub fn records(topologies: &[Topology]) -> Vec<MemberRecord> {
    topologies
        .iter()
        .flat_map(|t| {
            t.members.iter().map(|m| MemberRecord {
                cluster: t.cluster.clone(),
                member: m.name.clone(),
                host: m.host.clone(),
                role: m.role.title().to_string(),
                state: m.state.clone(),
                tl: m.timeline,
                lag_in_mb: match m.lag {
                    Lag::Leader => None,
                    Lag::Unknown => Some("unknown".into()),
                    Lag::Bytes(_) => m.lag.mb().map(Into::into),
                },
                pending_restart: m.pending_restart.then(|| "*".to_string()),
                tags: (m.tags != Default::default()).then(|| m.tags.clone()),
            })
        })
        .collect()
}

pub fn list_json(topologies: &[Topology]) -> String {
    serde_json::to_string_pretty(&records(topologies)).unwrap_or_else(|_| "[]".into()) + "\n"
}

pub fn list_yaml(topologies: &[Topology]) -> String {
    let recs = records(topologies);
    if recs.is_empty() {
        return "[]\n".into();
    }
    serde_saphyr::to_string(&recs).unwrap_or_default()
}

/// patronictl's `history` table.
pub fn history_table(rows: &[[String; 5]]) -> String {
    Table {
        title: None,
        columns: vec![
            ("TL".into(), Align::Right),
            ("LSN".into(), Align::Right),
            ("Reason".into(), Align::Left),
            ("Timestamp".into(), Align::Left),
            ("New Leader".into(), Align::Left),
        ],
        rows: rows.iter().map(|r| r.to_vec()).collect(),
    }
    .render()
}

#[derive(Serialize)]
pub struct HistoryRecord {
    #[serde(rename = "TL")]
    pub tl: serde_json::Value,
    #[serde(rename = "LSN")]
    pub lsn: serde_json::Value,
    #[serde(rename = "Reason")]
    pub reason: String,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    #[serde(rename = "New Leader")]
    pub new_leader: String,
}

pub fn history_records(rows: &[[String; 5]]) -> Vec<HistoryRecord> {
    let num = |s: &str| {
        s.parse::<u64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| serde_json::Value::String(s.to_string()))
    };
    rows.iter()
        .map(|r| HistoryRecord {
            tl: num(&r[0]),
            lsn: num(&r[1]),
            reason: r[2].clone(),
            timestamp: r[3].clone(),
            new_leader: r[4].clone(),
        })
        .collect()
}

/// kubectl's age format (`apimachinery/pkg/util/duration.HumanDuration`).
pub fn human_duration(d: jiff::SignedDuration) -> String {
    let secs = d.as_secs();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(now: jiff::Timestamp, then: jiff::Timestamp) -> String {
    human_duration(now.duration_since(then))
}

/// Columns without borders, kubectl-style: headers in capitals, two spaces between columns,
/// the last column not padded.
pub fn columns(headers: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(width(c));
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut s = String::from(indent);
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - width(c) + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n") + "\n"
}

fn change(c: &Option<PrimaryChange>, now: jiff::Timestamp) -> String {
    match c {
        None => "none".into(),
        Some(c) => {
            let from = c
                .from
                .as_ref()
                .map(|f| format!("{f} -> "))
                .unwrap_or_default();
            format!(
                "{from}{} on timeline {}, {} ago ({})",
                c.to,
                c.timeline,
                age(now, c.time.0),
                c.time.0.strftime("%Y-%m-%dT%H:%M:%SZ")
            )
        }
    }
}

/// When an Event last happened: its series, its event time, the deprecated timestamps, or its
/// creation.
pub fn event_time(e: &Event) -> Option<jiff::Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// `kubectl pgwarden backups`: what the repository holds, newest first, under a header with the
/// recovery window and the latest request.
pub fn backups(st: &crate::api::PostgresClusterStatus) -> String {
    let dash = || "-".to_string();
    let mut out = String::new();
    let last = st.last_backup.as_ref().map_or_else(dash, |r| {
        let mut s = format!("{} {} on {}", r.name, r.phase, r.member);
        if let Some(e) = &r.error {
            s.push_str(&format!(": {e}"));
        }
        s
    });
    let fields = [
        (
            "First recoverability point",
            st.first_recoverability_point.clone().unwrap_or_else(dash),
        ),
        (
            "Last archived WAL",
            st.last_archived_wal.clone().unwrap_or_else(dash),
        ),
        ("Last backup request", last),
        (
            "Next scheduled backup",
            st.next_scheduled_backup
                .as_ref()
                .map_or_else(dash, |t| t.0.to_string()),
        ),
    ];
    let w = fields.iter().map(|(k, _)| width(k)).max().unwrap_or(0) + 1;
    for (k, v) in fields {
        out.push_str(&format!("{:<w$} {v}\n", format!("{k}:")));
    }
    let mb = |b: i64| format!("{:.1}", b as f64 / 1_048_576.0);
    out.push_str(
        &Table {
            title: None,
            columns: vec![
                ("Label".into(), Align::Left),
                ("Type".into(), Align::Left),
                ("Started".into(), Align::Left),
                ("Finished".into(), Align::Left),
                ("DB MB".into(), Align::Right),
                ("Repo MB".into(), Align::Right),
                ("WAL start".into(), Align::Left),
                ("WAL stop".into(), Align::Left),
            ],
            rows: st
                .backups
                .iter()
                .map(|b| {
                    vec![
                        b.label.clone(),
                        b.type_.clone(),
                        b.started.clone(),
                        b.finished.clone(),
                        mb(b.database_bytes),
                        mb(b.repository_bytes),
                        b.wal_start.clone().unwrap_or_else(dash),
                        b.wal_stop.clone().unwrap_or_else(dash),
                    ]
                })
                .collect(),
        }
        .render(),
    );
    out
}

/// How many Events `status` shows.
pub const STATUS_EVENTS: usize = 10;

/// `kubectl pgwarden status`: phase, primary, readiness, conditions, the last planned and
/// unplanned changes of primary, and recent Events (newest last).
pub fn status(
    c: &PostgresCluster,
    namespace: &str,
    events: &[Event],
    now: jiff::Timestamp,
) -> String {
    let name = c.metadata.name.clone().unwrap_or_default();
    let st = c.status.clone().unwrap_or_default();
    let dash = || "-".to_string();
    let mut out = String::new();
    let primary = match (&st.current_primary, st.timeline) {
        (Some(p), Some(tl)) => format!("{p} (timeline {tl})"),
        (Some(p), None) => p.clone(),
        (None, _) => "none".into(),
    };
    let fields: Vec<(&str, String)> = vec![
        ("Cluster", format!("{name} (namespace {namespace})")),
        ("Phase", st.phase.clone().unwrap_or_else(dash)),
        ("Primary", primary),
        (
            "Ready",
            format!("{}/{} instances", st.ready_instances, c.spec.instances),
        ),
        (
            "Maintenance mode",
            if c.spec.pause { "on" } else { "off" }.into(),
        ),
        ("Last failover", change(&st.last_failover, now)),
        ("Last switchover", change(&st.last_switchover, now)),
    ];
    let w = fields.iter().map(|(k, _)| width(k)).max().unwrap_or(0) + 1;
    for (k, v) in fields {
        out.push_str(&format!("{:<w$} {v}\n", format!("{k}:")));
    }
    if let (Some(g), Some(o)) = (c.metadata.generation, st.observed_generation)
        && o < g
    {
        out.push_str(&format!(
            "(the operator has not seen the latest spec yet: generation {g}, observed {o})\n"
        ));
    }

    out.push_str("\nConditions:\n");
    if st.conditions.is_empty() {
        out.push_str("  none reported yet\n");
    } else {
        let rows: Vec<Vec<String>> = st
            .conditions
            .iter()
            .map(|cond: &Condition| {
                vec![
                    cond.type_.clone(),
                    cond.status.clone(),
                    cond.reason.clone(),
                    age(now, cond.last_transition_time.0),
                    cond.message.clone(),
                ]
            })
            .collect();
        out.push_str(&columns(
            &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
            &rows,
            "  ",
        ));
    }

    let mut evs: Vec<(&Event, Option<jiff::Timestamp>)> =
        events.iter().map(|e| (e, event_time(e))).collect();
    evs.sort_by_key(|(_, t)| *t);
    let skip = evs.len().saturating_sub(STATUS_EVENTS);
    let evs = &evs[skip..];
    out.push_str(&format!(
        "\nEvents{}:\n",
        if skip > 0 {
            format!(" (last {STATUS_EVENTS})")
        } else {
            String::new()
        }
    ));
    if evs.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = evs
            .iter()
            .map(|(e, t)| {
                let count = e
                    .series
                    .as_ref()
                    .map(|s| s.count)
                    .or(e.deprecated_count)
                    .filter(|c| *c > 1);
                let seen = t.map(|t| age(now, t)).unwrap_or_else(|| "-".into());
                vec![
                    match count {
                        Some(n) => format!("{seen} (x{n})"),
                        None => seen,
                    },
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default().replace('\n', " "),
                ]
            })
            .collect();
        out.push_str(&columns(
            &["LAST SEEN", "TYPE", "REASON", "MESSAGE"],
            &rows,
            "  ",
        ));
    }
    out
}
