//! How many tasks each member should hold.

/// The number of tasks each of `members` (sorted ids) should hold so that
/// the `tasks` are shared as evenly as possible: `tasks / n` each, and one
/// more for the first `tasks % n` members. Every member computes the same
/// targets from the same list, so no member takes a task another is
/// meant to keep; the targets add up to `tasks`.
pub fn targets<'a>(tasks: u32, members: &[&'a str]) -> Vec<(&'a str, u32)> {
    let mut sorted: Vec<&str> = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len() as u32;
    if n == 0 {
        return Vec::new();
    }
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, m)| (m, tasks / n + u32::from((i as u32) < tasks % n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::targets;

    #[test]
    fn four_tasks_over_three_members() {
        assert_eq!(
            targets(4, &["c", "a", "b"]),
            vec![("a", 2), ("b", 1), ("c", 1)]
        );
        assert_eq!(
            targets(2, &["a", "b", "c"]),
            vec![("a", 1), ("b", 1), ("c", 0)]
        );
        assert!(targets(3, &[]).is_empty());
    }

    proptest! {
        #[test]
        fn targets_add_up_and_differ_by_at_most_one(
            tasks in 0u32..500,
            ids in proptest::collection::btree_set("[a-z]{1,4}", 1..20),
        ) {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let t = targets(tasks, &ids);
            prop_assert_eq!(t.len(), ids.len());
            prop_assert_eq!(t.iter().map(|(_, n)| n).sum::<u32>(), tasks);
            let most = t.iter().map(|(_, n)| *n).max().unwrap();
            let least = t.iter().map(|(_, n)| *n).min().unwrap();
            prop_assert!(most - least <= 1);
            // The same answer whatever order the list came in.
            let mut reversed = ids.clone();
            reversed.reverse();
            prop_assert_eq!(targets(tasks, &reversed), t);
        }
    }
}
