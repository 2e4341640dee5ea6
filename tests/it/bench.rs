//! `ssehub bench` against the real binary: every published event reaches every subscriber, and
//! the JSON report holds together. No assertion on timing.

use std::process::Command;

use crate::support::binary::BinaryHub;
use crate::support::SECRET;

#[test]
fn bench_delivers_every_event_to_every_subscriber_and_reports_json() {
    let hub = BinaryHub::start(
        &["--jwt-key", SECRET, "--anonymous", "--history", "memory"],
        &[],
    );
    let pid = hub.child.id().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["bench", "--url", &hub.url, "--jwt-key", SECRET])
        .args(["--subscribers", "50", "--events", "20", "--json"])
        .args(["--server-pid", &pid, "--timeout", "30s"])
        .env_remove("SSEHUB_URL")
        .output()
        .expect("run ssehub bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ssehub bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");

    assert_eq!(report["expected"], 1000, "{report}");
    assert_eq!(report["delivered"], 1000, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["loss_percent"], 0.0, "{report}");
    assert_eq!(report["published"], 20, "{report}");
    assert_eq!(report["publish_failed"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["streams_ended_early"], 0, "{report}");
    assert_eq!(report["timed_out"], false, "{report}");

    let latency = |name: &str| {
        report["latency_ms"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("latency_ms.{name} in {report}"))
    };
    let (p50, p90, p99, p99_9, max) = (
        latency("p50"),
        latency("p90"),
        latency("p99"),
        latency("p99_9"),
        latency("max"),
    );
    assert!(p50 >= 0.0, "{report}");
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p99_9 && p99_9 <= max,
        "{report}"
    );

    let server = &report["server"];
    assert_eq!(server["pid"].as_u64(), Some(u64::from(hub.child.id())));
    for figure in ["rss_before_kib", "rss_idle_kib", "rss_end_kib"] {
        assert!(
            server[figure].as_u64().is_some_and(|kib| kib > 0),
            "{report}"
        );
    }
    assert!(
        server["publish_phase_cpu_seconds"].as_f64().is_some(),
        "{report}"
    );
}
