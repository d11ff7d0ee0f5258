//! Whether fluxrelay can call a Receiver at all, whatever the push.
//!
//! One rule for both of its readers: dispatch (`handlers::plan::receiver_call`) skips or
//! fails by it, and `fluxrelay cluster check` prints it, so what check calls fine is what
//! dispatch calls, and each problem reads the same in a dead letter and in check's output.
//! Only `spec.events` is left to the caller, because it depends on the push.

use crate::flux::{ObjectRef, Receiver, ReceiverType};
use crate::matching::select::{is_safe_webhook_path, webhook_path};
use crate::outcome::classify::FailureClass;
use crate::registry::{ClusterEntry, ReceiverEndpoint};
use crate::secret::Secret;

/// What fluxrelay can do with one Receiver, given the cluster's registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverState<'a> {
    /// It can be called (if its `spec.events` take the push): at this webhook path, with
    /// the entry's token for it, if the entry has one.
    Callable {
        webhook_path: &'a str,
        token: Option<&'a Secret>,
    },
    /// Passed by on purpose: nothing is wrong, and nothing is sent.
    Skipped(ReceiverSkip),
    /// It should be called but cannot be: the cluster or the entry must change.
    Unusable(ReceiverProblem),
}

/// Why a Receiver is passed by without a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiverSkip {
    #[error("Receiver is suspended")]
    Suspended,
    #[error("Receiver type {receiver_type:?} cannot be called by fluxrelay")]
    UnsupportedType { receiver_type: String },
}

/// Why a Receiver cannot be called. No message holds a token or a webhook path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiverProblem {
    #[error("Receiver {receiver} is not Ready or has no status.webhookPath yet")]
    NotReady { receiver: ObjectRef },
    #[error(
        "Receiver {receiver} has a status.webhookPath that is not /hook/<hex>; refusing to send"
    )]
    UnsafeWebhookPath { receiver: ObjectRef },
    #[error(
        "Receiver {receiver} is of type gitlab, whose token is sent as it is, and trigger.webhook_receiver_url is not https: use an https URL, the service proxy, or a generic-hmac Receiver"
    )]
    TokenOverPlainHttp { receiver: ObjectRef },
    #[error(
        "Receiver {receiver} is of type generic, whose webhook path is its only secret, and trigger.webhook_receiver_url is not https: use an https URL, the service proxy, or a generic-hmac Receiver"
    )]
    PathOverPlainHttp { receiver: ObjectRef },
    #[error(
        "trigger.receiver_tokens[\"{receiver}\"] does not produce the Receiver's webhook path: the Receiver's secret token changed; update the registry entry"
    )]
    TokenMismatch { receiver: ObjectRef },
    #[error(
        "Receiver {receiver} is of type {receiver_type} and needs its token: add trigger.receiver_tokens[\"{receiver}\"] to the registry entry"
    )]
    TokenMissing {
        receiver: ObjectRef,
        receiver_type: String,
    },
}

impl ReceiverProblem {
    /// How dispatch treats the problem.
    pub fn class(&self) -> FailureClass {
        match self {
            // notification-controller sets both once it has reconciled the Receiver.
            ReceiverProblem::NotReady { .. } => FailureClass::Retryable,
            // Either the cached Receiver is stale or the registry token is: re-read the
            // cluster first; only a mismatch on fresh objects is permanent.
            ReceiverProblem::TokenMismatch { .. } => FailureClass::Rediscover,
            ReceiverProblem::UnsafeWebhookPath { .. }
            | ReceiverProblem::TokenOverPlainHttp { .. }
            | ReceiverProblem::PathOverPlainHttp { .. }
            | ReceiverProblem::TokenMissing { .. } => FailureClass::Permanent,
        }
    }
}

/// The state of `receiver` for the cluster of `entry`. The checks run in this order, and
/// the first that fails decides: suspended, a type fluxrelay cannot call, not Ready or no
/// `status.webhookPath`, an unsafe webhook path, a gitlab token or a generic Receiver's
/// secret path bound for a plain-http URL, the entry's token not producing the webhook
/// path, a needed token missing.
pub fn receiver_state<'a>(entry: &'a ClusterEntry, receiver: &'a Receiver) -> ReceiverState<'a> {
    let id = &receiver.id;
    let unusable =
        |problem: fn(ObjectRef) -> ReceiverProblem| ReceiverState::Unusable(problem(id.clone()));
    if receiver.suspend {
        return ReceiverState::Skipped(ReceiverSkip::Suspended);
    }
    if let ReceiverType::Other(kind) = &receiver.receiver_type {
        return ReceiverState::Skipped(ReceiverSkip::UnsupportedType {
            receiver_type: kind.clone(),
        });
    }
    let Some(path) = receiver.webhook_path.as_deref().filter(|_| receiver.ready) else {
        return unusable(|receiver| ReceiverProblem::NotReady { receiver });
    };
    if !is_safe_webhook_path(path) {
        return unusable(|receiver| ReceiverProblem::UnsafeWebhookPath { receiver });
    }
    // A gitlab Receiver's token travels in a header as it is: never over plain http.
    if receiver.receiver_type == ReceiverType::Gitlab
        && matches!(&entry.trigger.receiver_endpoint, ReceiverEndpoint::Absolute(url) if url.scheme() != "https")
    {
        return unusable(|receiver| ReceiverProblem::TokenOverPlainHttp { receiver });
    }
    // A generic Receiver has no token: its webhook path is the secret, never over plain http.
    if receiver.receiver_type == ReceiverType::Generic
        && matches!(&entry.trigger.receiver_endpoint, ReceiverEndpoint::Absolute(url) if url.scheme() != "https")
    {
        return unusable(|receiver| ReceiverProblem::PathOverPlainHttp { receiver });
    }
    let token = entry.trigger.receiver_tokens.get(id);
    match token {
        Some(token) if webhook_path(token.expose(), &id.name, &id.namespace) != path => {
            unusable(|receiver| ReceiverProblem::TokenMismatch { receiver })
        }
        None if receiver.receiver_type.needs_token() => {
            ReceiverState::Unusable(ReceiverProblem::TokenMissing {
                receiver: id.clone(),
                receiver_type: receiver.receiver_type.as_str().to_string(),
            })
        }
        _ => ReceiverState::Callable {
            webhook_path: path,
            token,
        },
    }
}

#[cfg(test)]
#[path = "receiver_test.rs"]
mod tests;
