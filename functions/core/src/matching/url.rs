//! Git URL normalisation.
//!
//! Every comparison of repository identities goes through [`normalize`], so "is this the
//! pushed project?" has one answer everywhere. A location is `(host, path)`: the scheme,
//! user info, port, query and fragment never take part, because GitLab serves one project
//! under several of them (`https://`, `http://`, `ssh://git@…:2222`, scp-like `git@…:`).

use std::cell::OnceCell;
use std::collections::BTreeMap;

use crate::push::Push;

/// Where a repository lives, as far as identity goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoLocation {
    /// Lower-case host name or IP literal (`[::1]` for IPv6), no trailing dot.
    pub host: String,
    /// Lower-case, percent-encoded path without leading or trailing `/` and without one
    /// trailing `.git`: `group/sub/project`.
    pub path: String,
}

impl std::fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

/// The schemes a Flux GitRepository accepts (`^(http|https|ssh)://`).
const GIT_URL_SCHEMES: [&str; 3] = ["http", "https", "ssh"];

/// Parses `http(s)://`, `ssh://` URLs and scp-like `user@host:path` into (host, path):
/// host lower-cased without user info, port or scheme (trailing dot removed); path without
/// leading/trailing `/` and one trailing `.git`, lower-cased (GitLab paths route case-insensitively).
/// Returns None for anything else (empty, other schemes like `file://` or `oci://`, no host, no path).
pub fn normalize(url: &str) -> Option<RepoLocation> {
    // Whitespace, control characters and backslashes appear in no URL GitLab or Flux
    // produce, and parsers disagree about them (WHATWG trims and rewrites them, Go and git
    // do not); refusing them is safer than guessing which reading was meant.
    if url.is_empty()
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return None;
    }
    let (raw_host, raw_path) = if url.contains("://") {
        split_url(url)?
    } else {
        split_scp_like(url)?
    };
    Some(RepoLocation {
        host: normalize_host(&raw_host)?,
        path: normalize_path(&raw_path)?,
    })
}

/// Host aliases map alias host → canonical host (both compared lower-case); applied after normalize.
///
/// One step only (an alias of an alias is not followed), so a configuration cannot loop.
/// Entries whose alias or target is not a host name are ignored.
pub fn canonical(location: RepoLocation, aliases: &BTreeMap<String, String>) -> RepoLocation {
    let target = aliases.iter().find_map(|(alias, target)| {
        if normalize_host(alias).as_deref() == Some(location.host.as_str()) {
            normalize_host(target)
        } else {
            None
        }
    });
    match target {
        Some(host) => RepoLocation {
            host,
            path: location.path,
        },
        None => location,
    }
}

/// Whether the GitRepository `spec.url` names the pushed project: any of the push's
/// `project.http_url`, `project.web_url`, `project.ssh_url` (scp-like) normalises (with aliases) to the same location.
pub fn url_matches_push(spec_url: &str, push: &Push, aliases: &BTreeMap<String, String>) -> bool {
    let pushed = PushLocations::of(push, aliases);
    normalize(spec_url)
        .map(|location| pushed.canonical(location))
        .is_some_and(|wanted| pushed.contains(&wanted))
}

/// The pushed project's locations (its `http_url`, `web_url` and `ssh_url`, normalised and
/// made canonical with one cluster's host aliases), each worked out at most once for all of
/// that cluster's GitRepositories, and only as far as a comparison needs: parsing the
/// push's URLs again for each GitRepository was 2.5 % of serve's dispatch CPU with one
/// GitRepository per cluster, and a cluster often has dozens (BENCHMARKS.md, "A push's
/// settles in one commit").
#[derive(Debug)]
pub struct PushLocations<'a> {
    push: &'a Push,
    aliases: &'a BTreeMap<String, String>,
    /// In the order of [`PushLocations::urls`]; `None` inside: the URL does not parse.
    locations: [OnceCell<Option<RepoLocation>>; 3],
}

impl<'a> PushLocations<'a> {
    pub fn of(push: &'a Push, aliases: &'a BTreeMap<String, String>) -> Self {
        Self {
            push,
            aliases,
            locations: Default::default(),
        }
    }

    fn urls(&self) -> [&'a str; 3] {
        let project = &self.push.project;
        [&project.http_url, &project.web_url, &project.ssh_url]
    }

    /// `location` made canonical with the same aliases as the push's.
    pub fn canonical(&self, location: RepoLocation) -> RepoLocation {
        canonical(location, self.aliases)
    }

    /// Whether `wanted` (already canonical) is one of the push's locations.
    pub fn contains(&self, wanted: &RepoLocation) -> bool {
        self.urls()
            .into_iter()
            .zip(&self.locations)
            .any(|(url, location)| {
                location
                    .get_or_init(|| normalize(url).map(|parsed| self.canonical(parsed)))
                    .as_ref()
                    == Some(wanted)
            })
    }
}

/// Host and path of an `http`, `https` or `ssh` URL, as the WHATWG parser reads them.
fn split_url(url: &str) -> Option<(String, String)> {
    let parsed = ::url::Url::parse(url).ok()?;
    if !GIT_URL_SCHEMES.contains(&parsed.scheme()) {
        return None;
    }
    Some((parsed.host_str()?.to_string(), parsed.path().to_string()))
}

/// Host and path of git's scp-like syntax `[user@]host:path`: no `://`, and the first
/// colon comes before any `/` (otherwise git reads it as a local path).
fn split_scp_like(url: &str) -> Option<(String, String)> {
    let (user_and_host, path) = url.split_once(':')?;
    if user_and_host.contains('/') {
        return None;
    }
    // A single letter before the colon is a Windows drive (`C:/x`), not a host; git reads
    // it as a local path too.
    if user_and_host.len() == 1 && user_and_host.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let host = user_and_host
        .rsplit_once('@')
        .map_or(user_and_host, |(_user, host)| host);
    Some((host.to_string(), path.to_string()))
}

/// A host as the WHATWG URL parser canonicalises it (IDNA, IPv4/IPv6 forms, lower case),
/// without trailing dots: `example.com.` is the same host in DNS.
fn normalize_host(raw_host: &str) -> Option<String> {
    // Parsing and trimming feed each other (`0..` is a domain, but without its dots `0` is
    // the IPv4 address 0.0.0.0; `a%2e` decodes to `a.`), so repeat both until the host
    // stops changing.
    let mut host = raw_host.to_string();
    for _ in 0..4 {
        let parsed = ::url::Host::parse(host.trim_end_matches('.'))
            .ok()?
            .to_string()
            .to_ascii_lowercase();
        if parsed == host {
            return Some(host);
        }
        host = parsed;
    }
    None
}

/// A path in the form an `https` URL holds it (percent-encoded, dot segments resolved),
/// lower-cased, without surrounding `/` and one trailing `.git`.
fn normalize_path(raw_path: &str) -> Option<String> {
    // Every path goes through the same parser, whether it came from an ssh URL (which
    // WHATWG treats as an opaque scheme) or from scp-like text, so that equal paths are
    // spelled the same and `?`/`#` in scp-like paths stay part of the path.
    let mut holder = ::url::Url::parse("https://path.invalid/").ok()?;
    holder.set_path(raw_path);
    let lowered = holder.path().to_ascii_lowercase();
    let trimmed = lowered.trim_matches('/');
    let path = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    let last_segment = path.rsplit('/').next().unwrap_or(path);
    let names_nothing = path.is_empty()
        || last_segment.is_empty()
        || is_dot_segment(last_segment)
        // GitLab refuses project paths ending in `.git`, so `x.git.git` names no project.
        || path.ends_with(".git");
    (!names_nothing).then(|| path.to_string())
}

/// `.` and `..`, also percent-encoded: removing `.git` from `a/..git` must not leave a
/// segment that a URL parser would then resolve away.
fn is_dot_segment(segment: &str) -> bool {
    matches!(segment, "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e")
}

/// A `spec.url` fit to print: the user info of `scheme://user[:password]@host/…` becomes
/// `***@` (Flux lets a URL carry a token there), except the conventional ssh user `git`.
/// Anything else is returned as it is.
pub fn display_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.into();
    };
    if &rest[..at] == "git" {
        return url.into();
    }
    format!("{scheme}://***@{}", &rest[at + 1..]).into()
}

#[cfg(test)]
#[path = "url_test.rs"]
mod tests;
