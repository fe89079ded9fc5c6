"""A real SMTP server for the email tests (Debian's python3-aiosmtpd; scripts/services.sh installs it).

    /usr/bin/python3 tests/smtp_sink.py --port 0 --out messages.jsonl [--rules rules.json]
                                        [--count-only] [--auth USER:PASS]
                                        [--starttls CERT KEY | --tls CERT KEY]

Listens on 127.0.0.1 (plain SMTP unless --starttls or --tls), prints one line `listening on PORT`
once it accepts connections, and serves until killed, or until its standard input closes (so a
test that dies leaves no server behind; to run it by hand, keep stdin open: not `</dev/null`).

--starttls CERT KEY: offer STARTTLS with this certificate chain and key (PEM files) and require
  it: MAIL, RCPT and DATA before it are answered 530.
--tls CERT KEY: implicit TLS (port 465's way): the handshake is the connection's first bytes.

--out: every accepted message is appended as one JSON line, flushed at once:
    {"mail_from": "a@x", "rcpt_tos": ["b@y"], "auth_login": "user" or null,
     "tls": true if the message came over TLS (after STARTTLS, or implicit), else false,
     "data": "<the raw message, UTF-8 with bad bytes replaced>",
     "data_b64": "<the exact raw bytes, base64>", "size": 1234, "received_at": 1700000000.123}
  With --count-only (benchmarks) the line has no "data" nor "data_b64".

--rules: a JSON list of reply rules, re-read whenever the file changes (its mtime, inode or
  size), checked at every MAIL, RCPT and DATA command; a missing file means no rules:
    [{"address": "x@y" or "*", "stage": "mail" | "rcpt" | "data", "code": 451,
      "text": "4.7.1 try later", "times": 1}]
  The first rule that matches the command answers it with "CODE TEXT" instead of 250. "address"
  is compared without case to the MAIL FROM address (stage "mail"), the RCPT TO address ("rcpt"),
  or any accepted recipient of the message (stage "data", answered after the message's content).
  "times" (optional) applies the rule to the first N matching commands only; the count is kept per
  rule across reloads as long as the rule stays the same at the same place in the list (a changed
  rule counts afresh; an optional "id" field lets an identical rule be armed again). A 421 reply
  also closes the connection, as a server going away does. A rules file that does not parse is
  reported on stderr and every command is answered 554 until it is fixed.

--auth USER:PASS: require AUTH PLAIN or LOGIN with these credentials before MAIL (530 without,
  535 for wrong ones); offered without TLS, except with --starttls: only after STARTTLS then
  (538 before).

Speed: with --count-only it took about 2,400 messages/s (1 KB messages from 4 smtplib
connections, 20,000 in 8.2 s; 2,000/s over one connection) on this 2-core machine, clients on the
same cores, while another cargo build ran. aiosmtpd's per-command work is the limit, not the out
file: storing 1 KB messages whole went as fast; --count-only matters for large messages.
"""

import argparse
import asyncio
import base64
import json
import logging
import os
import ssl
import sys
import threading
import time
import warnings

from aiosmtpd.smtp import SMTP, AuthResult

STAGES = ("mail", "rcpt", "data")


class Rules:
    """The rules file, re-read when it changes, and how often each rule has answered."""

    def __init__(self, path):
        self.path = path
        self.seen = None  # (mtime_ns, inode, size) of the version loaded
        self.rules = []  # [(key, rule)]
        self.used = {}  # key -> how many commands the rule has answered
        self.error = None

    def reload(self):
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self.seen and self.error is None:
            return
        try:
            rules = [] if stamp is None else parse_rules(self.path)
        except (OSError, ValueError) as e:
            self.error = f"bad rules file {self.path}: {e}"
            print(f"smtp_sink: {self.error}", file=sys.stderr, flush=True)
            return
        self.seen, self.error = stamp, None
        self.rules = [((i, json.dumps(r, sort_keys=True)), r) for i, r in enumerate(rules)]
        keys = {key for key, _ in self.rules}
        self.used = {key: n for key, n in self.used.items() if key in keys}

    def reply(self, stage, addresses):
        """The reply a rule gives this command, or None to accept it."""
        if self.path is None:
            return None
        self.reload()
        if self.error is not None:
            return f"554 5.3.0 smtp_sink: {self.error}"
        addresses = [a.lower() for a in addresses]
        for key, rule in self.rules:
            if rule["stage"] != stage:
                continue
            if rule["address"] != "*" and rule["address"].lower() not in addresses:
                continue
            times = rule.get("times")
            if times is not None and self.used.get(key, 0) >= times:
                continue
            self.used[key] = self.used.get(key, 0) + 1
            return f"{rule['code']} {rule.get('text', '')}".rstrip()
        return None


def parse_rules(path):
    with open(path, encoding="utf-8") as f:
        rules = json.load(f)
    if not isinstance(rules, list):
        raise ValueError("not a JSON list")
    for rule in rules:
        if not isinstance(rule, dict):
            raise ValueError(f"a rule is not an object: {rule!r}")
        if rule.get("stage") not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}: {rule!r}")
        if not isinstance(rule.get("address"), str):
            raise ValueError(f"address must be a string: {rule!r}")
        code = rule.get("code")
        if not isinstance(code, int) or not 200 <= code <= 599:
            raise ValueError(f"code must be an SMTP reply code: {rule!r}")
        times = rule.get("times")
        if times is not None and (not isinstance(times, int) or times < 0):
            raise ValueError(f"times must be a count: {rule!r}")
    return rules


class Sink:
    """aiosmtpd handler: answers by the rules, appends what it accepts to the out file."""

    def __init__(self, out, rules, count_only):
        self.out = out
        self.rules = rules
        self.count_only = count_only

    def answer(self, server, stage, addresses):
        reply = self.rules.reply(stage, addresses)
        if reply is not None and reply.startswith("421"):
            # After the reply is written (push runs before the loop turns), hang up.
            server.loop.call_soon(close_transport, server)
        return reply

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self.answer(server, "mail", [address])
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.answer(server, "rcpt", [address])
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self.answer(server, "data", envelope.rcpt_tos)
        if reply is not None:
            return reply
        raw = envelope.original_content
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_login": login_name(session),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "size": len(raw),
            "received_at": time.time(),
        }
        if not self.count_only:
            record["data"] = raw.decode("utf-8", errors="replace")
            record["data_b64"] = base64.b64encode(raw).decode("ascii")
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()
        return "250 OK"


def close_transport(server):
    if server.transport is not None:
        server.transport.close()


def login_name(session):
    login = getattr(session, "login_data", None)
    return login.decode("utf-8", errors="replace") if isinstance(login, bytes) else login


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == user and auth_data.password == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return check


def tls_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def exit_when_stdin_closes():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


async def serve(args):
    loop = asyncio.get_running_loop()
    out = open(args.out, "a", encoding="utf-8")
    sink = Sink(out, Rules(args.rules), args.count_only)
    options = dict(hostname="smtp-sink", enable_SMTPUTF8=True, loop=loop)
    implicit = None
    if args.starttls:
        options.update(tls_context=tls_context(*args.starttls), require_starttls=True)
    elif args.tls:
        implicit = tls_context(*args.tls)
    if args.auth:
        user, _, password = args.auth.partition(":")
        options.update(
            auth_required=True,
            # aiosmtpd counts only STARTTLS as TLS: with implicit TLS it would never offer AUTH.
            auth_require_tls=bool(args.starttls),
            authenticator=authenticator(user.encode(), password.encode()),
        )
    server = await loop.create_server(
        lambda: SMTP(sink, **options), "127.0.0.1", args.port, ssl=implicit
    )
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description="SMTP sink for tests (see the docstring)")
    parser.add_argument("--port", type=int, required=True, help="0: any free port")
    parser.add_argument("--out", required=True, help="JSON lines, one per accepted message")
    parser.add_argument("--rules", help="JSON list of reply rules, re-read when it changes")
    parser.add_argument("--count-only", action="store_true", help="store no message content")
    parser.add_argument("--auth", metavar="USER:PASS", help="require AUTH PLAIN/LOGIN")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"), help="require STARTTLS")
    tls.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="implicit TLS")
    args = parser.parse_args()
    # aiosmtpd logs each command at INFO and warns on every connection when AUTH goes without
    # TLS: that is what we want here, and it would fill the test's log.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
