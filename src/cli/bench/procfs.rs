//! The server's (and the bench's own) memory and CPU time, read from Linux `/proc`.

use anyhow::Context;

/// The clock tick `/proc/PID/stat` counts CPU time in.
pub(super) const DEFAULT_CLOCK_TICKS: u64 = 100;

/// `getconf CLK_TCK`, run once; 100 (the Linux value on every common architecture) when
/// `getconf` is missing.
pub(super) fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS)
}

/// `VmRSS` of `pid`, in KiB (`/proc/PID/status` says "kB" but means KiB).
pub(super) fn read_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// utime + stime of `pid`, in clock ticks (`/proc/PID/stat` fields 14 and 15, proc(5)).
pub(super) fn read_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Field 2 (the command name) is in parentheses and may contain spaces: count after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}"))?;
    let mut fields = after_name.split_whitespace().skip(11); // field 3 is the first here
    let mut next = || -> anyhow::Result<u64> {
        fields
            .next()
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("unexpected {path}"))
    };
    Ok(next()? + next()?)
}
