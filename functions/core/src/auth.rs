//! Webhook authentication: `X-Gitlab-Token` and GitLab signing tokens.
