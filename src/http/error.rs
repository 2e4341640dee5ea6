//! `ApiError`: the one place where errors become HTTP responses.
//!
//! Every error answers with a status that says who is at fault and a `text/plain` body that says
//! what to change. 401s carry `WWW-Authenticate: Bearer`, 503s carry `Retry-After`; 5xx causes are
//! logged here, once, with the chain of errors beneath them (never sent to the client).
//!
//! A history failure's status is decided by [`history_status`], for every route: a store or a
//! Redis that may come back is `503` with `Retry-After`, damaged data or a fault of the hub is
//! `500`. Readiness is the exception: `/readyz` is `503` whatever the cause, which is what a
//! probe expects.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use crate::auth::AuthError;
use crate::event::EventError;
use crate::history::{HistoryError, Sources};
use crate::hub::{NotReady, PublishError, SubscribeError};

/// Seconds a client is told to wait before retrying after a 503 of the history.
const HISTORY_RETRY_AFTER_SECS: u64 = 1;

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// A readable explanation (the response body).
    pub message: String,
    /// Seconds to put in `Retry-After`.
    pub retry_after_secs: Option<u64>,
    /// The error behind a 5xx, whose sources are logged with it (the body says only `message`).
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_secs: None,
            cause: None,
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `503 Service Unavailable` with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// A history failure, its body `context` then the error's line, its status by
    /// [`history_status`].
    fn history(context: &str, error: HistoryError) -> Self {
        let message = format!("{context}{error}");
        let status = history_status(&error);
        let answer = if status == StatusCode::SERVICE_UNAVAILABLE {
            Self::unavailable(message, HISTORY_RETRY_AFTER_SECS)
        } else {
            Self::new(status, message)
        };
        Self {
            cause: Some(Arc::new(error)),
            ..answer
        }
    }
}

/// The status of each history failure: `503` when it may pass ([`HistoryError::will_pass`]),
/// else `500`.
pub fn history_status(error: &HistoryError) -> StatusCode {
    if error.will_pass() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let status = match error {
            AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, error.to_string())
    }
}

impl From<EventError> for ApiError {
    fn from(error: EventError) -> Self {
        Self::bad_request(error.to_string())
    }
}

impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Invalid(e) => e.into(),
            PublishError::History(e) => Self::history("not stored: ", e),
            PublishError::ShuttingDown => Self::unavailable(error.to_string(), 1),
            PublishError::KeyReused { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
            }
        }
    }
}

impl From<SubscribeError> for ApiError {
    fn from(error: SubscribeError) -> Self {
        match error {
            SubscribeError::NoTopics
            | SubscribeError::BlankTopic
            | SubscribeError::TooManyTopics { .. } => Self::bad_request(error.to_string()),
            SubscribeError::Full { .. } | SubscribeError::ShuttingDown => {
                let secs = error.retry_after().as_secs();
                Self::unavailable(error.to_string(), secs)
            }
            SubscribeError::History(e) => Self::history("", e),
            // Logged once, by `into_response` (every 5xx is).
            SubscribeError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
            }
        }
    }
}

impl From<NotReady> for ApiError {
    /// Always `503`: a readiness probe asks "send traffic here?", whatever the cause.
    fn from(reason: NotReady) -> Self {
        let answer = Self::unavailable(format!("not ready: {reason}"), HISTORY_RETRY_AFTER_SECS);
        match reason {
            NotReady::History(error) => Self {
                cause: Some(Arc::new(error)),
                ..answer
            },
            NotReady::ShuttingDown => answer,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // The body holds the error's own line; the log adds what lies beneath it.
            let cause = self
                .cause
                .as_deref()
                .map(|cause| Sources::after(cause).to_string())
                .filter(|sources| !sources.is_empty());
            let status = self.status.as_u16();
            if self.status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(status, error = %self.message, cause, "request failed");
            } else {
                tracing::error!(status, error = %self.message, cause, "request failed");
            }
        }
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Damage;

    #[test]
    fn each_subscribe_error_has_its_status() {
        let status = |error: SubscribeError| ApiError::from(error).status;
        assert_eq!(status(SubscribeError::NoTopics), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(SubscribeError::Full { max: 1 }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(SubscribeError::History(HistoryError::Reopening)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // A panic while compiling selectors is the hub's fault, not a store that will recover.
        assert_eq!(
            status(SubscribeError::Internal("panicked".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    /// One of each history failure, with the status it must get.
    fn history_errors() -> Vec<(HistoryError, StatusCode)> {
        let io = || std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device");
        let record = crate::history::RecordError::Truncated;
        vec![
            (
                HistoryError::Store(Arc::new(redb::Error::Io(io()))),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                HistoryError::from(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                HistoryError::Io {
                    path: "/data".into(),
                    source: Arc::new(io()),
                },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (HistoryError::Reopening, StatusCode::SERVICE_UNAVAILABLE),
            (
                HistoryError::FeedNotReading,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                HistoryError::Damaged(Damage::Event {
                    seq: 7,
                    error: record,
                }),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                HistoryError::DamagedFile {
                    path: "/data/history.redb".into(),
                    damage: Damage::Meta { key: "next_seq" },
                },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                HistoryError::Task { panicked: true },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ]
    }

    #[test]
    fn each_history_error_has_its_status_on_publish_and_subscribe() {
        for (error, expected) in history_errors() {
            let line = error.to_string();
            for (answer, body) in [
                (
                    ApiError::from(PublishError::History(error.clone())),
                    format!("not stored: {line}"),
                ),
                (
                    ApiError::from(SubscribeError::History(error.clone())),
                    line.clone(),
                ),
            ] {
                assert_eq!(answer.status, expected, "{line}");
                assert_eq!(answer.message, body);
                // 503: the client may retry, and is told when.
                assert_eq!(
                    answer.retry_after_secs.is_some(),
                    expected == StatusCode::SERVICE_UNAVAILABLE,
                    "{line}"
                );
                assert!(
                    answer.cause.is_some(),
                    "the cause is kept for the log: {line}"
                );
                assert!(!line.contains('\n'), "one line: {line}");
            }
        }
    }

    #[test]
    fn readiness_is_503_whatever_the_history_error() {
        for (error, _) in history_errors() {
            let line = error.to_string();
            let answer = ApiError::from(NotReady::History(error));
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{line}");
            assert_eq!(answer.message, format!("not ready: {line}"));
            assert_eq!(answer.retry_after_secs, Some(1));
        }
        let answer = ApiError::from(NotReady::ShuttingDown);
        assert_eq!(answer.message, "not ready: shutting down");
    }

    #[tokio::test]
    async fn a_history_answer_has_its_status_retry_after_and_only_its_own_line_in_the_body() {
        let error = HistoryError::Store(Arc::new(redb::Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device",
        ))));
        let response = ApiError::from(PublishError::History(error)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(
            &body[..],
            b"not stored: the history file cannot be read or written\n",
            "the source (a path, an OS message) is logged, not sent"
        );
    }
}
