//! Restoring: the newest committed checkpoint that verifies, with every
//! delta part's chain back to its full part checked and gathered.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::{checkpoint_file_name, format, Checkpoint, CheckpointError, CheckpointStore};

/// The result of [`CheckpointStore::latest_valid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The newest checkpoint that verified.
    pub checkpoint: Checkpoint,
    /// Its file.
    pub path: PathBuf,
    /// Newer checkpoints that failed verification, or whose chains did
    /// not (a base missing, damaged, of another fingerprint or without the
    /// part): `(id, reason)`, newest first.
    pub skipped: Vec<(u64, String)>,
    /// For each delta part of `checkpoint` (each name in its
    /// [`bases`](Checkpoint::bases)), the earlier links of the part's
    /// chain, oldest first: `(id, data)` of the full part the chain starts
    /// from, then the deltas of later checkpoints, up to and including the
    /// part at the delta's base. The restored checkpoint's own delta stays
    /// in `checkpoint.parts` and is not repeated here; full parts have no
    /// entry, so this is empty when the checkpoint has no delta parts.
    pub base_links: BTreeMap<String, Vec<(u64, Vec<u8>)>>,
}

impl Restored {
    /// The whole chain of part `name`, oldest first: `(id, full data)`,
    /// then `(id, delta)` for each later delta up to the restored
    /// checkpoint's own; one link for a full part. `None` when the
    /// checkpoint has no part `name`.
    pub fn chain(&self, name: &str) -> Option<Vec<(u64, &[u8])>> {
        let own = self.checkpoint.parts.get(name)?;
        let mut links: Vec<(u64, &[u8])> = self
            .base_links
            .get(name)
            .map(|l| l.iter().map(|(id, d)| (*id, d.as_slice())).collect())
            .unwrap_or_default();
        links.push((self.checkpoint.id, own.as_slice()));
        Some(links)
    }

    /// Every part's chain (as [`chain`](Self::chain)), moving the data out.
    pub fn into_chains(self) -> BTreeMap<String, Vec<(u64, Vec<u8>)>> {
        let id = self.checkpoint.id;
        let mut base_links = self.base_links;
        self.checkpoint
            .parts
            .into_iter()
            .map(|(name, data)| {
                let mut links = base_links.remove(&name).unwrap_or_default();
                links.push((id, data));
                (name, links)
            })
            .collect()
    }
}

/// Checkpoints `latest_valid` has read: decoded with their reach, or why
/// they cannot be used.
type Loaded = BTreeMap<u64, Result<(Checkpoint, Vec<u64>), String>>;

impl CheckpointStore {
    /// The newest committed checkpoint that verifies, with its chains, if
    /// any.
    ///
    /// A checkpoint is valid when its file verifies and so does every
    /// checkpoint its delta parts' chains pass through, each written by the
    /// same pipeline fingerprint and holding the part (full at the chain's
    /// start, a delta otherwise); [`Restored::base_links`] then holds the
    /// earlier links of each chain. Newer checkpoints that fail (or are
    /// missing, or whose chains do) are listed in [`Restored::skipped`]
    /// with the reason, naming the base, and logged. If the newest
    /// checkpoint whose own file verifies has a fingerprint other than
    /// `fingerprint`, returns [`CheckpointError::Incompatible`]; nothing is
    /// ever deleted here.
    pub fn latest_valid(&self, fingerprint: &str) -> Result<Option<Restored>, CheckpointError> {
        let (manifest, _) = self.read_manifest()?;
        let mut skipped = Vec::new();
        // Every checkpoint read so far, shared by the candidates' chains.
        let mut loaded = Loaded::new();
        for &id in manifest.ids.iter().rev() {
            let path = self.checkpoint_path(id);
            let verdict = match self.load(&mut loaded, id)? {
                Err(reason) => Err(reason),
                Ok(()) => {
                    let (checkpoint, _) = loaded[&id].as_ref().expect("loaded");
                    if checkpoint.fingerprint != fingerprint {
                        return Err(CheckpointError::Incompatible {
                            id,
                            found: checkpoint.fingerprint.clone(),
                            expected: fingerprint.to_string(),
                            path,
                        });
                    }
                    self.check_chains(&mut loaded, id)?
                }
            };
            match verdict {
                Ok(()) => {
                    return Ok(Some(Restored {
                        path,
                        skipped: self.with_unverified(skipped, id),
                        ..take_restored(&mut loaded, id)
                    }));
                }
                Err(reason) => {
                    tracing::warn!(
                        id,
                        path = %path.display(),
                        %reason,
                        "skipping corrupt checkpoint; trying the previous one"
                    );
                    skipped.push((id, reason));
                }
            }
        }
        let skipped = self.with_unverified(skipped, 0);
        if !skipped.is_empty() {
            tracing::warn!(
                count = skipped.len(),
                "no valid checkpoint: every committed checkpoint failed verification"
            );
        }
        Ok(None)
    }

    /// Makes sure `loaded` holds checkpoint `id`, read and verified; `Err`
    /// (a reason) when it is missing or does not verify.
    fn load(&self, loaded: &mut Loaded, id: u64) -> Result<Result<(), String>, CheckpointError> {
        let verdict = match loaded.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(match self.backend.get(&checkpoint_file_name(id))? {
                    Some((bytes, _)) => format::decode_with_reach(&bytes, Some(id)),
                    None => Err("file is missing".into()),
                })
            }
        };
        Ok(verdict.as_ref().map(|_| ()).map_err(Clone::clone))
    }

    /// Checks the chains of the delta parts of checkpoint `id` (loaded and
    /// valid itself): `Err` with a reason naming the part and the base
    /// when one cannot be used.
    fn check_chains(
        &self,
        loaded: &mut Loaded,
        id: u64,
    ) -> Result<Result<(), String>, CheckpointError> {
        let (cp, reach) = loaded[&id].as_ref().expect("loaded");
        let fingerprint = cp.fingerprint.clone();
        let bases: Vec<(String, u64)> = cp.bases.iter().map(|(n, b)| (n.clone(), *b)).collect();
        let reach = reach.clone();
        for (name, base) in bases {
            let mut at = base;
            loop {
                let fail = |what: String| {
                    Ok(Err(format!(
                        "part {name:?} needs base checkpoint {at}{}, which {what}",
                        if at == base {
                            String::new()
                        } else {
                            format!(" (through checkpoint {base})")
                        }
                    )))
                };
                if reach.binary_search(&at).is_err() {
                    return fail("the checkpoint's header does not name in its reach".into());
                }
                if let Err(reason) = self.load(loaded, at)? {
                    return fail(format!("cannot be used: {reason}"));
                }
                let (b, _) = loaded[&at].as_ref().expect("loaded");
                if b.fingerprint != fingerprint {
                    return fail(format!(
                        "was written by pipeline fingerprint {:?}",
                        b.fingerprint
                    ));
                }
                if !b.parts.contains_key(&name) {
                    return fail("does not hold that part".into());
                }
                match b.bases.get(&name) {
                    Some(&next) => at = next,
                    None => break,
                }
            }
        }
        Ok(Ok(()))
    }
}

/// Moves checkpoint `id` (valid, with valid chains) and its chains' earlier
/// links out of `loaded`.
fn take_restored(loaded: &mut Loaded, id: u64) -> Restored {
    let (checkpoint, _) = loaded.remove(&id).expect("loaded").expect("checked valid");
    let mut base_links = BTreeMap::new();
    for (name, &base) in &checkpoint.bases {
        let mut links = Vec::new();
        let mut at = base;
        loop {
            let (b, _) = loaded
                .get_mut(&at)
                .expect("checked chain")
                .as_mut()
                .expect("checked chain");
            // Each (checkpoint, part) is in one chain only.
            let data = b.parts.remove(name).expect("checked chain");
            links.push((at, data));
            match b.bases.get(name) {
                Some(&next) => at = next,
                None => break,
            }
        }
        links.reverse();
        base_links.insert(name.clone(), links);
    }
    Restored {
        checkpoint,
        path: PathBuf::new(),
        skipped: Vec::new(),
        base_links,
    }
}
