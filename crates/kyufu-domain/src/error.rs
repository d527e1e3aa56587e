//! The one table of public error codes. Each code has a stable snake_case name, an HTTP status and a
//! message an applicant can act on; every error response of every service is built from this table.

use serde::Serialize;

/// Every error a client of the public HTTP API can see. Names are part of the API contract: add new
/// codes, never rename or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    InvalidApplication,
    InvalidMultipart,
    UnsupportedMediaType,
    MissingApplication,
    MissingDocument,
    DocumentTooLarge,
    UnsupportedDocumentType,
    EmptyDocument,
    DocumentUnreadable,
    DocumentTooManyPixels,
    DocumentActiveContent,
    DocumentInfected,
    ScannerUnavailable,
    IdempotencyKeyInvalid,
    IdempotencyConflict,
    AdmissionRequired,
    AdmissionInvalid,
    AdmissionExpired,
    AdmissionSpent,
    AdmissionLimitReached,
    TicketRequired,
    TicketInvalid,
    TicketExpired,
    TooManyRequests,
    NotFound,
    MethodNotAllowed,
    Unauthorized,
    QueuePaused,
    Overloaded,
    ServiceUnavailable,
    Internal,
    InvalidFunnelEvent,
    InvalidReference,
}

impl ErrorCode {
    /// All codes, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::InvalidApplication,
        ErrorCode::InvalidMultipart,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::MissingApplication,
        ErrorCode::MissingDocument,
        ErrorCode::DocumentTooLarge,
        ErrorCode::UnsupportedDocumentType,
        ErrorCode::EmptyDocument,
        ErrorCode::DocumentUnreadable,
        ErrorCode::DocumentTooManyPixels,
        ErrorCode::DocumentActiveContent,
        ErrorCode::DocumentInfected,
        ErrorCode::ScannerUnavailable,
        ErrorCode::IdempotencyKeyInvalid,
        ErrorCode::IdempotencyConflict,
        ErrorCode::AdmissionRequired,
        ErrorCode::AdmissionInvalid,
        ErrorCode::AdmissionExpired,
        ErrorCode::AdmissionSpent,
        ErrorCode::AdmissionLimitReached,
        ErrorCode::TicketRequired,
        ErrorCode::TicketInvalid,
        ErrorCode::TicketExpired,
        ErrorCode::TooManyRequests,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthorized,
        ErrorCode::QueuePaused,
        ErrorCode::Overloaded,
        ErrorCode::ServiceUnavailable,
        ErrorCode::Internal,
        ErrorCode::InvalidFunnelEvent,
        ErrorCode::InvalidReference,
    ];

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidApplication => "invalid_application",
            ErrorCode::InvalidMultipart => "invalid_multipart",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::MissingApplication => "missing_application",
            ErrorCode::MissingDocument => "missing_document",
            ErrorCode::DocumentTooLarge => "document_too_large",
            ErrorCode::UnsupportedDocumentType => "unsupported_document_type",
            ErrorCode::EmptyDocument => "empty_document",
            ErrorCode::DocumentUnreadable => "document_unreadable",
            ErrorCode::DocumentTooManyPixels => "document_too_many_pixels",
            ErrorCode::DocumentActiveContent => "document_active_content",
            ErrorCode::DocumentInfected => "document_infected",
            ErrorCode::ScannerUnavailable => "scanner_unavailable",
            ErrorCode::IdempotencyKeyInvalid => "idempotency_key_invalid",
            ErrorCode::IdempotencyConflict => "idempotency_conflict",
            ErrorCode::AdmissionRequired => "admission_required",
            ErrorCode::AdmissionInvalid => "admission_invalid",
            ErrorCode::AdmissionExpired => "admission_expired",
            ErrorCode::AdmissionSpent => "admission_spent",
            ErrorCode::AdmissionLimitReached => "admission_limit_reached",
            ErrorCode::TicketRequired => "ticket_required",
            ErrorCode::TicketInvalid => "ticket_invalid",
            ErrorCode::TicketExpired => "ticket_expired",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::QueuePaused => "queue_paused",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidFunnelEvent => "invalid_funnel_event",
            ErrorCode::InvalidReference => "invalid_reference",
        }
    }

    /// HTTP status code the code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::InvalidMultipart
            | ErrorCode::MissingApplication
            | ErrorCode::MissingDocument
            | ErrorCode::EmptyDocument
            | ErrorCode::IdempotencyKeyInvalid
            | ErrorCode::TicketRequired
            | ErrorCode::TicketInvalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::AdmissionRequired
            | ErrorCode::AdmissionInvalid
            | ErrorCode::AdmissionExpired
            | ErrorCode::AdmissionSpent
            | ErrorCode::AdmissionLimitReached => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::IdempotencyConflict => 409,
            ErrorCode::TicketExpired => 410,
            ErrorCode::DocumentTooLarge => 413,
            ErrorCode::UnsupportedMediaType | ErrorCode::UnsupportedDocumentType => 415,
            ErrorCode::InvalidApplication
            | ErrorCode::InvalidFunnelEvent
            | ErrorCode::DocumentUnreadable
            | ErrorCode::DocumentTooManyPixels
            | ErrorCode::DocumentActiveContent
            | ErrorCode::DocumentInfected
            | ErrorCode::InvalidReference => 422,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Internal => 500,
            ErrorCode::QueuePaused
            | ErrorCode::Overloaded
            | ErrorCode::ServiceUnavailable
            | ErrorCode::ScannerUnavailable => 503,
        }
    }

    /// A message the applicant (or the app developer) can act on.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "The application data is not valid JSON. Send the form again.",
            ErrorCode::InvalidApplication => {
                "Some fields of the application are missing or wrong. See `errors` for each field."
            }
            ErrorCode::InvalidMultipart => "The upload could not be read. Send the form again.",
            ErrorCode::UnsupportedMediaType => {
                "Send the application as multipart/form-data with parts `application` and `document`."
            }
            ErrorCode::MissingApplication => "The application part is missing. Fill in the form and send it again.",
            ErrorCode::MissingDocument => "The identity document is missing. Attach a photo or PDF of it.",
            ErrorCode::DocumentTooLarge => "The identity document is too large. Upload a file of at most 10 MB.",
            ErrorCode::UnsupportedDocumentType => "The identity document must be a JPEG, PNG or PDF file.",
            ErrorCode::EmptyDocument => "The identity document is empty. Attach the file again.",
            ErrorCode::DocumentUnreadable => {
                "The identity document could not be read (the image is damaged or incomplete). Take the photo again or choose another file."
            }
            ErrorCode::DocumentTooManyPixels => {
                "The identity document image has too many pixels (at most 40 megapixels). Take the photo at a lower resolution."
            }
            ErrorCode::DocumentActiveContent => {
                "The PDF contains scripts, actions or attached files, which we cannot accept. Upload a photo or a plain scan of the document."
            }
            ErrorCode::DocumentInfected => {
                "The file was flagged by our virus scanner and was not saved. Upload a different photo or scan of the document."
            }
            ErrorCode::ScannerUnavailable => {
                "We cannot check uploaded documents right now, so nothing was saved. Try again shortly."
            }
            ErrorCode::IdempotencyKeyInvalid => {
                "The Idempotency-Key header must be 8 to 128 letters, digits, '-' or '_'."
            }
            ErrorCode::IdempotencyConflict => {
                "This Idempotency-Key was already used for a different application."
            }
            ErrorCode::AdmissionRequired => "Please enter through the waiting room first.",
            ErrorCode::AdmissionInvalid => "Your admission pass is not valid. Please enter through the waiting room again.",
            ErrorCode::AdmissionExpired => "Your admission pass has expired. Please enter through the waiting room again.",
            ErrorCode::AdmissionSpent => "Your admission pass has already been used up. Please enter through the waiting room again.",
            ErrorCode::AdmissionLimitReached => {
                "This admission pass has sent as many applications as one household may send. To apply for more children, please contact the city office."
            }
            ErrorCode::TicketRequired => "No waiting-room ticket was sent. Join the queue first.",
            ErrorCode::TicketInvalid => "The waiting-room ticket is not valid. Join the queue again.",
            ErrorCode::TicketExpired => "Your place in the queue expired because it was not refreshed. Join the queue again.",
            ErrorCode::TooManyRequests => "Too many requests. Wait a moment and try again.",
            ErrorCode::NotFound => "Not found.",
            ErrorCode::MethodNotAllowed => "This method is not allowed here.",
            ErrorCode::Unauthorized => "Authentication is required.",
            ErrorCode::QueuePaused => "Admission is paused for a moment. Your place is kept; please wait.",
            ErrorCode::Overloaded => "The service is busy. Your data was not saved; try again shortly.",
            ErrorCode::ServiceUnavailable => "The service is temporarily unavailable. Try again shortly.",
            ErrorCode::Internal => "Something went wrong on our side. Your data was not saved; try again shortly.",
            ErrorCode::InvalidFunnelEvent => {
                "The funnel event names an unknown step, error code or language, or has extra fields. See `errors`."
            }
            ErrorCode::InvalidReference => {
                "The reference number must be 1 to 64 letters, digits or hyphens, sent as {\"reference\": \"...\"}."
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field that failed validation: a dotted path (`child.birth_date`) and a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
}

/// All field errors of one application, reported together so the applicant fixes them in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("application has {} invalid field(s)", .errors.len())]
pub struct ValidationErrors {
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    pub fn push(&mut self, field: impl Into<String>, code: &'static str) {
        self.errors.push(FieldError { field: field.into(), code });
    }
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_client_or_server_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            assert!((400..600).contains(&code.http_status()));
            // serde name and as_str agree, so JSON bodies and logs use the same word
            let json = serde_json::to_string(code).unwrap_or_default();
            assert_eq!(json, format!("\"{name}\""));
        }
    }

    #[test]
    fn openapi_lists_every_error_code_and_reason() {
        let spec = include_str!("../../../docs/openapi.yaml");
        for code in ErrorCode::ALL {
            assert!(spec.contains(code.as_str()), "docs/openapi.yaml lacks error code {code}");
        }
        for status in crate::Status::ALL {
            assert!(spec.contains(status.as_str()), "docs/openapi.yaml lacks status {status}");
        }
    }
}
