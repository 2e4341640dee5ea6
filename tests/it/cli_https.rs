//! `ssehub publish` and `ssehub subscribe` against the hub's own HTTPS mode: with `--ca-cert`
//! naming the test CA they work; without it (the system's roots, which do not include the test
//! CA) they fail with an error that says the certificate was refused and points to `--ca-cert`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::support::binary::BinaryHub;
use crate::support::{publisher_token, SECRET};

/// A test CA and a `localhost` certificate it signed, as PEM: (CA, leaf, leaf key).
fn test_certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ssehub CLI test CA");
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

/// `ssehub ARGS` without the caller's `SSEHUB_*` variables, to its end within 20 s (killed by
/// its PID after that, which fails the test).
fn ssehub(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssehub"));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SSEHUB_") {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().expect("spawn ssehub");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ssehub {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn publish_and_subscribe_reach_an_https_hub_that_their_ca_cert_trusts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca_pem, cert_pem, key_pem) = test_certificates();
    let path = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path.to_str().expect("utf-8").to_owned()
    };
    let (ca, cert, key) = (
        path("ca.pem", &ca_pem),
        path("cert.pem", &cert_pem),
        path("key.pem", &key_pem),
    );
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
    let token = publisher_token(&["*"]);
    let publish = |id: &str, trust: &[&str]| {
        ssehub(
            &[
                &[
                    "publish", "--url", &url, "--topic", "t", "--data", "over TLS",
                ][..],
                &["--id", id, "--token", &token],
                trust,
            ]
            .concat(),
        )
    };
    let subscribe_with = |reconnect: &[&str], trust: &[&str]| {
        ssehub(
            &[
                &["subscribe", "--url", &url, "--topic", "t"][..],
                &[
                    "--last-event-id",
                    "earliest",
                    "--count",
                    "1",
                    "--format",
                    "json",
                ],
                reconnect,
                trust,
            ]
            .concat(),
        )
    };
    let subscribe = |trust: &[&str]| subscribe_with(&["--no-reconnect"], trust);

    let output = publish("tls-1", &["--ca-cert", &ca]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "tls-1");
    let output = subscribe(&["--ca-cert", &ca]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let event: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON event");
    assert_eq!(event["id"], "tls-1");
    assert_eq!(event["data"], "over TLS");

    // Without --ca-cert only the system's roots are trusted, and the test CA is not one.
    // A subscriber that reconnects gives up too: no retry makes an untrusted certificate good.
    for (what, output) in [
        ("publish", publish("tls-2", &[])),
        ("subscribe", subscribe(&[])),
        ("subscribe (reconnecting)", subscribe_with(&[], &[])),
    ] {
        assert!(!output.status.success(), "{what} trusted an unknown CA");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("certificate") && stderr.contains("--ca-cert"),
            "{what}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{what}: {}", text(&output.stdout));
    }
}
