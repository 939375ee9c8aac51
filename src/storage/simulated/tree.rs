//! The simulated namespace: directories and files as numbered nodes, each directory with a
//! volatile entry map (what lookups see now) and a durable one (what survives a crash), plus the
//! ordered list of directory changes not yet made durable.
//!
//! A directory change (create, remove, mkdir, rename) is recorded as one [`DirectoryChange`]:
//! a set of absolute assignments `(directory, name) := node or nothing`, applied atomically.
//! A rename is one change with two assignments, which is what makes it atomic across a crash.
//! Changes that touch the same `(directory, name)` key are ordered: a later one can reach the
//! media only if every earlier one on a shared key did (a journal never reorders updates of the
//! same name). Changes on unrelated keys are independent, so any subset of them may survive.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path};

use super::errors;
use super::file::FileNode;
use super::rng::SimRng;
use super::CrashReport;

/// Identifies a directory or a file node.
pub(super) type NodeId = u64;

/// The root directory. It always exists and cannot be lost.
pub(super) const ROOT: NodeId = 0;

/// Chance that one unsynced directory change survives a crash (when its predecessors did).
const DIRECTORY_CHANGE_KEEP_PROBABILITY: f64 = 0.5;

/// What a directory entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Node {
    /// A file node.
    File(NodeId),
    /// A directory node.
    Dir(NodeId),
}

/// One directory: its entries as seen now and as they are on the media.
#[derive(Debug, Default, Clone)]
pub(super) struct DirNode {
    pub(super) volatile: BTreeMap<OsString, Node>,
    pub(super) durable: BTreeMap<OsString, Node>,
}

type Key = (NodeId, OsString);

/// An atomic set of entry assignments not yet durable.
#[derive(Debug, Clone)]
struct DirectoryChange {
    assignments: Vec<(Key, Option<Node>)>,
}

impl DirectoryChange {
    fn keys(&self) -> impl Iterator<Item = &Key> {
        self.assignments.iter().map(|(key, _)| key)
    }
}

/// The whole simulated file system.
#[derive(Debug)]
pub(super) struct Tree {
    pub(super) dirs: BTreeMap<NodeId, DirNode>,
    pub(super) files: BTreeMap<NodeId, FileNode>,
    pending: Vec<DirectoryChange>,
    next_id: NodeId,
}

/// Splits `path` into normal components, resolving `.` and `..` lexically. Relative and
/// absolute paths both start at the single root.
pub(super) fn components(path: &Path) -> Vec<OsString> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name.to_os_string()),
            Component::ParentDir => {
                names.pop();
            }
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
        }
    }
    names
}

impl Tree {
    /// An empty file system holding only the root directory.
    pub(super) fn new() -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(ROOT, DirNode::default());
        Self {
            dirs,
            files: BTreeMap::new(),
            pending: Vec::new(),
            next_id: ROOT + 1,
        }
    }

    fn allocate(&mut self) -> NodeId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The node at `names` in the volatile namespace, `None` if missing. Walking through a file
    /// fails with NotADirectory, as the OS does.
    pub(super) fn lookup(&self, names: &[OsString]) -> io::Result<Option<Node>> {
        let mut node = Node::Dir(ROOT);
        for name in names {
            let Node::Dir(dir) = node else {
                return Err(errors::not_a_directory());
            };
            match self.dirs[&dir].volatile.get(name) {
                Some(child) => node = *child,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    /// The directory holding the last component of `names`, and that component.
    fn parent<'a>(&self, names: &'a [OsString]) -> io::Result<(NodeId, &'a OsString)> {
        let Some((last, parents)) = names.split_last() else {
            return Err(errors::is_a_directory());
        };
        match self.lookup(parents)? {
            Some(Node::Dir(dir)) => Ok((dir, last)),
            Some(Node::File(_)) => Err(errors::not_a_directory()),
            None => Err(errors::not_found()),
        }
    }

    /// Applies `assignments` to the volatile namespace and records them as one pending change.
    fn change(&mut self, assignments: Vec<(Key, Option<Node>)>) {
        for ((dir, name), node) in &assignments {
            let entries = &mut self
                .dirs
                .get_mut(dir)
                .expect("directory node exists")
                .volatile;
            match node {
                Some(node) => entries.insert(name.clone(), *node),
                None => entries.remove(name),
            };
        }
        self.pending.push(DirectoryChange { assignments });
    }

    /// Opens the file at `names`, creating it (a pending change) when missing.
    pub(super) fn open_file(&mut self, names: &[OsString]) -> io::Result<NodeId> {
        let (dir, name) = self.parent(names)?;
        match self.dirs[&dir].volatile.get(name) {
            Some(Node::File(file)) => Ok(*file),
            Some(Node::Dir(_)) => Err(errors::is_a_directory()),
            None => {
                let file = self.allocate();
                self.files.insert(file, FileNode::default());
                self.change(vec![((dir, name.clone()), Some(Node::File(file)))]);
                Ok(file)
            }
        }
    }

    /// The names in directory `names`, sorted.
    pub(super) fn list(&self, names: &[OsString]) -> io::Result<Vec<OsString>> {
        match self.lookup(names)? {
            Some(Node::Dir(dir)) => Ok(self.dirs[&dir].volatile.keys().cloned().collect()),
            Some(Node::File(_)) => Err(errors::not_a_directory()),
            None => Err(errors::not_found()),
        }
    }

    /// Unlinks the file at `names`.
    pub(super) fn remove(&mut self, names: &[OsString]) -> io::Result<()> {
        let (dir, name) = self.parent(names)?;
        match self.dirs[&dir].volatile.get(name) {
            Some(Node::File(_)) => {
                self.change(vec![((dir, name.clone()), None)]);
                Ok(())
            }
            Some(Node::Dir(_)) => Err(errors::is_a_directory()),
            None => Err(errors::not_found()),
        }
    }

    /// Renames `from` to `to`, replacing a file (or an empty directory by a directory) at `to`.
    pub(super) fn rename(&mut self, from: &[OsString], to: &[OsString]) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(from)?;
        let Some(node) = self.dirs[&from_dir].volatile.get(from_name).copied() else {
            return Err(errors::not_found());
        };
        let (to_dir, to_name) = self.parent(to)?;
        if from_dir == to_dir && from_name == to_name {
            return Ok(());
        }
        if matches!(node, Node::Dir(_)) && to.starts_with(from) {
            return Err(errors::invalid_input("cannot move a directory into itself"));
        }
        match (node, self.dirs[&to_dir].volatile.get(to_name)) {
            (Node::File(_), Some(Node::Dir(_))) => return Err(errors::is_a_directory()),
            (Node::Dir(_), Some(Node::File(_))) => return Err(errors::not_a_directory()),
            (Node::Dir(_), Some(Node::Dir(target))) if !self.dirs[target].volatile.is_empty() => {
                return Err(errors::directory_not_empty())
            }
            _ => {}
        }
        self.change(vec![
            ((from_dir, from_name.clone()), None),
            ((to_dir, to_name.clone()), Some(node)),
        ]);
        Ok(())
    }

    /// Creates the directory `names` and its missing parents, each a pending change.
    pub(super) fn create_dir_all(&mut self, names: &[OsString]) -> io::Result<()> {
        let mut dir = ROOT;
        for (position, name) in names.iter().enumerate() {
            match self.dirs[&dir].volatile.get(name) {
                Some(Node::Dir(child)) => dir = *child,
                Some(Node::File(_)) if position + 1 == names.len() => {
                    return Err(errors::already_exists())
                }
                Some(Node::File(_)) => return Err(errors::not_a_directory()),
                None => {
                    let child = self.allocate();
                    self.dirs.insert(child, DirNode::default());
                    self.change(vec![((dir, name.clone()), Some(Node::Dir(child)))]);
                    dir = child;
                }
            }
        }
        Ok(())
    }

    /// The directory node at `names` for `sync_dir`; `None` when `names` is a file (syncing a
    /// file through `sync_dir` promises nothing about its directory, so it is a no-op).
    pub(super) fn dir_for_sync(&self, names: &[OsString]) -> io::Result<Option<NodeId>> {
        match self.lookup(names)? {
            Some(Node::Dir(dir)) => Ok(Some(dir)),
            Some(Node::File(_)) => Ok(None),
            None => Err(errors::not_found()),
        }
    }

    /// Settles the pending changes that a sync of `dir` covers: every change touching `dir`,
    /// and every earlier change sharing a key with a covered one (a journal commits in order).
    /// With `rng`, each covered change survives at random (a failed directory fsync), and the
    /// lost ones are dropped for good; without, all of them become durable.
    pub(super) fn sync_dir(&mut self, dir: NodeId, rng: Option<&mut SimRng>) -> CrashReport {
        let mut needed: BTreeSet<Key> = BTreeSet::new();
        let mut covered = vec![false; self.pending.len()];
        for (index, change) in self.pending.iter().enumerate().rev() {
            if change
                .keys()
                .any(|key| key.0 == dir || needed.contains(key))
            {
                covered[index] = true;
                needed.extend(change.keys().cloned());
            }
        }
        self.settle(&covered, rng)
    }

    /// Settles every pending change: each survives at random, respecting per-key order.
    pub(super) fn crash(&mut self, rng: &mut SimRng) -> CrashReport {
        let covered = vec![true; self.pending.len()];
        self.settle(&covered, Some(rng))
    }

    /// Drops every pending change (the deterministic worst case).
    pub(super) fn lose_pending(&mut self) -> CrashReport {
        let report = CrashReport {
            directory_changes_lost: self.pending.len() as u64,
            ..CrashReport::default()
        };
        self.pending.clear();
        report
    }

    fn settle(&mut self, covered: &[bool], mut rng: Option<&mut SimRng>) -> CrashReport {
        let mut report = CrashReport::default();
        let mut lost_keys: BTreeSet<Key> = BTreeSet::new();
        let mut remaining = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (change, covered) in pending.into_iter().zip(covered.iter().copied()) {
            if !covered {
                remaining.push(change);
                continue;
            }
            let blocked = change.keys().any(|key| lost_keys.contains(key));
            let survives = !blocked
                && rng
                    .as_deref_mut()
                    .is_none_or(|rng| rng.chance(DIRECTORY_CHANGE_KEEP_PROBABILITY));
            if survives {
                self.apply_durably(&change);
                report.directory_changes_kept += 1;
            } else {
                lost_keys.extend(change.keys().cloned());
                report.directory_changes_lost += 1;
            }
        }
        self.pending = remaining;
        report
    }

    fn apply_durably(&mut self, change: &DirectoryChange) {
        for ((dir, name), node) in &change.assignments {
            let entries = &mut self
                .dirs
                .get_mut(dir)
                .expect("directory node exists")
                .durable;
            match node {
                Some(node) => entries.insert(name.clone(), *node),
                None => entries.remove(name),
            };
        }
    }

    /// After a crash has settled everything: the namespace becomes its durable form, and nodes
    /// no longer reachable from the root are freed.
    pub(super) fn restart_from_durable(&mut self) {
        assert!(
            self.pending.is_empty(),
            "restart with unsettled directory changes"
        );
        let (live_dirs, live_files) = self.reachable(|dir| &dir.durable);
        self.dirs.retain(|id, _| live_dirs.contains(id));
        self.files.retain(|id, _| live_files.contains(id));
        for dir in self.dirs.values_mut() {
            dir.volatile = dir.durable.clone();
        }
    }

    /// Nodes reachable from the root through the entry maps that `entries` selects.
    pub(super) fn reachable(
        &self,
        entries: impl Fn(&DirNode) -> &BTreeMap<OsString, Node>,
    ) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let mut dirs = BTreeSet::from([ROOT]);
        let mut files = BTreeSet::new();
        let mut stack = vec![ROOT];
        while let Some(dir) = stack.pop() {
            for node in entries(&self.dirs[&dir]).values() {
                match node {
                    Node::File(file) => {
                        files.insert(*file);
                    }
                    Node::Dir(child) => {
                        if dirs.insert(*child) {
                            stack.push(*child);
                        }
                    }
                }
            }
        }
        (dirs, files)
    }

    /// Bytes held by files linked in the volatile namespace (what the capacity limit counts).
    pub(super) fn used_bytes(&self) -> u64 {
        let (_, files) = self.reachable(|dir| &dir.volatile);
        files
            .iter()
            .map(|file| self.files[file].volatile.len() as u64)
            .sum()
    }

    /// Number of directory changes not yet durable.
    pub(super) fn pending_changes(&self) -> usize {
        self.pending.len()
    }
}
