#!/usr/bin/env python3
"""Every template parameter and output name the docs mention exists in template.yaml, and
every parameter of the template is documented in docs/operations.md.

Usage: ~/.cache/fluxrelay/venv/bin/python tests/template/check_docs.py [template.yaml [doc.md ...]]

A "mention" is a CamelCase word written as a placeholder (<DispatchDLQUrl>), as a parameter
override (Architecture=x86_64) or as a stack output query (OutputKey=='DispatchFunctionName'),
or written as code (`WebhookSecretName`) when it has the shape of the template's parameter
and output names (ending in Url, Name, Arn, Id, Prefix, Seconds, Concurrency, Level, Key or
Bucket). Each must be a Parameter, an Output or a resource
logical id of the template, or one of the few AWS attribute names and Rust types the docs
quote (OTHER_NAMES). Prints one FAIL line per unknown mention ("file:line: `Name` is no parameter
or output of template.yaml") and "N passed, M failed" last; exits 1 on any failure.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ["README.md", "docs/operations.md", "docs/design.md", "docs/eks.md", "RELIABILITY.md",
        "tests/template/README.md"]
SUFFIXES = ("Url", "Name", "Arn", "Id", "Prefix", "Seconds", "Concurrency", "Level", "Key", "Bucket")
# Names the docs quote that look like template names but are not ours: AWS's own attribute
# names (an EventBridge target's RoleArn, a queue policy condition's SourceArn), fluxrelay's
# Rust types, the CloudWatch metrics confirm emits, and systemd's LimitNOFILE.
OTHER_NAMES = {"DelaySeconds", "MessageGroupId", "MessageDeduplicationId", "QueueUrl", "SecretId",
               "MaximumConcurrency", "SigningKey", "RoleArn", "SourceArn", "PushToAppliedSeconds",
               "LimitNOFILE"}
NAME = r"[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+"
CODE = re.compile(rf"`({NAME})`")
# Shapes that only ever name a parameter or an output, whatever the word ends with.
ALWAYS = [
    re.compile(rf"<({NAME})>"),
    re.compile(rf"(?:^|[\s`])({NAME})=\S"),
    re.compile(rf"OutputKey=='({NAME})'"),
]


def mentions(text: str):
    """(line number, name) of every mention in a document."""
    for number, line in enumerate(text.splitlines(), 1):
        for match in CODE.finditer(line):
            if match.group(1).endswith(SUFFIXES):
                yield number, match.group(1)
        for pattern in ALWAYS:
            for match in pattern.finditer(line):
                yield number, match.group(1)


def template_names(path: Path) -> tuple[set, set]:
    tpl, errors = decode(str(path))
    if tpl is None:
        raise SystemExit(f"cannot load {path}: {errors}")
    params = set(tpl.get("Parameters") or {})
    known = params | set(tpl.get("Outputs") or {}) | set(tpl.get("Resources") or {})
    return params, known


def main(argv: list[str]) -> int:
    template = Path(argv[1]) if len(argv) > 1 else ROOT / "template.yaml"
    docs = [Path(p) for p in argv[2:]] or [ROOT / d for d in DOCS]
    params, known = template_names(template)
    passed, failed = 0, 0
    for doc in docs:
        text = doc.read_text()
        for number, name in mentions(text):
            if name in known or name in OTHER_NAMES:
                passed += 1
            else:
                failed += 1
                print(f"FAIL {doc.name}:{number}: `{name}` is no parameter or output of {template.name}")
        if doc.name == "operations.md":
            for param in sorted(params):
                if re.search(rf"\b{param}\b", text):
                    passed += 1
                else:
                    failed += 1
                    print(f"FAIL {doc.name}: parameter {param} of {template.name} is not documented")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
