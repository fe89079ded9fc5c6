// A producer written as a web tier in Node would write it: ioredis and the protocol's enqueue
// script (docs/PROTOCOL.md), loaded once and called by its SHA-1 (EVALSHA), loaded again when
// Redis has forgotten it (NOSCRIPT). Prints, one per line: the new job's id; the id returned for
// a second envelope with the same idempotency key and whether it was created (0); the id of a
// job enqueued after SCRIPT FLUSH (the NOSCRIPT path); the error Redis gives for an envelope
// whose id is not a ULID.
//
// Usage: node enqueue.mjs REDIS_URL REDIS_QUEUE_NAME PATH_TO_ENQUEUE_LUA
// (npm install in this directory first: scripts/services.sh does.)
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";

import Redis from "ioredis";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

// 48 bits of milliseconds, then 80 random bits, in Crockford base32 (26 digits).
function ulid() {
  let value = (BigInt(Date.now()) << 80n) | BigInt("0x" + randomBytes(10).toString("hex"));
  let text = "";
  for (let i = 0; i < 26; i++) {
    text = CROCKFORD[Number(value & 31n)] + text;
    value >>= 5n;
  }
  return text;
}

class Producer {
  constructor(redis, script) {
    this.redis = redis;
    this.script = script;
    this.sha = null;
  }

  async enqueue(queue, envelope) {
    const json = JSON.stringify(envelope);
    if (this.sha === null) this.sha = await this.redis.script("LOAD", this.script);
    try {
      return await this.redis.evalsha(this.sha, 0, queue, json);
    } catch (e) {
      if (!String(e.message).startsWith("NOSCRIPT")) throw e;
      this.sha = await this.redis.script("LOAD", this.script);
      return await this.redis.evalsha(this.sha, 0, queue, json);
    }
  }
}

const [url, queue, scriptPath] = process.argv.slice(2);
const redis = new Redis(url);
const producer = new Producer(redis, readFileSync(scriptPath, "utf8"));
const envelope = (payload, extra = {}) => ({
  v: 1, id: ulid(), kind: "diag.sleep", payload, created_at: new Date().toISOString(), ...extra,
});
try {
  const [id, created] = await producer.enqueue(queue, envelope({ ms: 10 }, { idempotency_key: "node-1" }));
  if (created !== 1) throw new Error(`not created: ${id}`);
  console.log(id);
  const [again, createdAgain] = await producer.enqueue(queue, envelope({ ms: 10 }, { idempotency_key: "node-1" }));
  console.log(`${again} ${createdAgain}`);
  await redis.script("FLUSH");
  const [afterFlush] = await producer.enqueue(queue, envelope({ ms: 20 }));
  console.log(afterFlush);
  try {
    await producer.enqueue(queue, { ...envelope({ ms: 10 }), id: "job-1" });
    console.log("accepted an envelope with a bad id");
  } catch (e) {
    console.log(e.message);
  }
} finally {
  redis.disconnect();
}
