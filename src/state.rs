//! What every request handler shares.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::limits::Limiters;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub limits: Arc<Limiters>,
    /// The one clock (see `clock`): every time a handler answers or stores comes from here.
    pub clock: Clock,
}
