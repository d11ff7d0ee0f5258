//! A cluster's subscriptions: project path globs, ref globs, GitLab instances and optional
//! changed-path globs (monorepos), and whether one takes a push. Plain data over a `Push`;
//! which clusters get a push is `routing`'s business.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::push::Push;

/// Glob syntax: `*` matches within one path segment, `**` across segments, `?`, `[a-z]` and
/// `{a,b}` as usual. A dot is a literal dot.
#[derive(Debug, Clone)]
pub struct PatternList {
    patterns: Vec<String>,
    set: GlobSet,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob {pattern:?}: {message}")]
pub struct PatternError {
    pub pattern: String,
    pub message: String,
}

impl PatternList {
    pub fn new(patterns: &[String], case_insensitive: bool) -> Result<Self, PatternError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            builder.add(compile(pattern, case_insensitive)?);
        }
        let set = builder.build().map_err(|e| PatternError {
            pattern: patterns.join(","),
            message: e.kind().to_string(),
        })?;
        Ok(Self {
            patterns: patterns.to_vec(),
            set,
        })
    }

    pub fn any() -> Self {
        // "**" always compiles.
        Self::new(&["**".to_string()], false).unwrap_or_else(|_| Self {
            patterns: vec![],
            set: GlobSet::empty(),
        })
    }

    pub fn is_match(&self, candidate: &str) -> bool {
        self.set.is_match(candidate)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

fn compile(pattern: &str, case_insensitive: bool) -> Result<Glob, PatternError> {
    if pattern.is_empty() {
        return Err(PatternError {
            pattern: pattern.to_string(),
            message: "empty pattern".to_string(),
        });
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .case_insensitive(case_insensitive)
        .backslash_escape(true)
        .build()
        .map_err(|e| PatternError {
            pattern: pattern.to_string(),
            message: e.kind().to_string(),
        })
}

/// A cluster's interest in pushes. Every field defaults to "all".
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Globs on `path_with_namespace`, case-insensitive like GitLab's routing.
    pub projects: PatternList,
    pub refs: RefPatterns,
    /// GitLab instances as host names (`gitlab.example.com`, optionally `:port`); empty = all.
    pub instances: Vec<String>,
    /// Globs on changed file paths; `None` = no path filter. A push whose changed paths are
    /// unknown always passes the filter.
    pub paths: Option<PatternList>,
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            projects: PatternList::any(),
            refs: RefPatterns::any(),
            instances: Vec::new(),
            paths: None,
        }
    }
}

/// Why a subscription did not take a push; the first rule that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionMiss {
    Instance,
    Project,
    Ref,
    Paths,
}

impl Subscription {
    /// Takes every push (the default when an entry lists no subscriptions).
    pub fn takes_everything(&self) -> bool {
        let any = |list: &PatternList| list.patterns() == ["**"];
        any(&self.projects)
            && any(&self.refs.full)
            && any(&self.refs.short)
            && self.instances.is_empty()
            && self.paths.is_none()
    }

    pub fn accepts(&self, push: &Push) -> Result<(), SubscriptionMiss> {
        if !self.instances.is_empty() {
            let host = instance_host(&push.instance);
            if !self.instances.iter().any(|i| instance_host(i) == host) {
                return Err(SubscriptionMiss::Instance);
            }
        }
        if !self.projects.is_match(&push.project.path) {
            return Err(SubscriptionMiss::Project);
        }
        if !self.refs.is_match(&push.git_ref) {
            return Err(SubscriptionMiss::Ref);
        }
        if let (Some(filter), Some(changed)) = (&self.paths, &push.changed_paths)
            && !changed.iter().any(|path| filter.is_match(path))
        {
            return Err(SubscriptionMiss::Paths);
        }
        Ok(())
    }
}

/// Globs on a ref: a pattern that starts with `refs/` matches the full ref; any other
/// pattern matches the branch or tag name (`main`, `release/*`, `v*`), never another ref.
#[derive(Debug, Clone)]
pub struct RefPatterns {
    full: PatternList,
    short: PatternList,
}

impl RefPatterns {
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let (full, short): (Vec<String>, Vec<String>) = patterns
            .iter()
            .cloned()
            .partition(|p| p.starts_with("refs/"));
        Ok(Self {
            full: PatternList::new(&full, false)?,
            short: PatternList::new(&short, false)?,
        })
    }

    pub fn any() -> Self {
        Self {
            full: PatternList::any(),
            short: PatternList::any(),
        }
    }

    pub fn is_match(&self, git_ref: &str) -> bool {
        let short = crate::push::short_ref(git_ref);
        self.full.is_match(git_ref) || (short != git_ref && self.short.is_match(short))
    }
}

/// `https://GitLab.example.com:8443/x` → `gitlab.example.com:8443`; a bare host stays a host.
pub fn instance_host(instance: &str) -> String {
    let without_scheme = instance
        .split_once("://")
        .map_or(instance, |(_, rest)| rest);
    without_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[cfg(test)]
#[path = "subscriptions_test.rs"]
mod tests;
