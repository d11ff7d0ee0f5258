use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

struct FakeEnv(HashMap<&'static str, &'static str>);

impl Environment for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|value| value.to_string())
    }
}

fn no_env() -> FakeEnv {
    FakeEnv(HashMap::new())
}

/// A directory of its own under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fluxrelay-config-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FILE: &str = "/etc/fluxrelay/fluxrelay.toml";
const TOKEN: &str = "webhook-token-9f8e7d";
const KUBE_TOKEN: &str = "kube-token-5c4b3a";

fn parse(text: &str) -> Result<ServeConfig, ConfigError> {
    ServeConfig::parse(Path::new(FILE), text, &no_env())
}

fn cluster_json(name: &str, server: &str) -> String {
    format!(r#"{{"name": "{name}", "server": "{server}", "auth": {{"token": "{KUBE_TOKEN}"}}}}"#)
}

#[test]
fn a_file_with_only_a_token_gets_every_default() {
    let config = parse(&format!("[webhook]\ntokens = [\"{TOKEN}\"]\n")).unwrap();

    assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(config.data_dir, default_data_dir());
    assert_eq!(config.ingest.auth.tokens.len(), 1);
    assert!(config.ingest.auth.tokens[0].matches(TOKEN.as_bytes()));
    assert_eq!(config.ingest.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(config.retry, RetryPolicy::default());
    assert_eq!(config.dispatch_workers, DEFAULT_DISPATCH_WORKERS);
    assert_eq!(config.journal_max_bytes, DEFAULT_JOURNAL_MAX_BYTES);
    assert!(config.clusters.is_empty());
}

#[test]
fn every_setting_is_read_and_relative_paths_follow_the_file() {
    let text = format!(
        r#"
listen = "0.0.0.0:9090"
data_dir = "state"
journal_max_mib = 256

[webhook]
tokens = ["{TOKEN}"]
max_body_bytes = 65536
timestamp_tolerance_secs = 60

[dispatch]
max_attempts = 3
retry_base_secs = 1
retry_max_secs = 30
workers = 2

[[clusters]]
name = "prod"
server = "https://prod.example.com:6443"
auth = {{ token = "{KUBE_TOKEN}" }}
namespaces = ["flux-system", "apps"]
"#
    );
    let config = parse(&text).unwrap();

    assert_eq!(config.listen, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(config.data_dir, Path::new("/etc/fluxrelay/state"));
    assert_eq!(config.ingest.max_body_bytes, 65536);
    assert_eq!(config.ingest.auth.timestamp_tolerance_secs, 60);
    assert_eq!(
        config.retry,
        RetryPolicy {
            max_attempts: 3,
            base_delay_secs: 1,
            max_delay_secs: 30
        }
    );
    assert_eq!(config.dispatch_workers, 2);
    assert_eq!(config.journal_max_bytes, 256 * 1024 * 1024);
    assert_eq!(config.clusters.len(), 1);
    assert_eq!(config.clusters[0].name, "prod");
    assert_eq!(config.clusters[0].namespaces, ["flux-system", "apps"]);
}

#[test]
fn secrets_come_from_files_and_the_environment_too() {
    let dir = TempDir::new("secret-sources");
    dir.write("token", &format!("{TOKEN}\n"));
    dir.write("signing", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    let file = dir.write(
        "fluxrelay.toml",
        "[webhook]\ntoken_files = [\"token\"]\ntoken_env = [\"SECOND_TOKEN\"]\nsigning_key_files = [\"signing\"]\n",
    );
    let env = FakeEnv(HashMap::from([("SECOND_TOKEN", "from-the-environment")]));
    let text = std::fs::read_to_string(&file).unwrap();

    let config = ServeConfig::parse(&file, &text, &env).unwrap();

    let tokens = &config.ingest.auth.tokens;
    assert_eq!(tokens.len(), 2);
    assert!(tokens[0].matches(TOKEN.as_bytes()), "file token is trimmed");
    assert!(tokens[1].matches(b"from-the-environment"));
    assert_eq!(config.ingest.auth.signing_keys.len(), 1);
}

#[test]
fn clusters_come_from_tables_files_and_a_directory() {
    let dir = TempDir::new("cluster-sources");
    dir.write("one.json", &cluster_json("one", "https://one.example.com"));
    dir.write(
        "clusters.d/b.json",
        &cluster_json("three", "https://three.example.com"),
    );
    dir.write(
        "clusters.d/a.json",
        &cluster_json("two", "https://two.example.com"),
    );
    dir.write("clusters.d/notes.txt", "not an entry");
    let text = format!(
        "cluster_files = [\"one.json\"]\ncluster_dir = \"clusters.d\"\n[webhook]\ntokens = [\"{TOKEN}\"]\n[[clusters]]\nname = \"zero\"\nserver = \"https://zero.example.com\"\nauth = {{ token = \"{KUBE_TOKEN}\" }}\n"
    );
    let file = dir.write("fluxrelay.toml", &text);

    let config = ServeConfig::parse(&file, &text, &no_env()).unwrap();

    let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["zero", "one", "two", "three"]);
}

/// Each broken file, and the field and words its one problem must carry.
#[test]
fn every_problem_names_the_field_and_what_is_wrong() {
    let token = format!("[webhook]\ntokens = [\"{TOKEN}\"]\n");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "syntax",
            format!("listen = \n{token}"),
            "",
            "not valid TOML (line 1",
        ),
        (
            "unknown top-level field",
            format!("lisen = \"x\"\n{token}"),
            "lisen",
            "unknown field",
        ),
        (
            "listen not an address",
            format!("listen = \"localhost\"\n{token}"),
            "listen",
            "not an IP address and port",
        ),
        (
            "listen wrong type",
            format!("listen = 8080\n{token}"),
            "listen",
            "must be a string, not integer",
        ),
        (
            "no webhook secret",
            String::new(),
            "webhook",
            "never runs open",
        ),
        (
            "empty token",
            "[webhook]\ntokens = [\"\"]\n".into(),
            "webhook",
            "token #1 is empty",
        ),
        (
            "token not a string",
            "[webhook]\ntokens = [1]\n".into(),
            "webhook.tokens[0]",
            "must be a string",
        ),
        (
            "tokens not a list",
            "[webhook]\ntokens = \"x\"\n".into(),
            "webhook.tokens",
            "must be a list of strings",
        ),
        (
            "unknown webhook field",
            format!("{token}token = \"x\"\n"),
            "webhook.token",
            "unknown field",
        ),
        (
            "env var not set",
            format!("{token}token_env = [\"NOT_SET_ANYWHERE\"]\n"),
            "webhook.token_env[0]",
            "NOT_SET_ANYWHERE is not set",
        ),
        (
            "token file missing",
            format!("{token}token_files = [\"nope\"]\n"),
            "webhook.token_files[0]",
            "cannot read /etc/fluxrelay/nope",
        ),
        (
            "bad signing key",
            format!("{token}signing_keys = [\"whsec_short\"]\n"),
            "webhook.signing_keys[0]",
            "signing key is invalid",
        ),
        (
            "body cap too small",
            format!("{token}max_body_bytes = 10\n"),
            "webhook.max_body_bytes",
            "out of range",
        ),
        (
            "webhook not a table",
            "webhook = 1\n".into(),
            "webhook",
            "must be a table",
        ),
        (
            "attempts zero",
            format!("{token}[dispatch]\nmax_attempts = 0\n"),
            "dispatch.max_attempts",
            "out of range",
        ),
        (
            "workers not a number",
            format!("{token}[dispatch]\nworkers = \"4\"\n"),
            "dispatch.workers",
            "must be an integer, not string",
        ),
        (
            "max below base",
            format!("{token}[dispatch]\nretry_base_secs = 10\nretry_max_secs = 5\n"),
            "dispatch.retry_max_secs",
            "must not be less",
        ),
        (
            "unknown dispatch field",
            format!("{token}[dispatch]\nretries = 3\n"),
            "dispatch.retries",
            "unknown field",
        ),
        (
            "journal cap zero",
            format!("journal_max_mib = 0\n{token}"),
            "journal_max_mib",
            "0 is out of range (1 to 1048576)",
        ),
        (
            "journal cap beyond a tebibyte",
            format!("journal_max_mib = 1048577\n{token}"),
            "journal_max_mib",
            "out of range",
        ),
        (
            "journal cap with a unit",
            format!("journal_max_mib = \"64 MiB\"\n{token}"),
            "journal_max_mib",
            "must be an integer, not string",
        ),
        (
            "cluster server http",
            format!(
                "{token}[[clusters]]\nname = \"c\"\nserver = \"http://c.example.com\"\nauth = {{ token = \"{KUBE_TOKEN}\" }}\n"
            ),
            "clusters[0].server",
            "https",
        ),
        (
            "cluster auth missing",
            format!("{token}[[clusters]]\nname = \"c\"\nserver = \"https://c.example.com\"\n"),
            "clusters[0].auth",
            "is required",
        ),
        (
            "clusters not tables",
            format!("clusters = 1\n{token}"),
            "clusters",
            "array of tables",
        ),
        (
            "cluster file missing",
            format!("cluster_files = [\"missing.json\"]\n{token}"),
            "cluster_files[0]",
            "cannot read /etc/fluxrelay/missing.json",
        ),
        (
            "cluster dir missing",
            format!("cluster_dir = \"nowhere\"\n{token}"),
            "cluster_dir",
            "cannot read directory",
        ),
    ];
    for (name, text, field, words) in cases {
        let error = parse(&text)
            .err()
            .unwrap_or_else(|| panic!("{name}: parsed"));
        let problem = error
            .problems
            .iter()
            .find(|p| p.field == field)
            .unwrap_or_else(|| panic!("{name}: no problem for field {field:?} in {error}"));
        assert_eq!(problem.file, Path::new(FILE), "{name}");
        assert!(problem.problem.contains(words), "{name}: {problem}");
        let shown = error.to_string();
        assert!(shown.starts_with(FILE), "{name}: {shown}");
    }
}

#[test]
fn a_valid_file_has_no_problems_and_a_broken_one_reports_all_of_them() {
    let text = "listen = \"nowhere\"\nbogus = 1\n[dispatch]\nworkers = 0\n";

    let error = parse(text).unwrap_err();

    let fields: Vec<&str> = error.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["bogus", "listen", "webhook", "dispatch.workers"]);
}

#[test]
fn duplicate_cluster_names_name_both_places() {
    let dir = TempDir::new("duplicates");
    dir.write(
        "prod.json",
        &cluster_json("prod", "https://prod.example.com"),
    );
    let text = format!(
        "cluster_files = [\"prod.json\"]\n[webhook]\ntokens = [\"{TOKEN}\"]\n[[clusters]]\nname = \"prod\"\nserver = \"https://other.example.com\"\nauth = {{ token = \"{KUBE_TOKEN}\" }}\n"
    );
    let file = dir.write("fluxrelay.toml", &text);

    let error = ServeConfig::parse(&file, &text, &no_env()).unwrap_err();

    assert_eq!(error.problems.len(), 1, "{error}");
    let problem = &error.problems[0];
    assert_eq!(problem.file, dir.0.join("prod.json"));
    assert_eq!(problem.field, "name", "the field inside prod.json");
    assert!(problem.problem.contains("already defined in"), "{problem}");
}

#[test]
fn a_cluster_file_with_bad_json_names_the_file_and_position() {
    let dir = TempDir::new("bad-json");
    dir.write(
        "broken.json",
        &format!("{{\"name\": \"x\", \"auth\": {{\"token\": \"{KUBE_TOKEN}\"\n"),
    );
    let text = format!("cluster_files = [\"broken.json\"]\n[webhook]\ntokens = [\"{TOKEN}\"]\n");
    let file = dir.write("fluxrelay.toml", &text);

    let error = ServeConfig::parse(&file, &text, &no_env()).unwrap_err();

    assert_eq!(error.problems[0].file, dir.0.join("broken.json"));
    assert!(
        error.problems[0].problem.contains("not valid JSON (line 2"),
        "{error}"
    );
}

#[test]
fn no_secret_reaches_an_error_message_or_debug_output() {
    let dir = TempDir::new("no-secrets");
    dir.write("bad.json", &format!("{{\"name\": \"bad\", \"server\": \"http://x\", \"auth\": {{\"token\": \"{KUBE_TOKEN}\"}}}}"));
    let broken = [
        // TOML's own error would quote this line.
        format!("[webhook]\ntokens = [\"{TOKEN}\" \"{TOKEN}\"]\n"),
        format!(
            "cluster_files = [\"bad.json\"]\n[webhook]\ntokens = [\"{TOKEN}\"]\n[[clusters]]\nname = \"c\"\nserver = \"ftp://x\"\nauth = {{ token = \"{KUBE_TOKEN}\", extra = \"{KUBE_TOKEN}\" }}\n"
        ),
        format!("[webhook]\ntokens = [\" {TOKEN}\"]\n"),
    ];
    for text in broken {
        let file = dir.write("fluxrelay.toml", &text);
        let error = ServeConfig::parse(&file, &text, &no_env()).unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains(KUBE_TOKEN),
            "{shown}"
        );
    }
    let valid = format!(
        "[webhook]\ntokens = [\"{TOKEN}\"]\n[[clusters]]\nname = \"c\"\nserver = \"https://x\"\nauth = {{ token = \"{KUBE_TOKEN}\" }}\n"
    );
    let config = parse(&valid).unwrap();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains(KUBE_TOKEN),
        "{shown}"
    );
}

#[test]
fn data_dir_of_reads_only_the_data_dir() {
    let dir = TempDir::new("data-dir-of");
    // Valid for this purpose even though serve would refuse it (no webhook secret).
    let file = dir.write("fluxrelay.toml", "data_dir = \"queue\"\n");
    assert_eq!(data_dir_of(&file).unwrap(), dir.0.join("queue"));
    let file = dir.write("other.toml", "listen = 1\n");
    assert_eq!(data_dir_of(&file).unwrap(), default_data_dir());
    let file = dir.write("wrong.toml", "data_dir = 3\n");
    assert_eq!(
        data_dir_of(&file).unwrap_err().problems[0].field,
        "data_dir"
    );
}

// ---- [confirm] and [[gitlab]] (issue 14) -----------------------------------------------

#[test]
fn confirm_and_gitlab_have_defaults_and_read_every_source_of_token() {
    let minimal = format!("[webhook]\ntokens = [\"{TOKEN}\"]\n");
    let config = parse(&minimal).unwrap();
    assert_eq!(config.confirm.policy.deadline_secs, 900);
    assert_eq!(config.confirm.naming.name("a"), "fluxrelay/a");
    assert!(config.confirm.summary_name.is_none());
    assert!(config.gitlab.is_empty());

    let dir = TempDir::new("gitlab-token");
    let token_file = dir.write("gitlab.token", "  glpat-from-a-file\n");
    let text = format!(
        "{minimal}\n[confirm]\ndeadline_secs = 120\nstatus_name = \"deploy/{{cluster}}\"\nsummary_status = \"deploy\"\n\n\
         [[gitlab]]\nurl = \"https://gitlab.example.com\"\ntoken = \"glpat-inline\"\n\n\
         [[gitlab]]\nurl = \"https://code.example.org\"\ntoken_file = {:?}\n\n\
         [[gitlab]]\nurl = \"https://third.example.net\"\napi_url = \"https://api.example.net/api/v4\"\ntoken_env = \"GITLAB_TOKEN\"\n",
        token_file.display().to_string()
    );
    let env = FakeEnv(HashMap::from([("GITLAB_TOKEN", "glpat-from-env")]));
    let config = ServeConfig::parse(Path::new(FILE), &text, &env).unwrap();
    assert_eq!(config.confirm.policy.deadline_secs, 120);
    assert_eq!(config.confirm.naming.name("a"), "deploy/a");
    assert_eq!(config.confirm.summary_name.as_deref(), Some("deploy"));
    let token = |instance: &str| {
        config
            .gitlab
            .for_instance(instance)
            .unwrap()
            .token
            .expose()
            .to_string()
    };
    assert_eq!(token("https://gitlab.example.com"), "glpat-inline");
    assert_eq!(token("https://code.example.org"), "glpat-from-a-file");
    assert_eq!(token("https://third.example.net"), "glpat-from-env");
    assert_eq!(
        config
            .gitlab
            .for_instance("https://third.example.net")
            .unwrap()
            .api_url
            .as_str(),
        "https://api.example.net/api/v4"
    );
    assert!(
        !format!("{config:?}").contains("glpat-"),
        "tokens are redacted"
    );
}

#[test]
fn http_limits_have_defaults_and_are_read_and_checked() {
    let defaults = parse(&format!("[webhook]\ntokens = [\"{TOKEN}\"]\n")).unwrap();
    assert_eq!(defaults.http, HttpLimits::default());
    assert_eq!(
        (
            defaults.http.connections.header_read_timeout,
            defaults.http.request_timeout,
            defaults.http.connections.max_connections,
            defaults.http.webhook_concurrency,
            defaults.http.connections.shutdown_grace,
        ),
        (
            Duration::from_secs(5),
            Duration::from_secs(10),
            512,
            16,
            Duration::from_secs(10)
        )
    );
    let text = format!(
        "[webhook]\ntokens = [\"{TOKEN}\"]\n[http]\nheader_read_timeout_secs = 3\nrequest_timeout_secs = 8\nmax_connections = 2048\nwebhook_concurrency = 4\nshutdown_grace_secs = 20\n"
    );
    let read = parse(&text).unwrap().http;
    assert_eq!(read.connections.header_read_timeout, Duration::from_secs(3));
    assert_eq!(read.request_timeout, Duration::from_secs(8));
    assert_eq!(read.connections.max_connections, 2048);
    assert_eq!(read.webhook_concurrency, 4);
    assert_eq!(read.connections.shutdown_grace, Duration::from_secs(20));

    let token = format!("[webhook]\ntokens = [\"{TOKEN}\"]\n");
    for (why, http, field, words) in [
        (
            "no header timeout",
            "header_read_timeout_secs = 0",
            "http.header_read_timeout_secs",
            "out of range (1 to 60)",
        ),
        (
            "a header timeout past GitLab's own",
            "header_read_timeout_secs = 61",
            "http.header_read_timeout_secs",
            "out of range",
        ),
        (
            "no request timeout",
            "request_timeout_secs = 0",
            "http.request_timeout_secs",
            "out of range (1 to 300)",
        ),
        (
            "too few connections",
            "max_connections = 8",
            "http.max_connections",
            "out of range (16 to 100000)",
        ),
        (
            "no webhook slot",
            "webhook_concurrency = 0",
            "http.webhook_concurrency",
            "out of range (1 to 1024)",
        ),
        (
            "an endless shutdown",
            "shutdown_grace_secs = 3600",
            "http.shutdown_grace_secs",
            "out of range (1 to 300)",
        ),
        (
            "a string",
            "max_connections = \"many\"",
            "http.max_connections",
            "must be an integer, not string",
        ),
        (
            "a typo",
            "max_conections = 10",
            "http.max_conections",
            "unknown field",
        ),
    ] {
        let error = parse(&format!("{token}[http]\n{http}\n")).unwrap_err();
        let problem = error
            .problems
            .iter()
            .find(|p| p.field == field)
            .unwrap_or_else(|| panic!("{why}: no problem for {field} in {error}"));
        assert!(problem.problem.contains(words), "{why}: {problem}");
    }
    let not_a_table = parse(&format!("http = 5\n{token}")).unwrap_err();
    assert!(
        not_a_table.to_string().contains("http: must be a table"),
        "{not_a_table}"
    );
}

#[test]
fn confirm_and_gitlab_mistakes_are_reported_by_field_without_the_token() {
    let text = format!(
        "[webhook]\ntokens = [\"{TOKEN}\"]\n\n[confirm]\ndeadline_secs = 5\nstatus_name = \"fluxrelay\"\nsummary_status = \"fluxrelay/x\"\nretries = 3\n\n\
         [[gitlab]]\nurl = \"https://a.example\"\ntoken = \"glpat-secret-1\"\ntoken_env = \"X\"\n\n\
         [[gitlab]]\nurl = \"https://b.example\"\napi_url = \"http://b.example/api/v4\"\ntoken = \"glpat-secret-2\"\n\n\
         [[gitlab]]\ntoken = \"glpat-secret-3\"\n\n\
         [[gitlab]]\nurl = \"https://c.example\"\ntoken_env = \"UNSET_TOKEN\"\n"
    );
    let error = parse(&text).unwrap_err();
    let fields: Vec<&str> = error.problems.iter().map(|p| p.field.as_str()).collect();
    for field in [
        "confirm.deadline_secs",
        "confirm.status_name",
        "confirm.retries",
        "gitlab[0]",
        "gitlab[1].api_url",
        "gitlab[2].url",
        "gitlab[3].token_env",
    ] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    assert!(!error.to_string().contains("glpat-secret"), "{error}");
}

#[test]
fn instance_secrets_tie_tokens_and_keys_to_instances() {
    const TIED: &str = "tied-webhook-token-4e1a";
    let key = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let text = format!(
        r#"
[webhook]
tokens = ["{TOKEN}"]

[[webhook.instance_secrets]]
instances = ["gitlab.example.com", "https://gitlab.example.org:8443"]
tokens = ["{TIED}"]
signing_keys = ["{key}"]
"#
    );
    let config = parse(&text).unwrap();
    let auth = &config.ingest.auth;
    assert_eq!(auth.tokens.len(), 1);
    assert_eq!(auth.tied.len(), 1);
    assert_eq!(
        auth.tied[0].instances,
        ["gitlab.example.com", "https://gitlab.example.org:8443"]
    );
    assert!(auth.tied[0].tokens[0].matches(TIED.as_bytes()));
    assert_eq!(auth.tied[0].signing_keys.len(), 1);

    // Only tied secrets: still a complete configuration.
    let only_tied = format!(
        "[[webhook.instance_secrets]]\ninstances = [\"gitlab.example.com\"]\ntokens = [\"{TIED}\"]\n"
    );
    assert!(parse(&only_tied).is_ok());

    for (why, table, field, words) in [
        (
            "no instances",
            format!("tokens = [\"{TIED}\"]"),
            "webhook.instance_secrets[0].instances",
            "at least one GitLab instance",
        ),
        (
            "an empty instance",
            format!("instances = [\"https://\"]\ntokens = [\"{TIED}\"]"),
            "webhook.instance_secrets[0].instances[0]",
            "host name or URL",
        ),
        (
            "no secret",
            "instances = [\"gitlab.example.com\"]".to_string(),
            "webhook.instance_secrets[0]",
            "no token and no signing key",
        ),
        (
            "a bad key",
            "instances = [\"gitlab.example.com\"]\nsigning_keys = [\"whsec_short\"]".to_string(),
            "webhook.instance_secrets[0].signing_keys[0]",
            "signing key is invalid",
        ),
        (
            "an unset variable",
            "instances = [\"gitlab.example.com\"]\ntoken_env = [\"FLUXRELAY_UNSET_TIED\"]"
                .to_string(),
            "webhook.instance_secrets[0].token_env[0]",
            "FLUXRELAY_UNSET_TIED is not set",
        ),
        (
            "a typo",
            format!("instances = [\"gitlab.example.com\"]\ntoken = [\"{TIED}\"]"),
            "webhook.instance_secrets[0].token",
            "unknown field",
        ),
    ] {
        let text =
            format!("[webhook]\ntokens = [\"{TOKEN}\"]\n[[webhook.instance_secrets]]\n{table}\n");
        let error = parse(&text).unwrap_err();
        let problem = error
            .problems
            .iter()
            .find(|p| p.field == field)
            .unwrap_or_else(|| panic!("{why}: no problem for {field} in {error}"));
        assert!(problem.problem.contains(words), "{why}: {problem}");
        assert!(!error.to_string().contains(TIED), "{why}: {error}");
    }
}

#[test]
fn the_example_config_parses_and_shows_the_http_defaults() {
    let text = include_str!("../../../examples/fluxrelay.toml");
    let config = parse(text).unwrap();
    assert_eq!(config.http, HttpLimits::default());
    // Every [http] key is written out in the example, and every documented key is known.
    for key in HTTP {
        assert!(
            text.contains(&format!("\n{key} = ")),
            "examples/fluxrelay.toml does not show http.{key}"
        );
    }
    assert!(text.contains("[[webhook.instance_secrets]]"));
    for key in WEBHOOK
        .iter()
        .chain(INSTANCE_SECRETS)
        .filter(|key| **key != "instance_secrets")
    {
        assert!(
            text.contains(&format!(" {key} = ")) || text.contains(&format!("\n{key} = ")),
            "examples/fluxrelay.toml does not document webhook key {key}"
        );
    }
}

#[test]
fn registry_tokens_come_from_the_three_sources_and_default_to_the_webhook_tokens() {
    let dir = TempDir::new("registry-tokens");
    dir.write("registry", "registry-token-from-file\n");
    let file = dir.write(
        "fluxrelay.toml",
        &format!("[webhook]\ntokens = [\"{TOKEN}\"]\nregistry_tokens = [\"inline-registry-token\"]\nregistry_token_files = [\"registry\"]\nregistry_token_env = [\"REGISTRY_TOKEN\"]\n"),
    );
    let env = FakeEnv(HashMap::from([(
        "REGISTRY_TOKEN",
        "registry-token-from-env",
    )]));
    let text = std::fs::read_to_string(&file).unwrap();
    let config = ServeConfig::parse(&file, &text, &env).unwrap();
    let registry = &config.ingest.auth.registry_tokens;
    assert_eq!(registry.len(), 3);
    assert!(registry[0].matches(b"inline-registry-token"));
    assert!(registry[1].matches(b"registry-token-from-file"));
    assert!(registry[2].matches(b"registry-token-from-env"));

    let defaulted = parse(&format!("[webhook]\ntokens = [\"{TOKEN}\"]\n")).unwrap();
    assert!(defaulted.ingest.auth.registry_tokens.is_empty());
    assert!(defaulted.ingest.auth.accepted_registry_tokens()[0].matches(TOKEN.as_bytes()));

    let error = parse(&format!(
        "[webhook]\ntokens = [\"{TOKEN}\"]\nregistry_tokens = [\"\"]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("registry token #1 is empty"), "{error}");
}
