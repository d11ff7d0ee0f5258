//! The real kube-apiserver + etcd environment (tests/env/kube-up.sh) and an admin client.
//!
//! One `KubeEnv` per test, inside the test's private network namespace
//! ([`crate::netns::enter`]); dropping it stops the servers (tests/env/kube-down.sh).
//! [`KubeEnv::start_with`] adds opt-in extras, such as EKS-style token authentication
//! through the [`crate::iam_authn`] webhook.
// A test harness: a missing or broken environment fails the test that asked for it.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::iam_authn::{IamAuthn, IamAuthnConfig};

/// The field manager of objects the tests apply.
const FIELD_MANAGER: &str = "fluxrelay-testkit";

pub struct KubeEnv {
    dir: PathBuf,
    env_dir: PathBuf,
    server: String,
    admin: kube::Client,
    /// Dropped after the apiserver is stopped (fields drop after `Drop::drop`).
    iam_authn: Option<IamAuthn>,
}

/// Opt-in extras for [`KubeEnv::start_with`]; the default starts exactly what
/// [`KubeEnv::start`] starts.
#[derive(Debug, Clone, Default)]
pub struct KubeEnvOptions {
    /// Also authenticate `k8s-aws-v1.` bearer tokens, through an aws-iam-authenticator-like
    /// TokenReview webhook served by this process (`--authentication-token-webhook-*`).
    pub iam_authn: Option<IamAuthnConfig>,
}

fn workspace_root() -> PathBuf {
    // tests/testkit → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(dir: &Path, name: &str) -> String {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(text) => text,
        Err(error) => panic!("kube-up.sh left no {name} in {}: {error}", dir.display()),
    }
}

impl KubeEnv {
    /// Runs tests/env/kube-up.sh (found from CARGO_MANIFEST_DIR → workspace root) with a fresh temp KUBE_TESTENV_DIR.
    /// Fails with "kube-apiserver not built: run tests/env/setup.sh" style messages when parts are missing.
    pub async fn start() -> KubeEnv {
        Self::start_with(KubeEnvOptions::default()).await
    }

    /// [`KubeEnv::start`] with extras. The webhook must be served by a runtime that keeps
    /// running while the test talks to the apiserver (the test's own runtime).
    pub async fn start_with(options: KubeEnvOptions) -> KubeEnv {
        assert!(
            crate::netns::in_private_namespace(),
            "KubeEnv::start must run inside a private network namespace: begin the test with `if !fluxrelay_testkit::netns::enter(\"<test name>\") {{ return; }}`"
        );
        let env_dir = workspace_root().join("tests/env");
        let up = env_dir.join("kube-up.sh");
        assert!(
            up.is_file(),
            "{} not found: the kube test environment scripts are missing (tests/env/)",
            up.display()
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("fluxrelay-kube-{}-{nanos}", std::process::id()));
        let mut command = tokio::process::Command::new("bash");
        command
            .arg(&up)
            .env("KUBE_TESTENV_DIR", &dir)
            .stdin(std::process::Stdio::null());
        let iam_authn = match options.iam_authn {
            Some(config) => {
                let webhook = IamAuthn::start(config).await;
                command.env("KT_EXTRA_ARGS", webhook_flags(&dir, &webhook));
                Some(webhook)
            }
            None => None,
        };
        let output = command.output().await;
        let output = match output {
            Ok(output) => output,
            Err(error) => panic!("could not run {}: {error}", up.display()),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let hint = if stderr.contains("kube-apiserver not found")
                || stderr.contains("etcd not found")
            {
                "\nkube-apiserver or etcd not built: run tests/env/setup.sh"
            } else {
                ""
            };
            panic!(
                "tests/env/kube-up.sh failed ({}):\n{stderr}{hint}",
                output.status
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(server) = stdout.lines().find_map(|line| {
            line.strip_prefix("export KUBE_TESTENV_SERVER=")
                .map(|value| value.trim_matches('\'').to_string())
        }) else {
            panic!("kube-up.sh printed no KUBE_TESTENV_SERVER:\n{stdout}\n{stderr}");
        };
        let admin_kubeconfig = read(&dir, "admin.kubeconfig");
        let admin = client_from_kubeconfig(&admin_kubeconfig).await;
        KubeEnv {
            dir,
            env_dir,
            server,
            admin,
            iam_authn,
        }
    }

    /// The TokenReview webhook of an environment started with `iam_authn`.
    pub fn iam_authn(&self) -> &IamAuthn {
        match &self.iam_authn {
            Some(webhook) => webhook,
            None => panic!("this KubeEnv was started without KubeEnvOptions::iam_authn"),
        }
    }

    /// The run directory (certificates, tokens, apiserver.log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn server(&self) -> String {
        self.server.clone()
    }

    pub fn ca_pem(&self) -> String {
        read(&self.dir, "ca.crt")
    }

    pub fn dispatcher_token(&self) -> String {
        read(&self.dir, "dispatcher.token").trim().to_string()
    }

    pub fn nobody_token(&self) -> String {
        read(&self.dir, "nobody.token").trim().to_string()
    }

    /// Client certificate of user `fluxrelay-dispatcher-cert` (no groups).
    pub fn dispatcher_cert_pem(&self) -> String {
        read(&self.dir, "dispatcher.crt")
    }

    pub fn dispatcher_key_pem(&self) -> String {
        read(&self.dir, "dispatcher.key")
    }

    /// system:masters client certificate.
    pub fn admin(&self) -> kube::Client {
        self.admin.clone()
    }

    /// Create or replace objects from YAML or JSON text (multi-document YAML allowed), as admin.
    pub async fn apply(&self, manifest: &str) {
        let documents: Vec<Value> = match serde_saphyr::from_multiple(manifest) {
            Ok(documents) => documents,
            Err(error) => panic!("manifest is not YAML: {error}\n{manifest}"),
        };
        for object in documents.into_iter().filter(|document| !document.is_null()) {
            self.apply_one(object).await;
        }
    }

    async fn apply_one(&self, object: Value) {
        let text = |pointer| object.pointer(pointer).and_then(Value::as_str);
        let (Some(api_version), Some(kind), Some(name)) =
            (text("/apiVersion"), text("/kind"), text("/metadata/name"))
        else {
            panic!("object without apiVersion, kind or metadata.name: {object}");
        };
        let (group, version) = split_api_version(api_version);
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities) = match kube::discovery::pinned_kind(&self.admin, &gvk).await {
            Ok(found) => found,
            Err(error) => panic!("apiserver does not serve {api_version} {kind}: {error}"),
        };
        let api: Api<DynamicObject> = match capabilities.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(
                self.admin(),
                text("/metadata/namespace").unwrap_or("default"),
                &resource,
            ),
            kube::discovery::Scope::Cluster => Api::all_with(self.admin(), &resource),
        };
        // Server-side apply: creates, or replaces what this manager applied before.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(error) = api.patch(name, &params, &Patch::Apply(&object)).await {
            panic!("apply {kind} {name} failed: {error}");
        }
    }

    /// Merge-patch the status subresource (e.g. a Receiver's webhookPath and Ready condition).
    pub async fn patch_status(
        &self,
        api_version: &str,
        kind_plural: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) {
        let api = self.api(api_version, kind_plural, namespace);
        let patch = json!({ "status": status });
        if let Err(error) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            panic!("patch status of {kind_plural} {namespace}/{name} failed: {error}");
        }
    }

    pub async fn delete(&self, api_version: &str, kind_plural: &str, namespace: &str, name: &str) {
        let api = self.api(api_version, kind_plural, namespace);
        if let Err(error) = api.delete(name, &DeleteParams::default()).await {
            panic!("delete {kind_plural} {namespace}/{name} failed: {error}");
        }
    }

    pub async fn get_json(
        &self,
        api_version: &str,
        kind_plural: &str,
        namespace: &str,
        name: &str,
    ) -> Value {
        let api = self.api(api_version, kind_plural, namespace);
        match api.get(name).await {
            Ok(object) => match serde_json::to_value(object) {
                Ok(value) => value,
                Err(error) => panic!("{kind_plural} {namespace}/{name} is not JSON: {error}"),
            },
            Err(error) => panic!("get {kind_plural} {namespace}/{name} failed: {error}"),
        }
    }

    fn api(&self, api_version: &str, kind_plural: &str, namespace: &str) -> Api<DynamicObject> {
        let (group, version) = split_api_version(api_version);
        // The kind only names the object in kube's type fields; URLs use the plural.
        let gvk = GroupVersionKind::gvk(group, version, kind_plural);
        let resource = ApiResource::from_gvk_with_plural(&gvk, kind_plural);
        Api::namespaced_with(self.admin(), namespace, &resource)
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        // Keep the logs of a failed test; clean up after a passing one.
        let purge = !std::thread::panicking();
        let mut down = Command::new("bash");
        down.arg(self.env_dir.join("kube-down.sh"));
        if purge {
            down.arg("--purge");
        }
        down.arg(&self.dir);
        match down.status() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("kube-down.sh {} failed: {status}", self.dir.display()),
            Err(error) => eprintln!("could not run kube-down.sh: {error}"),
        }
        if !purge {
            eprintln!(
                "kube test environment kept for inspection: {}",
                self.dir.display()
            );
        }
    }
}

/// kube-apiserver flags that send unknown bearer tokens to `webhook`, appended to any
/// KT_EXTRA_ARGS the caller set. The config file goes into the run directory (kube-up.sh
/// keeps files that are not its own).
fn webhook_flags(dir: &Path, webhook: &IamAuthn) -> String {
    if let Err(error) = std::fs::create_dir_all(dir) {
        panic!("cannot create {}: {error}", dir.display());
    }
    let config = dir.join("iam-authn-webhook.kubeconfig");
    if let Err(error) = std::fs::write(&config, webhook.webhook_kubeconfig()) {
        panic!("cannot write {}: {error}", config.display());
    }
    let inherited = std::env::var("KT_EXTRA_ARGS").unwrap_or_default();
    format!(
        "{inherited} --authentication-token-webhook-config-file={} --authentication-token-webhook-version=v1",
        config.display()
    )
}

/// `group/version`, or `v1` for the core group.
fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// A client for kubeconfig YAML text (current context), without kube's retries.
pub async fn client_from_kubeconfig(text: &str) -> kube::Client {
    let kubeconfig = match Kubeconfig::from_yaml(text) {
        Ok(kubeconfig) => kubeconfig,
        Err(error) => panic!("bad kubeconfig: {error}"),
    };
    let mut config =
        match kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await
        {
            Ok(config) => config,
            Err(error) => panic!("bad kubeconfig: {error}"),
        };
    config.default_retry = false;
    match kube::Client::try_from(config) {
        Ok(client) => client,
        Err(error) => panic!("cannot build a kube client: {error}"),
    }
}

/// A kubeconfig (YAML) with embedded `*-data` fields, for tests of kubeconfig credentials.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &Value, context: &str) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let user_yaml = user
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .map(|(key, value)| format!("    {key}: {value}\n"))
                .collect::<String>()
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: \"{server}\"\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n{user_yaml}contexts:\n- name: {context}\n  context: {{cluster: c, user: u}}\ncurrent-context: {context}\n",
        b64(ca_pem)
    )
}

/// Binds the dispatcher's Role (`infra/rbac.yaml`) to the client-certificate user too.
pub const DISPATCHER_CERT_BINDING: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: fluxrelay-dispatcher-cert, namespace: flux-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: fluxrelay-dispatcher}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: fluxrelay-dispatcher-cert}
";
