//! Webhook authentication: `X-Gitlab-Token` and GitLab signing tokens.
//!
//! GitLab proves a delivery in two ways: the hook's secret token, sent verbatim in
//! `X-Gitlab-Token`, and (flag `webhook_signing_token`, MR !230944) a Standard Webhooks
//! HMAC-SHA256 signature over `{webhook-id}.{webhook-timestamp}.{raw body}`. Either or both
//! can be required, and each accepts several secrets at once so they can be rotated.
//! Registries (Distribution, GitLab's container registry, Harbor) sign nothing: they send a
//! static `Authorization` header configured on their side, checked by
//! [`authenticate_registry`] against the registry tokens (or the webhook tokens when none
//! are configured), with the same constant-time comparison and rotation.
//! Sans-IO: the caller passes the headers, the raw body and the clock.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use std::collections::BTreeSet;

use crate::secret::Secret;
use crate::subscriptions::instance_host;

pub const TOKEN_HEADER: &str = "x-gitlab-token";
/// Where registries put their static credential.
pub const AUTHORIZATION: &str = "authorization";
const BEARER: &str = "bearer ";
pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
pub const DEFAULT_TIMESTAMP_TOLERANCE_SECS: i64 = 300;

const SIGNING_KEY_PREFIX: &str = "whsec_";
/// GitLab issues 32-byte keys; anything under 16 bytes is a typo, not a key.
const MIN_SIGNING_KEY_BYTES: usize = 16;
const SIGNATURE_VERSION: &str = "v1";
/// Padded standard base64 of a 32-byte HMAC-SHA256 is always 44 characters.
const ENCODED_MAC_LEN: usize = 44;

type HmacSha256 = Hmac<Sha256>;
type MacBytes = [u8; 32];

/// A GitLab signing token `whsec_<base64 of the key>`; `Debug` is redacted.
#[derive(Clone)]
pub struct SigningKey {
    /// HMAC state already keyed at parse time, so signing a request cannot fail.
    keyed: HmacSha256,
}

impl SigningKey {
    pub fn parse(text: &str) -> Result<SigningKey, AuthConfigError> {
        let bad = |reason| AuthConfigError::BadSigningKey { reason };
        let encoded = text
            .strip_prefix(SIGNING_KEY_PREFIX)
            .ok_or(bad("it does not start with `whsec_`"))?;
        if encoded.is_empty() {
            return Err(bad("nothing follows `whsec_`"));
        }
        let key = BASE64.decode(encoded).map_err(|_| {
            bad("the text after `whsec_` is not padded standard base64 (stray whitespace or newline?)")
        })?;
        if key.len() < MIN_SIGNING_KEY_BYTES {
            return Err(bad("the key is shorter than 16 bytes (GitLab issues 32)"));
        }
        let keyed = HmacSha256::new_from_slice(&key).map_err(|_| bad("HMAC refused the key"))?;
        Ok(SigningKey { keyed })
    }

    fn sign(&self, id: &[u8], timestamp: &[u8], body: &[u8]) -> MacBytes {
        let mut mac = self.keyed.clone();
        for part in [id, b".", timestamp, b".", body] {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// How strictly one check is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// The header must be present and valid.
    Required,
    /// Verified when the header is present, skipped otherwise (for migrating between checks).
    IfPresent,
    /// Never looked at.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPolicy {
    pub token: Requirement,
    pub signature: Requirement,
}

/// The two checks, named by the header that carries each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Token,
    Signature,
}

impl Check {
    fn material(self) -> &'static str {
        match self {
            Check::Token => "accepted token",
            Check::Signature => "signing key",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Check::Token => "x-gitlab-token",
            Check::Signature => "webhook-signature",
        })
    }
}

/// The GitLab instances a delivery may come from, as the secrets that proved it allow:
/// any (a secret tied to no instance), or only these hosts (`host[:port]`, compared as
/// `instances` subscriptions compare them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceScope {
    Any,
    Only(BTreeSet<String>),
}

impl InstanceScope {
    /// The scope of secrets tied to `instances` (host names or URLs).
    pub fn only<I: AsRef<str>>(instances: impl IntoIterator<Item = I>) -> Self {
        InstanceScope::Only(
            instances
                .into_iter()
                .map(|instance| instance_host(instance.as_ref()))
                .collect(),
        )
    }

    /// Whether a push from `instance` (an origin, `https://gitlab.example.com`) is allowed.
    pub fn allows(&self, instance: &str) -> bool {
        match self {
            InstanceScope::Any => true,
            InstanceScope::Only(hosts) => hosts.contains(&instance_host(instance)),
        }
    }

    /// What either of two matching secrets allows.
    fn union(self, other: InstanceScope) -> InstanceScope {
        match (self, other) {
            (InstanceScope::Only(mut a), InstanceScope::Only(b)) => {
                a.extend(b);
                InstanceScope::Only(a)
            }
            _ => InstanceScope::Any,
        }
    }

    /// What both checks (token and signature) allow.
    fn intersect(self, other: InstanceScope) -> InstanceScope {
        match (self, other) {
            (InstanceScope::Any, scope) | (scope, InstanceScope::Any) => scope,
            (InstanceScope::Only(a), InstanceScope::Only(b)) => {
                InstanceScope::Only(a.intersection(&b).cloned().collect())
            }
        }
    }
}

/// Tokens and signing keys accepted only for deliveries from some GitLab instances: a
/// token or key known to one instance cannot vouch for another's pushes.
#[derive(Debug, Clone)]
pub struct TiedSecrets {
    /// Host names or URLs, as in `instances` subscriptions.
    pub instances: Vec<String>,
    pub tokens: Vec<Secret>,
    pub signing_keys: Vec<SigningKey>,
}

/// Secrets and policy; `Debug` is safe because `Secret` and `SigningKey` redact themselves.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Accepted for any instance (the original form; still what most setups need).
    pub tokens: Vec<Secret>,
    pub signing_keys: Vec<SigningKey>,
    /// Accepted only for their instances.
    pub tied: Vec<TiedSecrets>,
    /// Accepted in registry notifications' `Authorization` header; when empty, `tokens` are.
    pub registry_tokens: Vec<Secret>,
    pub policy: AuthPolicy,
    pub timestamp_tolerance_secs: i64,
}

/// What a request proved: which instances its secrets allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub instances: InstanceScope,
}

impl AuthConfig {
    /// Policy derived from what is configured: tokens → token Required, keys → signature
    /// Required. Error when nothing is configured: fluxrelay never runs open.
    pub fn new(
        tokens: Vec<Secret>,
        signing_keys: Vec<SigningKey>,
    ) -> Result<Self, AuthConfigError> {
        Self::with_tied(tokens, signing_keys, Vec::new())
    }

    /// [`AuthConfig::new`] with secrets tied to instances as well.
    pub fn with_tied(
        tokens: Vec<Secret>,
        signing_keys: Vec<SigningKey>,
        tied: Vec<TiedSecrets>,
    ) -> Result<Self, AuthConfigError> {
        for (index, entry) in tied.iter().enumerate() {
            let position = index + 1;
            if entry.tokens.is_empty() && entry.signing_keys.is_empty() {
                return Err(AuthConfigError::TiedWithoutSecrets { position });
            }
            if entry.instances.is_empty()
                || entry
                    .instances
                    .iter()
                    .any(|instance| instance_host(instance).is_empty())
            {
                return Err(AuthConfigError::TiedWithoutInstances { position });
            }
        }
        let any_token = !tokens.is_empty() || tied.iter().any(|entry| !entry.tokens.is_empty());
        let any_key =
            !signing_keys.is_empty() || tied.iter().any(|entry| !entry.signing_keys.is_empty());
        if !any_token && !any_key {
            return Err(AuthConfigError::NothingConfigured);
        }
        let required_if = |configured: bool| {
            if configured {
                Requirement::Required
            } else {
                Requirement::Off
            }
        };
        let policy = AuthPolicy {
            token: required_if(any_token),
            signature: required_if(any_key),
        };
        let config = AuthConfig {
            tokens,
            signing_keys,
            tied,
            registry_tokens: Vec::new(),
            policy,
            timestamp_tolerance_secs: DEFAULT_TIMESTAMP_TOLERANCE_SECS,
        };
        config.validated()
    }

    /// Tokens for registry notifications apart from GitLab's (several, for rotation).
    pub fn with_registry_tokens(
        self,
        registry_tokens: Vec<Secret>,
    ) -> Result<Self, AuthConfigError> {
        AuthConfig {
            registry_tokens,
            ..self
        }
        .validated()
    }

    /// The tokens a registry notification may present.
    pub fn accepted_registry_tokens(&self) -> &[Secret] {
        if self.registry_tokens.is_empty() {
            &self.tokens
        } else {
            &self.registry_tokens
        }
    }

    pub fn with_policy(self, policy: AuthPolicy) -> Result<Self, AuthConfigError> {
        AuthConfig { policy, ..self }.validated()
    }

    pub fn with_timestamp_tolerance_secs(self, secs: i64) -> Result<Self, AuthConfigError> {
        if secs < 0 {
            return Err(AuthConfigError::NegativeTolerance { secs });
        }
        Ok(AuthConfig {
            timestamp_tolerance_secs: secs,
            ..self
        })
    }

    /// Every accepted token with the instances it allows, untied ones first.
    fn all_tokens(&self) -> impl Iterator<Item = (&Secret, InstanceScope)> {
        let untied = self.tokens.iter().map(|token| (token, InstanceScope::Any));
        let tied = self.tied.iter().flat_map(|entry| {
            let scope = InstanceScope::only(&entry.instances);
            entry.tokens.iter().map(move |token| (token, scope.clone()))
        });
        untied.chain(tied)
    }

    /// Every signing key with the instances it allows, untied ones first.
    fn all_signing_keys(&self) -> impl Iterator<Item = (&SigningKey, InstanceScope)> {
        let untied = self
            .signing_keys
            .iter()
            .map(|key| (key, InstanceScope::Any));
        let tied = self.tied.iter().flat_map(|entry| {
            let scope = InstanceScope::only(&entry.instances);
            entry
                .signing_keys
                .iter()
                .map(move |key| (key, scope.clone()))
        });
        untied.chain(tied)
    }

    fn validated(self) -> Result<Self, AuthConfigError> {
        for (index, (token, _)) in self.all_tokens().enumerate() {
            check_token_is_deliverable(token, index + 1)?;
        }
        for (index, token) in self.registry_tokens.iter().enumerate() {
            check_token_is_deliverable(token, index + 1).map_err(|error| match error {
                AuthConfigError::EmptyToken { position } => {
                    AuthConfigError::EmptyRegistryToken { position }
                }
                _ => AuthConfigError::UndeliverableRegistryToken {
                    position: index + 1,
                },
            })?;
        }
        let enabled = |requirement| requirement != Requirement::Off;
        if enabled(self.policy.token) && self.all_tokens().next().is_none() {
            return Err(AuthConfigError::EnabledWithoutMaterial {
                check: Check::Token,
            });
        }
        if enabled(self.policy.signature) && self.all_signing_keys().next().is_none() {
            return Err(AuthConfigError::EnabledWithoutMaterial {
                check: Check::Signature,
            });
        }
        // With no Required check, a request carrying no credentials at all would pass.
        if self.policy.token != Requirement::Required
            && self.policy.signature != Requirement::Required
        {
            return Err(AuthConfigError::NoRequiredCheck);
        }
        Ok(self)
    }
}

/// GitLab strips line breaks from the token it sends, and HTTP cannot carry control
/// characters or surrounding whitespace in a header value: such a token could never match,
/// and every delivery would fail until GitLab disables the hook.
fn check_token_is_deliverable(token: &Secret, position: usize) -> Result<(), AuthConfigError> {
    let text = token.expose();
    if text.is_empty() {
        return Err(AuthConfigError::EmptyToken { position });
    }
    let is_optional_whitespace = |c: char| c == ' ' || c == '\t';
    let has_control = text.chars().any(|c| c.is_ascii_control() && c != '\t');
    if has_control || text.trim_matches(is_optional_whitespace) != text {
        return Err(AuthConfigError::UndeliverableToken { position });
    }
    Ok(())
}

/// Configuration mistakes, found once at start-up. Messages never contain secret text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("no accepted token and no signing key configured; fluxrelay never runs open")]
    NothingConfigured,
    #[error("accepted token #{position} is empty")]
    EmptyToken { position: usize },
    #[error("accepted token #{position} has a control character or surrounding whitespace")]
    UndeliverableToken { position: usize },
    #[error("registry token #{position} is empty")]
    EmptyRegistryToken { position: usize },
    #[error("registry token #{position} has a control character or surrounding whitespace")]
    UndeliverableRegistryToken { position: usize },
    #[error("signing key is invalid: {reason}")]
    BadSigningKey { reason: &'static str },
    #[error("the {check} check is enabled but no {} is configured", .check.material())]
    EnabledWithoutMaterial { check: Check },
    #[error("policy requires neither x-gitlab-token nor webhook-signature; never runs open")]
    NoRequiredCheck,
    #[error("timestamp tolerance must not be negative (got {secs} s)")]
    NegativeTolerance { secs: i64 },
    #[error("instance-tied secrets #{position} name no token and no signing key")]
    TiedWithoutSecrets { position: usize },
    #[error(
        "instance-tied secrets #{position} name no instance, or one that is not a host name or URL"
    )]
    TiedWithoutInstances { position: usize },
}

/// Every reason a request is rejected (→ HTTP 401). Messages name the header and the
/// reason, never a header value, token, key or signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing {header} header")]
    MissingHeader { header: &'static str },
    #[error("{header} header is duplicated")]
    DuplicatedHeader { header: &'static str },
    #[error("x-gitlab-token header does not match any accepted token")]
    WrongToken,
    #[error("webhook-timestamp header is not an integer number of Unix seconds")]
    MalformedTimestamp,
    #[error("webhook-timestamp header is more than {tolerance_secs} s in the past")]
    StaleTimestamp { tolerance_secs: i64 },
    #[error("webhook-timestamp header is more than {tolerance_secs} s in the future")]
    FutureTimestamp { tolerance_secs: i64 },
    #[error("webhook-signature header is malformed (expected `v1,<base64>` entries)")]
    MalformedSignature,
    #[error("webhook-signature header has no v1 entry")]
    NoSupportedSignature,
    #[error("webhook-signature header matches no configured signing key")]
    SignatureMismatch,
    #[error("no x-gitlab-token or webhook-signature header that the policy checks is present")]
    NothingVerified,
    #[error(
        "the x-gitlab-token or webhook-signature secret of this request is not for the GitLab instance it comes from"
    )]
    OtherInstance,
    #[error("authorization header does not match any accepted registry token")]
    WrongRegistryToken,
    #[error("no token is configured for registry notifications")]
    NoRegistryToken,
}

/// Checks the request: the token first, then the signature; every enabled check must pass.
/// `now_unix` is the current time in Unix seconds. The answer says which instances the
/// secrets that matched allow (both checks' when both ran).
pub fn authenticate(
    config: &AuthConfig,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<Authenticated, AuthFailure> {
    let token = verify_token(config, headers)?;
    let signature = verify_signature(config, headers, body, now_unix)?;
    let instances = match (token, signature) {
        (Some(token), Some(signature)) => token.intersect(signature),
        (Some(scope), None) | (None, Some(scope)) => scope,
        // Fails closed on a hand-built config whose checks all skipped this request.
        (None, None) => return Err(AuthFailure::NothingVerified),
    };
    Ok(Authenticated { instances })
}

/// What can be checked before the body is read: the whole `X-Gitlab-Token` check, and of
/// the signature only its headers' presence, shape and freshness (the HMAC covers the
/// body). A request that fails here would fail [`authenticate`] with the same reason.
/// Returns the instances the token allows (`Any` when the policy skipped the token).
pub fn preauthenticate(
    config: &AuthConfig,
    headers: &HeaderMap,
    now_unix: i64,
) -> Result<InstanceScope, AuthFailure> {
    let token = verify_token(config, headers)?;
    let signature = signature_head(config, headers, now_unix)?;
    if token.is_none() && signature.is_none() {
        return Err(AuthFailure::NothingVerified);
    }
    Ok(token.unwrap_or(InstanceScope::Any))
}

/// A registry notification's `Authorization` header: one value, `Bearer <token>` (the
/// scheme in any case) or the token alone (Harbor and GitLab's examples send it bare),
/// equal to an accepted registry token. A body signature does not exist for registries.
pub fn authenticate_registry(config: &AuthConfig, headers: &HeaderMap) -> Result<(), AuthFailure> {
    let accepted = config.accepted_registry_tokens();
    if accepted.is_empty() {
        return Err(AuthFailure::NoRegistryToken);
    }
    let presented = required_header(headers, AUTHORIZATION)?.as_bytes();
    let token = match presented.get(..BEARER.len()) {
        Some(scheme) if scheme.eq_ignore_ascii_case(BEARER.as_bytes()) => {
            &presented[BEARER.len()..]
        }
        _ => presented,
    };
    if token_is_accepted(accepted, token) {
        Ok(())
    } else {
        Err(AuthFailure::WrongRegistryToken)
    }
}

/// Compares against every accepted token, even after a match, so the time taken does not
/// reveal which token matched.
fn token_is_accepted(accepted: &[Secret], presented: &[u8]) -> bool {
    let mut matched = Choice::from(0);
    for token in accepted {
        matched |= token.expose().as_bytes().ct_eq(presented);
    }
    !presented.is_empty() && bool::from(matched)
}

/// The instances the matching token allows; `None` when the policy skipped the token.
fn verify_token(
    config: &AuthConfig,
    headers: &HeaderMap,
) -> Result<Option<InstanceScope>, AuthFailure> {
    let Some(presented) = header_to_check(headers, TOKEN_HEADER, config.policy.token)? else {
        return Ok(None);
    };
    matching_token_scope(config, presented.as_bytes())
        .map(Some)
        .ok_or(AuthFailure::WrongToken)
}

/// Compares against every accepted token, even after a match, so the time taken does not
/// reveal which token (or whether an early one) matched. Several tokens may match (the
/// same token configured for two instances): their instances add up.
fn matching_token_scope(config: &AuthConfig, presented: &[u8]) -> Option<InstanceScope> {
    if presented.is_empty() {
        return None;
    }
    let mut scope: Option<InstanceScope> = None;
    for (token, allowed) in config.all_tokens() {
        let matched: Choice = token.expose().as_bytes().ct_eq(presented);
        if bool::from(matched) {
            scope = Some(match scope {
                Some(scope) => scope.union(allowed),
                None => allowed,
            });
        }
    }
    scope
}

/// The signature's headers, checked without the body: `Some(signature header)` when the
/// policy checks it.
fn signature_head<'a>(
    config: &AuthConfig,
    headers: &'a HeaderMap,
    now_unix: i64,
) -> Result<Option<&'a HeaderValue>, AuthFailure> {
    let Some(signature) = header_to_check(headers, WEBHOOK_SIGNATURE, config.policy.signature)?
    else {
        return Ok(None);
    };
    required_header(headers, WEBHOOK_ID)?;
    let timestamp = required_header(headers, WEBHOOK_TIMESTAMP)?;
    check_timestamp(timestamp, now_unix, config.timestamp_tolerance_secs)?;
    Ok(Some(signature))
}

/// The instances the matching signing key allows; `None` when the policy skipped it.
fn verify_signature(
    config: &AuthConfig,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<Option<InstanceScope>, AuthFailure> {
    let Some(signature) = signature_head(config, headers, now_unix)? else {
        return Ok(None);
    };
    let id = required_header(headers, WEBHOOK_ID)?;
    let timestamp = required_header(headers, WEBHOOK_TIMESTAMP)?;
    let (expected, scopes): (Vec<MacBytes>, Vec<InstanceScope>) = config
        .all_signing_keys()
        .map(|(key, scope)| (key.sign(id.as_bytes(), timestamp.as_bytes(), body), scope))
        .unzip();
    let matched = match_signature_entries(signature, &expected)?;
    let scope = matched
        .into_iter()
        .zip(scopes)
        .filter_map(|(matched, scope)| matched.then_some(scope))
        .reduce(InstanceScope::union);
    // match_signature_entries answers Ok only when some key matched.
    Ok(Some(scope.unwrap_or(InstanceScope::Only(BTreeSet::new()))))
}

/// The header's single value when the requirement asks for a check, `None` when skipped.
fn header_to_check<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    requirement: Requirement,
) -> Result<Option<&'a HeaderValue>, AuthFailure> {
    match requirement {
        Requirement::Off => Ok(None),
        Requirement::IfPresent => single_header(headers, name),
        Requirement::Required => required_header(headers, name).map(Some),
    }
}

fn required_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<&'a HeaderValue, AuthFailure> {
    single_header(headers, name)?.ok_or(AuthFailure::MissingHeader { header: name })
}

/// A credential header sent twice is ambiguous (which one did the sender mean?), so it is
/// refused rather than resolved. A proxy that folds duplicates into one comma-joined value
/// makes it fail to match instead, which is equally closed.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a HeaderValue>, AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(AuthFailure::DuplicatedHeader { header: name }),
        None => Ok(first),
    }
}

fn check_timestamp(
    value: &HeaderValue,
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), AuthFailure> {
    let sent = parse_unix_seconds(value.as_bytes()).ok_or(AuthFailure::MalformedTimestamp)?;
    // A hand-built negative tolerance fails closed as zero.
    let tolerance_secs = tolerance_secs.max(0);
    // i128: no pair of i64 values can overflow the subtraction.
    let age = i128::from(now_unix) - i128::from(sent);
    if age > i128::from(tolerance_secs) {
        Err(AuthFailure::StaleTimestamp { tolerance_secs })
    } else if -age > i128::from(tolerance_secs) {
        Err(AuthFailure::FutureTimestamp { tolerance_secs })
    } else {
        Ok(())
    }
}

/// Plain ASCII digits only: `str::parse` would also take a `+` or `-` sign.
fn parse_unix_seconds(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

enum SignatureEntry {
    V1(MacBytes),
    OtherVersion,
    Malformed,
}

/// Accepts when any v1 entry matches any key, and says which keys matched. Every entry is
/// compared with every key, so timing does not reveal which matched; a match wins over
/// malformed neighbours because the matching entry alone authenticates the content.
/// Otherwise the most telling reason is returned.
fn match_signature_entries(
    header: &HeaderValue,
    expected: &[MacBytes],
) -> Result<Vec<bool>, AuthFailure> {
    // Bytes outside visible ASCII cannot be part of `v1,<base64>`.
    let text = header
        .to_str()
        .map_err(|_| AuthFailure::MalformedSignature)?;
    let mut matched = vec![Choice::from(0); expected.len()];
    let (mut saw_entry, mut saw_v1, mut saw_malformed) = (false, false, false);
    for entry in text.split_ascii_whitespace() {
        saw_entry = true;
        match parse_signature_entry(entry) {
            SignatureEntry::V1(mac) => {
                saw_v1 = true;
                for (candidate, matched) in expected.iter().zip(matched.iter_mut()) {
                    *matched |= candidate.as_slice().ct_eq(mac.as_slice());
                }
            }
            SignatureEntry::OtherVersion => {}
            SignatureEntry::Malformed => saw_malformed = true,
        }
    }
    let matched: Vec<bool> = matched.into_iter().map(bool::from).collect();
    if matched.iter().any(|matched| *matched) {
        Ok(matched)
    } else if saw_malformed || !saw_entry {
        Err(AuthFailure::MalformedSignature)
    } else if !saw_v1 {
        Err(AuthFailure::NoSupportedSignature)
    } else {
        Err(AuthFailure::SignatureMismatch)
    }
}

fn parse_signature_entry(entry: &str) -> SignatureEntry {
    let Some((version, encoded)) = entry.split_once(',') else {
        return SignatureEntry::Malformed;
    };
    if version.is_empty() {
        return SignatureEntry::Malformed;
    }
    // Other versions (e.g. `v1a` asymmetric signatures) are someone else's business.
    if version != SIGNATURE_VERSION {
        return SignatureEntry::OtherVersion;
    }
    // The length check also bounds the allocation for a hostile, huge entry.
    if encoded.len() != ENCODED_MAC_LEN {
        return SignatureEntry::Malformed;
    }
    BASE64
        .decode(encoded)
        .ok()
        .and_then(|bytes| MacBytes::try_from(bytes.as_slice()).ok())
        .map_or(SignatureEntry::Malformed, SignatureEntry::V1)
}

#[cfg(test)]
#[path = "auth_test.rs"]
mod tests;

#[cfg(test)]
#[path = "auth_registry_test.rs"]
mod registry_tests;
