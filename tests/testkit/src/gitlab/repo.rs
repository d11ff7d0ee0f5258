//! A Git repository as GitLab's compare API sees it: commits with parents and whole
//! trees, refs, merge bases, and the diff of two trees.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub parent: Option<String>,
    pub message: String,
    /// The whole tree: path → content.
    pub tree: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub commits: BTreeMap<String, Commit>,
    /// `main`, `v1.0.0` → commit.
    pub refs: BTreeMap<String, String>,
}

/// One entry of a compare's `diffs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    pub old_path: String,
    pub new_path: String,
    pub new_file: bool,
    pub deleted_file: bool,
}

impl Repo {
    /// A commit id, or a branch or tag name → the commit.
    pub fn resolve(&self, name: &str) -> Option<&str> {
        if let Some((sha, _)) = self.commits.get_key_value(name) {
            return Some(sha);
        }
        let name = name
            .strip_prefix("refs/heads/")
            .or_else(|| name.strip_prefix("refs/tags/"))
            .unwrap_or(name);
        self.refs.get(name).map(String::as_str)
    }

    /// The commit and its ancestors, newest first.
    pub fn ancestry(&self, sha: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = Some(sha.to_string());
        while let Some(sha) = next {
            if out.contains(&sha) {
                break;
            }
            next = self.commits.get(&sha).and_then(|c| c.parent.clone());
            out.push(sha);
        }
        out
    }

    pub fn merge_base(&self, a: &str, b: &str) -> Option<String> {
        let ours: BTreeSet<String> = self.ancestry(a).into_iter().collect();
        self.ancestry(b).into_iter().find(|sha| ours.contains(sha))
    }

    /// Commits reachable from `to` but not from `from`, oldest first (`Commit.between`).
    pub fn between(&self, from: &str, to: &str) -> Vec<String> {
        let excluded: BTreeSet<String> = self.ancestry(from).into_iter().collect();
        let mut commits: Vec<String> = self
            .ancestry(to)
            .into_iter()
            .filter(|sha| !excluded.contains(sha))
            .collect();
        commits.reverse();
        commits
    }

    /// What changed between two trees, by path.
    pub fn diff(&self, from: Option<&str>, to: &str) -> Vec<FileDiff> {
        let empty = BTreeMap::new();
        let old = from
            .and_then(|sha| self.commits.get(sha))
            .map_or(&empty, |c| &c.tree);
        let new = self.commits.get(to).map_or(&empty, |c| &c.tree);
        let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        paths
            .into_iter()
            .filter(|path| old.get(*path) != new.get(*path))
            .map(|path| FileDiff {
                old_path: path.clone(),
                new_path: path.clone(),
                new_file: !old.contains_key(path),
                deleted_file: !new.contains_key(path),
            })
            .collect()
    }
}
