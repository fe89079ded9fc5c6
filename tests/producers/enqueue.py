"""A producer written as a web tier in Python would write it: redis-py and the protocol's
enqueue script (docs/PROTOCOL.md). Prints the new job's id, then the error Redis gives for an
envelope whose id is not a ULID.

Usage: enqueue.py REDIS_URL REDIS_QUEUE_NAME PATH_TO_ENQUEUE_LUA
"""
import json
import os
import sys
import time
from datetime import datetime, timezone

import redis

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """48 bits of milliseconds, then 80 random bits, in Crockford base32."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def main() -> None:
    url, queue, script_path = sys.argv[1:4]
    client = redis.Redis.from_url(url)
    script = open(script_path).read()
    envelope = {
        "v": 1,
        "id": ulid(),
        "kind": "diag.sleep",
        "payload": {"ms": 10},
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    job_id, created = client.eval(script, 0, queue, json.dumps(envelope))
    assert created == 1
    print(job_id.decode())
    try:
        client.eval(script, 0, queue, json.dumps({**envelope, "id": "job-1"}))
        print("accepted an envelope with a bad id")
    except redis.ResponseError as e:
        print(e)


if __name__ == "__main__":
    main()
