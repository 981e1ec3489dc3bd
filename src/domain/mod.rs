//! The domain: Bitrix24's notification rules as pure functions over values. Nothing in here
//! performs I/O or knows about HTTP or SQL.

pub mod attach;
pub mod bbcode;
pub mod directory;
pub mod inbox;
pub mod notify;
