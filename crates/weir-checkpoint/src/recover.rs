//! Rebuilding a lost manifest from the checkpoint files.
//!
//! The manifest is the store's commit record. If it is deleted while
//! checkpoint files remain, treating the store as empty would restart the
//! pipeline from the beginning and then prune every file as unlisted. A
//! checkpoint file only ever appears under its final name after it was
//! written completely and fsynced, so a file that verifies is a complete
//! checkpoint: the store lists those again, and keeps (without listing)
//! the ones that do not verify, so that nothing is lost that a person may
//! want to look at.
//!
//! The rebuilt manifest retains (see [`format`](crate::format)) every
//! checkpoint that a listed checkpoint's chains reach, as the headers of
//! the listed files name them, and every file that does not verify; so
//! `open`'s pruning right after deletes no file at all.

use std::collections::BTreeSet;

use crate::backend::{Swap, Version};
use crate::format::{self, Manifest};
use crate::{checkpoint_file_name, CheckpointError, CheckpointStore};

/// What [`CheckpointStore::open`] found and did when the manifest was
/// missing but checkpoint files were present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecovery {
    /// The ids the rebuilt manifest lists: every checkpoint file that
    /// verified, oldest first.
    pub listed: Vec<u64>,
    /// Checkpoint files that did not verify, oldest first, with the reason:
    /// kept on disk, not listed.
    pub unverified: Vec<(u64, String)>,
}

impl CheckpointStore {
    /// Called by `open` when there is no manifest: lists the checkpoint
    /// files that verify in a new manifest (committed like a write's), or
    /// does nothing when there are no checkpoint files (a new store).
    #[allow(clippy::type_complexity)]
    pub(crate) fn recover_manifest(
        &self,
    ) -> Result<(Manifest, Option<Version>, Option<ManifestRecovery>), CheckpointError> {
        let mut ids = self.checkpoint_files()?;
        if ids.is_empty() {
            return Ok((Manifest::new(Vec::new(), 0, Vec::new()), None, None));
        }
        ids.sort_unstable();
        let mut listed = Vec::new();
        let mut unverified = Vec::new();
        // Kept: what the listed chains reach, and what does not verify.
        let mut kept = BTreeSet::new();
        for id in ids {
            let path = self.checkpoint_path(id);
            let verdict = match self.backend.get(&checkpoint_file_name(id))? {
                Some((bytes, _)) => format::decode_with_reach(&bytes, Some(id)),
                None => Err("file vanished while the manifest was rebuilt".into()),
            };
            match verdict {
                Ok((_, reach)) => {
                    listed.push(id);
                    kept.extend(reach);
                }
                Err(reason) => {
                    tracing::warn!(
                        id,
                        path = %path.display(),
                        %reason,
                        "checkpoint file does not verify; keeping it, not listing it"
                    );
                    kept.insert(id);
                    unverified.push((id, reason));
                }
            }
        }
        let retained = kept
            .into_iter()
            .filter(|id| listed.binary_search(id).is_err())
            .collect();
        let manifest = Manifest::new(listed.clone(), 0, retained);
        let version = match self.backend.swap_manifest(&manifest.encode(), None, None)? {
            Swap::Done(v) => v,
            Swap::Conflict => {
                return Err(self.fenced(
                    "another writer created a manifest while this one rebuilt the lost one".into(),
                ))
            }
        };
        tracing::warn!(
            store = %self.describe(),
            listed = ?listed,
            unverified = unverified.len(),
            "the checkpoint manifest was missing; rebuilt it from the checkpoint files that verify"
        );
        Ok((
            manifest,
            Some(version),
            Some(ManifestRecovery { listed, unverified }),
        ))
    }

    /// `skipped` (newest first) with the files that did not verify when the
    /// manifest was rebuilt and are newer than `restored` added, so a run
    /// reports them like damaged listed checkpoints.
    pub(crate) fn with_unverified(
        &self,
        mut skipped: Vec<(u64, String)>,
        restored: u64,
    ) -> Vec<(u64, String)> {
        let Some(recovery) = &self.recovery else {
            return skipped;
        };
        for (id, reason) in &recovery.unverified {
            if *id > restored && !skipped.iter().any(|(s, _)| s == id) {
                skipped.push((
                    *id,
                    format!("{reason} (left out of the manifest rebuilt at open)"),
                ));
            }
        }
        skipped.sort_by_key(|s| std::cmp::Reverse(s.0));
        skipped
    }
}
