//! ssehub's integration tests: one binary, so it links once. Every test talks to a real server
//! (the library's router on a port-0 listener, or the built binary) over real TCP.

mod support;

mod auth;
mod auth_attacks;
mod bad_input;
mod bench;
mod browser_resume;
mod cli_https;
mod cluster;
mod concurrency;
mod config_cli;
mod demo;
mod draft08;
mod draft08_tokens;
mod durable;
mod embedded_db;
mod embedding;
mod fanout;
mod fuzz_regressions;
mod hostile;
mod idempotency;
mod java_client;
mod kubernetes;
mod lifecycle;
mod linger;
mod node_clients;
mod ops;
mod outbox;
mod prometheus;
mod publish;
mod refusals;
mod reload;
mod replay;
mod retention;
mod shutdown;
mod soak;
mod spool;
mod startup;
mod storm;
mod subscribe;
mod subscriptions;
mod systemd;
mod tls;
mod traces;
mod webhook;
