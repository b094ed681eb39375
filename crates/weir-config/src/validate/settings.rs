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
    let (dir, url) = match (&spec.dir, &spec.url) {
        (Some(dir), None) => (resolve(base_dir, dir), None),
        (None, Some(url)) => match check_url(url) {
            Ok(()) => (std::path::PathBuf::new(), Some(url.clone())),
            Err(e) => {
                c.at("checkpoint.url".into(), &span, "url", e);
                return None;
            }
        },
        (Some(_), Some(_)) => {
            c.at(
                "checkpoint.url".into(),
                &span,
                "url",
                "`dir` and `url` are mutually exclusive: give a directory or an object-store URL, not both",
            );
            return None;
        }
        (None, None) => {
            c.at(
                "checkpoint".into(),
                &span,
                "",
                "needs `dir` (a directory) or `url` (an object-store URL such as \"s3://bucket/prefix\")",
            );
            return None;
        }
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
        dir,
        url,
        interval_ms,
        keep: keep as usize,
    })
}

/// The URL schemes `object_store` (and the directory store) understand.
const URL_SCHEMES: &[&str] = &[
    "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "https", "file", "memory",
];

/// Checks the form of a checkpoint store URL; whether this build can reach
/// it (the `object-store` feature) and the credentials are checked when the
/// store opens.
fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?} is not a URL; expected e.g. \"s3://bucket/prefix\" (use `dir` for a directory)"
        ));
    };
    if !URL_SCHEMES.contains(&scheme) {
        return Err(format!(
            "unsupported scheme {scheme:?}; expected one of {}",
            URL_SCHEMES.join(", ")
        ));
    }
    if scheme == "file" && !rest.starts_with('/') {
        return Err(
            "a file URL needs an absolute path, e.g. \"file:///var/lib/weir/checkpoints\"".into(),
        );
    }
    if scheme != "file" && scheme != "memory" && rest.split('/').next().unwrap_or("").is_empty() {
        return Err(format!("{url:?} names no bucket or container"));
    }
    Ok(())
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
                "no directory and no url",
                replayable(&with_table("[checkpoint]\nkeep = 2")),
                "checkpoint",
                Some("[checkpoint]"),
                "needs `dir` (a directory) or `url` (an object-store URL such as \"s3://bucket/prefix\")",
            ),
            case(
                "both a directory and a url",
                replayable(&with_table(
                    "[checkpoint]\ndir = \"cp\"\nurl = \"s3://bucket/cp\"",
                )),
                "checkpoint.url",
                Some("url ="),
                "`dir` and `url` are mutually exclusive: give a directory or an object-store URL, not both",
            ),
            case(
                "a url that is no url",
                replayable(&with_table("[checkpoint]\nurl = \"bucket/cp\"")),
                "checkpoint.url",
                Some("url ="),
                "\"bucket/cp\" is not a URL; expected e.g. \"s3://bucket/prefix\" (use `dir` for a directory)",
            ),
            case(
                "an unknown scheme",
                replayable(&with_table("[checkpoint]\nurl = \"ftp://host/cp\"")),
                "checkpoint.url",
                Some("url ="),
                "unsupported scheme \"ftp\"; expected one of s3, s3a, gs, az, adl, azure, abfs, abfss, https, file, memory",
            ),
            case(
                "a relative file url",
                replayable(&with_table("[checkpoint]\nurl = \"file://cp\"")),
                "checkpoint.url",
                Some("url ="),
                "a file URL needs an absolute path, e.g. \"file:///var/lib/weir/checkpoints\"",
            ),
            case(
                "an s3 url without a bucket",
                replayable(&with_table("[checkpoint]\nurl = \"s3:///cp\"")),
                "checkpoint.url",
                Some("url ="),
                "\"s3:///cp\" names no bucket or container",
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
                url: None,
                interval_ms: 2000,
                keep: 5,
            })
        );
    }

    #[test]
    fn a_checkpoint_url_is_read() {
        let text = replayable(&with_table(
            "[checkpoint]\nurl = \"s3://weir-state/fraud/task-3\"\nkeep = 2",
        ));
        let p = parse(&text).expect("valid");
        assert_eq!(
            p.checkpoint,
            Some(crate::CheckpointSettings {
                dir: std::path::PathBuf::new(),
                url: Some("s3://weir-state/fraud/task-3".into()),
                interval_ms: 1000,
                keep: 2,
            })
        );
    }
}
