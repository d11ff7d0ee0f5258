//! `fluxrelay cluster check`: connect as an entry and check what dispatch needs, by the
//! rules dispatch uses (core's `needed_permissions`, `receiver_state`, `effective_ref`,
//! `follows`, `receiver_selects_object` and `probe_request`), each failure with its fix.

use fluxrelay_adapters::cluster::KubeClusters;
use fluxrelay_adapters::cluster_check::{Access, can_i};
use fluxrelay_core::access::identity::{Expiry, expiry};
use fluxrelay_core::access::needed_permissions;
use fluxrelay_core::flux::artifacts::{ArtifactKind, ArtifactObject};
use fluxrelay_core::flux::{GitRepository, Receiver};
use fluxrelay_core::matching::artifacts::follows;
use fluxrelay_core::matching::receiver::{ReceiverState, receiver_state};
use fluxrelay_core::matching::refs::effective_ref;
use fluxrelay_core::matching::select::receiver_selects_object;
use fluxrelay_core::matching::url::display_url;
use fluxrelay_core::outcome::classify::apiserver_status;
use fluxrelay_core::ports::{FluxDiscovery, TriggerSender};
use fluxrelay_core::registry::{ClusterEntry, Credentials, ReceiverEndpoint, TriggerMode};
use fluxrelay_core::trigger::request::probe_request;

use super::store::{Store, describe_store, entries};
use super::{FAIL, NOTE, OK};

/// The verdict of one line of `cluster check`: a note does not fail the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Pass,
    Fail,
    Note,
}

impl Mark {
    fn pass_if(ok: bool) -> Self {
        if ok { Mark::Pass } else { Mark::Fail }
    }

    fn symbol(self) -> &'static str {
        match self {
            Mark::Pass => OK,
            Mark::Fail => FAIL,
            Mark::Note => NOTE,
        }
    }
}

/// Connect as the entry, check each permission dispatch needs, list what it would trigger
/// and probe the receiver. `Ok(true)` when everything passed.
pub async fn check(store: &Store, name: &str) -> Result<bool, String> {
    let entry = match entries(store).await?.into_iter().find(|(n, _)| n == name) {
        Some((_, Ok(entry))) => entry,
        Some((_, Err(problem))) => {
            return Err(format!("the entry for {name} is invalid: {problem}"));
        }
        None => {
            return Err(format!(
                "no cluster named {name} in {}",
                describe_store(store)
            ));
        }
    };
    let clusters = KubeClusters::with_defaults().map_err(|failure| failure.reason)?;
    let mut passed = true;
    let mut report = |mark: Mark, line: String| {
        passed &= mark != Mark::Fail;
        println!("{} {line}", mark.symbol());
    };
    println!(
        "cluster {} ({}, auth {})",
        entry.name,
        entry.server,
        entry.credentials.kind()
    );
    if let Credentials::Token(token) = &entry.credentials {
        match expiry(token.expose(), time::OffsetDateTime::now_utc()) {
            Expiry::Unknown => {}
            Expiry::Fine { days } => {
                report(Mark::Pass, format!("token valid for {days} more days"))
            }
            Expiry::RenewSoon { days } => report(
                Mark::Fail,
                format!(
                    "token expires in {days} day(s); renew it: fluxrelay cluster add {} --force (with your kubeconfig)",
                    entry.name
                ),
            ),
            Expiry::Expired => report(
                Mark::Fail,
                format!(
                    "token expired; renew it: fluxrelay cluster add {} --force (with your kubeconfig)",
                    entry.name
                ),
            ),
        }
    }
    let client = match clusters.client_for(&entry).await {
        Ok(client) => client,
        Err(failure) => {
            report(Mark::Fail, format!("build a client: {}", failure.reason));
            return Ok(false);
        }
    };
    match client.apiserver_version().await {
        Ok(version) => report(
            Mark::Pass,
            format!(
                "apiserver reachable, Kubernetes {}.{}",
                version.major, version.minor
            ),
        ),
        Err(error) => {
            report(
                Mark::Fail,
                format!(
                    "reach the apiserver: {}; check server, ca and network access",
                    fluxrelay_adapters::cluster_check::describe(error)
                ),
            );
            return Ok(false);
        }
    }
    for permission in needed_permissions(&entry) {
        match can_i(&client, &permission).await {
            Ok(Access::Allowed) => report(Mark::Pass, format!("may {permission}")),
            Ok(Access::Denied { reason }) => report(
                Mark::Fail,
                format!(
                    "may not {permission} ({reason}); fix: add the rule {} to the identity's Role (infra/rbac.yaml has all of them)",
                    permission.rule()
                ),
            ),
            Err(problem) => report(
                Mark::Fail,
                format!("ask whether it may {permission}: {problem}"),
            ),
        }
    }
    for namespace in &entry.namespaces {
        match clusters.git_repositories(&entry, namespace, true).await {
            Ok(repositories) => {
                report(
                    Mark::Pass,
                    format!("{} GitRepositories in {namespace}", repositories.len()),
                );
                for repository in &repositories {
                    println!("    {}", describe_repository(repository));
                }
            }
            Err(failure) => report(
                Mark::Fail,
                format!("list GitRepositories in {namespace}: {}", failure.reason),
            ),
        }
        let mut receivers = Vec::new();
        if entry.trigger.mode == TriggerMode::Receiver {
            match clusters.receivers(&entry, namespace, true).await {
                Ok(listed) => {
                    report(
                        Mark::Pass,
                        format!("{} Receivers in {namespace}", listed.len()),
                    );
                    for receiver in &listed {
                        let (mark, line) = describe_receiver(&entry, receiver);
                        report(mark, format!("  {line}"));
                    }
                    receivers = listed;
                }
                Err(failure) => report(
                    Mark::Fail,
                    format!("list Receivers in {namespace}: {}", failure.reason),
                ),
            }
        }
        for kind in &entry.trigger.artifact_kinds {
            match clusters
                .artifact_objects(&entry, namespace, *kind, true)
                .await
            {
                Ok(objects) => {
                    report(
                        Mark::Pass,
                        format!("{} {kind} objects in {namespace}", objects.len()),
                    );
                    for object in &objects {
                        let (mark, line) = describe_artifact(&entry, &receivers, object);
                        report(mark, format!("  {line}"));
                    }
                }
                Err(failure) => report(
                    Mark::Fail,
                    format!("list {kind} objects in {namespace}: {}", failure.reason),
                ),
            }
        }
    }
    if entry.trigger.mode == TriggerMode::Receiver {
        let (ok, line) = probe_receiver(&clusters, &entry).await;
        report(Mark::pass_if(ok), line);
    }
    Ok(passed)
}

fn describe_repository(repository: &GitRepository) -> String {
    format!(
        "GitRepository {}: {} ({}){}{}",
        repository.id,
        // Never the URL's user info: Flux lets a token ride there.
        repository
            .url
            .as_deref()
            .map_or("(no url)".into(), display_url),
        effective_ref(repository.git_ref.as_ref()),
        if repository.suspend {
            ", suspended"
        } else {
            ""
        },
        repository
            .artifact_revision
            .as_ref()
            .map(|revision| format!(", at {revision}"))
            .unwrap_or_default()
    )
}

/// An object of an artifact kind as dispatch sees it (core's `follows`), with a note when
/// dispatch could trigger it but, in receiver mode, no Receiver lists it.
fn describe_artifact(
    entry: &ClusterEntry,
    receivers: &[Receiver],
    object: &ArtifactObject,
) -> (Mark, String) {
    let head = format!(
        "{} {}: {}{}",
        object.kind,
        object.id,
        follows(object),
        if object.suspend { ", suspended" } else { "" }
    );
    let triggerable = object.kind != ArtifactKind::HelmRepository;
    let selected = receivers.iter().any(|receiver| {
        receiver_selects_object(
            receiver,
            object.kind.kind(),
            object.kind.group(),
            &object.id,
            &object.labels,
        )
    });
    if triggerable && entry.trigger.mode == TriggerMode::Receiver && !selected {
        return (
            Mark::Note,
            format!(
                "{head}: no Receiver lists it (add kind {} to a Receiver's resources, or use trigger.mode annotate)",
                object.kind
            ),
        );
    }
    (Mark::Pass, head)
}

/// A Receiver as dispatch sees it (core's `receiver_state`): passes when dispatch would call
/// it for a push it takes, fails with dispatch's reason when dispatch would fail, and is a
/// note, with dispatch's reason, when dispatch passes it by.
fn describe_receiver(entry: &ClusterEntry, receiver: &Receiver) -> (Mark, String) {
    let head = format!(
        "Receiver {} ({}{}{})",
        receiver.id,
        receiver.receiver_type.as_str(),
        if receiver.ready {
            ", ready"
        } else {
            ", not ready"
        },
        receiver
            .webhook_path
            .as_ref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default()
    );
    match receiver_state(entry, receiver) {
        ReceiverState::Callable { token: Some(_), .. } => {
            (Mark::Pass, format!("{head}: token in the entry matches"))
        }
        ReceiverState::Callable { token: None, .. } => {
            (Mark::Pass, format!("{head}: needs no token"))
        }
        ReceiverState::Skipped(skip) => (Mark::Note, format!("{head}: skipped: {skip}")),
        ReceiverState::Unusable(problem) => (Mark::Fail, format!("{head}: {problem}")),
    }
}

/// POST to a path no Receiver has: the webhook receiver answers for itself (404) when the
/// proxy reaches it; an apiserver `Status` means the proxy did not.
async fn probe_receiver(clusters: &KubeClusters, entry: &ClusterEntry) -> (bool, String) {
    let request = match probe_request(&entry.trigger.receiver_endpoint) {
        Ok(request) => request,
        Err(error) => return (false, format!("probe the receiver: {error}")),
    };
    match clusters.send(entry, &request).await {
        Err(failure) => (
            false,
            format!("probe the webhook receiver: {}", failure.reason),
        ),
        Ok(response) => match apiserver_status(&response) {
            Some(status) => (
                false,
                format!(
                    "probe the webhook receiver: the apiserver answered {} ({}); fix: check trigger.webhook_receiver_url, and that notification-controller's webhook-receiver Service has endpoints",
                    response.status,
                    if status.message.is_empty() {
                        "no message"
                    } else {
                        status.message.as_str()
                    }
                ),
            ),
            None => (
                true,
                format!(
                    "the webhook receiver answers through {} (HTTP {} for a probe path)",
                    endpoint_label(entry),
                    response.status
                ),
            ),
        },
    }
}

fn endpoint_label(entry: &ClusterEntry) -> String {
    match &entry.trigger.receiver_endpoint {
        ReceiverEndpoint::ServiceProxy(base) => format!("the service proxy {base}"),
        ReceiverEndpoint::Absolute(url) => url.to_string(),
    }
}

#[cfg(test)]
#[path = "check_test.rs"]
mod tests;
