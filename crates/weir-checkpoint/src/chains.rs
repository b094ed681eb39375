//! The write side of delta parts: what the store knows of committed
//! checkpoints' headers, and the checks a new checkpoint's bases must pass
//! before anything is written (so a chain never points at a checkpoint
//! that is missing, pruned, damaged or of another pipeline version).

use std::collections::{BTreeMap, BTreeSet};

use crate::format::{Header, Manifest};
use crate::{Checkpoint, CheckpointError, CheckpointStore};

/// What a write needs from a committed checkpoint's header.
#[derive(Debug)]
pub(crate) struct Known {
    pub(crate) fingerprint: String,
    /// Every part, with its base when it is a delta.
    pub(crate) parts: BTreeMap<String, Option<u64>>,
    /// Every checkpoint its chains pass through.
    pub(crate) reach: Vec<u64>,
}

impl From<Header> for Known {
    fn from(h: Header) -> Self {
        Known {
            fingerprint: h.fingerprint,
            parts: h.parts.into_iter().map(|p| (p.name, p.base)).collect(),
            reach: h.reach,
        }
    }
}

impl CheckpointStore {
    /// Makes sure `known` holds checkpoint `id`'s header; `Err` (a
    /// reason) when it cannot be read.
    pub(crate) fn load_known(
        &self,
        known: &mut BTreeMap<u64, Known>,
        id: u64,
    ) -> Result<Result<(), String>, CheckpointError> {
        if known.contains_key(&id) {
            return Ok(Ok(()));
        }
        Ok(match self.header_of(id)? {
            None => Err("file is missing".into()),
            Some((_, Err(reason))) => Err(reason),
            Some((_, Ok(header))) => {
                known.insert(id, header.into());
                Ok(())
            }
        })
    }

    /// Checks `cp`'s delta parts against the store (each base older,
    /// listed or retained in `manifest`, readable, of the same fingerprint
    /// and holding the part, and so on down its chain) and returns the
    /// checkpoint's reach: every id its chains pass through, increasing.
    pub(crate) fn check_bases(
        &self,
        cp: &Checkpoint,
        manifest: &Manifest,
        known: &mut BTreeMap<u64, Known>,
    ) -> Result<Vec<u64>, CheckpointError> {
        let mut reach = BTreeSet::new();
        for (part, &base) in &cp.bases {
            let invalid = |reason: String| CheckpointError::InvalidBase {
                id: cp.id,
                part: part.clone(),
                base,
                dir: self.location.clone(),
                reason,
            };
            if !cp.parts.contains_key(part) {
                return Err(invalid(
                    "is named but the checkpoint holds no such part".into(),
                ));
            }
            if base >= cp.id {
                return Err(invalid("is not older than the checkpoint".into()));
            }
            if !manifest.holds(base) {
                return Err(invalid(format!(
                    "the store no longer keeps or never committed (it lists {:?} and retains {:?})",
                    manifest.ids, manifest.retained
                )));
            }
            let mut at = base;
            loop {
                let through = if at == base {
                    String::new()
                } else {
                    format!("chains to checkpoint {at}, which ")
                };
                if let Err(reason) = self.load_known(known, at)? {
                    return Err(invalid(format!("{through}cannot be read: {reason}")));
                }
                let k = &known[&at];
                if k.fingerprint != cp.fingerprint {
                    return Err(invalid(format!(
                        "{through}was written by pipeline fingerprint {:?}, not {:?}",
                        k.fingerprint, cp.fingerprint
                    )));
                }
                let Some(&next) = k.parts.get(part) else {
                    return Err(invalid(format!("{through}does not hold that part")));
                };
                reach.insert(at);
                match next {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
        Ok(reach.into_iter().collect())
    }
}
