#!/usr/bin/env python3
"""Creates fluxrelay's queues and webhook secret on a local moto server, for trying the
functions with `cargo lambda invoke`, and prints the environment they need.

    ~/.cache/fluxrelay/venv/bin/python events/local-aws.py http://127.0.0.1:5055

Uses boto3, which the test environment's virtualenv has (tests/env/setup.sh).
"""
import json
import sys

import boto3

endpoint = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:5055"
session = dict(endpoint_url=endpoint, region_name="us-east-1",
               aws_access_key_id="testing", aws_secret_access_key="testing")
sqs = boto3.client("sqs", **session)
secrets = boto3.client("secretsmanager", **session)

urls = {}
for name in ["intake", "intake-dlq", "dispatch", "dispatch-dlq"]:
    urls[name] = sqs.create_queue(QueueName=f"fluxrelay-{name}.fifo",
                                  Attributes={"FifoQueue": "true"})["QueueUrl"]
try:
    secrets.create_secret(Name="fluxrelay/webhook",
                          SecretString=json.dumps({"tokens": ["sample-webhook-token-change-me"]}))
except secrets.exceptions.ResourceExistsException:
    pass

for line in [
    f"export AWS_ENDPOINT_URL={endpoint} AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing",
    "export WEBHOOK_SECRET_ID=fluxrelay/webhook",
    f"export INTAKE_QUEUE_URL={urls['intake']}",
    f"export DISPATCH_QUEUE_URL={urls['dispatch']} DISPATCH_DLQ_URL={urls['dispatch-dlq']}",
]:
    print(line)
