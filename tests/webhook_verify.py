#!/usr/bin/env python3
"""Checks a webhook the way a receiver does, with the Standard Webhooks reference library
(`pip install standardwebhooks`): the signature over id, timestamp and body, and the timestamp's
age. Prints "ok", or "invalid: <why>" and exits 1.

Usage: webhook_verify.py SECRET ID TIMESTAMP SIGNATURE < body
"""
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    secret, msg_id, timestamp, signature = sys.argv[1:5]
    body = sys.stdin.buffer.read()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
    }
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError as e:
        print(f"invalid: {e}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
