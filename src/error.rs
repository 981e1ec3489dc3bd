//! The error catalogue, which lives in the `imnotify-wire` crate so that the server and the client
//! share one copy (issue 17). Re-exported here so `crate::error::ApiError` keeps working.

pub use imnotify_wire::error::*;
