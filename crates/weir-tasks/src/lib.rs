//! Sharing a pipeline's tasks among `weir run` processes on one machine.
//!
//! A pipeline with `settings.tasks = N` is N pipelines of its own (one per
//! range of key groups and partition, see `weir_config::Pipeline::for_task`).
//! Any number of processes given the pipeline share them: each process is a
//! *member*, each task is held by at most one member at a time, and members
//! move tasks among themselves when one joins, leaves or dies. Nothing here
//! is a consensus protocol of its own: exclusive ownership is an OS file
//! lock ([`LocalLeases`], `flock` through [`std::fs::File::try_lock`]),
//! which the kernel releases when its process ends, however it ends — a
//! `kill -9` frees a task at once, with no lease to wait out.
//!
//! * [`LocalLeases`]: the lock files (members, tasks) and each task's
//!   fencing epoch, raised by every new owner.
//! * [`targets`]: how many tasks each member should hold, the same answer
//!   in every member for the same member list.
//! * [`Member`]: the loop a process runs: take free tasks up to its target,
//!   hand back the ones above it, notice tasks that ended.

#![deny(missing_docs)]

mod balance;
mod leases;
mod member;

pub use balance::targets;
pub use leases::{Lease, LeaseError, LocalLeases, MemberInfo, Ownership, TaskLease};
pub use member::{Member, MemberError, MemberOptions, TaskEnd, TaskRunner};
