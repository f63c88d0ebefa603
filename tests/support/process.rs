//! Host processes: the tiers' faults are real signals to real processes, found in /proc.

#![allow(dead_code)]

/// /proc/PID/stat, if the process exists.
fn stat(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// The `n`th field of a /proc/PID/stat text after the command in parentheses (0: the state,
/// 1: the parent's PID).
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(n)
}

/// CPU seconds (user + system) process `pid` has used so far; 0 when it is gone.
pub fn cpu_seconds(pid: i32) -> f64 {
    let Some(stat) = stat(pid) else { return 0.0 };
    // utime and stime: fields 14 and 15 of stat, 11 and 12 after the command.
    let ticks = |n| {
        stat_field(&stat, n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

/// A process that exists and is not a zombie (a killed postmaster whose frozen parent has not
/// reaped it yet is dead for every purpose here).
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| stat_field(&s, 0) != Some("Z"))
}

/// The parent of a host process (field 4 of /proc/PID/stat, after the command in parentheses).
pub fn parent_pid(pid: i32) -> Option<i32> {
    stat_field(&stat(pid)?, 1)?.parse().ok()
}

/// PIDs of host processes whose environment holds every `(key, value)`.
pub fn pids_with_env(wanted: &[(&str, &str)]) -> Vec<i32> {
    let mut out = vec![];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        let all = wanted.iter().all(|(k, v)| {
            let want = format!("{k}={v}");
            vars.contains(&want.as_bytes())
        });
        if all {
            out.push(pid);
        }
    }
    out.sort();
    out
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a plain pid and signal number.
    unsafe {
        libc::kill(pid, sig);
    }
}
