//! CPU time and memory of other processes, from Linux's `/proc`.

use std::io;

/// User plus system CPU time of a process (all its threads, living and ended), in clock ticks
/// (`getconf CLK_TCK`, 100 on Linux).
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = read(pid, "stat")?;
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let after_name = stat
        .rfind(')')
        .map(|at| &stat[at + 1..])
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: no command name")))?;
    // Field 3 (state) is the first one after the name; utime and stime are fields 14 and 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let mut next = || -> io::Result<u64> {
        fields
            .next()
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: no utime/stime")))
    };
    Ok(next()? + next()?)
}

/// A `Vm...` line of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = read(pid, "status")?;
    status
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(field)?.strip_prefix(':')?;
            value.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/status: no {field}")))
}

/// Resets the process's peak resident set size (`VmHWM`) to its current size, so that a later
/// read gives the peak of what happened since. Needs to own the process or be root.
pub fn reset_peak_rss(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// A file of `/proc/PID/`, with an error that names it (the process may have exited).
fn read(pid: u32, file: &str) -> io::Result<String> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::read_to_string(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// Sums `f` over several processes.
pub fn sum(pids: &[u32], f: impl Fn(u32) -> io::Result<u64>) -> io::Result<u64> {
    pids.iter().map(|&pid| f(pid)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time_and_memory() {
        let me = std::process::id();
        // Busy until the kernel has counted a tick of CPU time (on a loaded machine, wall time
        // alone does not say when); bounded.
        let spin = std::time::Instant::now();
        while cpu_ticks(me).unwrap() < 1 && spin.elapsed() < std::time::Duration::from_secs(10) {}
        assert!(cpu_ticks(me).unwrap() >= 1);
        let rss = status_kib(me, "VmRSS").unwrap();
        assert!(rss > 100, "{rss}");
        assert!(status_kib(me, "VmHWM").unwrap() >= rss);
        assert!(status_kib(me, "VmNothing").is_err());
    }
}
