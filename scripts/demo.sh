#!/usr/bin/env bash
# Brings up Redis and PostgreSQL, builds quizworker, runs the daemon on a demo workload of
# diagnostic jobs, shows the queues until the work is done, lists the jobs, shows a completed
# and a failed one; then scores a test attempt, writes its report card and emails it to a parent
# through a local SMTP sink (tests/smtp_sink.py), showing the message that arrived; asks for AI
# hints of two questions from a stand-in for an LLM API (scripts/ai_mock.py, no key needed),
# twice, the second time from the cache, and has it grade an essay against its rubric; indexes
# the questions and searches them; enqueues as a web tier does, in its own transaction through
# the outbox, reads the status view and receives the signed completion webhook; and stops the
# daemon with SIGTERM. The daemon's log goes to target/demo-daemon.log, the mail to
# target/demo-mail.jsonl, the report card to target/demo-exports/, the webhooks to
# target/demo-webhooks.jsonl. It ends by saying what to try next.
#
# The demo uses its own Redis key prefix (demo:) and, unless DATABASE_URL says otherwise, the
# `quizworker` database, so it does not mix with the tests' data. When it succeeds it deletes
# its Redis keys (the daemon is stopped, every job finished) and keeps the jobs' journal in
# Postgres for you to look at; it says how to empty it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=./target/release/quizworker
LOG=target/demo-daemon.log
READY_SECS=60
DRAIN_SECS=90
STOP_SECS=45 # above the default shutdown_timeout (30s)

export QUIZWORKER_REDIS__PREFIX=demo:
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/quizworker}"

say() { echo "demo: $*"; }

# redis-cli on the daemon's Redis: REDIS_URL, else config.toml's 127.0.0.1:6379.
REDIS_CLI=(redis-cli)
if [[ -n ${REDIS_URL:-} ]]; then
    REDIS_CLI=(redis-cli -u "$REDIS_URL")
fi
demo_keys() { "${REDIS_CLI[@]}" --scan --pattern "${QUIZWORKER_REDIS__PREFIX}*"; }

DAEMON_PID=""
stop_daemon() {
    [[ -n $DAEMON_PID ]] || return 0
    local pid=$DAEMON_PID rc=0 deadline=$((SECONDS + STOP_SECS))
    DAEMON_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "the daemon did not stop within ${STOP_SECS}s of SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}
on_exit() {
    local rc=$?
    if [[ -n $DAEMON_PID ]]; then
        say "stopping the daemon (pid $DAEMON_PID)" >&2
        stop_daemon || true
    fi
    if [[ $rc -ne 0 && -f $LOG ]]; then
        echo "demo: FAILED (exit $rc); last lines of $LOG:" >&2
        tail -n 30 "$LOG" >&2 || true
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

daemon_alive() { [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; }

# --- services, build, migrations --------------------------------------------------------------
say "services"
scripts/services.sh

say "cargo build --release"
cargo build --release

say "migrate ($DATABASE_URL)"
"$BIN" migrate

# --- a local SMTP sink, for the email step ----------------------------------------------------
# A real SMTP server (aiosmtpd) that keeps what it receives. A coprocess: its standard input is
# a pipe from this script, so it ends when the script does.
mkdir -p target
MAIL=target/demo-mail.jsonl
: >"$MAIL"
coproc SINK { exec /usr/bin/python3 tests/smtp_sink.py --port 0 --out "$MAIL" 2>>target/demo-sink.log; }
read -r -t 30 sink_line <&"${SINK[0]}" || { say "the SMTP sink did not start (target/demo-sink.log)" >&2; exit 1; }
SMTP_PORT=${sink_line##* }
say "SMTP sink on 127.0.0.1:$SMTP_PORT"
export QUIZWORKER_EMAIL__SMTP__PORT=$SMTP_PORT
export QUIZWORKER_EMAIL__TEMPLATES=docs/templates
export QUIZWORKER_EMAIL__FROM="ACME Academy <results@acme.test>"
export QUIZWORKER_EXPORTS__DIRECTORY=target/demo-exports

# --- a stand-in for an LLM API, for the AI step -------------------------------------------------
coproc AI_MOCK { exec python3 scripts/ai_mock.py 2>>target/demo-ai-mock.log; }
read -r -t 30 mock_line <&"${AI_MOCK[0]}" || { say "the AI mock did not start (target/demo-ai-mock.log)" >&2; exit 1; }
say "OpenAI-compatible mock on 127.0.0.1:${mock_line##* }"
export QUIZWORKER_AI__BASE_URL="http://127.0.0.1:${mock_line##* }/v1"
export QUIZWORKER_AI__MODEL=demo-mock

# --- a search index, for the search step ----------------------------------------------------------
# config.toml with one index defined: the sample test's questions, kept in Postgres.
DEMO_CONFIG=target/demo-config.toml
{
    cat config.toml
    cat <<'TOML'

[search.indexes.questions]
searchable = { title = "A", text = "B" }
typo_fields = ["title"]
filterable = ["test_id"]
TOML
} >"$DEMO_CONFIG"
export QUIZWORKER_CONFIG=$DEMO_CONFIG

# --- a web tier's database and webhook endpoint, for the web-tier step ----------------------------
# The platform's own database with the outbox applied (docs/sql/outbox.sql), as a web tier
# sets it up, and an endpoint that verifies signed webhooks (scripts/webhook_receiver.py).
PLATFORM_URL="${DATABASE_URL%/*}/quizworker_demo_platform"
if ! psql "$DATABASE_URL" -X -tAc "SELECT 1 FROM pg_database WHERE datname = 'quizworker_demo_platform'" | grep -q 1; then
    psql "$DATABASE_URL" -X -q -c 'CREATE DATABASE quizworker_demo_platform'
fi
PGOPTIONS='-c client_min_messages=warning' psql "$PLATFORM_URL" -X -q -v ON_ERROR_STOP=1 -f docs/sql/outbox.sql
export QUIZWORKER_OUTBOX__URL=$PLATFORM_URL
HOOKS=target/demo-webhooks.jsonl
: >"$HOOKS"
DEMO_WEBHOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64)"
export DEMO_WEBHOOK_SECRET
coproc HOOK_RECEIVER { exec python3 scripts/webhook_receiver.py "$HOOKS" 2>>target/demo-webhooks.log; }
read -r -t 30 hook_line <&"${HOOK_RECEIVER[0]}" || { say "the webhook receiver did not start (target/demo-webhooks.log)" >&2; exit 1; }
say "webhook endpoint on 127.0.0.1:${hook_line##* }"
cat >>"$DEMO_CONFIG" <<TOML

[webhooks.endpoints.demo]
url = "http://127.0.0.1:${hook_line##* }/hooks/quizworker"
secret_env = "DEMO_WEBHOOK_SECRET"
kinds = []
allow_private = true
TOML

# --- the daemon -------------------------------------------------------------------------------
: >"$LOG"
say "starting the daemon (log: $LOG)"
"$BIN" run >>"$LOG" 2>&1 &
DAEMON_PID=$!

deadline=$((SECONDS + READY_SECS))
until grep -q "quizworker ready" "$LOG"; do
    daemon_alive || {
        DAEMON_PID=""
        say "the daemon exited before it was ready" >&2
        exit 1
    }
    if ((SECONDS >= deadline)); then
        say "the daemon did not log \"quizworker ready\" within ${READY_SECS}s" >&2
        exit 1
    fi
    sleep 0.25
done
say "daemon ready (pid $DAEMON_PID)"

# --- the workload -----------------------------------------------------------------------------
enqueue() { "$BIN" enqueue "$@" >/dev/null; }

say "enqueue 200 x diag.noop"
for _ in $(seq 200); do enqueue diag.noop; done
say "enqueue 5 x diag.sleep (2 s each)"
for _ in $(seq 5); do enqueue diag.sleep --payload '{"ms":2000}'; done
say "enqueue 3 x diag.fail (fails twice, then succeeds)"
for _ in $(seq 3); do
    retried=$("$BIN" enqueue diag.fail --payload '{"times":2}')
done
say "enqueue 1 x diag.fail (permanent failure)"
failed=$("$BIN" enqueue diag.fail --payload '{"permanent":true}')
key="demo-$(date +%s)" # a new key each run: keys are kept, so an old one returns an old job
say "enqueue diag.noop with --idempotency-key $key, twice"
first=$("$BIN" enqueue diag.noop --idempotency-key "$key" 2>/dev/null)
second=$("$BIN" enqueue diag.noop --idempotency-key "$key" 2>/dev/null)
if [[ $first == "$second" ]]; then
    say "  both enqueues returned job $first: one job"
else
    say "  WARNING: the two enqueues returned different ids ($first, $second)" >&2
fi

# --- wait until the queues are drained ---------------------------------------------------------
# Queued (Redis) + running + retrying (journal). Two idle readings in a row, 2 s apart, so a job
# between being taken from Redis and being journalled as running is not missed.
pending_jobs() {
    "$BIN" queues --json |
        grep -oE '"(queued|running|retrying)": *[0-9]+' |
        awk -F: '{ s += $2 } END { print s + 0 }'
}

deadline=$((SECONDS + DRAIN_SECS))
idle=0
while :; do
    daemon_alive || {
        DAEMON_PID=""
        say "the daemon exited while working" >&2
        exit 1
    }
    echo
    echo "--- quizworker queues ($(date +%T))"
    "$BIN" queues
    pending=$(pending_jobs)
    if [[ $pending -eq 0 ]]; then
        idle=$((idle + 1))
        ((idle >= 2)) && break
    else
        idle=0
    fi
    if ((SECONDS >= deadline)); then
        say "$pending jobs still queued, running or retrying after ${DRAIN_SECS}s" >&2
        exit 1
    fi
    sleep 2
done
say "all queues drained"

echo
echo "--- quizworker jobs list --limit 15"
"$BIN" jobs list --limit 15
echo
echo "--- quizworker jobs list --state failed"
"$BIN" jobs list --state failed
echo
echo "--- quizworker jobs show $retried   (completed on its third attempt)"
"$BIN" jobs show "$retried"
echo
echo "--- quizworker jobs show $failed   (failed at once: a permanent error)"
"$BIN" jobs show "$failed"

# --- a result email with the report card --------------------------------------------------------
# The web tier's three jobs: score an attempt, write its report card, email it to the parent in
# Hindi. The email is enqueued at once: it waits for the report card, then attaches it.
wait_state() { # JOB STATE: waits up to 60 s for the job to reach STATE
    local deadline=$((SECONDS + 60))
    until "$BIN" jobs show "$1" --json 2>/dev/null | grep -q "\"state\": *\"$2\""; do
        if ((SECONDS >= deadline)); then
            say "job $1 did not reach $2 within 60s:" >&2
            "$BIN" jobs show "$1" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
}
attempt_id="demo-$(date +%s)"
echo
say "email step: score attempt $attempt_id, write its report card, email it to the parent"
scored=$("$BIN" enqueue score.attempt --payload '{
  "test": {"test_id": "demo-jee-mock", "key_version": 1, "marking": {"correct": 4, "incorrect": -1},
           "sections": [{"id": "physics", "title": "Physics", "questions": [
             {"id": "p1", "type": "mcq", "answer": "A"}, {"id": "p2", "type": "mcq", "answer": "C"}]},
             {"id": "maths", "title": "Mathematics", "questions": [
             {"id": "m1", "type": "integer", "answer": "42"}]}]},
  "attempt": {"attempt_id": "'"$attempt_id"'", "test_id": "demo-jee-mock", "candidate_id": "c-priya",
              "responses": [{"question": "p1", "answer": "A"}, {"question": "p2", "answer": "B"},
                            {"question": "m1", "answer": "42"}]}}')
card=$("$BIN" enqueue export.report_pdf --payload '{"attempt_id": "'"$attempt_id"'"}')
mail=$("$BIN" enqueue email.send --payload '{
  "template": "result-ready", "locale": "hi",
  "to": [{"email": "parent@example.com", "name": "श्रीमती शर्मा"}],
  "vars": {"candidate_name": "प्रिया शर्मा", "test_name": "JEE Mock", "marks": "7", "max_marks": "12",
           "institution": "ACME Academy"},
  "attachments": [{"export_job": "'"$card"'", "filename": "report-card.pdf"}]}')
wait_state "$scored" completed
wait_state "$card" completed
wait_state "$mail" completed
echo
echo "--- quizworker jobs show $mail   (the email)"
"$BIN" jobs show "$mail"
echo
echo "--- what the SMTP sink received ($MAIL)"
/usr/bin/python3 - "$MAIL" <<'PY'
import base64, email, email.policy, json, sys
for line in open(sys.argv[1]):
    record = json.loads(line)
    m = email.message_from_bytes(base64.b64decode(record["data_b64"]), policy=email.policy.default)
    print(f"To:         {m['To']}   (envelope: {', '.join(record['rcpt_tos'])})")
    print(f"From:       {m['From']}")
    print(f"Subject:    {m['Subject']}")
    print(f"Message-ID: {m['Message-ID']}")
    print(f"Parts:      {', '.join(p.get_content_type() for p in m.walk() if not p.is_multipart())}")
    for part in m.iter_attachments():
        print(f"Attached:   {part.get_filename()} ({len(part.get_content())} bytes, {part.get_content_type()})")
    print("Text:")
    print("  " + m.get_body(("plain",)).get_content().strip().replace("\n", "\n  "))
PY

# --- AI hints -------------------------------------------------------------------------------------
# Three graded hints per question from the (mock) model, stored; the same questions again are
# answered from the cache, with no request.
echo
say "AI step: ai.hints for two questions, twice (the second from the cache)"
questions='{"questions": [
  {"id": "q1", "type": "mcq", "text": "Which planet is the largest?",
   "options": [{"id": "A", "text": "Mars"}, {"id": "B", "text": "Jupiter"}, {"id": "C", "text": "Venus"}],
   "answer": "B"},
  {"id": "q2", "type": "integer", "text": "A train covers 240 km in 3 hours. Its speed in km/h?", "answer": "80"}]}'
hints=$("$BIN" enqueue ai.hints --payload "$questions")
wait_state "$hints" completed
again=$("$BIN" enqueue ai.hints --payload "$questions")
wait_state "$again" completed
echo "--- the hints (quizworker jobs show $hints --json: its result)"
/usr/bin/python3 - "$("$BIN" jobs show "$hints" --json)" "$("$BIN" jobs show "$again" --json)" <<'PY'
import json, sys
first, again = (json.loads(arg)["result"] for arg in sys.argv[1:3])
print(f"model {first['model']}, prompt {first['prompt_version']}: "
      f"{first['generated']} generated, {first['cached']} cached")
for q in first["results"]:
    print(f"{q['id']} ({q['status']}):")
    for level in ("nudge", "method", "near_solution"):
        print(f"  {level}: {q['hints'][level]}")
print(f"the same questions again: {again['cached']} of {again['questions']} from the cache")
PY

# --- AI grading -----------------------------------------------------------------------------------
# A subjective answer graded against its rubric by the (mock) model, in halves; the attempt's
# result turns from provisional to final.
graded_id="demo-essay-$(date +%s)"
echo
say "AI step: ai.evaluate grades attempt $graded_id's essay against its rubric"
essay=$("$BIN" enqueue score.attempt --payload '{
  "test": {"test_id": "demo-biology", "key_version": 1, "marking": {"correct": 4},
           "sections": [{"id": "biology", "questions": [
             {"id": "b1", "type": "mcq", "answer": "B"},
             {"id": "e1", "type": "subjective", "max_marks": 3, "step": "0.5",
              "text": "Explain how green plants make their food.",
              "rubric": [{"id": "light", "description": "Says sunlight is the source of energy", "marks": "1.5"},
                         {"id": "pigment", "description": "Names chlorophyll", "marks": 1},
                         {"id": "product", "description": "Names glucose as the product", "marks": "0.5"}]}]}]},
  "attempt": {"attempt_id": "'"$graded_id"'", "candidate_id": "c-priya",
              "responses": [{"question": "b1", "answer": "B"},
                            {"question": "e1", "answer": "Leaves trap sunlight with chlorophyll."}]}}')
wait_state "$essay" completed
evaluation=$("$BIN" enqueue ai.evaluate --payload '{"attempt_id": "'"$graded_id"'"}')
wait_state "$evaluation" completed
echo "--- the grade (quizworker jobs show $evaluation --json: its result)"
/usr/bin/python3 - "$("$BIN" jobs show "$essay" --json)" "$("$BIN" jobs show "$evaluation" --json)" <<'PY'
import json, sys
scored, graded = (json.loads(arg)["result"] for arg in sys.argv[1:3])
print(f"scored: {scored['marks']} of {scored['max_marks']}, provisional: {scored['provisional']}")
for q in graded["results"]:
    print(f"{q['question']} ({q['status']}): {q['awarded']}")
    for c in q["criteria"]:
        print(f"  {c['id']}: {c['awarded']} of {c['marks']} - {c['feedback']}")
print(f"graded by {graded['model']} ({graded['prompt_version']}): "
      f"{graded['marks']} of {graded['max_marks']}, provisional: {graded['provisional']}")
PY
echo
echo "--- quizworker ai usage"
"$BIN" ai usage

# --- search ---------------------------------------------------------------------------------------
# The sample test's questions indexed (one in Hindi), then searched as the web tier would:
# a Hindi word, a typo, and an exclusion.
echo
say "search step: index.upsert of the sample test's three questions, then quizworker search"
indexed=$("$BIN" enqueue index.upsert --payload '{"index": "questions", "documents": [
  {"id": "p1", "version": 1, "title": "Projectile range", "test_id": "demo-jee-mock",
   "text": "A ball is thrown at 20 m/s. At which angle is its range on level ground the largest?"},
  {"id": "p2", "version": 1, "title": "प्रकाश का अपवर्तन", "test_id": "demo-jee-mock",
   "text": "प्रकाश हवा से कांच में जाता है तो उसकी चाल का क्या होता है? (refraction of light)"},
  {"id": "m1", "version": 1, "title": "Sum of natural numbers", "test_id": "demo-jee-mock",
   "text": "Twice the sum of the first six natural numbers, as an integer answer."}]}')
wait_state "$indexed" completed
for query in "प्रकाश" "projectle range" "light -glass"; do
    echo "--- quizworker search questions \"$query\""
    "$BIN" search questions "$query"
done

# --- the web tier ---------------------------------------------------------------------------------
# A web tier that reaches only Postgres: it enqueues inside its own transactions through the
# outbox (a rolled-back one makes no job), reads the job in the status view, and is told of its
# completion by a signed webhook, which the endpoint verifies.
web_attempt="demo-web-$(date +%s)"
echo
say "web-tier step: score.attempt through the outbox in the platform's transaction, then the status view and the webhook"
web_ids=$(PGOPTIONS="-c client_min_messages=warning" psql "$PLATFORM_URL" -X -q -tA -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE IF NOT EXISTS demo_submissions (attempt_id text PRIMARY KEY, at timestamptz DEFAULT now());
BEGIN;
SELECT quizworker_enqueue('diag.noop', '{}');
ROLLBACK;
BEGIN;
INSERT INTO demo_submissions (attempt_id) VALUES ('$web_attempt');
SELECT quizworker_enqueue('score.attempt', '{
  "test": {"test_id": "demo-physics-quiz", "key_version": 1, "marking": {"correct": 4, "incorrect": -1},
           "sections": [{"id": "physics", "title": "Physics", "questions": [
             {"id": "p1", "type": "mcq", "answer": "A"}, {"id": "p2", "type": "mcq", "answer": "C"}]}]},
  "attempt": {"attempt_id": "$web_attempt", "candidate_id": "c-arjun",
              "responses": [{"question": "p1", "answer": "A"}, {"question": "p2", "answer": "C"}]}}'::json,
  idempotency_key => '$web_attempt', webhook => 'demo');
COMMIT;
SQL
)
rolled_back=$(sed -n 1p <<<"$web_ids")
web_job=$(sed -n 2p <<<"$web_ids")
wait_state "$web_job" completed
if "$BIN" jobs show "$rolled_back" >/dev/null 2>&1; then
    say "the rolled-back enqueue $rolled_back made a job" >&2
    exit 1
fi
say "  the rolled-back enqueue ($rolled_back) made no job; the committed one is $web_job"
echo "--- SELECT ... FROM quizworker.job_status_v1 WHERE id = '$web_job'"
psql "$DATABASE_URL" -X -c "SELECT id, kind, state, attempts, result->>'marks' AS marks,
                                   result->>'max_marks' AS max_marks, finished_at
                              FROM quizworker.job_status_v1 WHERE id = '$web_job'"
deadline=$((SECONDS + 30))
until grep -q "$web_job" "$HOOKS"; do
    if ((SECONDS >= deadline)); then
        say "no webhook for $web_job within 30s:" >&2
        "$BIN" webhooks list --job "$web_job" >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "--- what the webhook endpoint received ($HOOKS)"
python3 - "$HOOKS" "$web_job" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    record = json.loads(line)
    event = record.get("event") or {}
    if event.get("data", {}).get("id") != sys.argv[2]:
        continue
    data = event["data"]
    print(f"webhook-id {record['webhook_id']}: signature verified: {record['verified']}")
    print(f"  {event['type']}: {data['kind']} {data['id']} {data['state']}, "
          f"{data['result']['marks']} of {data['result']['max_marks']}")
PY
echo "--- quizworker webhooks list --job $web_job"
"$BIN" webhooks list --job "$web_job"

# --- stop ------------------------------------------------------------------------------------
echo
say "stopping the daemon with SIGTERM"
rc=0
stop_daemon || rc=$?
tail -n 5 "$LOG"
if [[ $rc -ne 0 ]]; then
    say "the daemon exited with status $rc" >&2
    exit "$rc"
fi

# --- what it leaves, and what next ------------------------------------------------------------
keys=$(demo_keys | wc -l)
demo_keys | xargs -r -d '\n' -n 500 "${REDIS_CLI[@]}" unlink >/dev/null
journaled=$(psql "$DATABASE_URL" -X -tAc 'select count(*) from jobs' 2>/dev/null || echo "?")
echo
say "done."
say "Deleted: its $keys Redis keys (prefix ${QUIZWORKER_REDIS__PREFIX})."
say "Left behind: $journaled jobs in the journal of $DATABASE_URL, to look at; to empty it:"
say "  psql '$DATABASE_URL' -c 'TRUNCATE jobs, job_attempts'"
say "What next (in $PWD), with the demo's environment:"
say "  export QUIZWORKER_REDIS__PREFIX=${QUIZWORKER_REDIS__PREFIX} DATABASE_URL=$DATABASE_URL${REDIS_URL:+ REDIS_URL=$REDIS_URL}"
say "  $BIN jobs show $retried      # the job that completed after two failed attempts"
say "  $BIN jobs show $failed      # the job that failed"
say "  $BIN jobs list --state failed; $BIN queues; $BIN --help"
say "  $BIN email deliveries $mail      # the email: its message, status and the server's reply"
say "  QUIZWORKER_CONFIG=$DEMO_CONFIG $BIN search questions '\"refraction of light\"' --json   # the index"
say "  $BIN email preview result-ready --templates docs/templates --locale hi --vars FILE.json"
say "  The email as received: $MAIL (one JSON line per message; data_b64 is the raw message)."
say "  $BIN jobs show $hints      # ai.hints: three graded hints per question; $BIN ai usage"
say "  psql $PLATFORM_URL -c 'TABLE quizworker.outbox'   # the web tier's outbox; $BIN webhooks list"
say "  The daemon's log: $LOG. Settings: config.toml (README, Configuration)."
