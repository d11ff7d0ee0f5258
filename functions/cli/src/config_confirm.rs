//! `[confirm]` and `[[gitlab]]` in the serve configuration (issue 14): how confirmations
//! run, and each GitLab instance's API URL and token (inline, from a file or from an
//! environment variable — exactly one, redacted everywhere).

use fluxrelay_core::confirm::schedule::ConfirmPolicy;
use fluxrelay_core::gitlab_api::instances::{GitLabInstances, instance};
use fluxrelay_core::gitlab_api::statuses::StatusNaming;
use fluxrelay_core::handlers::confirm::ConfirmRules;
use fluxrelay_core::secret::Secret;

use super::{Reader, Table};

pub(super) const CONFIRM: &[&str] = &[
    "deadline_secs",
    "request_budget",
    "max_delay_secs",
    "status_name",
    "summary_status",
];
const GITLAB: &[&str] = &["url", "api_url", "token", "token_file", "token_env"];

impl Reader<'_> {
    pub(super) fn confirm(&mut self, table: &Table) -> ConfirmRules {
        let mut rules = ConfirmRules::default();
        let empty = Table::new();
        let confirm = self.subtable(table, "confirm").unwrap_or(&empty);
        self.unknown_keys("confirm", confirm, CONFIRM);
        let mut policy = ConfirmPolicy::default();
        if let Some(secs) = self.integer(confirm, "confirm", "deadline_secs", (10, 86_400)) {
            policy.deadline_secs = secs as u32;
        }
        if let Some(budget) = self.integer(confirm, "confirm", "request_budget", (1, 100_000)) {
            policy.request_budget = budget as u32;
        }
        if let Some(secs) = self.integer(confirm, "confirm", "max_delay_secs", (1, 900)) {
            policy.max_delay_secs = secs as u32;
        }
        rules.policy = policy;
        if let Some(template) = self.string(confirm, "confirm", "status_name") {
            match StatusNaming::new(&template) {
                Ok(naming) => rules.naming = naming,
                Err(problem) => self.problem("confirm.status_name", problem),
            }
        }
        if let Some(name) = self.string(confirm, "confirm", "summary_status") {
            let name = name.trim().to_string();
            if name.is_empty()
                || name.chars().count() > 150
                || rules.naming.cluster(&name).is_some()
            {
                self.problem(
                    "confirm.summary_status",
                    "must be a status name (at most 150 characters) that is not also a cluster's",
                );
            } else {
                rules.summary_name = Some(name);
            }
        }
        rules
    }

    pub(super) fn gitlab(&mut self, table: &Table) -> GitLabInstances {
        let mut instances = GitLabInstances::default();
        let items = match table.get("gitlab") {
            None => return instances,
            Some(toml::Value::Array(items)) => items,
            Some(other) => {
                self.problem(
                    "gitlab",
                    format!(
                        "must be an array of tables ([[gitlab]]), not {}",
                        other.type_str()
                    ),
                );
                return instances;
            }
        };
        for (index, item) in items.iter().enumerate() {
            let prefix = format!("gitlab[{index}]");
            let toml::Value::Table(entry) = item else {
                self.problem(&prefix, "must be a table");
                continue;
            };
            self.unknown_keys(&prefix, entry, GITLAB);
            let Some(url) = self.string(entry, &prefix, "url") else {
                self.problem(format!("{prefix}.url"), "is required");
                continue;
            };
            let api_url = self.string(entry, &prefix, "api_url");
            let inline = self.string(entry, &prefix, "token");
            let file = self.string(entry, &prefix, "token_file");
            let env = self.string(entry, &prefix, "token_env");
            let token = match (inline, file, env) {
                (Some(token), None, None) => Some(Secret::new(token)),
                (None, Some(path), None) => {
                    let resolved = self.resolve(&path);
                    match std::fs::read_to_string(&resolved) {
                        Ok(text) => Some(Secret::new(text.trim())),
                        Err(error) => {
                            self.problem(
                                format!("{prefix}.token_file"),
                                format!("cannot read {}: {error}", resolved.display()),
                            );
                            None
                        }
                    }
                }
                (None, None, Some(name)) => match self.env.var(&name).filter(|v| !v.is_empty()) {
                    Some(value) => Some(Secret::new(value)),
                    None => {
                        self.problem(
                            format!("{prefix}.token_env"),
                            format!("environment variable {name} is not set"),
                        );
                        None
                    }
                },
                _ => {
                    self.problem(&prefix, "give exactly one of token, token_file, token_env");
                    None
                }
            };
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                continue;
            };
            match instance(&url, api_url.as_deref(), token) {
                Ok(instance) => {
                    if instances.for_instance(&instance.url).is_some() {
                        self.problem(format!("{prefix}.url"), "another [[gitlab]] has this host");
                    } else {
                        instances.instances.push(instance);
                    }
                }
                Err((field, problem)) => self.problem(format!("{prefix}.{field}"), problem),
            }
        }
        instances
    }
}
