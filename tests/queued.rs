//! Queued delivery on the embedded SQLite store (SPEC, second part,
//! "Queued delivery"), over real sockets: 200 `queued` once stored, then
//! delivered by hookgate with `X-Webhook-Id/-Attempt/-Received-At`, retried
//! while the app is down, kept over a restart, and 503
//! `store_unavailable` while the store cannot be opened.
//!
//! The scenarios live in `queued_suite` and run on PostgreSQL too
//! (`tests/queued_postgres.rs`).

mod queued_suite;
mod support;

queued_suite::scenarios!(queued_suite::Engine::Sqlite);
