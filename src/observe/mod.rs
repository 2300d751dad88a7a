//! What an operator sees: Prometheus metrics and the log.

pub(crate) mod metrics;
pub(crate) mod telemetry;
