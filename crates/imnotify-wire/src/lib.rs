//! The wire types of the Bitrix24 REST API as imnotify speaks it, shared by the server
//! (`imnotify`) and the client (`imnotify-client`) so that there is one copy of each rule:
//!
//! - [`error`]: the error catalogue (codes, descriptions, HTTP statuses) and [`error::ErrorCode`];
//! - [`envelope`]: the success and error bodies, the `time` block and the batch result;
//! - [`attach`]: the ATTACH blocks, with builders that only make valid ones.
//!
//! ```
//! use imnotify_wire::{attach::{Attach, Block}, error::ApiError, envelope::ErrorBody};
//!
//! let attach = Attach::new(vec![Block::message("Disk almost full")?])?;
//! assert_eq!(attach.blocks.len(), 1);
//! assert_eq!(ErrorBody::from(&ApiError::message_empty()).error, "MESSAGE_EMPTY");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod attach;
pub mod envelope;
pub mod error;
