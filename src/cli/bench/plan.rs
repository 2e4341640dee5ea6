//! The arguments of `ssehub bench`, checked once: URLs resolved (loopback only unless
//! `--allow-remote`), the open-file limit raised and checked, the publish body and headers built,
//! TLS clients made. Nothing here connects.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Uri};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::connect::tls_connector;
use super::procfs::read_rss_kib;
use super::BenchArgs;
use crate::auth::{Claims, JwtSigner, MercureClaim};

/// Open files kept free for everything that is not a subscription (publishers, stdio, /proc).
const SPARE_FILES: u64 = 64;

/// Largest `--payload-bytes`: the hub's default `--max-publish-bytes` is 1 MiB.
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The placeholder of `--publish-body` replaced by each event's payload.
const PAYLOAD_PLACEHOLDER: &str = "{payload}";

/// The content type of Mercure publishes (and the default `--publish-content-type`).
pub(super) const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// The validated arguments, with URLs resolved.
pub(super) struct Plan {
    pub(super) subscribe_url: Uri,
    pub(super) subscribe: Endpoint,
    pub(super) publish_url: String,
    /// `--ca-cert`: the only CA trusted for `https://`; `None`: the system's roots.
    pub(super) ca_cert: Option<std::path::PathBuf>,
    /// For `https://` subscriptions: TLS clients offering `http/1.1` and `h2` by ALPN.
    pub(super) tls_http1: Option<TlsConnector>,
    pub(super) tls_h2: Option<TlsConnector>,
    /// `--http2`: subscriptions per shared HTTP/2 connection.
    pub(super) http2: Option<usize>,
    /// The publish body around `{payload}`.
    pub(super) body_prefix: String,
    pub(super) body_suffix: String,
    /// Whether payloads are URL-encoded into the body.
    pub(super) form_body: bool,
    pub(super) publish_headers: HeaderMap,
    pub(super) subscribers: usize,
    pub(super) connect_concurrency: usize,
    pub(super) events: u64,
    pub(super) rate: f64,
    pub(super) publish_concurrency: usize,
    pub(super) payload_bytes: usize,
    pub(super) timeout: Duration,
    pub(super) server_pid: Option<u32>,
}

impl Plan {
    pub(super) fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        ensure!(args.subscribers > 0, "--subscribers must be at least 1");
        ensure!(args.events > 0, "--events must be at least 1");
        ensure!(
            args.connect_concurrency > 0,
            "--connect-concurrency must be at least 1"
        );
        ensure!(
            (1..=1024).contains(&args.publish_concurrency),
            "--publishers must be between 1 and 1024"
        );
        ensure!(
            args.rate.is_finite() && args.rate >= 0.0,
            "--rate must be 0 (as fast as possible) or a positive number of events per second"
        );
        ensure!(
            args.payload_bytes <= MAX_PAYLOAD_BYTES,
            "--payload-bytes must be at most {MAX_PAYLOAD_BYTES}"
        );
        ensure!(!args.timeout.is_zero(), "--timeout must be positive");
        ensure!(
            args.http2.is_none_or(|streams| streams > 0),
            "--http2 must be at least 1 stream per connection"
        );
        let connections = args.http2.map_or(args.subscribers, |streams| {
            args.subscribers.div_ceil(streams)
        });
        check_open_files(connections)?;

        let subscribe_url = match &args.subscribe_url {
            Some(url) => url.clone(),
            None => {
                let mut query = form_urlencoded::Serializer::new(String::new());
                for topic in &args.topic {
                    query.append_pair("topic", topic);
                }
                let separator = if args.url.contains('?') { '&' } else { '?' };
                format!("{}{separator}{}", args.url, query.finish())
            }
        };
        let subscribe_url: Uri = subscribe_url
            .parse()
            .with_context(|| format!("subscribe URL {subscribe_url}"))?;
        let publish_url = args.publish_url.clone().unwrap_or_else(|| args.url.clone());
        let publish_uri: Uri = publish_url
            .parse()
            .with_context(|| format!("publish URL {publish_url}"))?;
        for uri in [&subscribe_url, &publish_uri] {
            ensure!(
                matches!(uri.scheme_str(), Some("http" | "https")),
                "{uri}: bench speaks http:// and https:// only"
            );
            let host = uri_host(uri)?;
            ensure!(
                args.allow_remote || is_loopback_host(host),
                "{uri}: {host} is not a loopback address (127.0.0.0/8, ::1, localhost); \
                 load on other machines needs --allow-remote"
            );
        }
        let subscribe = Endpoint::new(&subscribe_url, args.allow_remote)?;
        // Read now, so a bad --ca-cert stops the run before it connects.
        let ca_cert = args.ca_cert.as_deref();
        let (tls_http1, tls_h2) = if subscribe_url.scheme_str() == Some("https") {
            (
                Some(tls_connector(ca_cert, b"http/1.1")?),
                Some(tls_connector(ca_cert, b"h2")?),
            )
        } else {
            (None, None)
        };
        if publish_uri.scheme_str() == Some("https") {
            crate::cli::client::tls_config(ca_cert, &[b"http/1.1"])?;
        }

        let form_body = args
            .publish_content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with(FORM_CONTENT_TYPE);
        let template = match &args.publish_body {
            Some(template) => template.clone(),
            None => {
                let topic = args
                    .topic
                    .first()
                    .context("--topic needs a value for the default --publish-body")?;
                let topic: String = form_urlencoded::byte_serialize(topic.as_bytes()).collect();
                format!("topic={topic}&data={PAYLOAD_PLACEHOLDER}")
            }
        };
        let Some((body_prefix, body_suffix)) = template.split_once(PAYLOAD_PLACEHOLDER) else {
            bail!(
                "--publish-body must contain {PAYLOAD_PLACEHOLDER}, or latency cannot be measured"
            );
        };

        let mut publish_headers = HeaderMap::new();
        publish_headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&args.publish_content_type)
                .context("--publish-content-type is not a valid header value")?,
        );
        if let Some(key) = &args.jwt_key {
            let signer = JwtSigner::new(args.jwt_algorithm, key).context("--jwt-key")?;
            let claims = Claims {
                exp: None,
                mercure: Some(MercureClaim {
                    publish: Some(vec!["*".into()]),
                    subscribe: None,
                    payload: None,
                }),
            };
            let token = signer
                .sign(&claims)
                .context("signing the publisher token")?;
            publish_headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .context("the signed token is not a valid header value")?,
            );
        }
        for header in &args.headers {
            let (name, value) = header
                .split_once(':')
                .with_context(|| format!("--header {header}: expected NAME:VALUE"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("--header {header}: bad header name"))?;
            let value = HeaderValue::from_str(value.trim())
                .with_context(|| format!("--header {header}: bad header value"))?;
            publish_headers.append(name, value);
        }

        if let Some(pid) = args.server_pid {
            read_rss_kib(pid).with_context(|| format!("--server-pid {pid}"))?;
        }
        Ok(Self {
            subscribe_url,
            subscribe,
            publish_url,
            ca_cert: args.ca_cert.clone(),
            tls_http1,
            tls_h2,
            http2: args.http2,
            body_prefix: body_prefix.to_owned(),
            body_suffix: body_suffix.to_owned(),
            form_body,
            publish_headers,
            subscribers: args.subscribers,
            connect_concurrency: args.connect_concurrency,
            events: args.events,
            rate: args.rate,
            publish_concurrency: args.publish_concurrency,
            payload_bytes: args.payload_bytes,
            timeout: args.timeout,
            server_pid: args.server_pid,
        })
    }
}

/// Where requests to one URL go: its address (resolved once), request target (`/path?query`),
/// `Host` header, and the TLS server name for `https://`.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) addr: SocketAddr,
    pub(super) target: Uri,
    pub(super) host: HeaderValue,
    pub(super) tls_name: Option<ServerName<'static>>,
}

impl Endpoint {
    pub(super) fn new(url: &Uri, allow_remote: bool) -> anyhow::Result<Self> {
        let addr = resolve(url, allow_remote)?;
        let target: Uri = url
            .path_and_query()
            .map_or("/", |target| target.as_str())
            .parse()
            .with_context(|| format!("URL {url}"))?;
        let host = url
            .authority()
            .map(|authority| HeaderValue::from_str(authority.as_str()))
            .with_context(|| format!("URL {url}: no host"))?
            .with_context(|| format!("URL {url}: bad host"))?;
        let tls_name = if url.scheme_str() == Some("https") {
            Some(
                ServerName::try_from(uri_host(url)?.to_owned())
                    .with_context(|| format!("URL {url}: not a TLS server name"))?,
            )
        } else {
            None
        };
        Ok(Self {
            addr,
            target,
            host,
            tls_name,
        })
    }
}

/// Raises the open-file limit to the hard limit and checks that `subscribers` sockets fit.
pub(super) fn check_open_files(subscribers: usize) -> anyhow::Result<()> {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            let (soft, _hard) = rlimit::Resource::NOFILE
                .get()
                .context("reading the open-file limit")?;
            tracing::warn!(%error, soft, "could not raise the open-file limit");
            soft
        }
    };
    let needed = subscribers as u64 + SPARE_FILES;
    ensure!(
        needed <= limit,
        "--subscribers {subscribers} needs {needed} open files (one socket each, plus \
         {SPARE_FILES}) but this process may open only {limit}; use at most {} subscribers or \
         raise the hard limit (ulimit -Hn)",
        limit.saturating_sub(SPARE_FILES)
    );
    Ok(())
}

/// The host of `uri`, without the brackets of an IPv6 literal.
pub(super) fn uri_host(uri: &Uri) -> anyhow::Result<&str> {
    let host = uri.host().with_context(|| format!("{uri}: no host"))?;
    Ok(host.trim_start_matches('[').trim_end_matches(']'))
}

/// Whether `host` is 127.0.0.0/8, ::1 or localhost.
pub(super) fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        // `Ipv4Addr::is_loopback` is 127.0.0.0/8; `Ipv6Addr::is_loopback` is ::1 only.
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Resolves the subscribe URL once; with a name, every address it resolves to must be loopback
/// too (a `localhost` entry pointing elsewhere is refused).
pub(super) fn resolve(uri: &Uri, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let host = uri_host(uri)?;
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let port = uri.port_u16().unwrap_or(default_port);
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .collect();
    ensure!(
        allow_remote || addrs.iter().all(|addr| addr.ip().is_loopback()),
        "{host} resolves to {addrs:?}, not only loopback addresses; pass --allow-remote to allow it"
    );
    addrs
        .first()
        .copied()
        .with_context(|| format!("{host} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LocalHost"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["10.0.0.1", "0.0.0.0", "::", "example.com", "128.0.0.1"] {
            assert!(!is_loopback_host(host), "{host}");
        }
        let uri: Uri = "http://[::1]:3000/x".parse().expect("uri");
        assert_eq!(uri_host(&uri).ok(), Some("::1"));
    }
}
