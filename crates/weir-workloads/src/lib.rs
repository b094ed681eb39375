//! Reference workloads for weir's tests and benchmarks.
//!
//! This crate is tooling, not engine code. It reproduces, bit for bit, the
//! executable workload definitions in `shared/workloads/` (for example
//! `fraud_v1_reference.py`) so that Rust tests and benchmarks can:
//!
//! * generate the exact input streams (as [`fraud_v1::Transaction`] values,
//!   JSON lines or length-delimited Protobuf) without shelling out to Python;
//! * compute the expected results (alert counts, checksums and the individual
//!   alerts) with the same semantics as the reference scorer, to check an
//!   engine's output exactly.
//!
//! It deliberately has no dependencies so that it compiles instantly and can
//! be used from any crate's tests or benches.
#![deny(missing_docs)]

pub mod fraud_v1;
