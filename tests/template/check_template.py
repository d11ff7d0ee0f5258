#!/usr/bin/env python3
"""Checks on template.yaml that neither `sam validate --lint` nor `cfn-lint` make.

Usage: ~/.cache/fluxrelay/venv/bin/python tests/template/check_template.py template.yaml
       ~/.cache/fluxrelay/venv/bin/python tests/template/check_template.py --grants template.yaml

Prints one PASS/FAIL line per check and "N passed, M failed" last; exits 1 on any failure.
With --grants, prints instead each function's granted IAM actions and their resources as
one JSON object ({"IngestFunction": {"sqs:SendMessage": ["IntakeQueue"], ...}, ...}), read
the same way the IAM check reads them (tests/e2e/tests/iam_scope.rs compares it with
what each function's code calls).
The template is loaded with cfn-lint's own YAML loader, so !Ref, !Sub, !GetAtt, !If and
!FindInMap arrive as their long forms ({"Ref": ...}, {"Fn::GetAtt": [...]}, ...).
See tests/template/README.md for what is checked and why.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

from cfnlint.decode import decode

# The intended policy of each function: (action, resource) pairs, exactly. A resource is
# written as the template spells it after normalisation (see `norm`): "GetAtt:X.Arn" or
# "Sub:<string>" or a literal.
SECRET_ARN = "Sub:arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
REGISTRY_INDEX = "Sub:${RegistryBucket.Arn}/${RegistryIndexKey}"
EXPECTED_POLICIES = {
    "IngestFunction": {
        ("sqs:SendMessage", "GetAtt:IntakeQueue.Arn"),
        ("secretsmanager:GetSecretValue", SECRET_ARN + "${WebhookSecretName}-??????"),
    },
    "RouteFunction": {
        ("sqs:SendMessage", "GetAtt:DispatchQueue.Arn"),
        ("sqs:ReceiveMessage", "GetAtt:IntakeQueue.Arn"),
        ("sqs:GetQueueAttributes", "GetAtt:IntakeQueue.Arn"),
        ("sqs:DeleteMessage", "GetAtt:IntakeQueue.Arn"),
        ("sqs:ChangeMessageVisibility", "GetAtt:IntakeQueue.Arn"),
        ("sqs:SendMessage", "GetAtt:IntakeDLQ.Arn"),
        ("s3:GetObject", REGISTRY_INDEX),
    },
    "DispatchFunction": {
        ("sqs:ReceiveMessage", "GetAtt:DispatchQueue.Arn"),
        ("sqs:ReceiveMessage", "GetAtt:DispatchRetryQueue.Arn"),
        ("sqs:GetQueueAttributes", "GetAtt:DispatchQueue.Arn"),
        ("sqs:GetQueueAttributes", "GetAtt:DispatchRetryQueue.Arn"),
        ("sqs:DeleteMessage", "GetAtt:DispatchQueue.Arn"),
        ("sqs:DeleteMessage", "GetAtt:DispatchRetryQueue.Arn"),
        ("sqs:ChangeMessageVisibility", "GetAtt:DispatchQueue.Arn"),
        ("sqs:ChangeMessageVisibility", "GetAtt:DispatchRetryQueue.Arn"),
        ("sqs:SendMessage", "GetAtt:DispatchRetryQueue.Arn"),
        ("sqs:SendMessage", "GetAtt:DispatchDLQ.Arn"),
        ("s3:GetObject", REGISTRY_INDEX),
        ("secretsmanager:GetSecretValue", SECRET_ARN + "${RegistryPrefix}*"),
        ("eks:DescribeCluster", "Sub:arn:${AWS::Partition}:eks:*:${AWS::AccountId}:cluster/*"),
        # Confirmation (issue 14): a delivery starts its confirmation; the GitLab token for
        # the compare API (route holds no credential, so dispatch compares).
        ("sqs:SendMessage", "GetAtt:ConfirmQueue.Arn"),
        ("secretsmanager:GetSecretValue", SECRET_ARN + "${GitLabSecretName}-??????"),
    },
    # Confirmation (issue 14): the registry as dispatch reads it, and the GitLab token.
    "ConfirmFunction": {
        ("sqs:ReceiveMessage", "GetAtt:ConfirmQueue.Arn"),
        ("sqs:GetQueueAttributes", "GetAtt:ConfirmQueue.Arn"),
        ("sqs:DeleteMessage", "GetAtt:ConfirmQueue.Arn"),
        ("sqs:ChangeMessageVisibility", "GetAtt:ConfirmQueue.Arn"),
        ("sqs:SendMessage", "GetAtt:ConfirmQueue.Arn"),
        ("sqs:SendMessage", "GetAtt:ConfirmDLQ.Arn"),
        ("s3:GetObject", REGISTRY_INDEX),
        ("eks:DescribeCluster", "Sub:arn:${AWS::Partition}:eks:*:${AWS::AccountId}:cluster/*"),
        ("secretsmanager:GetSecretValue", SECRET_ARN + "${RegistryPrefix}*"),
        ("secretsmanager:GetSecretValue", SECRET_ARN + "${GitLabSecretName}-??????"),
    },
}
# Standard queues: dispatch retries need a per-message delay, which FIFO queues lack, and a
# standard queue's dead-letter queue must be standard too. Every other queue is FIFO.
STANDARD_QUEUES = {"DispatchRetryQueue", "DispatchRetryDLQ", "ConfirmQueue", "ConfirmDLQ"}
# Actions allowed on Resource "*" (AWS offers no resource-level scoping for them): none
# since no function lists the registry's secrets.
UNSCOPABLE_ACTIONS: set = set()
FUNCTION_BINARIES = {"IngestFunction": "ingest", "RouteFunction": "route", "DispatchFunction": "dispatch",
                     "ConfirmFunction": "confirm"}
WEBHOOK_FUNCTION = "IngestFunction"
# EcrEvents=true: the EventBridge rule, its queue policy and content-based dedup on intake.
ECR_CONDITION = "WithEcrEvents"
ECR_CONTENT_DEDUP = {"Fn::If": [ECR_CONDITION, True, False]}
FIFO_BATCH_MAX = 10
# What an event source mapping polls a queue with, and what settling a received message
# takes: a function may hold these only on the queues its own event sources read.
CONSUME_ACTIONS = {"sqs:ReceiveMessage", "sqs:GetQueueAttributes", "sqs:DeleteMessage",
                   "sqs:ChangeMessageVisibility"}
# The most concurrency the public webhook function may take (what it reserves).
WEBHOOK_MAX_CONCURRENCY = 100


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, ok: bool, name: str, detail: str = "") -> None:
        if ok:
            self.passed += 1
            print(f"PASS {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""))


def as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def norm(value):
    """A short, comparable spelling of a (possibly intrinsic) value."""
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return f"Ref:{arg}"
        if key == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else list(arg)
            return "GetAtt:" + ".".join(str(p) for p in parts)
        if key == "Fn::Sub":
            return "Sub:" + (arg if isinstance(arg, str) else str(arg[0]))
    return value if isinstance(value, str) else repr(value)


def getatt_target(value) -> str | None:
    """Logical id of `!GetAtt X.Arn`, else None."""
    n = norm(value)
    if isinstance(n, str) and n.startswith("GetAtt:") and n.endswith(".Arn"):
        return n[len("GetAtt:") : -len(".Arn")]
    return None


class Template:
    def __init__(self, path: Path) -> None:
        tpl, matches = decode(str(path))
        if tpl is None:
            raise SystemExit(f"cannot load {path}: {matches}")
        self.path = path
        self.tpl = tpl
        self.resources = tpl.get("Resources", {}) or {}
        self.params = tpl.get("Parameters", {}) or {}
        self.mappings = tpl.get("Mappings", {}) or {}
        globals_fn = ((tpl.get("Globals") or {}).get("Function")) or {}
        self.functions = {}
        for lid, res in self.resources.items():
            if res.get("Type") == "AWS::Serverless::Function":
                props = dict(globals_fn)
                props.update(res.get("Properties") or {})
                self.functions[lid] = (res, props)
        self.queues = {
            lid: res.get("Properties") or {}
            for lid, res in self.resources.items()
            if res.get("Type") == "AWS::SQS::Queue"
        }

    def param_values(self, name: str) -> list:
        """Every value a parameter can take that matters: its AllowedValues, or its
        Default, MinValue and MaxValue (the lowest and highest it can go)."""
        p = self.params.get(name)
        if p is None:
            return []
        if "AllowedValues" in p:
            return list(p["AllowedValues"])
        return [v for v in (p.get("Default"), p.get("MinValue"), p.get("MaxValue")) if v is not None]

    def resolve(self, value, env: dict) -> list:
        """All concrete values of `value`; `env` pins some parameters. Unresolvable -> []."""
        if isinstance(value, (int, float)):
            return [value]
        if isinstance(value, str):
            try:
                return [int(value)]
            except ValueError:
                return [value]
        if isinstance(value, dict) and len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref" and isinstance(arg, str):
                if arg in env:
                    return [env[arg]]
                return [v for x in self.param_values(arg) for v in self.resolve(x, env)]
            if key == "Fn::FindInMap" and isinstance(arg, list) and len(arg) == 3:
                out = []
                for k1 in self.resolve(arg[1], env):
                    for k2 in self.resolve(arg[2], env):
                        try:
                            out += self.resolve(self.mappings[arg[0]][str(k1)][str(k2)], env)
                        except (KeyError, TypeError):
                            pass
                return out
        return []

    def param_refs(self, value) -> set:
        found = set()
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "Ref" and isinstance(v, str) and v in self.params:
                    found.add(v)
                found |= self.param_refs(v)
        elif isinstance(value, list):
            for v in value:
                found |= self.param_refs(v)
        return found


def workspace_binaries(root: Path) -> set:
    names = set()
    for cargo in root.glob("functions/*/Cargo.toml"):
        try:
            data = tomllib.loads(cargo.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        names |= {b.get("name") for b in data.get("bin", [])}
    return names


def statements(node, where=""):
    """Every IAM statement anywhere under `node`, with a path for messages."""
    if isinstance(node, dict):
        if isinstance(node.get("Statement"), (list, dict)):
            for i, st in enumerate(as_list(node["Statement"])):
                if isinstance(st, dict):
                    yield f"{where}.Statement[{i}]", st
        for k, v in node.items():
            if k != "Statement":
                yield from statements(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from statements(v, f"{where}[{i}]")


def check_functions(t: Template, c: Checks) -> None:
    c.check(set(t.functions) == set(FUNCTION_BINARIES), "functions are exactly ingest, route, dispatch, confirm",
            f"found {sorted(t.functions)}")
    for lid, (res, props) in sorted(t.functions.items()):
        code_uri = props.get("CodeUri")
        bins = workspace_binaries(t.path.parent / code_uri) if isinstance(code_uri, str) else set()
        c.check(props.get("Runtime") == "provided.al2023", f"{lid} Runtime is provided.al2023",
                f"got {props.get('Runtime')!r}")
        c.check(props.get("Handler") == "bootstrap", f"{lid} Handler is bootstrap",
                f"got {props.get('Handler')!r}")
        meta = res.get("Metadata") or {}
        c.check(meta.get("BuildMethod") == "rust-cargolambda", f"{lid} BuildMethod is rust-cargolambda",
                f"got {meta.get('BuildMethod')!r}")
        # SAM reads the binary name from Metadata.BuildProperties.Binary, nowhere else.
        binary = (meta.get("BuildProperties") or {}).get("Binary")
        want = FUNCTION_BINARIES.get(lid)
        # Against the Cargo workspace's [[bin]] names when the template sits in the repo.
        c.check(binary == want and (not bins or binary in bins),
                f"{lid} Metadata.BuildProperties.Binary names its workspace binary",
                f"got {binary!r}, want {want!r} (workspace binaries: {sorted(b for b in bins if b)})")
        timeouts = t.resolve(props.get("Timeout"), {})
        c.check(bool(timeouts) and all(isinstance(x, int) and 1 <= x <= 900 for x in timeouts),
                f"{lid} has an explicit Timeout", f"got {props.get('Timeout')!r}")
        mem = t.resolve(props.get("MemorySize"), {})
        c.check(bool(mem) and all(isinstance(x, int) and 128 <= x <= 256 for x in mem),
                f"{lid} MemorySize is 128-256", f"got {props.get('MemorySize')!r}")


def check_release_profile(t: Template, c: Checks) -> None:
    """The workspace's release profile leaves `panic` unset. SAM builds each function with
    cargo-lambda, which then adds `profile.release.panic="abort"` (as it adds strip, LTO
    and codegen-units when a profile leaves them unset): the Lambda artifacts carry no
    unwinding landing pads, about a tenth of their size (BENCHMARKS.md, "`dispatch` and
    `confirm` without kube's client"). `serve`, built by cargo itself, keeps unwinding, so its
    queue writer survives one panicking write. Setting `panic` in the profile would take
    one of the two away."""
    cargo = t.path.parent / "Cargo.toml"
    if not cargo.is_file():
        return
    try:
        release = (tomllib.loads(cargo.read_text()).get("profile") or {}).get("release") or {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        c.check(False, "the workspace release profile leaves panic to cargo-lambda", f"{cargo}: {error}")
        return
    c.check("panic" not in release, "the workspace release profile leaves panic to cargo-lambda",
            f"[profile.release] sets panic = {release.get('panic')!r}")


def sqs_events(t: Template):
    """Every SQS event source: (function, its properties, mapping id, mapping properties),
    from the AWS::Lambda::EventSourceMapping resources."""
    for eid, res in sorted(t.resources.items()):
        if res.get("Type") != "AWS::Lambda::EventSourceMapping":
            continue
        ep = res.get("Properties") or {}
        target = norm(ep.get("FunctionName"))
        lid = target[len("Ref:"):] if isinstance(target, str) and target.startswith("Ref:") else None
        _res, props = t.functions.get(lid, ({}, {}))
        yield lid, props, eid, ep


def consumers_of(t: Template) -> dict:
    """queue -> the functions whose event sources read it."""
    out = {}
    for lid, _props, _eid, ep in sqs_events(t):
        out.setdefault(getatt_target(ep.get("EventSourceArn")), set()).add(lid)
    return out


def check_event_sources(t: Template, c: Checks) -> None:
    events = list(sqs_events(t))
    sam_events = [f"{lid}.{ename}" for lid, (_res, props) in sorted(t.functions.items())
                  for ename, ev in sorted((props.get("Events") or {}).items())
                  if isinstance(ev, dict) and ev.get("Type") == "SQS"]
    c.check(not sam_events, "no SAM SQS Events (SAM would add AWSLambdaSQSQueueExecutionRole: every queue of the account)",
            f"found {sam_events}")
    consumers = consumers_of(t)
    c.check({"IntakeQueue", "DispatchQueue", "DispatchRetryQueue", "ConfirmQueue"} <= set(consumers),
            "IntakeQueue, DispatchQueue, DispatchRetryQueue and ConfirmQueue each have an SQS event source",
            f"consumed: {sorted(x for x in consumers if x)}")
    for lid, props, ename, ep in events:
        name = f"{lid}.{ename}"
        c.check(lid in t.functions, f"{name} invokes a function of this template (FunctionName: !Ref)",
                f"FunctionName is {ep.get('FunctionName')!r}")
        batch = ep.get("BatchSize")
        c.check(isinstance(batch, int) and 1 <= batch <= FIFO_BATCH_MAX, f"{name} BatchSize <= {FIFO_BATCH_MAX} (FIFO limit)",
                f"got {batch!r}")
        frt = ep.get("FunctionResponseTypes")
        c.check(frt == ["ReportBatchItemFailures"], f"{name} FunctionResponseTypes == ['ReportBatchItemFailures']",
                f"got {frt!r}")
        mc_raw = (ep.get("ScalingConfig") or {}).get("MaximumConcurrency")
        mc = t.resolve(mc_raw, {})
        c.check(bool(mc) and all(isinstance(x, int) and x >= 2 for x in mc), f"{name} ScalingConfig.MaximumConcurrency >= 2",
                f"got {mc_raw!r} -> {mc}")
        # Visibility >= 6 x timeout, for every value the shared parameters can take.
        qid = getatt_target(ep.get("EventSourceArn"))
        queue = t.queues.get(qid)
        if queue is None:
            c.check(False, f"{name} consumes a queue of this template", f"EventSourceArn is {ep.get('EventSourceArn')!r}")
            continue
        shared = sorted(t.param_refs(props.get("Timeout")) | t.param_refs(queue.get("VisibilityTimeout")))
        envs = [{}]
        for p in shared:
            envs = [dict(e, **{p: v}) for e in envs for v in t.param_values(p)]
        bad = []
        for env in envs:
            timeouts = t.resolve(props.get("Timeout"), env)
            vis = t.resolve(queue.get("VisibilityTimeout"), env)
            if not timeouts or not vis:
                bad.append(f"{env or 'defaults'}: unresolvable timeout {timeouts} / visibility {vis}")
                continue
            for to in timeouts:
                for v in vis:
                    if not (isinstance(to, int) and isinstance(v, int) and v >= 6 * to):
                        bad.append(f"{env or 'defaults'}: visibility {v} < 6 x timeout {to}")
        c.check(not bad, f"{qid} VisibilityTimeout >= 6 x {lid} Timeout (all {len(envs)} parameter values)",
                "; ".join(bad[:3]))


def parameter_envs(t: Template, *values) -> list:
    """Every combination of the values of the parameters `values` refer to."""
    envs = [{}]
    for p in sorted(set().union(*(t.param_refs(v) for v in values))):
        envs = [dict(e, **{p: v}) for e in envs for v in t.param_values(p)]
    return envs


def check_concurrency(t: Template, c: Checks) -> None:
    """Each function reserves its concurrency, which is also its ceiling: the public
    webhook function a bounded amount, each SQS consumer at least what its event sources
    may invoke at once. So no flood of one function takes another's."""
    events = list(sqs_events(t))
    for lid, (_res, props) in sorted(t.functions.items()):
        reserved = props.get("ReservedConcurrentExecutions")
        mine = [ep for f, _p, _e, ep in events if f == lid]
        bad = []
        envs = parameter_envs(t, reserved, *[(ep.get("ScalingConfig") or {}).get("MaximumConcurrency") for ep in mine])
        for env in envs:
            budgets = t.resolve(reserved, env)
            if not budgets or not all(isinstance(b, int) and b >= 1 for b in budgets):
                bad.append(f"{env or 'defaults'}: ReservedConcurrentExecutions {reserved!r} -> {budgets}")
                continue
            if lid == WEBHOOK_FUNCTION and max(budgets) > WEBHOOK_MAX_CONCURRENCY:
                bad.append(f"{env or 'defaults'}: {max(budgets)} > {WEBHOOK_MAX_CONCURRENCY}")
            maxima = [t.resolve((ep.get("ScalingConfig") or {}).get("MaximumConcurrency"), env) for ep in mine]
            if any(len(m) != 1 for m in maxima):
                bad.append(f"{env or 'defaults'}: unresolvable MaximumConcurrency {maxima}")
                continue
            need = sum(m[0] for m in maxima)
            if min(budgets) < need:
                bad.append(f"{env or 'defaults'}: reserved {min(budgets)} < {need}, the sum of its event sources' MaximumConcurrency")
        what = (f"reserves 1..{WEBHOOK_MAX_CONCURRENCY} (a flood of the public URL stops there)" if lid == WEBHOOK_FUNCTION
                else "reserves at least its event sources' MaximumConcurrency")
        c.check(not bad, f"{lid} {what} (all {len(envs)} parameter values)", "; ".join(bad[:3]))


def check_queue_ownership(t: Template, c: Checks) -> None:
    """A function receives, deletes, re-times or reads the attributes of its own queues
    only: those its event sources read."""
    consumers = consumers_of(t)
    bad = []
    for lid, (_res, props) in sorted(t.functions.items()):
        grants, _problems = function_grants(props)
        for action, resource in sorted(grants):
            if action not in CONSUME_ACTIONS:
                continue
            qid = getatt_target(resource) if resource.startswith("GetAtt:") else None
            owners = consumers.get(qid, set())
            if lid not in owners:
                bad.append(f"{lid} has {action} on {resource} (read by {sorted(owners) or 'no event source'})")
    c.check(not bad, "no function can receive, delete or re-time another function's queue", "; ".join(bad))


# Actions that read a stored credential (a secret value, or the key that decrypts one).
CREDENTIAL_READS = {"secretsmanager:GetSecretValue", "secretsmanager:BatchGetSecretValue", "kms:Decrypt"}
# Route processes payload content: it must hold no credential.


def check_credentials(t: Template, c: Checks) -> None:
    _res, props = t.functions.get("RouteFunction", ({}, {}))
    grants, _problems = function_grants(props)
    reads = sorted(f"{a} on {r}" for a, r in grants if a in CREDENTIAL_READS)
    c.check(not reads, "RouteFunction can read no credential", "; ".join(reads))


def redrive_targets(t: Template) -> dict:
    """queue -> the queue its RedrivePolicy names (None when it has none)."""
    return {
        qid: getatt_target((q.get("RedrivePolicy") or {}).get("deadLetterTargetArn"))
        for qid, q in t.queues.items()
    }


def dead_letter_queues(t: Template) -> set:
    """Queues named by a RedrivePolicy, or declaring a RedriveAllowPolicy."""
    named = {d for d in redrive_targets(t).values() if d}
    return named | {qid for qid, q in t.queues.items() if "RedriveAllowPolicy" in q}


def check_queues(t: Template, c: Checks) -> None:
    dlq_of = redrive_targets(t)
    dlqs = dead_letter_queues(t)
    c.check(len(t.queues) == 8, "eight queues (intake, dispatch, dispatch retry, confirm and their DLQs)",
            f"found {sorted(t.queues)}")
    for qid, q in sorted(t.queues.items()):
        standard = qid in STANDARD_QUEUES
        qname = norm(q.get("QueueName")) if "QueueName" in q else ("" if standard else ".fifo")
        if standard:
            c.check(not q.get("FifoQueue") and not qname.endswith(".fifo"),
                    f"{qid} is a standard queue (per-message delay)",
                    f"FifoQueue={q.get('FifoQueue')!r} QueueName={q.get('QueueName')!r}")
        else:
            c.check(q.get("FifoQueue") is True and qname.endswith(".fifo"),
                    f"{qid} is FIFO", f"FifoQueue={q.get('FifoQueue')!r} QueueName={q.get('QueueName')!r}")
        c.check(q.get("SqsManagedSseEnabled") is True or bool(q.get("KmsMasterKeyId")), f"{qid} is encrypted at rest",
                "neither SqsManagedSseEnabled: true nor KmsMasterKeyId")
        if qid in dlqs:
            c.check(q.get("MessageRetentionPeriod") == 1209600, f"{qid} (DLQ) retains 14 days",
                    f"got {q.get('MessageRetentionPeriod')!r}")
            continue
        target = dlq_of.get(qid)
        ok = target in t.queues and bool(t.queues[target].get("FifoQueue")) is not standard
        mrc = (q.get("RedrivePolicy") or {}).get("maxReceiveCount")
        kind = "standard" if standard else "FIFO"
        c.check(ok and isinstance(mrc, int) and mrc >= 1, f"{qid} redrives to a {kind} DLQ of this template",
                f"RedrivePolicy={q.get('RedrivePolicy')!r}")
        if not standard:
            # The intake queue may take EventBridge's ECR events, which need content-based
            # dedup; only under the EcrEvents condition (check_ecr_events).
            cbd = q.get("ContentBasedDeduplication")
            ok = cbd is False or (qid == "IntakeQueue" and cbd == ECR_CONTENT_DEDUP)
            c.check(ok, f"{qid} ContentBasedDeduplication is false (app sets dedup ids)"
                    + (", or true only with EcrEvents" if qid == "IntakeQueue" else ""),
                    f"got {cbd!r}")
        rp = q.get("MessageRetentionPeriod")
        c.check(isinstance(rp, int) and rp >= 4 * 86400, f"{qid} retains messages >= 4 days", f"got {rp!r}")
    intake = t.queues.get("IntakeQueue") or {}
    c.check(intake.get("DeduplicationScope") == "queue", "IntakeQueue DeduplicationScope is queue (push key is queue-wide)",
            f"got {intake.get('DeduplicationScope')!r}")
    for qid in ("DispatchQueue", "DispatchRetryQueue", "ConfirmQueue"):
        mrc = (((t.queues.get(qid) or {}).get("RedrivePolicy") or {}).get("maxReceiveCount"))
        c.check(isinstance(mrc, int) and mrc > 8, f"{qid} maxReceiveCount > 8 (the code's own attempt limit)",
                f"got {mrc!r}")
    mrc = (((t.queues.get("IntakeQueue") or {}).get("RedrivePolicy") or {}).get("maxReceiveCount"))
    c.check(isinstance(mrc, int) and mrc > 8, "IntakeQueue maxReceiveCount > 8 (route's own INTAKE_MAX_RECEIVES)",
            f"got {mrc!r}")


def function_grants(props: dict) -> tuple[set, list]:
    """A function's inline `Policies` as (action, normalised resource) pairs it allows, and
    what in its `Policies` or `Role` cannot be read that way."""
    grants, problems = set(), []
    for pol in as_list(props.get("Policies")):
        if isinstance(pol, str):
            problems.append(f"managed policy {pol!r}")
        elif isinstance(pol, dict) and "Statement" in pol:
            for st in as_list(pol["Statement"]):
                if st.get("Effect") != "Allow":
                    continue
                for a in as_list(st.get("Action")):
                    for r in as_list(st.get("Resource")):
                        grants.add((a, norm(r)))
        else:
            problems.append(f"policy template {list(pol)[:1]} (its scope cannot be checked here)")
    if props.get("Role"):
        problems.append("explicit Role (its policies are not checked here)")
    return grants, problems


def check_iam(t: Template, c: Checks) -> None:
    wild_actions, wild_resources, denies = [], [], []
    for where, st in statements(t.resources, "Resources"):
        actions = [a for a in as_list(st.get("Action")) + as_list(st.get("NotAction"))]
        for a in actions:
            if not isinstance(a, str) or "*" in a:
                wild_actions.append(f"{where}: {a!r}")
        if "NotAction" in st or "NotResource" in st:
            wild_resources.append(f"{where}: NotAction/NotResource")
        resources = as_list(st.get("Resource"))
        if any(r == "*" for r in resources):
            if not (resources == ["*"] and set(as_list(st.get("Action"))) <= UNSCOPABLE_ACTIONS and st.get("Action")):
                wild_resources.append(f"{where}: Resource '*' with Action {st.get('Action')!r}")
    c.check(not wild_actions, "no IAM Action contains '*'", "; ".join(wild_actions))
    c.check(not wild_resources, "no function policy has Resource '*'",
            "; ".join(wild_resources))

    for lid, (_res, props) in sorted(t.functions.items()):
        grants, problems = function_grants(props)
        want = EXPECTED_POLICIES.get(lid, set())
        missing, extra = want - grants, grants - want
        detail = "; ".join(problems + [f"missing {sorted(missing)}" if missing else "",
                                       f"unexpected {sorted(extra)}" if extra else ""]).strip("; ")
        c.check(not problems and grants == want, f"{lid} policy grants exactly {sorted({a for a, _ in want})}", detail)


def alarm_targets(t: Template, metric: str, namespace: str, dim: str) -> dict:
    found = {}
    for lid, res in t.resources.items():
        if res.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        p = res.get("Properties") or {}
        if p.get("MetricName") != metric or p.get("Namespace") != namespace:
            continue
        for d in as_list(p.get("Dimensions")):
            if d.get("Name") == dim:
                found.setdefault(norm(d.get("Value")), []).append((lid, p))
    return found


def fires_above_zero(p: dict) -> bool:
    op, th = p.get("ComparisonOperator"), p.get("Threshold")
    try:
        th = float(th)
    except (TypeError, ValueError):
        return False
    return (op == "GreaterThanThreshold" and th == 0) or (op == "GreaterThanOrEqualToThreshold" and th == 1)


def check_alarms(t: Template, c: Checks) -> None:
    dlqs = dead_letter_queues(t)
    depth = alarm_targets(t, "ApproximateNumberOfMessagesVisible", "AWS/SQS", "QueueName")
    for d in sorted(dlqs):
        alarms = depth.get(f"GetAtt:{d}.QueueName", [])
        c.check(any(fires_above_zero(p) for _, p in alarms), f"DLQ-depth alarm (> 0) on {d}",
                f"alarms: {[a for a, _ in alarms]}")
    errors = alarm_targets(t, "Errors", "AWS/Lambda", "FunctionName")
    for f in sorted(t.functions):
        alarms = errors.get(f"Ref:{f}", [])
        c.check(any(fires_above_zero(p) for _, p in alarms), f"Errors alarm (> 0) on {f}",
                f"alarms: {[a for a, _ in alarms]}")
    # Confirmation (issue 14): commits not deployed (failed or timed out), from the confirm
    # function's Embedded Metric Format lines, in the stack's own namespace.
    not_deployed = [
        lid for lid, res in t.resources.items()
        if res.get("Type") == "AWS::CloudWatch::Alarm"
        and (res.get("Properties") or {}).get("MetricName") == "ConfirmationsNotDeployed"
        and norm((res.get("Properties") or {}).get("Namespace")) == "Ref:AWS::StackName"
        and fires_above_zero(res.get("Properties") or {})
    ]
    c.check(bool(not_deployed), "an alarm (> 0) on ConfirmationsNotDeployed (the confirm function's EMF metric)",
            "no such alarm")
    conditions = t.tpl.get("Conditions") or {}
    bad = []
    for lid, res in t.resources.items():
        if res.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        for key in ("AlarmActions", "OKActions", "InsufficientDataActions"):
            v = (res.get("Properties") or {}).get(key)
            if v is None:
                continue
            cond = v.get("Fn::If", [None])[0] if isinstance(v, dict) else None
            if cond not in conditions or "AlarmTopicArn" not in str(conditions.get(cond)):
                bad.append(f"{lid}.{key}")
    c.check(not bad, "alarm actions only under a Condition on AlarmTopicArn", ", ".join(bad))


def check_ecr_events(t: Template, c: Checks) -> None:
    """The optional ECR path: a rule for successful ECR pushes whose one target is the
    intake queue with a static message group, a queue policy that lets EventBridge send
    there from that rule alone, both under the EcrEvents condition."""
    rules = {lid: r for lid, r in t.resources.items() if r.get("Type") == "AWS::Events::Rule"}
    policies = {lid: r for lid, r in t.resources.items() if r.get("Type") == "AWS::SQS::QueuePolicy"}
    c.check(set(rules) == {"EcrImagePushRule"} and set(policies) == {"IntakeQueueEcrPolicy"},
            "one EventBridge rule (EcrImagePushRule) and one queue policy (IntakeQueueEcrPolicy)",
            f"rules {sorted(rules)}, queue policies {sorted(policies)}")
    rule = rules.get("EcrImagePushRule") or {}
    policy = policies.get("IntakeQueueEcrPolicy") or {}
    c.check(rule.get("Condition") == ECR_CONDITION and policy.get("Condition") == ECR_CONDITION,
            f"the ECR rule and queue policy exist only under {ECR_CONDITION}",
            f"rule {rule.get('Condition')!r}, policy {policy.get('Condition')!r}")
    props = rule.get("Properties") or {}
    pattern = props.get("EventPattern") or {}
    detail = pattern.get("detail") or {}
    c.check(pattern.get("source") == ["aws.ecr"] and pattern.get("detail-type") == ["ECR Image Action"]
            and detail.get("action-type") == ["PUSH"] and detail.get("result") == ["SUCCESS"],
            "the ECR rule matches successful ECR image pushes only", f"EventPattern={pattern!r}")
    targets = as_list(props.get("Targets"))
    target = targets[0] if len(targets) == 1 and isinstance(targets[0], dict) else {}
    group = (target.get("SqsParameters") or {}).get("MessageGroupId")
    c.check(getatt_target(target.get("Arn")) == "IntakeQueue" and isinstance(group, str) and bool(group)
            and "RoleArn" not in target,
            "the ECR rule's one target is the intake queue, with a static MessageGroupId and no RoleArn",
            f"Targets={targets!r}")
    statements_ = list(statements(policy.get("Properties") or {}))
    ok = len(statements_) == 1
    if ok:
        _, st = statements_[0]
        condition = ((st.get("Condition") or {}).get("ArnEquals") or {}).get("aws:SourceArn")
        ok = (st.get("Effect") == "Allow"
              and (st.get("Principal") or {}).get("Service") == "events.amazonaws.com"
              and as_list(st.get("Action")) == ["sqs:SendMessage"]
              and getatt_target(st.get("Resource")) == "IntakeQueue"
              and getatt_target(condition) == "EcrImagePushRule")
    queues = [norm(q) for q in as_list((policy.get("Properties") or {}).get("Queues"))]
    c.check(ok and queues == ["Ref:IntakeQueue"],
            "the intake queue policy lets events.amazonaws.com SendMessage from the ECR rule only",
            f"Queues={queues!r} statements={statements_!r}")
    cbd = (t.queues.get("IntakeQueue") or {}).get("ContentBasedDeduplication")
    c.check(cbd == ECR_CONTENT_DEDUP, f"IntakeQueue ContentBasedDeduplication is !If [{ECR_CONDITION}, true, false]",
            f"got {cbd!r}")


def check_webhook_url(t: Template, c: Checks) -> None:
    _res, props = t.functions.get(WEBHOOK_FUNCTION, ({}, {}))
    url = props.get("FunctionUrlConfig") or {}
    c.check(url.get("AuthType") == "NONE", f"{WEBHOOK_FUNCTION} has a Function URL (AuthType NONE, checked in code)",
            f"FunctionUrlConfig={props.get('FunctionUrlConfig')!r}")
    out = ((t.tpl.get("Outputs") or {}).get("WebhookUrl") or {}).get("Value")
    c.check(norm(out) == f"GetAtt:{WEBHOOK_FUNCTION}Url.FunctionUrl", "Outputs.WebhookUrl is the Function URL",
            f"got {out!r}")
    outputs = {norm((o or {}).get("Value")) for o in (t.tpl.get("Outputs") or {}).values()}
    missing = sorted(({f"Ref:{q}" for q in t.queues} | {f"Ref:{f}" for f in t.functions}) - outputs)
    c.check(not missing, "every queue URL and function name is an output", f"missing {missing}")


def print_grants(t: Template) -> int:
    """`--grants`: each function's granted actions and the resources of each, as one JSON
    object on stdout ({"RouteFunction": {"sqs:DeleteMessage": ["IntakeQueue"], ...}}; a
    resource is a logical id for `!GetAtt X.Arn`, else its normalised spelling). Exits 1
    (with the reason on stderr) when a function's policies cannot be read as inline
    statements, since its grants would then be incomplete."""
    out, problems = {}, []
    for lid, (_res, props) in sorted(t.functions.items()):
        grants, unreadable = function_grants(props)
        by_action = {}
        for action, resource in grants:
            by_action.setdefault(action, set()).add(getatt_target(resource) or resource)
        out[lid] = {action: sorted(resources) for action, resources in sorted(by_action.items())}
        problems += [f"{lid}: {p}" for p in unreadable]
    if problems:
        print("cannot list every grant: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(json.dumps(out, sort_keys=True))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--grants":
        return print_grants(Template(Path(argv[2])))
    if len(argv) != 2:
        print("\n".join(__doc__.strip().splitlines()[2:4]), file=sys.stderr)
        return 2
    t = Template(Path(argv[1]))
    c = Checks()
    check_functions(t, c)
    check_release_profile(t, c)
    check_event_sources(t, c)
    check_queues(t, c)
    check_iam(t, c)
    check_concurrency(t, c)
    check_queue_ownership(t, c)
    check_credentials(t, c)
    check_alarms(t, c)
    check_ecr_events(t, c)
    check_webhook_url(t, c)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
