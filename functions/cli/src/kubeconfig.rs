//! `fluxrelay serve --kubeconfig PATH [--context NAME]`: one registry entry straight from a
//! kubeconfig context, subscribed to every push, validated like any other entry.

use std::path::Path;

use fluxrelay_adapters::cluster::{ContextNames, KubeconfigError, select_names};
use fluxrelay_core::registry::ClusterEntry;
use kube::config::Kubeconfig;
use serde_json::{Value, json};

use crate::config::{ConfigError, Problem};

pub fn entry_from_kubeconfig(
    path: &Path,
    context: Option<&str>,
) -> Result<ClusterEntry, ConfigError> {
    let fail = failure_in(path);
    let (text, mut document) = read_document(path)?;
    let selected = select(&text, &document, context, &fail)?;
    let server = text_of(&selected.cluster, "server").ok_or_else(|| {
        fail(
            "clusters",
            format!("cluster {:?} has no server", selected.cluster_name),
        )
    })?;
    inline_files(path, &mut document, &selected, &fail)?;
    let context_name = selected.name;
    let kubeconfig = document.to_string();
    // Refused here, before listening, rather than at every dispatch to the cluster.
    fluxrelay_adapters::cluster::check_kubeconfig(&kubeconfig, Some(&context_name))
        .map_err(|problem| fail(&format!("context {context_name:?}"), problem))?;
    let value = json!({
        "name": cluster_name(&context_name),
        "server": server,
        "kubeconfig": kubeconfig,
        "context": context_name,
    });
    ClusterEntry::from_value(&value).map_err(|error| ConfigError {
        problems: error
            .errors
            .into_iter()
            .map(|field_error| Problem {
                file: path.to_path_buf(),
                field: format!("context {context_name:?}: {}", field_error.path),
                problem: field_error.message,
            })
            .collect(),
    })
}

/// A problem with the kubeconfig at `path`, in `field`.
fn failure_in(path: &Path) -> impl Fn(&str, String) -> ConfigError + '_ {
    move |field: &str, problem: String| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            field: field.to_string(),
            problem,
        }],
    }
}

/// The kubeconfig at `path`: its text, and the same as plain data.
fn read_document(path: &Path) -> Result<(String, Value), ConfigError> {
    let fail = failure_in(path);
    let text = std::fs::read_to_string(path)
        .map_err(|error| fail("", format!("cannot read the kubeconfig: {error}")))?;
    // Its parser's messages quote the document, which holds credentials.
    let document = serde_saphyr::from_str(&text).map_err(|_| {
        fail(
            "",
            "not valid YAML (details withheld: it holds credentials)".into(),
        )
    })?;
    Ok((text, document))
}

/// One context of a kubeconfig, with its cluster and user (null when the context names no
/// user or one the kubeconfig lacks).
struct SelectedContext {
    name: String,
    cluster_name: String,
    cluster: Value,
    user_name: String,
    user: Value,
}

/// `context`, else the current-context: the context dispatch would select
/// ([`select_names`]), found in the plain `document` read from the same `text`.
fn select(
    text: &str,
    document: &Value,
    context: Option<&str>,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Result<SelectedContext, ConfigError> {
    let items = |list: &str| -> &[Value] {
        document
            .get(list)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    };
    let names = select_names(text, context).map_err(|error| match error {
        KubeconfigError::NoContext => {
            fail("current-context", "is not set; pass --context NAME".into())
        }
        KubeconfigError::UnknownContext(name) => {
            let known: Vec<&str> = items("contexts")
                .iter()
                .filter_map(|item| item.get("name").and_then(|n| n.as_str()))
                .collect();
            fail(
                "contexts",
                format!("has no context {name:?} (known: {})", known.join(", ")),
            )
        }
        other => fail("", other.to_string()),
    })?;
    let named = |list: &str, wanted: &str, inner: &str| -> Option<Value> {
        items(list)
            .iter()
            .find(|item| item.get("name").and_then(|n| n.as_str()) == Some(wanted))?
            .get(inner)
            .cloned()
    };
    let ContextNames {
        context: name,
        cluster: cluster_name,
        user,
    } = names;
    let user_name = user.unwrap_or_default();
    let cluster = named("clusters", &cluster_name, "cluster").ok_or_else(|| {
        fail(
            "clusters",
            format!("has no cluster {cluster_name:?} (named by context {name:?})"),
        )
    })?;
    let user = named("users", &user_name, "user").unwrap_or_default();
    Ok(SelectedContext {
        name,
        cluster_name,
        cluster,
        user_name,
        user,
    })
}

fn text_of(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(|v| v.as_str()).map(str::to_string)
}

/// The kubeconfig with the selected context's files read in, as kubectl reads them
/// (relative to the kubeconfig's directory): `certificate-authority`,
/// `client-certificate` and `client-key` become their `*-data` fields and `tokenFile` the
/// token, unless the inline field is there already (it wins, as in kubectl). A registry
/// entry holds its credentials inline, so the same entry works wherever it is read; the
/// files are read once, here, on the operator's machine.
fn inline_files(
    path: &Path,
    document: &mut Value,
    selected: &SelectedContext,
    fail: &impl Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    use base64::Engine as _;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut read_in = |list: &str,
                       name: &str,
                       inner: &str,
                       fields: &[(&str, &str, bool)]|
     -> Result<(), ConfigError> {
        let Some(item) = document
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .and_then(|items| {
                items
                    .iter_mut()
                    .find(|item| item.get("name").and_then(|n| n.as_str()) == Some(name))
            })
            .and_then(|item| item.get_mut(inner))
            .and_then(Value::as_object_mut)
        else {
            return Ok(());
        };
        for (file_field, data_field, base64) in fields {
            let Some(file) = item.remove(*file_field) else {
                continue;
            };
            if item.contains_key(*data_field) {
                continue;
            }
            let file = file.as_str().unwrap_or_default();
            let resolved = base.join(file);
            let content = std::fs::read(&resolved).map_err(|error| {
                fail(
                    &format!("{list}: {name}: {file_field}"),
                    format!("cannot read {}: {error}", resolved.display()),
                )
            })?;
            let value = if *base64 {
                base64::engine::general_purpose::STANDARD.encode(content)
            } else {
                String::from_utf8_lossy(&content).trim().to_string()
            };
            item.insert((*data_field).to_string(), Value::String(value));
        }
        Ok(())
    };
    read_in(
        "clusters",
        &selected.cluster_name,
        "cluster",
        &[("certificate-authority", "certificate-authority-data", true)],
    )?;
    read_in(
        "users",
        &selected.user_name,
        "user",
        &[
            ("client-certificate", "client-certificate-data", true),
            ("client-key", "client-key-data", true),
            ("tokenFile", "token", false),
        ],
    )
}

/// Context names such as `arn:aws:eks:...:cluster/prod` or `admin@prod` become valid
/// registry names: other characters turn into `-`, at most 63 kept (the end is the most
/// specific part).
fn cluster_name(context: &str) -> String {
    let cleaned: String = context
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let start = cleaned.len().saturating_sub(63);
    let name = cleaned[start..].trim_matches('-');
    if name.is_empty() {
        "kubeconfig".to_string()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use serde_json::json;

    #[test]
    fn eks_exec_is_recognised_with_its_cluster_region_and_role() {
        let eks_server = "https://ABC.gr7.eu-west-1.eks.amazonaws.com";
        let cases = [
            (
                json!({"command": "aws", "args": ["--region", "us-east-2", "eks", "get-token", "--cluster-name", "prod"]}),
                eks_server,
                Some(("prod", "us-east-2", None)),
            ),
            (
                json!({"command": "/usr/local/bin/aws", "args": ["eks", "get-token", "--cluster-name=prod", "--role-arn", "arn:aws:iam::1:role/x"]}),
                eks_server,
                Some(("prod", "eu-west-1", Some("arn:aws:iam::1:role/x"))),
            ),
            (
                json!({"command": "aws", "args": ["eks", "get-token", "--cluster-name", "prod"], "env": [{"name": "AWS_REGION", "value": "ap-south-1"}]}),
                "https://10.0.0.1",
                Some(("prod", "ap-south-1", None)),
            ),
            (
                json!({"command": "aws-iam-authenticator", "args": ["token", "-i", "prod"]}),
                eks_server,
                Some(("prod", "eu-west-1", None)),
            ),
            // Negative cases: no region anywhere, no cluster, another plugin.
            (
                json!({"command": "aws", "args": ["eks", "get-token", "--cluster-name", "prod"]}),
                "https://10.0.0.1",
                None,
            ),
            (
                json!({"command": "aws", "args": ["eks", "get-token"]}),
                eks_server,
                None,
            ),
            (
                json!({"command": "gke-gcloud-auth-plugin"}),
                eks_server,
                None,
            ),
            (
                json!({"command": "aws", "args": ["sts", "get-caller-identity"]}),
                eks_server,
                None,
            ),
        ];
        for (exec, server, expected) in cases {
            let found = eks_exec(&exec, server);
            let found = found.as_ref().map(|e| {
                (
                    e.cluster.as_str(),
                    e.region.as_str(),
                    e.assumed_role.as_deref(),
                )
            });
            assert_eq!(found, expected, "{exec}");
        }
    }

    /// A kubeconfig file in the temporary directory, removed when dropped.
    struct TempKubeconfig(PathBuf);

    impl std::ops::Deref for TempKubeconfig {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempKubeconfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A path in the temporary directory no other test or run uses.
    fn unique_temp_path(prefix: &str, suffix: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "{prefix}-{}-{}{suffix}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
    }

    fn kubeconfig(user: serde_json::Value, cluster: serde_json::Value) -> TempKubeconfig {
        let document = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "main",
            "contexts": [{"name": "main", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": user}],
        });
        let path = unique_temp_path("fluxrelay-kubeconfig", ".yaml");
        std::fs::write(&path, document.to_string()).unwrap();
        TempKubeconfig(path)
    }

    #[test]
    fn credentials_are_taken_apart_and_unsafe_or_unknown_ones_refused() {
        use base64::Engine as _;
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let cluster = json!({"server": "https://k.example.com", "certificate-authority-data": b64("-----BEGIN CERTIFICATE-----\nCA\n")});

        let path = kubeconfig(json!({"token": "t0ken"}), cluster.clone());
        let context = read_context(&path, None).unwrap();
        assert_eq!(context.token.as_deref(), Some("t0ken"));
        assert_eq!(
            context.ca_pem.as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nCA\n")
        );
        assert_eq!(context.server, "https://k.example.com");

        let path = kubeconfig(
            json!({"client-certificate-data": b64("CERT"), "client-key-data": b64("KEY")}),
            cluster.clone(),
        );
        let context = read_context(&path, None).unwrap();
        assert_eq!(context.client_certificate_pem.as_deref(), Some("CERT"));
        assert_eq!(context.client_key_pem.as_deref(), Some("KEY"));

        let path = kubeconfig(json!({"exec": {"command": "kubelogin"}}), cluster.clone());
        let context = read_context(&path, None).unwrap();
        assert!(context.token.is_none() && context.eks.is_none());
        assert_eq!(context.unsupported_auth.as_deref(), Some("exec kubelogin"));

        let path = kubeconfig(
            json!({"token": "t"}),
            json!({"server": "https://k", "insecure-skip-tls-verify": true}),
        );
        let error = read_context(&path, None).err().unwrap();
        assert!(
            error.to_string().contains("skips TLS verification"),
            "{error}"
        );

        let error = read_context(&path, Some("other")).err().unwrap();
        assert!(
            error.to_string().contains("has no context \"other\""),
            "{error}"
        );

        let path = kubeconfig(
            json!({"token": "t"}),
            json!({"server": "https://k", "certificate-authority-data": "not base64!"}),
        );
        let error = read_context(&path, None).err().unwrap();
        assert!(
            error
                .to_string()
                .contains("certificate-authority-data: is not base64"),
            "{error}"
        );
    }

    /// The CLI selects through dispatch's rule (`select_names`) and says what is missing
    /// in the operator's terms.
    #[test]
    fn a_missing_context_is_named_with_what_to_pass() {
        let cluster = json!({"server": "https://k.example.com"});
        let path = kubeconfig(json!({"token": "t"}), cluster);
        let text = std::fs::read_to_string(&*path).unwrap();
        let cases = [
            (
                text.replace("\"current-context\":\"main\"", "\"current-context\":\"\""),
                None,
                "current-context: is not set; pass --context NAME",
            ),
            (
                text.clone(),
                Some("other"),
                "contexts: has no context \"other\" (known: main)",
            ),
        ];
        for (document, context, expected) in cases {
            std::fs::write(&*path, &document).unwrap();
            for error in [
                read_context(&path, context).err().unwrap().to_string(),
                entry_from_kubeconfig(&path, context)
                    .err()
                    .unwrap()
                    .to_string(),
            ] {
                assert!(error.contains(expected), "{error}");
            }
        }
    }

    #[test]
    fn the_contexts_files_are_read_into_the_entry_relative_to_the_kubeconfig() {
        use base64::Engine as _;
        use fluxrelay_core::registry::Credentials;
        let dir = unique_temp_path("fluxrelay-kubeconfig-files", "");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let ca = include_str!("../../adapters/src/cluster/testdata/ca.pem");
        std::fs::write(dir.join("certs/ca.crt"), ca).unwrap();
        std::fs::write(dir.join("token"), "file-token\n").unwrap();
        let write = |user: serde_json::Value| {
            let document = json!({
                "apiVersion": "v1", "kind": "Config", "current-context": "main",
                "contexts": [{"name": "main", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://k.example.com", "certificate-authority": "certs/ca.crt"}},
                    {"name": "other", "cluster": {"server": "https://o.example.com", "certificate-authority": "missing.crt"}},
                ],
                "users": [{"name": "u", "user": user}],
            });
            let path = dir.join("config");
            std::fs::write(&path, document.to_string()).unwrap();
            path
        };
        let inlined = |path: &Path| -> serde_json::Value {
            let entry = entry_from_kubeconfig(path, None).unwrap();
            let Credentials::Kubeconfig { kubeconfig, .. } = &entry.credentials else {
                panic!("not a kubeconfig entry");
            };
            serde_json::from_str(kubeconfig.expose()).unwrap()
        };

        let document = inlined(&write(json!({"tokenFile": "token"})));
        let cluster = &document["clusters"][0]["cluster"];
        assert_eq!(
            cluster["certificate-authority-data"],
            base64::engine::general_purpose::STANDARD.encode(ca)
        );
        assert!(cluster.get("certificate-authority").is_none(), "{cluster}");
        let user = &document["users"][0]["user"];
        assert_eq!(user["token"], "file-token");
        assert!(user.get("tokenFile").is_none(), "{user}");
        // Another context's cluster is not read (its file does not exist).
        assert_eq!(
            document["clusters"][1]["cluster"]["certificate-authority"],
            "missing.crt"
        );

        // An inline field wins over its file, as in kubectl.
        let document = inlined(&write(json!({"token": "inline", "tokenFile": "token"})));
        assert_eq!(document["users"][0]["user"]["token"], "inline");

        // A file that cannot be read is named, with the field that names it.
        let path = write(json!({"client-certificate": "nope.crt", "client-key": "nope.key"}));
        let error = entry_from_kubeconfig(&path, None)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("client-certificate"), "{error}");
        assert!(error.contains("nope.crt"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_kubeconfig_dispatch_could_not_use_is_refused_before_listening() {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD
            .encode(include_str!("../../adapters/src/cluster/testdata/ca.pem"));
        let cluster = json!({"server": "https://k.example.com", "certificate-authority-data": ca});
        let usable = kubeconfig(json!({"token": "t"}), cluster.clone());
        assert!(entry_from_kubeconfig(&usable, None).is_ok());
        for (user, said) in [
            (
                json!({"exec": {"command": "kubelogin"}}),
                "credentials inline",
            ),
            (
                json!({"client-certificate-data": "%%%"}),
                "client-certificate-data",
            ),
        ] {
            let path = kubeconfig(user, cluster.clone());
            let error = entry_from_kubeconfig(&path, None)
                .err()
                .unwrap()
                .to_string();
            assert!(error.contains(said), "{error}");
            assert!(error.contains("context \"main\""), "{error}");
        }
    }

    #[test]
    fn context_names_become_registry_names() {
        for (context, name) in [
            ("kind-kind", "kind-kind"),
            ("admin@prod", "admin-prod"),
            (
                "arn:aws:eks:eu-west-1:123456789012:cluster/prod",
                "arn-aws-eks-eu-west-1-123456789012-cluster-prod",
            ),
            ("@@@", "kubeconfig"),
            (&"x".repeat(80), &"x".repeat(63)),
        ] {
            assert_eq!(cluster_name(context), name, "{context}");
        }
    }
}

/// EKS authentication found in a kubeconfig user's `exec` (`aws eks get-token` or
/// `aws-iam-authenticator token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EksExec {
    pub cluster: String,
    pub region: String,
    pub assumed_role: Option<String>,
}

/// One kubeconfig context with its credentials taken apart (`fluxrelay cluster add`).
/// `Debug` is not derived: the fields hold credentials.
pub struct KubeconfigContext {
    pub path: std::path::PathBuf,
    pub name: String,
    pub server: String,
    pub ca_pem: Option<String>,
    pub token: Option<String>,
    pub client_certificate_pem: Option<String>,
    pub client_key_pem: Option<String>,
    pub eks: Option<EksExec>,
    /// What the user authenticates with when it is none of the above.
    pub unsupported_auth: Option<String>,
}

impl KubeconfigContext {
    /// A client with the operator's own kubeconfig (exec plugins allowed: this runs on the
    /// operator's machine, not in fluxrelay).
    pub async fn client(&self) -> Result<kube::Client, String> {
        let kubeconfig = Kubeconfig::read_from(&self.path)
            .map_err(|_| "cannot read the kubeconfig".to_string())?;
        let options = kube::config::KubeConfigOptions {
            context: Some(self.name.clone()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|error| format!("kubeconfig context {:?}: {error}", self.name))?;
        kube::Client::try_from(config)
            .map_err(|error| format!("kubeconfig context {:?}: {error}", self.name))
    }
}

pub fn read_context(path: &Path, context: Option<&str>) -> Result<KubeconfigContext, ConfigError> {
    let fail = failure_in(path);
    let (text, document) = read_document(path)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let SelectedContext {
        name,
        cluster_name,
        cluster,
        user,
        ..
    } = select(&text, &document, context, &fail)?;
    let server = text_of(&cluster, "server").ok_or_else(|| {
        fail(
            "clusters",
            format!("cluster {cluster_name:?} has no server"),
        )
    })?;
    if cluster
        .get("insecure-skip-tls-verify")
        .and_then(|v| v.as_bool())
        == Some(true)
    {
        return Err(fail(
            "clusters",
            format!(
                "cluster {cluster_name:?} skips TLS verification; fluxrelay sends credentials only to a verified apiserver: give it certificate-authority-data"
            ),
        ));
    }
    let decode = |field: &str, encoded: &str| -> Result<String, ConfigError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| fail(field, "is not base64 of a PEM text".into()))
    };
    let read_file = |field: &str, file: &str| -> Result<String, ConfigError> {
        let resolved = base.join(file);
        std::fs::read_to_string(&resolved).map_err(|error| {
            fail(
                field,
                format!("cannot read {}: {error}", resolved.display()),
            )
        })
    };
    let ca_pem = match (
        text_of(&cluster, "certificate-authority-data"),
        text_of(&cluster, "certificate-authority"),
    ) {
        (Some(data), _) => Some(decode("certificate-authority-data", &data)?),
        (None, Some(file)) => Some(read_file("certificate-authority", &file)?),
        (None, None) => None,
    };
    let mut found = KubeconfigContext {
        path: path.to_path_buf(),
        name: name.clone(),
        server: server.clone(),
        ca_pem,
        token: None,
        client_certificate_pem: None,
        client_key_pem: None,
        eks: None,
        unsupported_auth: None,
    };
    if let Some(token) = text_of(&user, "token") {
        found.token = Some(token);
    } else if let Some(file) = text_of(&user, "tokenFile") {
        found.token = Some(read_file("tokenFile", &file)?.trim().to_string());
    } else if user.get("client-certificate-data").is_some()
        || user.get("client-certificate").is_some()
    {
        found.client_certificate_pem = Some(match text_of(&user, "client-certificate-data") {
            Some(data) => decode("client-certificate-data", &data)?,
            None => read_file(
                "client-certificate",
                &text_of(&user, "client-certificate").unwrap_or_default(),
            )?,
        });
        found.client_key_pem = Some(match text_of(&user, "client-key-data") {
            Some(data) => decode("client-key-data", &data)?,
            None => read_file(
                "client-key",
                &text_of(&user, "client-key").unwrap_or_default(),
            )?,
        });
    } else if let Some(exec) = user.get("exec") {
        found.eks = eks_exec(exec, &server);
        if found.eks.is_none() {
            found.unsupported_auth = Some(format!(
                "exec {}",
                text_of(exec, "command").unwrap_or_default()
            ));
        }
    } else if user.get("auth-provider").is_some() {
        found.unsupported_auth = Some("an auth-provider plugin".into());
    }
    Ok(found)
}

/// `aws eks get-token --cluster-name C [--region R] [--role-arn A]` or
/// `aws-iam-authenticator token -i C [--role A]`; the region, when not given, from the
/// exec's environment or the EKS endpoint's host name.
pub fn eks_exec(exec: &serde_json::Value, server: &str) -> Option<EksExec> {
    let command = exec.get("command")?.as_str()?;
    let program = command.rsplit('/').next().unwrap_or(command);
    let args: Vec<&str> = exec
        .get("args")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let value_of = |names: &[&str]| -> Option<String> {
        args.iter().enumerate().find_map(|(index, arg)| {
            names.iter().find_map(|name| {
                if let Some(value) = arg.strip_prefix(&format!("{name}=")) {
                    Some(value.to_string())
                } else if arg == name {
                    args.get(index + 1).map(|v| v.to_string())
                } else {
                    None
                }
            })
        })
    };
    let (cluster, role) = match program {
        "aws" if args.contains(&"eks") && args.contains(&"get-token") => {
            (value_of(&["--cluster-name"])?, value_of(&["--role-arn"]))
        }
        "aws-iam-authenticator" if args.contains(&"token") => (
            value_of(&["-i", "--cluster-id"])?,
            value_of(&["-r", "--role"]),
        ),
        _ => return None,
    };
    let env_region = exec.get("env").and_then(|e| e.as_array()).and_then(|env| {
        env.iter().find_map(|item| {
            let name = item.get("name")?.as_str()?;
            matches!(name, "AWS_REGION" | "AWS_DEFAULT_REGION")
                .then(|| item.get("value")?.as_str().map(str::to_string))
                .flatten()
        })
    });
    let host_region = url::Url::parse(server).ok().and_then(|url| {
        let host = url.host_str()?.to_string();
        let rest = host.strip_suffix(".eks.amazonaws.com")?;
        rest.rsplit('.').next().map(str::to_string)
    });
    let region = value_of(&["--region"]).or(env_region).or(host_region)?;
    Some(EksExec {
        cluster,
        region,
        assumed_role: role,
    })
}
