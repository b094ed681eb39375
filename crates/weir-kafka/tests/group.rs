//! The consumer group that shares a split pipeline's tasks, on librdkafka's
//! mock cluster: two members in this process, each with its own consumer.
//! Under cooperative rebalancing a joining member takes only the tasks it
//! is given, the member that had them stops exactly those first (inside
//! the revocation), and every new assignment comes with a higher group
//! generation (the tasks' fencing epoch).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_kafka::{Assigned, KafkaGroup};

type Events = Arc<Mutex<Vec<String>>>;

fn member(config: &weir_config::KafkaSource, id: &str, events: &Events) -> KafkaGroup {
    let log = events.clone();
    let who = id.to_string();
    KafkaGroup::join(
        "tx",
        config,
        4,
        id,
        Box::new(move |tasks: &[u32]| {
            // A task's stop takes a while (its last checkpoint): the group
            // must wait for it.
            std::thread::sleep(Duration::from_millis(200));
            log.lock().unwrap().push(format!("{who} stopped {tasks:?}"));
        }),
    )
    .expect("join")
}

#[test]
fn a_joining_member_takes_only_what_it_is_given_after_the_owner_stopped_it() {
    let cluster = common::cluster_with_topic("tx", 4);
    let brokers = cluster.bootstrap_servers();
    let mut config = common::source_config(&brokers, "tx", "g");
    // Longer than the mock broker's initial rebalance delay (3 s).
    config
        .properties
        .push(("session.timeout.ms".into(), "6000".into()));
    let events: Events = Arc::default();

    let a = member(&config, "a", &events);
    let mut a_tasks: Vec<Assigned> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a_tasks.len() < 4 {
        assert!(Instant::now() < deadline, "a got {a_tasks:?}");
        a_tasks.extend(a.poll(Duration::from_millis(50)));
    }
    let mut got: Vec<u32> = a_tasks.iter().map(|t| t.task).collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3]);
    let first = a_tasks[0].epoch;
    assert!(first >= 1 && a_tasks.iter().all(|t| t.epoch == first));
    assert!((0..4).all(|t| a.owns(t)));

    let b = member(&config, "b", &events);
    let mut b_tasks: Vec<Assigned> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b_tasks.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "b got {b_tasks:?}; {:?}",
            events.lock().unwrap()
        );
        a_tasks.extend(a.poll(Duration::from_millis(20)));
        b_tasks.extend(b.poll(Duration::from_millis(20)));
    }
    // b has two tasks, at a newer generation; a gave up exactly those two,
    // before b got them, and kept the others without a restart.
    let mut moved: Vec<u32> = b_tasks.iter().map(|t| t.task).collect();
    moved.sort_unstable();
    assert_eq!(moved.len(), 2);
    assert!(b_tasks.iter().all(|t| t.epoch > first), "{b_tasks:?}");
    assert_eq!(a_tasks.len(), 4, "a was given nothing again: {a_tasks:?}");
    assert_eq!(
        *events.lock().unwrap(),
        vec![format!("a stopped {moved:?}")]
    );
    for t in 0..4 {
        assert_eq!(a.owns(t), !moved.contains(&t), "task {t}");
        assert_eq!(b.owns(t), moved.contains(&t), "task {t}");
    }

    // b leaves: its tasks go back to a, at a newer generation still.
    let b_epoch = b_tasks[0].epoch;
    b.leave();
    let mut back: Vec<Assigned> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while back.len() < 2 {
        assert!(Instant::now() < deadline, "a got back {back:?}");
        back.extend(a.poll(Duration::from_millis(50)));
    }
    let mut returned: Vec<u32> = back.iter().map(|t| t.task).collect();
    returned.sort_unstable();
    assert_eq!(returned, moved);
    assert!(back.iter().all(|t| t.epoch > b_epoch), "{back:?}");
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            format!("a stopped {moved:?}"),
            format!("b stopped {moved:?}")
        ]
    );
}

#[test]
fn a_topic_whose_partitions_differ_from_the_tasks_is_refused() {
    let cluster = common::cluster_with_topic("tx", 3);
    let config = common::source_config(&cluster.bootstrap_servers(), "tx", "g");
    let err = KafkaGroup::join("tx", &config, 4, "a", Box::new(|_: &[u32]| {}))
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "kafka topic \"tx\" has 3 partitions but settings.tasks is 4: task N reads partition N, so they must be equal"
    );
}
