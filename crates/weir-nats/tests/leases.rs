//! Task ownership in a JetStream key-value bucket, against a private
//! nats-server (the machine's version, 2.9): one owner per task, a higher
//! epoch for each new owner, a lease that is not renewed expires, and the
//! owner that let it expire learns it lost the task.

mod common;

use std::time::{Duration, Instant};

use common::*;
use weir_nats::NatsLeases;
use weir_tasks::{Lease, Ownership};

const TTL: Duration = Duration::from_millis(900);

#[test]
fn a_task_has_one_owner_and_an_expired_lease_moves_with_a_higher_epoch() {
    let dir = tempfile::tempdir().expect("dir");
    let server = private_server(dir.path());
    let source = source_config(&server_url(server.port()), "unused", "c", None);
    let mut a = NatsLeases::join(&source, "p1", "a", TTL).expect("a joins");
    let mut b = NatsLeases::join(&source, "p1", "b", TTL).expect("b joins");
    let ids = |l: &mut NatsLeases| -> Vec<String> {
        l.members()
            .expect("members")
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(ids(&mut a), vec!["a", "b"]);

    let mut lease = a.try_acquire(2).expect("take").expect("free");
    assert_eq!(lease.task(), 2);
    assert!(b.try_acquire(2).expect("take").is_none(), "two owners");
    assert_eq!(b.holder(2).as_deref(), Some("a"));
    // Renewed well within its time, it stays a's.
    for _ in 0..6 {
        std::thread::sleep(TTL / 3);
        assert!(a.renew(&mut lease).expect("renew"));
        assert!(b.try_acquire(2).expect("take").is_none());
    }
    // Released, b takes it at once, with a higher epoch.
    let first = lease.epoch();
    a.release(lease);
    let mut taken = b.try_acquire(2).expect("take").expect("released");
    assert!(taken.epoch() > first);
    // b stops renewing (as a killed member does): the lease expires and a
    // takes it again; b then finds out it lost the task.
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        if let Some(l) = a.try_acquire(2).expect("take") {
            break l;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(again.epoch() > taken.epoch());
    assert!(
        !b.renew(&mut taken).expect("renew"),
        "b kept a lease a owns"
    );
    // A member that stops announcing itself leaves the list.
    drop(b);
    assert_eq!(ids(&mut a), vec!["a"]);
}
