//! What the daemon tells its operators: metrics and the health endpoints ([`metrics`]), and
//! the audit and log lines ([`audit`]). Everything else depends on this module, never the
//! reverse.

pub mod audit;
pub mod metrics;
