//! Store errors as gRPC statuses: the one place this mapping is made.

use shoal_store::{ErrorClass, StoreError};
use tonic::Status;

/// The gRPC status for a store error.
pub fn store_status(e: StoreError) -> Status {
    let message = e.to_string();
    match e.class() {
        ErrorClass::NotFound => Status::not_found(message),
        ErrorClass::InvalidArgument => Status::invalid_argument(message),
        ErrorClass::AlreadyExists => Status::already_exists(message),
        ErrorClass::Conflict => Status::failed_precondition(message),
        ErrorClass::Unavailable => Status::unavailable(message),
    }
}
