//! What one push asks of one cluster: which Receivers to call (or GitRepositories to
//! annotate), what was skipped and why, and what cannot be done as configured.

use std::fmt;

use crate::flux::{GitRepository, ObjectRef, Receiver, ReceiverType};
use crate::matching::select::{
    is_safe_webhook_path, receiver_selects, repository_verdict, webhook_path,
};
use crate::outcome::classify::{FailureClass, Responder, TriggerFailure};
use crate::push::{Push, PushEvent};
use crate::registry::{ClusterEntry, ReceiverEndpoint, TriggerMode};
use crate::trigger::request::{TriggerRequest, receiver_request};

/// The Flux objects of one cluster, across the entry's namespaces.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub repositories: Vec<GitRepository>,
    pub receivers: Vec<Receiver>,
}

impl ClusterView {
    pub fn receiver(&self, id: &ObjectRef) -> Option<&Receiver> {
        self.receivers.iter().find(|r| &r.id == id)
    }
}

/// One call fluxrelay makes. Pushes in a batch that need the same target share one call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// One POST per Receiver, project, ref and event kind: the body carries the push, and a
    /// Receiver's CEL filters may select on `req.ref` or `req.project`, so only pushes
    /// that would send the same body may share a call (the latest of them is sent).
    Receiver {
        receiver: ObjectRef,
        project: u64,
        git_ref: String,
        event: PushEvent,
    },
    Annotate {
        repository: ObjectRef,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Receiver { receiver, .. } => write!(f, "receiver/{receiver}"),
            Target::Annotate { repository } => write!(f, "gitrepository/{repository}"),
        }
    }
}

/// An object that the push does not trigger, and why: the answer to "why didn't it reconcile?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub object: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct PushPlan {
    pub targets: Vec<Target>,
    pub skipped: Vec<Skip>,
    /// Failures known before sending anything (a Receiver not Ready, a missing token).
    pub problems: Vec<TriggerFailure>,
}

pub fn configuration_failure(class: FailureClass, reason: String) -> TriggerFailure {
    TriggerFailure {
        class,
        responder: Responder::Configuration,
        status: None,
        reason,
        credentials_rejected: false,
    }
}

pub fn plan_push(entry: &ClusterEntry, view: &ClusterView, push: &Push) -> PushPlan {
    let mut plan = PushPlan::default();
    for repository in &view.repositories {
        if let Err(skip) = repository_verdict(repository, push, &entry.host_aliases) {
            plan.skipped.push(Skip {
                object: format!("gitrepository/{}", repository.id),
                reason: skip.to_string(),
            });
            continue;
        }
        match entry.trigger.mode {
            TriggerMode::Annotate => add(
                &mut plan.targets,
                Target::Annotate {
                    repository: repository.id.clone(),
                },
            ),
            TriggerMode::Receiver => plan_receivers(entry, view, repository, push, &mut plan),
        }
    }
    plan
}

fn plan_receivers(
    entry: &ClusterEntry,
    view: &ClusterView,
    repository: &GitRepository,
    push: &Push,
    plan: &mut PushPlan,
) {
    let mut selected = false;
    for receiver in view
        .receivers
        .iter()
        .filter(|r| receiver_selects(r, repository))
    {
        selected = true;
        match receiver_call(entry, receiver, push) {
            ReceiverCall::Ready(_) => add(
                &mut plan.targets,
                Target::Receiver {
                    receiver: receiver.id.clone(),
                    project: push.project.id,
                    git_ref: push.git_ref.clone(),
                    event: push.event,
                },
            ),
            ReceiverCall::Skip(reason) => {
                add_skip(plan, format!("receiver/{}", receiver.id), reason)
            }
            ReceiverCall::Problem(failure) => {
                if !plan.problems.contains(&failure) {
                    plan.problems.push(failure);
                }
            }
        }
    }
    if !selected {
        add_skip(
            plan,
            format!("gitrepository/{}", repository.id),
            "matches the push, but no Receiver selects it (create one, or use trigger.mode annotate)".to_string(),
        );
    }
}

fn add<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn add_skip(plan: &mut PushPlan, object: String, reason: String) {
    add(&mut plan.skipped, Skip { object, reason });
}

pub enum ReceiverCall {
    Ready(Box<TriggerRequest>),
    Skip(String),
    Problem(TriggerFailure),
}

/// The request for one Receiver and push, or why there is none.
pub fn receiver_call(entry: &ClusterEntry, receiver: &Receiver, push: &Push) -> ReceiverCall {
    use FailureClass::{Permanent, Retryable};
    let id = &receiver.id;
    if receiver.suspend {
        return ReceiverCall::Skip("Receiver is suspended".to_string());
    }
    let wanted_event = match &receiver.receiver_type {
        ReceiverType::Gitlab => Some(push.event.gitlab_event_header()),
        ReceiverType::Github => Some("push"),
        ReceiverType::Generic | ReceiverType::GenericHmac => None,
        ReceiverType::Other(kind) => {
            return ReceiverCall::Skip(format!(
                "Receiver type {kind:?} cannot be called by fluxrelay"
            ));
        }
    };
    if let Some(event) = wanted_event {
        let allowed = receiver.events.is_empty()
            || receiver
                .events
                .iter()
                .any(|e| e.eq_ignore_ascii_case(event));
        if !allowed {
            return ReceiverCall::Skip(format!("spec.events does not include {event:?}"));
        }
    }
    let Some(path) = receiver.webhook_path.as_deref().filter(|_| receiver.ready) else {
        return ReceiverCall::Problem(configuration_failure(
            Retryable,
            format!("Receiver {id} is not Ready or has no status.webhookPath yet"),
        ));
    };
    if !is_safe_webhook_path(path) {
        return ReceiverCall::Problem(configuration_failure(
            Permanent,
            format!(
                "Receiver {id} has a status.webhookPath that is not /hook/<hex>; refusing to send"
            ),
        ));
    }
    if receiver.receiver_type == ReceiverType::Gitlab
        && matches!(&entry.trigger.receiver_endpoint, ReceiverEndpoint::Absolute(url) if url.scheme() != "https")
    {
        // A gitlab Receiver's token travels in a header as it is: never over plain http.
        return ReceiverCall::Problem(configuration_failure(
            Permanent,
            format!(
                "Receiver {id} is of type gitlab, whose token is sent as it is, and trigger.webhook_receiver_url is not https: use an https URL, the service proxy, or a generic-hmac Receiver"
            ),
        ));
    }
    let token = entry.trigger.receiver_tokens.get(id);
    if let Some(token) = token {
        if webhook_path(token.expose(), &id.name, &id.namespace) != path {
            // Either our cached Receiver is stale or the registry token is: re-read the
            // cluster first (Rediscover); only a mismatch on fresh objects is permanent.
            return ReceiverCall::Problem(configuration_failure(
                FailureClass::Rediscover,
                format!(
                    "trigger.receiver_tokens[\"{id}\"] does not produce the Receiver's webhook path: the Receiver's secret token changed; update the registry entry"
                ),
            ));
        }
    } else if receiver.receiver_type.needs_token() {
        return ReceiverCall::Problem(configuration_failure(
            Permanent,
            format!(
                "Receiver {id} is of type {} and needs its token: add trigger.receiver_tokens[\"{id}\"] to the registry entry",
                receiver.receiver_type.as_str()
            ),
        ));
    }
    match receiver_request(
        &entry.trigger.receiver_endpoint,
        &receiver.receiver_type,
        path,
        token,
        push,
    ) {
        Ok(request) => ReceiverCall::Ready(Box::new(request)),
        Err(error) => ReceiverCall::Problem(configuration_failure(
            Permanent,
            format!("cannot build the request for Receiver {id}: {error}"),
        )),
    }
}

#[cfg(test)]
#[path = "plan_test.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "plan_steering_test.rs"]
mod steering_tests;
