//! What can go wrong in the coordinator, in its own terms; mapped to a gRPC status only at
//! the edge (`From<CoordinatorError> for Status`), so the domain never builds transport
//! types and another front (an in-process caller, a test) reads the same errors.

use tonic::Status;
use xt_shared::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A field of a submitted batch breaks a rule: `field: rule`.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// No such batch, worker or table (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The tenant is at one of its limits.
    #[error("{0}")]
    Limit(String),
    /// Asked of a batch that has not finished.
    #[error("{0}")]
    NotFinished(String),
    /// The store could not take what must be durable before it is acknowledged.
    #[error("{0}")]
    Unavailable(String),
    /// A broken invariant or an I/O failure.
    #[error("{0}")]
    Internal(String),
}

impl CoordinatorError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        CoordinatorError::Internal(e.to_string())
    }
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Self {
        let message = e.to_string();
        match e {
            CoordinatorError::Spec(_) => Status::invalid_argument(message),
            CoordinatorError::NotFound(_) => Status::not_found(message),
            CoordinatorError::Limit(_) => Status::resource_exhausted(message),
            CoordinatorError::NotFinished(_) => Status::failed_precondition(message),
            CoordinatorError::Unavailable(_) => Status::unavailable(message),
            CoordinatorError::Internal(_) => Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_status_with_its_message() {
        let cases = [
            (
                CoordinatorError::Spec(SpecError::new("capital", "must be > 0")),
                tonic::Code::InvalidArgument,
                "capital: must be > 0",
            ),
            (
                CoordinatorError::NotFound("unknown batch 7".into()),
                tonic::Code::NotFound,
                "unknown batch 7",
            ),
            (
                CoordinatorError::Limit("x".into()),
                tonic::Code::ResourceExhausted,
                "x",
            ),
            (
                CoordinatorError::NotFinished("y".into()),
                tonic::Code::FailedPrecondition,
                "y",
            ),
            (
                CoordinatorError::Unavailable("z".into()),
                tonic::Code::Unavailable,
                "z",
            ),
            (CoordinatorError::internal("w"), tonic::Code::Internal, "w"),
        ];
        for (e, code, message) in cases {
            let s = Status::from(e);
            assert_eq!((s.code(), s.message()), (code, message));
        }
    }
}
