//! deploy/prometheus/: the scrape config and alerting rules pass `promtool` (check and unit
//! tests), and a real Prometheus (Debian's, started here on a free port with its own storage)
//! scrapes a real hub, stores its `ssehub_*` series, and fires `SsehubNotReady` from the shipped
//! rules while the hub's Redis is down, then resolves it once Redis is back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::binary::BinaryHub;
use crate::support::redis::RedisServer;
use crate::support::tools::{free_port, repo_path, run, text};
use crate::support::{publish_with, publisher_token};

const RULES: &str = "deploy/prometheus/ssehub-rules.yml";

#[test]
fn the_shipped_config_and_rules_pass_promtool_and_their_unit_tests() {
    for args in [
        ["check", "config", "deploy/prometheus/prometheus.yml"],
        ["check", "rules", RULES],
        ["test", "rules", "deploy/prometheus/ssehub-rules.test.yml"],
    ] {
        let output = run(Command::new("promtool")
            .args(args)
            .current_dir(repo_path("")));
        assert!(
            output.status.success(),
            "promtool {args:?}: {}",
            text(&output)
        );
    }
}

/// The shipped rules with every `for:` set to `0s`: the expressions are the shipped ones, only
/// the waits are shortened, so the test takes seconds.
fn rules_without_waits() -> String {
    let rules = std::fs::read_to_string(repo_path(RULES)).expect("read the rules");
    let mut waits = 0;
    let edited: Vec<String> = rules
        .lines()
        .map(|line| match line.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => {
                waits += 1;
                format!("{indent}for: 0s")
            }
            _ => line.to_owned(),
        })
        .collect();
    assert!(waits > 0, "no `for:` in {RULES}");
    edited.join("\n") + "\n"
}

/// A `prometheus` process of the test's own, killed by its PID on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second as job `ssehub` (the job the rules name), evaluates the
    /// rules every second.
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ssehub-rules.yml"), rules_without_waits())
            .expect("write rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - ssehub-rules.yml\n\
             scrape_configs:\n  - job_name: ssehub\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        let listen = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed by scripts/test");
        Self {
            child,
            url: format!("http://{listen}"),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/{path}?{query}`'s `data`, or `None` while Prometheus does not answer yet.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await
            .ok()?;
        let body: Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// Waits up to `limit` for `check` to return `Some`, asking every 200 ms.
    async fn wait_for<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl AsyncFnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = check(self).await {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; prometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The state (`pending`, `firing`) of alert `name` for `instance`, `None` if it is not active.
    async fn alert_state(&self, name: &str, instance: &str) -> Option<Option<String>> {
        let data = self.api("alerts", &[]).await?;
        let alerts = data["alerts"].as_array()?;
        Some(
            alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == name && a["labels"]["instance"] == instance)
                .and_then(|a| a["state"].as_str().map(str::to_owned)),
        )
    }

    /// The value of the instant query `query` with one result.
    async fn value(&self, query: &str) -> Option<f64> {
        let data = self.api("query", &[("query", query)]).await?;
        let result = data["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_hub_and_fires_not_ready_during_a_redis_outage_then_resolves() {
    let mut redis = RedisServer::start(true).await;
    // Without a spool: with one (the default), the hub stays ready during the outage and
    // SsehubSpooling fires instead (its rule is unit-tested in ssehub-rules.test.yml).
    let hub = BinaryHub::start_on_redis(&redis, &["--spool-max-events", "0"]);
    let (status, _) = publish_with(&hub.url, &publisher_token(&["*"]), &[("topic", "t")]).await;
    assert_eq!(status, 200);
    let instance = hub.addr.to_string();
    let prometheus = Prometheus::start(&instance);

    // Scraped: the hub's series are stored, ready and counting.
    let ready = format!("ssehub_ready{{instance=\"{instance}\"}}");
    prometheus
        .wait_for(Duration::from_secs(30), "ssehub_ready == 1", async |p| {
            (p.value(&ready).await? == 1.0).then_some(())
        })
        .await;
    let names = prometheus
        .api("label/__name__/values", &[])
        .await
        .expect("label values");
    let names: Vec<&str> = names
        .as_array()
        .expect("array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in [
        "ssehub_ready",
        "ssehub_events_published_total",
        "ssehub_publish_duration_seconds_bucket",
        "ssehub_subscribers_connected",
        "ssehub_slow_subscribers_disconnected_total",
        "ssehub_history_events",
        "ssehub_history_bytes",
        "ssehub_history_max_bytes",
    ] {
        assert!(names.contains(&name), "{name} not scraped: {names:?}");
    }
    assert_eq!(
        prometheus
            .value(&format!(
                "ssehub_events_published_total{{instance=\"{instance}\"}}"
            ))
            .await,
        Some(1.0)
    );
    assert_eq!(
        prometheus.alert_state("SsehubNotReady", &instance).await,
        Some(None),
        "not-ready alert while ready"
    );

    // Redis goes away: the hub stays up (scrapes answer) but is not ready; the alert fires.
    redis.stop();
    prometheus
        .wait_for(
            Duration::from_secs(30),
            "SsehubNotReady firing",
            async |p| {
                let state = p.alert_state("SsehubNotReady", &instance).await?;
                (state.as_deref() == Some("firing")).then_some(())
            },
        )
        .await;
    assert_eq!(
        prometheus.alert_state("SsehubDown", &instance).await,
        Some(None),
        "the hub answers scrapes during the outage"
    );

    // Redis is back: the hub resumes and the alert resolves.
    redis.restart().await;
    prometheus
        .wait_for(
            Duration::from_secs(30),
            "SsehubNotReady resolved",
            async |p| {
                p.alert_state("SsehubNotReady", &instance)
                    .await?
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    assert_eq!(prometheus.value(&ready).await, Some(1.0));
}
