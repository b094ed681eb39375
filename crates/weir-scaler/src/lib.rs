//! weir's autoscaler: decides how many workers a pipeline needs from the
//! load it observes, and has that many run.
//!
//! Kept apart from the engine (it links no engine code: the series names
//! it reads are handed in) because it runs apart from the workers: one
//! scaler per pipeline, beside KEDA in a cluster or beside local `weir
//! run` processes on one machine.
//!
//! - [`decide`]: the decision rule, pure and deterministic (reactive
//!   DS2-style need, predictive need from [`forecast`], the larger, with a
//!   scale-down stabilisation window);
//! - [`observe`]: the load, from the workers' Prometheus `/metrics`;
//! - [`keda`]: KEDA's external scaler gRPC protocol ([`proto`]);
//! - [`backend`]: what acts on a decision (KEDA, or local processes);
//! - [`metrics`]: the scaler's series and decision log;
//! - [`sim`]: a trace-driven simulation against static provisioning;
//! - [`cli`] and [`run`]: `weir scaler` and `weir scaler simulate`.

pub mod backend;
pub mod cli;
pub mod decide;
pub mod forecast;
mod http;
pub mod keda;
pub mod metrics;
pub mod observe;
pub mod run;
pub mod sim;

/// The code generated from `proto/externalscaler.proto` (KEDA's protocol).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}
