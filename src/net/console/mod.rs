//! The admin console (SPEC "Admin console").
//!
//! [`guard`] decides who may replay or drop.

mod guard;

pub(crate) use guard::authorize;
pub use guard::TokenFile;
