//! A running hub process seen from outside: its resident memory, threads and open file
//! descriptors from `/proc/PID`, and the values of its `/metrics` page. Used by the soak test to
//! sample the hub over time; it owns no load and makes no assertions.

use std::collections::HashMap;

/// What `/proc/PID` says about a process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFigures {
    /// Resident set size (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// Threads (`Threads`): the runtime's workers plus its blocking pool, which grows and shrinks.
    pub threads: u64,
    /// Entries of `/proc/PID/fd`: sockets, the history file, epoll and the like.
    pub open_fds: u64,
}

/// Reads [`ProcessFigures`] of `pid`; `None` once the process is gone.
pub fn process_figures(pid: u32) -> Option<ProcessFigures> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcessFigures {
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
        open_fds,
    })
}

/// The samples of one OpenMetrics page by name with labels (`x_total{reason="a"}`).
#[derive(Debug, Clone, Default)]
pub struct MetricValues(pub HashMap<String, f64>);

impl MetricValues {
    /// Parses OpenMetrics text: every line that is not a comment is `NAME[{LABELS}] VALUE`.
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self(values)
    }

    /// The value of `name` (with its labels), 0 when absent: a counter of a label never
    /// incremented is not written yet.
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }
}

/// Fetches and parses `http://addr/metrics` with `client`.
pub async fn scrape_metrics(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
) -> Result<MetricValues, reqwest::Error> {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(MetricValues::parse(&text))
}
