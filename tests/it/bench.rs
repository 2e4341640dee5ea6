//! `ssehub bench` against the real binary: every published event reaches every subscriber, and
//! the JSON report holds together, over plain HTTP and over HTTPS (HTTP/1.1 and HTTP/2 by ALPN,
//! with a test CA made by rcgen). No assertion on timing.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::support::binary::BinaryHub;
use crate::support::SECRET;

#[test]
fn bench_delivers_every_event_to_every_subscriber_and_reports_json() {
    let hub = BinaryHub::start(
        &["--jwt-key", SECRET, "--anonymous", "--history", "memory"],
        &[],
    );
    let pid = hub.child.id().to_string();
    let output = crate::support::binary::ssehub_command()
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

/// A test CA (PEM) and a `localhost` certificate and key (PEM) signed by it, as in tls.rs.
fn test_certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ssehub bench test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = params.signed_by(&key, &issuer).expect("leaf");
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

/// Runs `ssehub bench ARGS --json` and returns its report, failing on a non-zero exit.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let output = crate::support::binary::ssehub_command()
        .arg("bench")
        .args(args)
        .args(["--json", "--timeout", "30s"])
        .env_remove("SSEHUB_URL")
        .env_remove("SSEHUB_JWT_KEY")
        .output()
        .expect("run ssehub bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ssehub bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[test]
fn bench_over_https_delivers_every_event_with_http1_and_http2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca_pem, cert_pem, key_pem) = test_certificates();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    for (path, text) in [(&ca, &ca_pem), (&cert, &cert_pem), (&key, &key_pem)] {
        std::fs::write(path, text).expect("write PEM");
    }
    let utf8 = |path: &std::path::Path| path.to_str().expect("utf-8").to_owned();
    let (ca, cert, key) = (utf8(&ca), utf8(&cert), utf8(&key));
    let hub = BinaryHub::start(
        &[
            "--jwt-key",
            SECRET,
            "--anonymous",
            "--history",
            "memory",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        &[],
    );
    let url = format!("https://localhost:{}/.well-known/mercure", hub.addr.port());
    let pid = hub.child.id().to_string();
    let common = [
        "--url",
        url.as_str(),
        "--ca-cert",
        ca.as_str(),
        "--jwt-key",
        SECRET,
        "--subscribers",
        "40",
        "--events",
        "10",
        "--server-pid",
        pid.as_str(),
    ];

    for (extra, connections, streams) in [
        (&[][..], 40, serde_json::Value::Null),
        (&["--http2", "20"][..], 2, serde_json::json!(20)),
    ] {
        let args: Vec<&str> = common.iter().chain(extra).copied().collect();
        let report = bench_json(&args);
        assert_eq!(
            report["subscribe_url"]
                .as_str()
                .map(|u| u.starts_with("https://")),
            Some(true),
            "{report}"
        );
        assert_eq!(report["http2_streams_per_connection"], streams, "{report}");
        assert_eq!(report["connections"], connections, "{report}");
        assert_eq!(report["expected"], 400, "{report}");
        assert_eq!(report["delivered"], 400, "{report}");
        assert_eq!(report["lost"], 0, "{report}");
        assert_eq!(report["published"], 10, "{report}");
        assert_eq!(report["publish_failed"], 0, "{report}");
        assert_eq!(report["duplicates"], 0, "{report}");
        assert_eq!(report["streams_ended_early"], 0, "{report}");
        assert_eq!(report["timed_out"], false, "{report}");
    }

    // Without --ca-cert only the system's roots are trusted: the test CA's certificate is
    // refused, and the error points to --ca-cert.
    let output = crate::support::binary::ssehub_command()
        .args([
            "bench",
            "--url",
            &url,
            "--subscribers",
            "1",
            "--events",
            "1",
        ])
        .env_remove("SSEHUB_URL")
        .output()
        .expect("run ssehub bench");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--ca-cert"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
