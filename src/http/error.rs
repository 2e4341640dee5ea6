//! `ApiError`: the one place where errors become HTTP responses.
//!
//! Every error answers with a status that says who is at fault and a `text/plain` body that says
//! what to change. 401s carry `WWW-Authenticate: Bearer`, 503s carry `Retry-After`; 5xx causes are
//! logged here, once.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use crate::auth::AuthError;
use crate::event::EventError;
use crate::hub::{PublishError, SubscribeError};

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// A readable explanation (the response body).
    pub message: String,
    /// Seconds to put in `Retry-After`.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_secs: None,
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
            PublishError::Unavailable(e) => Self::unavailable(format!("not stored: {e}"), 1),
            PublishError::ShuttingDown => Self::unavailable(error.to_string(), 1),
        }
    }
}

impl From<SubscribeError> for ApiError {
    fn from(error: SubscribeError) -> Self {
        match error {
            SubscribeError::NoTopics
            | SubscribeError::BlankTopic
            | SubscribeError::TooManyTopics { .. } => Self::bad_request(error.to_string()),
            SubscribeError::Full { .. }
            | SubscribeError::ShuttingDown
            | SubscribeError::History(_) => {
                let secs = error.retry_after().as_secs();
                Self::unavailable(error.to_string(), secs)
            }
            // Logged once, by `into_response` (every 5xx is).
            SubscribeError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "request failed");
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

    #[test]
    fn each_subscribe_error_has_its_status() {
        let status = |error: SubscribeError| ApiError::from(error).status;
        assert_eq!(status(SubscribeError::NoTopics), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(SubscribeError::Full { max: 1 }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(SubscribeError::History(
                crate::history::HistoryError::Unavailable("disk".into())
            )),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // A panic while compiling selectors is the hub's fault, not a store that will recover.
        assert_eq!(
            status(SubscribeError::Internal("panicked".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
