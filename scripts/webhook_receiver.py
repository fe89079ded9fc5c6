#!/usr/bin/env python3
"""A web tier's webhook endpoint, for the demo (scripts/demo.sh): it checks each POST the way
docs/WEB_TIER.md tells a receiver to, with the Standard Webhooks reference library
(`pip install standardwebhooks`, installed by scripts/services.sh), answers 204 to a valid one
and 401 to any other, and appends one JSON line per request to OUT: the webhook-id, whether
the signature verified, and the event.

    DEMO_WEBHOOK_SECRET=whsec_... python3 scripts/webhook_receiver.py OUT

Listens on 127.0.0.1 on a free port, prints `listening on PORT`, and ends when its standard
input closes (the demo runs it as a coprocess).
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# A webhook body is one job's status row; anything larger is not ours.
MAX_BODY_BYTES = 1024 * 1024


class Receiver(BaseHTTPRequestHandler):
    webhook: Webhook
    out_path: str
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            self.send_response(413)
            self.end_headers()
            return
        body = self.rfile.read(length)
        record = {"webhook_id": self.headers.get("webhook-id")}
        try:
            record["event"] = self.webhook.verify(body, dict(self.headers.items()))
            record["verified"] = True
            status = 204
        except WebhookVerificationError as e:
            record["verified"] = False
            record["error"] = str(e)
            status = 401
        with self.lock, open(self.out_path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.send_response(status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        print(format % args, file=sys.stderr)


def main() -> int:
    if len(sys.argv) != 2 or not os.environ.get("DEMO_WEBHOOK_SECRET"):
        print("usage: DEMO_WEBHOOK_SECRET=whsec_... webhook_receiver.py OUT", file=sys.stderr)
        return 2
    Receiver.webhook = Webhook(os.environ["DEMO_WEBHOOK_SECRET"])
    Receiver.out_path = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    print(f"listening on {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the demo ends
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
