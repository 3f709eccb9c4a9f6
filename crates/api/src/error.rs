//! Every error leaves the API as `{"error": {"code", "message"}}` with the
//! right status. Internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 503.
    pub retry_after: Option<u32>,
    /// The request field the error is about (a definition's mistake).
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            field: None,
        }
    }

    /// Names the request field the error is about.
    pub fn at(mut self, field: Option<String>) -> Self {
        self.field = field;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_workflow",
            message,
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such workflow")
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_state", message)
    }

    pub fn unavailable(what: &str) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: format!("{what} is unavailable; try again shortly"),
            retry_after: Some(5),
            field: None,
        }
    }

    /// The projection has not reached the log's end in time, so whether
    /// the workflow exists cannot be told yet: never a 404 for a workflow
    /// the log may have.
    pub fn projection_behind() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "projection_behind",
            message: "the projection has not caught up with the event log yet, so this \
                      workflow cannot be found or ruled out; try again shortly"
                .into(),
            retry_after: Some(1),
            field: None,
        }
    }

    /// A command is in the log, but the projection did not show in time
    /// what it did (it lags, or its projector is stopped): asking again is
    /// safe, and answers once the projection has caught up.
    pub fn outcome_unknown() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "outcome_unknown",
            message: "the request is in the event log, but the projection has not shown its \
                      outcome yet; send it again shortly (a repeat changes nothing)"
                .into(),
            retry_after: Some(1),
            field: None,
        }
    }

    /// Records of the workflow could not be projected (quarantined): its
    /// projected state is behind its log, so it cannot be changed here.
    pub fn quarantined() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "projection_quarantined",
            "some records of this workflow could not be stored in the projection and were \
             quarantined, so its projected state is behind its log; an operator must repair \
             it (see GET /workflows/{id}/events and `agentflow replay --verify`)",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(f) = self.field {
            body["error"]["field"] = f.into();
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<agentflow_store::StoreError> for ApiError {
    fn from(e: agentflow_store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::unavailable("the database")
        } else {
            tracing::error!(error = %e, "database error");
            ApiError::internal()
        }
    }
}

impl From<agentflow_log::LogError> for ApiError {
    fn from(e: agentflow_log::LogError) -> Self {
        use agentflow_log::LogError;
        match e {
            // Sending it again would fail again: not a 503 to retry.
            LogError::TooLarge(_) => {
                tracing::info!(error = %e, "record too large for the event log");
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the workflow is larger than the event log takes in one record \
                     (about 1 MB on Kafka and Redpanda); make its inputs smaller",
                )
            }
            LogError::Rejected(_) => {
                tracing::error!(error = %e, "the event log refused a record");
                ApiError::internal()
            }
            e => {
                tracing::warn!(error = %e, "event log append failed");
                ApiError::unavailable("the event log")
            }
        }
    }
}
