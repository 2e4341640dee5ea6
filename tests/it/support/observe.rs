//! A running hub process seen from outside: its resident memory, threads and open file
//! descriptors from `/proc/PID`, and the values of its `/metrics` page. Used by the soak test to
//! sample the hub over time; it owns no load and makes no assertions.

use std::collections::{HashMap, HashSet};

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

/// The samples of one OpenMetrics page by name with labels (`x_total{reason="a"}`), and the
/// metric families the page declares (`# TYPE x counter`).
#[derive(Debug, Clone, Default)]
pub struct MetricValues {
    /// Every sample line, `NAME[{LABELS}]` → value.
    pub samples: HashMap<String, f64>,
    /// Every family named by a `# TYPE` line: a family with labels that has no sample yet (a
    /// counter of a label never incremented) is declared but has no sample line.
    pub families: HashSet<String>,
}

impl MetricValues {
    /// Parses OpenMetrics text: `# TYPE NAME KIND` declares a family, and every line that is not
    /// a comment is `NAME[{LABELS}] VALUE`.
    pub fn parse(text: &str) -> Self {
        let mut values = Self::default();
        for line in text.lines() {
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                if let Some(family) = declaration.split_whitespace().next() {
                    values.families.insert(family.to_owned());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            if let Some((name, value)) = line.rsplit_once(' ') {
                if let Ok(value) = value.parse() {
                    values.samples.insert(name.to_owned(), value);
                }
            }
        }
        values
    }

    /// The value of the sample `name` (with its labels, as written), or `None` when the page
    /// does not have it: a test must not mistake "gone" for "zero". A labelled sample of a
    /// family the page declares reads as 0 when it is not written yet. prometheus-client writes
    /// a labelled family (`# TYPE` included) only once it has a sample, so before that the
    /// whole family is `None`; a caller that means "0 until the first one" says so at the call
    /// site, where a positive check (it grew) still fails on a renamed metric.
    pub fn get(&self, name: &str) -> Option<f64> {
        if let Some(value) = self.samples.get(name) {
            return Some(*value);
        }
        let (bare, labels) = name.split_once('{')?;
        debug_assert!(labels.ends_with('}'), "labels of {name}");
        let family = bare
            .strip_suffix("_total")
            .or_else(|| bare.strip_suffix("_count"))
            .or_else(|| bare.strip_suffix("_sum"))
            .unwrap_or(bare);
        self.families.contains(family).then_some(0.0)
    }

    /// The value of `name`; fails the test, listing what the page has, when it is missing.
    pub fn value(&self, name: &str) -> f64 {
        self.get(name).unwrap_or_else(|| {
            let mut names: Vec<&str> = self.samples.keys().map(String::as_str).collect();
            names.sort_unstable();
            panic!("metric {name} is not on the page; it has {names:?}")
        })
    }

    /// The sum of every sample of the labelled family `name` (`x_total`), or `None` when the
    /// page has none (a labelled family appears with its first sample).
    pub fn sum_of_family(&self, name: &str) -> Option<f64> {
        let family = name.strip_suffix("_total").unwrap_or(name);
        if !self.families.contains(family) {
            return None;
        }
        let prefix = format!("{name}{{");
        self.samples
            .iter()
            .filter(|(sample, _)| sample.starts_with(&prefix))
            .map(|(_, value)| value)
            .sum::<f64>()
            .into()
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
