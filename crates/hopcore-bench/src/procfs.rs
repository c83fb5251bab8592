//! Process figures from Linux's /proc: CPU time (utime + stime of all threads) and the
//! resident set size.

use std::time::Duration;

/// Clock ticks per second of /proc/PID/stat times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of process `pid` (all its threads), from /proc/PID/stat fields 14 and 15.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_time(&stat, ticks_per_second())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected /proc/{pid}/stat")))
}

/// Parses utime + stime out of a /proc/PID/stat line (the command name may contain spaces and
/// parentheses, so fields are counted after the last ')').
pub fn parse_cpu_time(stat: &str, ticks: f64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm)": field 3 (state) is fields[0], so field N is fields[N - 3].
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks))
}

/// A field of /proc/PID/status in kB (e.g. "VmRSS", "VmHWM"), as bytes.
pub fn status_bytes(pid: Option<u32>, field: &str) -> std::io::Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(&path)?;
    parse_status_kb(&text, field)
        .map(|kb| kb * 1024)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no {field} in {path}")))
}

pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// The resident set size of `pid` (None: this process) in bytes.
pub fn rss(pid: Option<u32>) -> std::io::Result<u64> {
    status_bytes(pid, "VmRSS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let line = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_time(line, 100.0), Some(Duration::from_secs(3)));
    }

    #[test]
    fn status_field() {
        let s = "Name:\tx\nVmRSS:\t  2048 kB\nVmHWM:\t4096 kB\n";
        assert_eq!(parse_status_kb(s, "VmRSS"), Some(2048));
        assert_eq!(parse_status_kb(s, "VmHWM"), Some(4096));
        assert_eq!(parse_status_kb(s, "VmSwap"), None);
    }
}
