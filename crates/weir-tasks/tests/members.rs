//! Members in threads of this process share tasks through real lock files:
//! a joiner gets its share, a leaver's tasks move, and no task ever runs
//! twice at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_tasks::{LocalLeases, Member, MemberOptions, TaskEnd, TaskRunner};

/// Which member runs each task, and every task start (task, epoch).
#[derive(Default)]
struct Board {
    running: BTreeMap<u32, String>,
    starts: Vec<(u32, u64)>,
    overlaps: usize,
}

struct Runner {
    id: String,
    board: Arc<Mutex<Board>>,
}

impl TaskRunner for Runner {
    type Running = u32;
    fn start(&mut self, task: u32, epoch: u64) -> Result<u32, String> {
        let mut b = self.board.lock().unwrap();
        if b.running.insert(task, self.id.clone()).is_some() {
            b.overlaps += 1;
        }
        b.starts.push((task, epoch));
        Ok(task)
    }
    fn stop(&mut self, task: u32) -> TaskEnd {
        self.board.lock().unwrap().running.remove(&task);
        TaskEnd::Done
    }
    fn ended(&mut self, _: &mut u32) -> Option<TaskEnd> {
        None
    }
}

fn spawn(
    dir: &std::path::Path,
    id: &str,
    board: &Arc<Mutex<Board>>,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let leases = LocalLeases::join(dir, id).expect("join");
    let member = Member::new(
        leases,
        Runner {
            id: id.to_string(),
            board: board.clone(),
        },
        MemberOptions {
            tasks: 4,
            poll: Duration::from_millis(10),
            stop: {
                let stop = stop.clone();
                Arc::new(move || stop.load(Ordering::Acquire))
            },
        },
    );
    let handle = std::thread::spawn(move || member.run().expect("member"));
    (stop, handle)
}

fn counts(board: &Arc<Mutex<Board>>) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for id in board.lock().unwrap().running.values() {
        *c.entry(id.clone()).or_insert(0) += 1;
    }
    c
}

fn wait_for(board: &Arc<Mutex<Board>>, want: &[(&str, usize)]) {
    let want: BTreeMap<String, usize> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts(board) != want {
        assert!(
            Instant::now() < deadline,
            "tasks per member stayed {:?}, want {want:?}",
            counts(board)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_joiner_gets_its_share_and_a_leavers_tasks_move() {
    let dir = tempfile::tempdir().expect("dir");
    let board = Arc::new(Mutex::new(Board::default()));
    let (stop_a, a) = spawn(dir.path(), "a", &board);
    wait_for(&board, &[("a", 4)]);
    let (stop_b, b) = spawn(dir.path(), "b", &board);
    wait_for(&board, &[("a", 2), ("b", 2)]);
    let (stop_c, c) = spawn(dir.path(), "c", &board);
    wait_for(&board, &[("a", 2), ("b", 1), ("c", 1)]);
    stop_a.store(true, Ordering::Release);
    a.join().expect("a");
    wait_for(&board, &[("b", 2), ("c", 2)]);
    stop_b.store(true, Ordering::Release);
    stop_c.store(true, Ordering::Release);
    b.join().expect("b");
    c.join().expect("c");
    let board = board.lock().unwrap();
    assert_eq!(board.overlaps, 0, "a task ran in two members at once");
    assert!(board.running.is_empty());
    // Every start of a task took a higher epoch than the one before.
    let mut last = BTreeMap::new();
    for &(task, epoch) in &board.starts {
        let before = last.insert(task, epoch).unwrap_or(0);
        assert!(epoch > before, "task {task}: epoch {epoch} after {before}");
    }
}
