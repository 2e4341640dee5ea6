//! The HTTP layer's settings: what [`super::router`] is built with, and their defaults.
//!
//! Only the routes read these (who may publish and subscribe, which browsers may call the hub,
//! how large a publish may be, whether `/metrics` is routed); the hub below them knows nothing
//! of HTTP and has its own [`crate::HubConfig`]. The command line fills both in `config`.

use crate::auth::{AuthConfig, Draft08Auth};
use crate::dialect::Dialects;

/// Settings of the HTTP routes. `Default` gives the values documented on each field.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Keys and the anonymous-subscriber policy (default: no keys and no anonymous
    /// subscribers, so HTTP refuses every publish and subscription until they are set).
    pub auth: AuthConfig,
    /// draft-dunglas-mercure-08 access tokens: the resource identifier and the trusted
    /// issuers (default none: an `at+jwt` token is then verified as a draft-07 one). When set,
    /// a request whose token's header says `typ: at+jwt` is authorized by it, and the RFC 9728
    /// metadata document is routed.
    pub draft08: Option<Draft08Auth>,
    /// Origins allowed to subscribe and publish from a browser (CORS). `*` allows any origin
    /// but then without credentials (cookies).
    pub cors_origins: Vec<String>,
    /// Origins allowed to publish with the `mercureAuthorization` cookie (CSRF protection);
    /// empty refuses cookie-authorized publishes.
    pub publish_origins: Vec<String>,
    /// Largest publish request body in bytes (default 1 MiB); larger ones get `413`.
    pub max_publish_bytes: usize,
    /// Whether [`super::router`] serves `/metrics` (default on; off when metrics have a
    /// listener of their own, or are disabled).
    pub metrics_on_router: bool,
    /// The Mercure dialects served on the endpoint, chosen per request from what it carries
    /// (default: both, draft-07 and draft-08); a request in a dialect that is off gets `400`.
    pub dialects: Dialects,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            auth: AuthConfig::default(),
            draft08: None,
            cors_origins: Vec::new(),
            publish_origins: Vec::new(),
            max_publish_bytes: 1024 * 1024,
            metrics_on_router: true,
            dialects: Dialects::BOTH,
        }
    }
}
