//! Facts about the run's environment recorded in the report: time, machine, git commit, memory.

use std::time::{SystemTime, UNIX_EPOCH};

/// Current UTC time as RFC 3339 (seconds), without a date-time dependency.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One line: OS, architecture, CPU model, cores, memory, host name.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kb| format!(", {:.1} GiB RAM", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!(
        "{} {}, {cpu}, {cores} cores{mem_gb}, host {host}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// The commit this binary was built from (`runner/build.rs`): `<sha>`, `<sha>-dirty` when its
/// sources differed from that commit, or `unknown` for a build outside git. Not the working
/// directory's checkout: the binary may run in a copy without `.git` or in another checkout.
pub fn git_commit() -> String {
    env!("SUF_BUILD_COMMIT").to_string()
}

/// `--version` of the runner's binaries: the package version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SUF_BUILD_COMMIT"),
    ")"
);

/// Peak resident set size of this process so far (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// Resets the kernel's peak-RSS mark (VmHWM) to the current RSS, so that the next
/// `peak_rss_mib` covers only what follows (Linux >= 4.0: "5" into /proc/self/clear_refs).
/// Why not, when it cannot: a peak that includes earlier rows must not pass for this one's.
pub fn reset_peak_rss() -> Result<(), String> {
    std::fs::write("/proc/self/clear_refs", "5")
        .map_err(|e| format!("cannot write /proc/self/clear_refs to reset the peak: {e}"))
}

/// The peak RSS of one stretch of work (a row), and of the whole process across resets.
#[derive(Debug, Default)]
pub struct PeakRss {
    /// The largest VmHWM seen over the process so far (reset between rows, so the
    /// run's own peak is the maximum of the readings).
    process: Option<f64>,
}

impl PeakRss {
    fn observe(&mut self) -> Option<f64> {
        let now = peak_rss_mib();
        self.process = match (self.process, now) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        now
    }

    /// Starts a row: records the peak so far, then resets the mark. Err: the row's peak
    /// cannot be measured (and why).
    pub fn start_row(&mut self) -> Result<(), String> {
        self.observe();
        reset_peak_rss()
    }

    /// The row's peak, given what `start_row` returned: None when the reset failed.
    pub fn finish_row(&mut self, started: &Result<(), String>) -> Option<f64> {
        let now = self.observe();
        started.as_ref().ok().and(now)
    }

    /// The whole run's peak so far.
    pub fn process(&mut self) -> Option<f64> {
        self.observe();
        self.process
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_478_399), "2026-11-23T23:59:59Z");
    }

    #[test]
    fn a_row_peak_after_a_reset_excludes_earlier_memory() {
        let mut rss = super::PeakRss::default();
        // 128 MiB touched and freed before the row: the process peak keeps it, the row's
        // peak (after the reset) does not. (Other tests run in this process meanwhile,
        // hence the margin.)
        let big = vec![1u8; 128 << 20];
        let touched: u64 = big.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        assert!(touched > 0);
        drop(big);
        let before = super::peak_rss_mib();
        let started = rss.start_row();
        let row = rss.finish_row(&started);
        match (&started, before, row) {
            (Ok(()), Some(before), Some(row)) => {
                assert!(row > 0.0);
                assert!(row + 64.0 < before, "row {row} MiB, before {before} MiB");
                assert!(rss.process().unwrap() >= before);
            }
            // No /proc (not Linux) or a kernel that refuses the reset: never a number.
            (Err(_), _, row) => assert_eq!(row, None),
            other => panic!("{other:?}"),
        }
    }
}
