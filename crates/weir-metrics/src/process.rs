//! The standard `process_*` metrics, read from `/proc` at each scrape
//! (Linux; elsewhere the collector adds nothing).

use crate::Scrape;

/// CPU time, user and system (counter).
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
/// OS threads (gauge).
pub const PROCESS_THREADS: &str = "process_threads";
/// Virtual memory size (gauge).
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
/// Resident memory size (gauge).
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
/// Start time since the Unix epoch (gauge).
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";
/// Open file descriptors (gauge).
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";

/// Adds `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_start_time_seconds` and `process_threads` to a scrape.
pub fn process_metrics(s: &mut Scrape) {
    let Some(stat) = read("/proc/self/stat") else {
        return;
    };
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 of proc(5).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        if ticks > 0.0 {
            s.counter(
                PROCESS_CPU_SECONDS_TOTAL,
                "Total user and system CPU time spent in seconds.",
                vec![],
                (utime + stime) / ticks,
            );
        }
    }
    if let Some(threads) = field(20) {
        s.gauge(
            PROCESS_THREADS,
            "Number of OS threads in the process.",
            vec![],
            threads,
        );
    }
    if let Some(vsize) = field(23) {
        s.gauge(
            PROCESS_VIRTUAL_MEMORY_BYTES,
            "Virtual memory size in bytes.",
            vec![],
            vsize,
        );
    }
    if let Some(rss) = field(24) {
        s.gauge(
            PROCESS_RESIDENT_MEMORY_BYTES,
            "Resident memory size in bytes.",
            vec![],
            rss * page,
        );
    }
    let boot = read("/proc/stat").and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        if ticks > 0.0 {
            s.gauge(
                PROCESS_START_TIME_SECONDS,
                "Start time of the process since unix epoch in seconds.",
                vec![],
                boot + start / ticks,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        s.gauge(
            PROCESS_OPEN_FDS,
            "Number of open file descriptors.",
            vec![],
            fds.count() as f64,
        );
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_process_reports_cpu_memory_and_threads() {
        // Spend some CPU time so there is some to report (ticks are 10 ms).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let mut s = crate::Scrape::default();
        super::process_metrics(&mut s);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            let (_, _, samples) = s.families.get(name).unwrap_or_else(|| panic!("{name}"));
            assert!(samples[0].1 > 0.0, "{name}");
        }
        let rss = s.families["process_resident_memory_bytes"].2[0].1;
        assert!(rss > 1e6, "resident memory {rss}");
    }
}
