//! The `[settings]` and `[checkpoint]` tables.

use std::path::Path;

use toml::Spanned;

use crate::check::{resolve, Checker};
use crate::spec::{CheckpointSpec, SettingsSpec};
use crate::{CheckpointSettings, Settings, Source, SourceKind};

/// The engine settings; defaults for what is absent or wrong (a wrong value
/// is reported).
pub(super) fn check_settings(
    c: &mut Checker<'_>,
    table: Option<&Spanned<toml::Table>>,
) -> Settings {
    let mut settings = Settings::default();
    let Some(table) = table else { return settings };
    let Some(spec) = c.typed::<SettingsSpec>("settings", table) else {
        return settings;
    };
    let span = table.span();
    if let Some(n) = spec.batch_rows {
        if !(1..=1_000_000).contains(&n) {
            c.at(
                "settings.batch_rows".into(),
                &span,
                "batch_rows",
                format!("must be between 1 and 1000000, got {n}"),
            );
        } else {
            settings.batch_rows = n as usize;
        }
    }
    if let Some(n) = spec.key_groups {
        if !(1..=32_768).contains(&n) {
            c.at(
                "settings.key_groups".into(),
                &span,
                "key_groups",
                format!("must be between 1 and 32768, got {n}"),
            );
        } else {
            settings.key_groups = n as u32;
        }
    }
    if let Some(n) = spec.tasks {
        if n < 1 || n > i64::from(settings.key_groups) {
            c.at(
                "settings.tasks".into(),
                &span,
                "tasks",
                format!(
                    "must be between 1 and key_groups ({}), got {n}",
                    settings.key_groups
                ),
            );
        } else {
            settings.tasks = n as u32;
        }
    }
    if let Some(n) = spec.shards {
        if n < 0 || n > settings.key_groups as i64 {
            c.at(
                "settings.shards".into(),
                &span,
                "shards",
                format!(
                    "must be between 0 (one per core) and key_groups ({}), got {n}",
                    settings.key_groups
                ),
            );
        } else {
            settings.shards = n as usize;
        }
    }
    settings
}

/// The checkpoint settings; the source (when valid) must be replayable.
pub(super) fn check_checkpoint(
    c: &mut Checker<'_>,
    table: &Spanned<toml::Table>,
    base_dir: &Path,
    source: Option<&Source>,
) -> Option<CheckpointSettings> {
    let spec = c.typed::<CheckpointSpec>("checkpoint", table)?;
    let span = table.span();
    let interval_ms = match spec.interval.as_deref() {
        None => 1000,
        Some(d) => match crate::parse_duration_ms(d) {
            Ok(ms) if ms >= 1 => ms as u64,
            Ok(_) => {
                c.at(
                    "checkpoint.interval".into(),
                    &span,
                    "interval",
                    "must be at least 1ms",
                );
                return None;
            }
            Err(e) => {
                c.at("checkpoint.interval".into(), &span, "interval", e);
                return None;
            }
        },
    };
    let keep = spec.keep.unwrap_or(3);
    if !(1..=1000).contains(&keep) {
        c.at(
            "checkpoint.keep".into(),
            &span,
            "keep",
            format!("must be between 1 and 1000, got {keep}"),
        );
        return None;
    }
    if let Some(source) = source {
        if !matches!(
            source.kind,
            SourceKind::File { .. } | SourceKind::Log { .. }
        ) && !source.kind.is_connector()
        {
            c.at(
                "checkpoint".into(),
                &span,
                "dir",
                "checkpoints need a source that can be replayed from a position (file, log, nats, mqtt or kafka)",
            );
            return None;
        }
    }
    Some(CheckpointSettings {
        dir: resolve(base_dir, &spec.dir),
        interval_ms,
        keep: keep as usize,
    })
}

#[cfg(test)]
mod tests {
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
                "unknown field `batch_row`, expected one of `batch_rows`, `shards`, `key_groups`, `tasks`",
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
                key_groups: 8,
                tasks: 1,
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
}
