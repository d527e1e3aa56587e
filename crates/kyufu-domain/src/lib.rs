//! Domain model of the benefit intake: what a per-child application is, how it is validated and
//! normalised, which statuses it moves through, and what a benefit program promises.
//!
//! Nothing here does IO. Adapters, HTTP handlers and workers build on these types.
#![forbid(unsafe_code)]

pub mod application;
pub mod document;
pub mod error;
pub mod html;
pub mod identity;
pub mod imagefile;
pub mod normalize;
pub mod pdf;
pub mod program;
pub mod reference;
pub mod status;
pub mod token;

pub use application::{Application, ApplicationInput, BeneficiaryKind, Child, Guardian};
pub use error::{ErrorCode, FieldError, ValidationErrors};
pub use program::Program;
pub use status::{ReasonCode, Status};
