//! Which GitLab API fluxrelay calls for a push, with which token: one entry per GitLab
//! instance, configured by the operator (serve: `[[gitlab]]` in the config; AWS: the
//! Secrets Manager secret named by `GITLAB_SECRET_ID`). A push only *selects* an entry by
//! its instance's host; the API URL and the token come from the entry, never from the
//! payload (the security rule: nothing in a payload chooses a URL, host or credential).

use serde_json::Value;

use crate::registry::FieldError;
use crate::secret::Secret;
use crate::subscriptions::instance_host;

#[derive(Debug, Clone)]
pub struct GitLabInstance {
    /// The instance as pushes name it (`https://gitlab.example.com`).
    pub url: String,
    /// Its REST API root, `<url>/api/v4` unless configured otherwise.
    pub api_url: url::Url,
    /// A token with scope `api` and role Developer (docs/operations.md).
    pub token: Secret,
}

#[derive(Debug, Clone, Default)]
pub struct GitLabInstances {
    pub instances: Vec<GitLabInstance>,
}

impl GitLabInstances {
    /// The entry for a push's instance (same host, any scheme and path).
    pub fn for_instance(&self, instance: &str) -> Option<&GitLabInstance> {
        let host = instance_host(instance);
        (!host.is_empty())
            .then(|| {
                self.instances
                    .iter()
                    .find(|entry| instance_host(&entry.url) == host)
            })
            .flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The secret's JSON: `{"instances": [{"url", "token", "api_url"?}]}`. Every problem is
    /// reported at once with its field path; no token is ever in a message.
    pub fn from_json(text: &str) -> Result<Self, Vec<FieldError>> {
        let problem = |path: &str, message: &str| FieldError {
            path: path.to_string(),
            message: message.to_string(),
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|error| vec![problem("(secret)", &format!("not valid JSON: {error}"))])?;
        let Some(items) = value.get("instances").and_then(Value::as_array) else {
            return Err(vec![problem(
                "instances",
                "is required: an array of {url, token, api_url}",
            )]);
        };
        let mut errors = Vec::new();
        let mut instances = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = |key: &str| {
                item.get(key)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            };
            let url = field("url");
            let token = field("token");
            if url.is_none() {
                errors.push(problem(&format!("instances[{i}].url"), "is required"));
            }
            if token.is_none() {
                errors.push(problem(&format!("instances[{i}].token"), "is required"));
            }
            let (Some(url), Some(token)) = (url, token) else {
                continue;
            };
            match instance(url, field("api_url"), Secret::new(token)) {
                Ok(instance) => instances.push(instance),
                Err((key, message)) => {
                    errors.push(problem(&format!("instances[{i}].{key}"), &message));
                }
            }
        }
        if errors.is_empty() {
            Ok(Self { instances })
        } else {
            Err(errors)
        }
    }
}

/// One validated entry; `Err((field, message))` names `url` or `api_url`.
pub fn instance(
    url: &str,
    api_url: Option<&str>,
    token: Secret,
) -> Result<GitLabInstance, (&'static str, String)> {
    let parsed = url::Url::parse(url).map_err(|_| ("url", "is not a URL".to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err((
            "url",
            "must be an http(s) URL of the GitLab instance".into(),
        ));
    }
    let api = match api_url {
        Some(text) => url::Url::parse(text).map_err(|_| ("api_url", "is not a URL".to_string()))?,
        // Under a relative URL root too (`https://host/gitlab` → `…/gitlab/api/v4`).
        None => url::Url::parse(&format!("{}/api/v4", url.trim_end_matches('/')))
            .map_err(|_| ("url", "cannot derive /api/v4 from it".to_string()))?,
    };
    let loopback = matches!(
        api.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    if api.scheme() != "https" && !(api.scheme() == "http" && loopback) {
        return Err((
            "api_url",
            "must be https (the token travels with every call; plain http only on loopback)".into(),
        ));
    }
    if !api.username().is_empty() || api.password().is_some() || api.query().is_some() {
        return Err(("api_url", "must not carry user info or a query".into()));
    }
    Ok(GitLabInstance {
        url: url.trim_end_matches('/').to_string(),
        api_url: api,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_selects_its_instance_by_host_only() {
        let instances = GitLabInstances::from_json(
            r#"{"instances": [
                {"url": "https://gitlab.example.com", "token": "glpat-secret-one"},
                {"url": "https://code.internal/", "token": "glpat-secret-two", "api_url": "https://code-api.internal/api/v4"}
            ]}"#,
        )
        .unwrap();
        let one = instances
            .for_instance("https://gitlab.example.com")
            .unwrap();
        assert_eq!(one.api_url.as_str(), "https://gitlab.example.com/api/v4");
        assert_eq!(one.token.expose(), "glpat-secret-one");
        let two = instances.for_instance("http://CODE.internal").unwrap();
        assert_eq!(two.api_url.as_str(), "https://code-api.internal/api/v4");
        assert!(
            instances
                .for_instance("https://gitlab.example.com.evil")
                .is_none()
        );
        assert!(
            instances
                .for_instance("https://evil/gitlab.example.com")
                .is_none()
        );
        assert!(instances.for_instance("").is_none());
    }

    #[test]
    fn every_problem_is_reported_without_the_token() {
        let errors = GitLabInstances::from_json(
            r#"{"instances": [
                {"url": "gitlab.example.com", "token": "glpat-leak-me-1"},
                {"url": "https://a.example", "token": "glpat-leak-me-2", "api_url": "http://a.example/api/v4"},
                {"token": "glpat-leak-me-3"},
                {"url": "https://b.example"}
            ]}"#,
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text.iter()
                .map(|e| e.split(':').next().unwrap())
                .collect::<Vec<_>>(),
            vec![
                "instances[0].url",
                "instances[1].api_url",
                "instances[2].url",
                "instances[3].token"
            ],
            "{text:?}"
        );
        assert!(text.iter().all(|e| !e.contains("leak-me")));
        assert!(GitLabInstances::from_json("{}").is_err());
        assert!(
            GitLabInstances::from_json("glpat-leak-me").unwrap_err()[0]
                .to_string()
                .contains("not valid JSON")
        );
        let loopback = instance(
            "http://gitlab.test",
            Some("http://127.0.0.1:8929/api/v4"),
            Secret::new("t"),
        )
        .unwrap();
        assert_eq!(loopback.api_url.as_str(), "http://127.0.0.1:8929/api/v4");
        assert!(format!("{loopback:?}").contains("<redacted>"));
    }
}
