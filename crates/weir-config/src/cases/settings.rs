use crate::test_support::*;

/// The minimal pipeline with `table` (a `[settings]` or `[checkpoint]`
/// table) before its source.
fn with_table(table: &str) -> String {
    patched(
        &minimal(),
        "\n[[sources]]",
        &format!("\n{table}\n\n[[sources]]"),
    )
}

/// A file source (replayable) instead of the memory source.
fn replayable(text: &str) -> String {
    patched(
        text,
        "type = \"memory\"",
        "type = \"file\"\npath = \"in.jsonl\"",
    )
}

#[test]
fn settings_problems() {
    check(&[
        case(
            "unknown key",
            with_table("[settings]\nbatch_row = 5"),
            "settings.batch_row",
            Some("batch_row ="),
            "unknown field `batch_row`, expected one of `batch_rows`, `shards`, `key_groups`",
        ),
        case(
            "wrong type",
            with_table("[settings]\nbatch_rows = \"many\""),
            "settings.batch_rows",
            Some("batch_rows ="),
            "invalid type: string \"many\", expected i64",
        ),
        case(
            "batch_rows out of range",
            with_table("[settings]\nbatch_rows = 0"),
            "settings.batch_rows",
            Some("batch_rows ="),
            "must be between 1 and 1000000, got 0",
        ),
        case(
            "key_groups out of range",
            with_table("[settings]\nkey_groups = 40000"),
            "settings.key_groups",
            Some("key_groups ="),
            "must be between 1 and 32768, got 40000",
        ),
        case(
            "more shards than key groups",
            with_table("[settings]\nkey_groups = 4\nshards = 5"),
            "settings.shards",
            Some("shards ="),
            "must be between 0 (one per core) and key_groups (4), got 5",
        ),
        case(
            "negative shards",
            with_table("[settings]\nshards = -1"),
            "settings.shards",
            Some("shards ="),
            "must be between 0 (one per core) and key_groups (128), got -1",
        ),
    ]);
}

#[test]
fn checkpoint_problems() {
    check(&[
        case(
            "no directory",
            replayable(&with_table("[checkpoint]\nkeep = 2")),
            "checkpoint",
            Some("keep = 2"),
            "missing field `dir`",
        ),
        case(
            "zero interval",
            replayable(&with_table("[checkpoint]\ndir = \"cp\"\ninterval = \"0ms\"")),
            "checkpoint.interval",
            Some("interval ="),
            "must be at least 1ms",
        ),
        case(
            "interval that is no duration",
            replayable(&with_table("[checkpoint]\ndir = \"cp\"\ninterval = \"soon\"")),
            "checkpoint.interval",
            Some("interval ="),
            "duration \"soon\" must start with a whole number, e.g. \"60s\"",
        ),
        case(
            "keep out of range",
            replayable(&with_table("[checkpoint]\ndir = \"cp\"\nkeep = 0")),
            "checkpoint.keep",
            Some("keep ="),
            "must be between 1 and 1000, got 0",
        ),
        case(
            "source that cannot replay",
            with_table("[checkpoint]\ndir = \"cp\""),
            "checkpoint",
            Some("dir ="),
            "checkpoints need a source that can be replayed from a position (file, log, nats, mqtt or kafka)",
        ),
    ]);
}

#[test]
fn valid_settings_and_checkpoint_are_read() {
    let text = replayable(&with_table(
        "[settings]\nbatch_rows = 10\nshards = 2\nkey_groups = 8\n\n[checkpoint]\ndir = \"cp\"\ninterval = \"2s\"\nkeep = 5",
    ));
    let p = parse(&text).expect("valid");
    assert_eq!(
        p.settings,
        crate::Settings {
            batch_rows: 10,
            shards: 2,
            key_groups: 8
        }
    );
    assert_eq!(
        p.checkpoint,
        Some(crate::CheckpointSettings {
            dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cp"),
            interval_ms: 2000,
            keep: 5,
        })
    );
}
