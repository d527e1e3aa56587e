//! `POST /api/v1/funnel`: the citizen pages report how far a visitor got through the form, so ops
//! can see where people drop out or hit errors on launch day. An event is a step from a fixed list,
//! an optional error code from the public error table (only with step `error`) and the page
//! language; it carries no personal data and no id, and it is only counted, in
//! `kyufu_funnel_steps_total{step, error_code}`. Anything else — an unknown step, code, language or
//! an extra field — is refused with 422 `invalid_funnel_event`, so a label never takes a value
//! outside the fixed sets.
//!
//! The body is read as bytes whatever its content type, so pages can send it with
//! `navigator.sendBeacon`. No admission pass is needed: `queue_joined` happens before admission.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kyufu_domain::{ErrorCode, FieldError};
use kyufu_http::ApiError;
use serde_json::{Map, Value};

use crate::Intake;

pub(crate) const FUNNEL_ROUTE: &str = "/api/v1/funnel";

/// Largest accepted event body; a real one is under 100 bytes.
pub(crate) const MAX_FUNNEL_BODY: usize = 1024;

/// The steps of the form, in the order a visitor meets them, then `error`.
pub const STEPS: &[&str] = &[
    "queue_joined",
    "admitted",
    "form_started",
    "guardian_done",
    "child_done",
    "upload_started",
    "upload_done",
    "confirm_shown",
    "submitted",
    "error",
];

/// Page languages.
pub const LANGS: &[&str] = &["ja", "en"];

/// A valid event: the label values to count it under.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FunnelEvent {
    pub step: &'static str,
    /// `""` when absent.
    pub error_code: &'static str,
}

/// Checks an event body. Every problem is reported at once, as field errors.
pub(crate) fn parse(body: &[u8]) -> Result<FunnelEvent, ApiError> {
    let object: Map<String, Value> = serde_json::from_slice(body).map_err(|_| ApiError::new(ErrorCode::InvalidJson))?;
    let mut errors = Vec::new();
    let mut field_error = |field: &str, code: &'static str| errors.push(FieldError { field: field.to_owned(), code });
    for key in object.keys().filter(|k| !matches!(k.as_str(), "step" | "error_code" | "lang")) {
        // Echoed only to the sender; long keys are cut so the answer stays small.
        field_error(&key.chars().take(64).collect::<String>(), "unknown_field");
    }
    let step = match object.get("step") {
        None | Some(Value::Null) => {
            field_error("step", "required");
            None
        }
        Some(v) => {
            let found = v.as_str().and_then(|s| STEPS.iter().find(|known| **known == s)).copied();
            if found.is_none() {
                field_error("step", "unknown");
            }
            found
        }
    };
    let error_code = match object.get("error_code") {
        None | Some(Value::Null) => "",
        Some(v) => {
            let found = v.as_str().and_then(|s| ErrorCode::ALL.iter().find(|c| c.as_str() == s)).map(|c| c.as_str());
            match found {
                None => {
                    field_error("error_code", "unknown");
                    ""
                }
                Some(_) if step.is_some_and(|s| s != "error") => {
                    field_error("error_code", "only_with_step_error");
                    ""
                }
                Some(code) => code,
            }
        }
    };
    match object.get("lang") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_str().is_some_and(|l| LANGS.contains(&l)) => {}
        Some(_) => field_error("lang", "unknown"),
    }
    match step {
        Some(step) if errors.is_empty() => Ok(FunnelEvent { step, error_code }),
        _ => Err(ApiError::new(ErrorCode::InvalidFunnelEvent).with_errors(errors)),
    }
}

/// The handler: 204 when counted, the standard error body otherwise.
pub(crate) async fn record(State(intake): State<Intake>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = match body {
        Ok(bytes) => parse(&bytes),
        Err(_) => Err(ApiError::new(ErrorCode::InvalidFunnelEvent)
            .with_errors(vec![FieldError { field: "body".to_owned(), code: "too_large" }])),
    };
    let (status, code) = match &result {
        Ok(_) => (StatusCode::NO_CONTENT.as_u16(), ""),
        Err(e) => (e.code.http_status(), e.code.as_str()),
    };
    intake.metrics.requests.with_label_values(&["funnel", &status.to_string(), code]).inc();
    match result {
        Ok(event) => {
            intake.metrics.funnel_steps.with_label_values(&[event.step, event.error_code]).inc();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<(String, &'static str)> {
        match parse(body.as_bytes()) {
            Ok(e) => panic!("accepted {body}: {e:?}"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::InvalidFunnelEvent, "{body}");
                e.errors.into_iter().map(|f| (f.field, f.code)).collect()
            }
        }
    }

    #[test]
    fn known_steps_codes_and_languages_are_accepted() {
        for step in STEPS {
            let body = format!(r#"{{"step":"{step}","lang":"ja"}}"#);
            assert_eq!(parse(body.as_bytes()).ok(), Some(FunnelEvent { step, error_code: "" }));
        }
        let e = parse(br#"{"step":"error","error_code":"document_too_large","lang":"en"}"#).ok();
        assert_eq!(e, Some(FunnelEvent { step: "error", error_code: "document_too_large" }));
        let e = parse(br#"{"step":"submitted","error_code":null}"#).ok();
        assert_eq!(e, Some(FunnelEvent { step: "submitted", error_code: "" }), "lang and a null code are optional");
    }

    #[test]
    fn anything_outside_the_fixed_sets_is_refused_with_every_reason() {
        assert_eq!(fields(r#"{"step":"paid"}"#), vec![("step".to_owned(), "unknown")]);
        assert_eq!(fields(r#"{"step":"error","error_code":"my_bug"}"#), vec![("error_code".to_owned(), "unknown")]);
        assert_eq!(
            fields(r#"{"step":"submitted","error_code":"not_found"}"#),
            vec![("error_code".to_owned(), "only_with_step_error")]
        );
        assert_eq!(fields(r#"{"step":"submitted","lang":"fr"}"#), vec![("lang".to_owned(), "unknown")]);
        assert_eq!(fields(r#"{"lang":"ja"}"#), vec![("step".to_owned(), "required")]);
        assert_eq!(fields(r#"{"step":7}"#), vec![("step".to_owned(), "unknown")]);
        assert_eq!(
            fields(r#"{"step":"submitted","email":"hanako@example.jp"}"#),
            vec![("email".to_owned(), "unknown_field")],
            "no room for personal data"
        );
        let many = fields(r#"{"step":"x","error_code":"y","lang":"z"}"#);
        assert_eq!(many.len(), 3, "{many:?}");
        for bad in ["", "[]", "\"submitted\"", "{"] {
            assert_eq!(parse(bad.as_bytes()).err().map(|e| e.code), Some(ErrorCode::InvalidJson), "{bad:?}");
        }
    }
}
