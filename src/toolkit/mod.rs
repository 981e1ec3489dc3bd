//! The test-server toolkit's in-memory parts (issue 16): the request journal, the fault table,
//! captured mails and the admin token's digest. They live in `AppState`; `protocol::hook` feeds the journal and
//! consults the faults, `web::admin` serves them under `/admin/api/`.
//!
//! Nothing here does I/O or reads the clock: times come in as arguments.

pub mod faults;
pub mod journal;
pub mod mail;

use std::sync::RwLock;

use crate::config::Config;

pub use self::faults::{FaultSpec, Faults};
pub use self::journal::Journal;
pub use self::mail::MailCapture;

/// The toolkit's state, shared by every request.
pub struct Toolkit {
    pub journal: Journal,
    pub faults: Faults,
    /// Captured mails (`email.capture`); empty when capture is off.
    pub mail: MailCapture,
    /// SHA-256 of the admin token: from `admin.token`, the fixtures' `admin_token`, or the one
    /// the first start made. `None` until the server has set it.
    admin_token: RwLock<Option<[u8; 32]>>,
}

impl Toolkit {
    pub fn new(config: &Config) -> Toolkit {
        Toolkit {
            journal: Journal::new(config.journal.capacity, config.journal.entry_bytes),
            faults: Faults::default(),
            mail: MailCapture::new(if config.email.capture {
                config.email.capture_capacity
            } else {
                0
            }),
            admin_token: RwLock::new(None),
        }
    }

    /// Sets the digest the admin API compares presented tokens with.
    pub fn set_admin_token_hash(&self, hash: [u8; 32]) {
        *self.admin_token.write().unwrap_or_else(|e| e.into_inner()) = Some(hash);
    }

    /// The admin token's digest, if one is set.
    pub fn admin_token_hash(&self) -> Option<[u8; 32]> {
        *self.admin_token.read().unwrap_or_else(|e| e.into_inner())
    }
}
