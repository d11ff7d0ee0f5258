use serde_json::{Value, json};

use super::*;

const TOKEN: &str = "receiver-token";

fn entry(trigger: Value) -> ClusterEntry {
    ClusterEntry::from_value(&json!({
        "name": "prod", "server": "https://127.0.0.1:6443", "auth": {"token": "kube-token"},
        "trigger": trigger,
    }))
    .unwrap()
}

fn with_token(endpoint: Option<&str>) -> ClusterEntry {
    let mut trigger = json!({"receiver_tokens": {"flux-system/r": TOKEN}});
    if let Some(endpoint) = endpoint {
        trigger["webhook_receiver_url"] = json!(endpoint);
    }
    entry(trigger)
}

/// Receiver `flux-system/r`, Ready at the path `TOKEN` produces, unless `changes` say
/// otherwise (`status: null` drops the status).
fn receiver(kind: &str, changes: Value) -> Receiver {
    let mut object = json!({
        "metadata": {"name": "r", "namespace": "flux-system"},
        "spec": {"type": kind},
        "status": {"webhookPath": webhook_path(TOKEN, "r", "flux-system"),
                   "conditions": [{"type": "Ready", "status": "True"}]},
    });
    if let (Some(base), Some(changes)) = (object.as_object_mut(), changes.as_object()) {
        for (key, value) in changes {
            match (base.get_mut(key), value) {
                (Some(Value::Object(old)), Value::Object(new)) => old.extend(new.clone()),
                _ => {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
    }
    Receiver::from_json(&object)
}

fn id() -> ObjectRef {
    ObjectRef::new("flux-system", "r")
}

#[test]
fn each_receiver_rule_decides_in_order() {
    let path = webhook_path(TOKEN, "r", "flux-system");
    let callable = |token: bool| Ok::<_, String>(token);
    let skipped = |skip: ReceiverSkip| Err::<bool, _>(format!("skip: {skip}"));
    let unusable =
        |problem: ReceiverProblem| Err::<bool, _>(format!("{:?}: {problem}", problem.class()));
    let not_ready = unusable(ReceiverProblem::NotReady { receiver: id() });
    let cases: Vec<(&str, ClusterEntry, Receiver, Result<bool, String>)> = vec![
        (
            "a ready gitlab Receiver with its token",
            with_token(None),
            receiver("gitlab", json!({})),
            callable(true),
        ),
        (
            "a github Receiver with its token",
            with_token(None),
            receiver("github", json!({})),
            callable(true),
        ),
        (
            "a generic Receiver needs no token",
            entry(json!({})),
            receiver("generic", json!({})),
            callable(false),
        ),
        (
            "gitlab over an https URL",
            with_token(Some("https://hooks.example.com/flux/")),
            receiver("gitlab", json!({})),
            callable(true),
        ),
        (
            "generic-hmac over plain http: only a signature travels",
            with_token(Some("http://hooks.example.com")),
            receiver("generic-hmac", json!({})),
            callable(true),
        ),
        (
            "suspended",
            with_token(None),
            receiver("gitlab", json!({"spec": {"suspend": true}})),
            skipped(ReceiverSkip::Suspended),
        ),
        (
            "suspended wins over not ready",
            with_token(None),
            receiver("gitlab", json!({"spec": {"suspend": true}, "status": null})),
            skipped(ReceiverSkip::Suspended),
        ),
        (
            "a type fluxrelay cannot call",
            with_token(None),
            receiver("harbor", json!({})),
            skipped(ReceiverSkip::UnsupportedType {
                receiver_type: "harbor".into(),
            }),
        ),
        (
            "an unknown type is skipped even when not ready",
            with_token(None),
            receiver("harbor", json!({"status": null})),
            skipped(ReceiverSkip::UnsupportedType {
                receiver_type: "harbor".into(),
            }),
        ),
        (
            "not Ready",
            with_token(None),
            receiver(
                "gitlab",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
            not_ready.clone(),
        ),
        (
            "Ready but no webhookPath",
            with_token(None),
            receiver("gitlab", json!({"status": {"webhookPath": null}})),
            not_ready.clone(),
        ),
        (
            "no status at all",
            with_token(None),
            receiver("generic", json!({"status": null})),
            not_ready.clone(),
        ),
        (
            "a webhookPath that is not /hook/<hex>",
            with_token(None),
            receiver("gitlab", json!({"status": {"webhookPath": "/hook/../x"}})),
            unusable(ReceiverProblem::UnsafeWebhookPath { receiver: id() }),
        ),
        (
            "unsafe path wins over a token mismatch",
            entry(json!({"receiver_tokens": {"flux-system/r": "other"}})),
            receiver("gitlab", json!({"status": {"webhookPath": "/hooks/abc"}})),
            unusable(ReceiverProblem::UnsafeWebhookPath { receiver: id() }),
        ),
        (
            "gitlab over plain http",
            with_token(Some("http://hooks.example.com")),
            receiver("gitlab", json!({})),
            unusable(ReceiverProblem::TokenOverPlainHttp { receiver: id() }),
        ),
        (
            "gitlab over plain http even without a token",
            entry(json!({"webhook_receiver_url": "http://hooks.example.com"})),
            receiver("gitlab", json!({})),
            unusable(ReceiverProblem::TokenOverPlainHttp { receiver: id() }),
        ),
        (
            "generic over plain http: its webhook path is its only secret",
            entry(json!({"webhook_receiver_url": "http://hooks.example.com"})),
            receiver("generic", json!({})),
            unusable(ReceiverProblem::PathOverPlainHttp { receiver: id() }),
        ),
        (
            "generic over plain http with a token in the entry",
            with_token(Some("http://hooks.example.com/flux/")),
            receiver("generic", json!({})),
            unusable(ReceiverProblem::PathOverPlainHttp { receiver: id() }),
        ),
        (
            "generic over an https URL",
            entry(json!({"webhook_receiver_url": "https://hooks.example.com"})),
            receiver("generic", json!({})),
            callable(false),
        ),
        (
            "github over plain http: only a signature travels",
            with_token(Some("http://hooks.example.com")),
            receiver("github", json!({})),
            callable(true),
        ),
        (
            "a token that does not produce the path",
            entry(json!({"receiver_tokens": {"flux-system/r": "old-token"}})),
            receiver("gitlab", json!({})),
            unusable(ReceiverProblem::TokenMismatch { receiver: id() }),
        ),
        (
            "a wrong token is wrong for a generic Receiver too",
            entry(json!({"receiver_tokens": {"flux-system/r": "old-token"}})),
            receiver("generic", json!({})),
            unusable(ReceiverProblem::TokenMismatch { receiver: id() }),
        ),
        (
            "a token for another Receiver is no token",
            entry(json!({"receiver_tokens": {"flux-system/other": TOKEN}})),
            receiver("gitlab", json!({})),
            unusable(ReceiverProblem::TokenMissing {
                receiver: id(),
                receiver_type: "gitlab".into(),
            }),
        ),
        (
            "generic-hmac without its token",
            entry(json!({})),
            receiver("generic-hmac", json!({})),
            unusable(ReceiverProblem::TokenMissing {
                receiver: id(),
                receiver_type: "generic-hmac".into(),
            }),
        ),
    ];
    for (why, entry, receiver, expected) in cases {
        let got = match receiver_state(&entry, &receiver) {
            ReceiverState::Callable {
                webhook_path,
                token,
            } => {
                assert_eq!(webhook_path, path, "{why}");
                Ok(token.is_some())
            }
            ReceiverState::Skipped(skip) => skipped(skip),
            ReceiverState::Unusable(problem) => unusable(problem),
        };
        assert_eq!(got, expected, "{why}");
    }
}

#[test]
fn problems_say_what_to_fix_and_never_show_a_token_or_path() {
    let path = webhook_path(TOKEN, "r", "flux-system");
    for (problem, class, words) in [
        (
            ReceiverProblem::NotReady { receiver: id() },
            FailureClass::Retryable,
            "Receiver flux-system/r is not Ready or has no status.webhookPath yet",
        ),
        (
            ReceiverProblem::UnsafeWebhookPath { receiver: id() },
            FailureClass::Permanent,
            "refusing to send",
        ),
        (
            ReceiverProblem::TokenOverPlainHttp { receiver: id() },
            FailureClass::Permanent,
            "use an https URL, the service proxy, or a generic-hmac Receiver",
        ),
        (
            ReceiverProblem::PathOverPlainHttp { receiver: id() },
            FailureClass::Permanent,
            "is of type generic, whose webhook path is its only secret, and trigger.webhook_receiver_url is not https",
        ),
        (
            ReceiverProblem::TokenMismatch { receiver: id() },
            FailureClass::Rediscover,
            "update the registry entry",
        ),
        (
            ReceiverProblem::TokenMissing {
                receiver: id(),
                receiver_type: "gitlab".into(),
            },
            FailureClass::Permanent,
            "add trigger.receiver_tokens[\"flux-system/r\"] to the registry entry",
        ),
    ] {
        let text = problem.to_string();
        assert_eq!(problem.class(), class, "{text}");
        assert!(text.contains(words), "{text}");
        assert!(!text.contains(TOKEN) && !text.contains(&path), "{text}");
    }
}
