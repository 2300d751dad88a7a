//! Sockets: the accept loop shared by the public and the admin listener
//! (connection permits, handshake timeout, drain), TLS, and the admin
//! endpoints with their console.

pub(crate) mod admin;
pub(crate) mod console;
pub(crate) mod server;
pub(crate) mod tls;
