//! deploy/kubernetes/: every manifest validates offline against the Kubernetes API schemas
//! (`kubernetes-validate --strict`, from PyPI, installed by scripts/test under target/), a
//! manifest with an unknown field does not, and the manifests fit together and fit the hub:
//! probes on `/readyz` and `/healthz`, a termination grace longer than preStop plus the
//! shutdown timeout, selectors that select the pods, settings the binary has.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::tools::{repo_path, run, serve_env_names, text};

fn tool(name: &str) -> PathBuf {
    repo_path("target/tools/kubernetes-validate/bin").join(name)
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    run(Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--no-warn"])
        .args(files))
}

/// The documents of a YAML file as JSON (PyYAML, which kubernetes-validate brings).
fn documents(file: &PathBuf) -> Vec<Value> {
    let output = run(Command::new(tool("python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(file));
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).expect("json")
}

/// Seconds in a Go-style duration such as `5s` (all the manifests use).
fn seconds(value: &Value) -> u64 {
    let text = value.as_str().expect("a duration");
    text.strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{text} is not whole seconds"))
}

#[test]
fn the_manifests_validate_offline_and_describe_a_drainable_redis_deployment() {
    let files = manifests();
    assert_eq!(files.len(), 4, "{files:?}");
    let output = validate(&files);
    assert!(output.status.success(), "{}", text(&output));

    // The check can fail: an unknown field.
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.yaml");
    let pdb = std::fs::read_to_string(repo_path("deploy/kubernetes/poddisruptionbudget.yaml"))
        .expect("read");
    std::fs::write(&broken, pdb.replace("maxUnavailable:", "maxUnavailble:")).expect("write");
    assert!(!validate(&[broken]).status.success());

    let all: Vec<Value> = files.iter().flat_map(documents).collect();
    let kind = |k: &str| -> &Value {
        all.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let deployment = kind("Deployment");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    let container = &pod["spec"]["containers"][0];
    assert!(deployment["spec"]["replicas"].as_u64() >= Some(2));

    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let env = |name: &str| -> &Value {
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(env("SSEHUB_HISTORY")["value"], "redis");
    assert!(env("SSEHUB_REDIS_URL")["valueFrom"]["secretKeyRef"].is_object());
    // Grace: the preStop wait, then the hub's shutdown (streams ended, connections given
    // --shutdown-timeout), with time to spare for flushing and exit.
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    let shutdown = seconds(&env("SSEHUB_SHUTDOWN_TIMEOUT")["value"]);
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(
        pre_stop > 0 && grace >= pre_stop + shutdown + 5,
        "grace {grace} s"
    );
    // Every SSEHUB_ variable is a setting of `ssehub serve`.
    let names = serve_env_names();
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("name");
        if name.starts_with("SSEHUB_") {
            assert!(names.iter().any(|n| n == name), "{name} is not a setting");
        }
    }
    // The probes and the Service name container ports that exist.
    let ports: Vec<&str> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let service = kind("Service");
    assert_eq!(&service["spec"]["selector"], labels);
    for port in service["spec"]["ports"].as_array().expect("ports") {
        assert!(ports.contains(&port["targetPort"].as_str().expect("named")));
    }
    assert!(ports.contains(
        &container["readinessProbe"]["httpGet"]["port"]
            .as_str()
            .expect("port")
    ));
    // The budget and the autoscaler act on these pods.
    let pdb = kind("PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let hpa = kind("HorizontalPodAutoscaler");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(2));
}
