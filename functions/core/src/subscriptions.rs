//! A cluster's subscriptions, and whether one takes a push. Plain data over a `Push`; which
//! clusters get a push is `routing`'s business. Three kinds ([`Takes`]):
//!
//! - Git pushes: project path globs, ref globs, GitLab instances and optional changed-path
//!   globs (monorepos);
//! - artifact pushes from registries: the same three globs read as repositories, tags and
//!   registries;
//! - a project's artifacts: on a successful pipeline (or a tag push) of the projects, refs
//!   and instances, the artifact sources under `<registry>/<project path>`.

use std::borrow::Cow;
use std::sync::Arc;

use crate::oci::normalize_registry;
use crate::push::{Push, PushEvent};

/// Glob syntax: `*` matches within one path segment, `**` across segments, `?`, `[a-z]` and
/// `{a,b}` as usual, `\` escapes the next character. A dot is a literal dot, and so is a
/// leading `!`. `?` and a class match one byte: one ASCII character (project paths, tags
/// and registry names are ASCII; for a ref with other characters, `*` matches them).
///
/// Matched by `fast-glob`, which interprets a pattern as it matches: nothing is compiled or
/// cached, so a registry of 10,000 entries costs its strings, and the Lambda functions
/// link no regex engine for it (globset compiled every pattern to a regex).
#[derive(Debug, Clone)]
pub struct PatternList {
    /// As written in the registry, for messages.
    patterns: Arc<[String]>,
    /// As `fast-glob` reads them ([`prepare`]); validated.
    prepared: Arc<[String]>,
    case_insensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob {pattern:?}: {message}")]
pub struct PatternError {
    pub pattern: String,
    pub message: String,
}

impl PatternList {
    pub fn new(patterns: &[String], case_insensitive: bool) -> Result<Self, PatternError> {
        let prepared = patterns
            .iter()
            .map(|pattern| prepare(pattern, case_insensitive))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            patterns: patterns.into(),
            prepared: prepared.into(),
            case_insensitive,
        })
    }

    /// Matches everything. Built once per process and cloned (a clone shares the
    /// strings): every registry index item without subscriptions takes several.
    pub fn any() -> Self {
        static ANY: std::sync::LazyLock<PatternList> = std::sync::LazyLock::new(|| {
            let every: Arc<[String]> = Arc::new(["**".to_string()]);
            PatternList {
                patterns: every.clone(),
                prepared: every,
                case_insensitive: false,
            }
        });
        ANY.clone()
    }

    pub fn is_match(&self, candidate: &str) -> bool {
        let candidate = if self.case_insensitive && candidate.chars().any(char::is_uppercase) {
            Cow::Owned(candidate.to_lowercase())
        } else {
            Cow::Borrowed(candidate)
        };
        self.prepared
            .iter()
            .any(|pattern| fast_glob::glob_match(pattern, candidate.as_bytes()))
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// A registry pattern as `fast-glob` reads it with the meaning documented on
/// [`PatternList`]: lower-cased when matching ignores case; a leading `!` escaped (for
/// `fast-glob` it would negate the pattern); an escaped letter or digit unescaped (for
/// `fast-glob`, `\n`, `\t`, `\r` and `\b` are control characters). Then validated once,
/// here, since matching cannot report a malformed pattern (an unclosed `[` or `{`).
fn prepare(pattern: &str, case_insensitive: bool) -> Result<String, PatternError> {
    let invalid = |message: String| PatternError {
        pattern: pattern.to_string(),
        message,
    };
    if pattern.is_empty() {
        return Err(invalid("empty pattern".to_string()));
    }
    let cased = if case_insensitive {
        Cow::Owned(pattern.to_lowercase())
    } else {
        Cow::Borrowed(pattern)
    };
    let mut prepared = String::with_capacity(cased.len() + 1);
    if cased.starts_with('!') {
        prepared.push('\\');
    }
    let mut chars = cased.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(next)) if next.is_ascii_alphanumeric() => {}
            ('\\', Some(&next)) => {
                prepared.push(c);
                prepared.push(next);
                chars.next();
            }
            _ => prepared.push(c),
        }
    }
    fast_glob::validate(&prepared).map_err(|error| invalid(error.to_string()))?;
    Ok(prepared)
}

/// A cluster's interest in pushes. Every field defaults to "all".
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Globs on `path_with_namespace`, case-insensitive like GitLab's routing (for
    /// [`Takes::ArtifactPushes`]: on the repository).
    pub projects: PatternList,
    pub refs: RefPatterns,
    /// GitLab instances as host names (`gitlab.example.com`, optionally `:port`); empty = all
    /// (for [`Takes::ArtifactPushes`]: the registries, `host[:port]`).
    pub instances: Vec<String>,
    /// Globs on changed file paths; `None` = no path filter. A push whose changed paths are
    /// unknown always passes the filter.
    pub paths: Option<PatternList>,
    /// Which events the subscription takes.
    pub takes: Takes,
}

/// The kind of event a subscription takes, and what only that kind has.
#[derive(Debug, Clone, Default)]
pub enum Takes {
    /// Git branch and tag pushes; they trigger GitRepositories.
    #[default]
    GitPushes,
    /// Tagged artifacts pushed to a registry: `projects` are globs on the repository,
    /// `instances` the registries, `tags` globs on the tag.
    ArtifactPushes { tags: PatternList },
    /// A successful pipeline (or a tag push) of the projects: the artifact sources under
    /// `<registry>/<project path>` are triggered (the project's container registry).
    ProjectArtifacts { on: ProjectEvent, registry: String },
}

/// What makes a [`Takes::ProjectArtifacts`] subscription trigger a project's artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectEvent {
    Pipeline,
    TagPush,
}

impl ProjectEvent {
    pub fn event(self) -> PushEvent {
        match self {
            ProjectEvent::Pipeline => PushEvent::Pipeline,
            ProjectEvent::TagPush => PushEvent::TagPush,
        }
    }
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            projects: PatternList::any(),
            refs: RefPatterns::any(),
            instances: Vec::new(),
            paths: None,
            takes: Takes::GitPushes,
        }
    }
}

/// Why a subscription did not take a push; the first rule that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionMiss {
    /// The subscription takes another kind of event.
    Event,
    Instance,
    Project,
    Ref,
    Paths,
}

impl Subscription {
    /// Takes every tagged artifact of every registry (with [`Subscription::default`], what an
    /// entry without subscriptions takes).
    pub fn every_artifact() -> Self {
        Self {
            takes: Takes::ArtifactPushes {
                tags: PatternList::any(),
            },
            ..Self::default()
        }
    }

    /// Takes every push of its kind (the default when an entry lists no subscriptions).
    pub fn takes_everything(&self) -> bool {
        let any = |list: &PatternList| list.patterns() == ["**"];
        let all_of_kind = match &self.takes {
            Takes::GitPushes => true,
            Takes::ArtifactPushes { tags } => any(tags),
            Takes::ProjectArtifacts { .. } => false,
        };
        all_of_kind
            && any(&self.projects)
            && any(&self.refs.full)
            && any(&self.refs.short)
            && self.instances.is_empty()
            && self.paths.is_none()
    }

    pub fn accepts(&self, push: &Push) -> Result<(), SubscriptionMiss> {
        let event_taken = match &self.takes {
            Takes::GitPushes => push.event.is_git_push(),
            Takes::ArtifactPushes { .. } => push.event == PushEvent::ArtifactPush,
            Takes::ProjectArtifacts { on, .. } => push.event == on.event(),
        };
        if !event_taken {
            return Err(SubscriptionMiss::Event);
        }
        if let Takes::ArtifactPushes { tags } = &self.takes {
            return self.accepts_artifact(push, tags);
        }
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

    /// Registry (Docker Hub under any of its names), repository glob, tag glob.
    fn accepts_artifact(&self, push: &Push, tags: &PatternList) -> Result<(), SubscriptionMiss> {
        if !self.instances.is_empty() {
            let registry = normalize_registry(&instance_host(&push.instance));
            let listed = self
                .instances
                .iter()
                .any(|listed| normalize_registry(&instance_host(listed)) == registry);
            if registry.is_none() || !listed {
                return Err(SubscriptionMiss::Instance);
            }
        }
        if !self.projects.is_match(&push.project.path) {
            return Err(SubscriptionMiss::Project);
        }
        if !tags.is_match(&push.git_ref) {
            return Err(SubscriptionMiss::Ref);
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
