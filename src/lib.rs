//! imnotify: a notification server that speaks the Bitrix24 REST API.
//!
//! See ARCHITECTURE.md for the module map and the path of a request.

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod fixtures;
pub mod limits;
pub mod methods;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod toolkit;
pub mod value;
pub mod web;
