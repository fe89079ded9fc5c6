"""Verifies a message's DKIM signature with dkimpy (Debian's python3-dkim; scripts/services.sh
installs it), an implementation independent of lettre's signer, for tests/email_transport.rs.

    /usr/bin/python3 tests/dkim_verify.py --public-key PUB.pem --domain D --selector S < message

The message is read whole from standard input (raw bytes, CRLF line ends). No DNS is asked: the
key's TXT record (`v=DKIM1; k=rsa; p=<base64 of the DER SubjectPublicKeyInfo>`) is built from
PUB.pem, and given only for `S._domainkey.D.`; any other name has no record. Prints one JSON
object and exits 0 whatever the outcome:

    {"verified": true | false, "error": "<dkimpy's exception>" or null,
     "tags": {"v": "1", "a": "rsa-sha256", "c": "relaxed/relaxed", "d": ..., "s": ...,
              "h": ["from", "to", ...]} or null (no DKIM-Signature),
     "log": ["<dkimpy's debug and error lines>", ...]}
"""

import argparse
import json
import logging
import sys

import dkim
import dkim.util


class Lines(logging.Handler):
    """Keeps what dkimpy logs (why a signature failed: body hash mismatch, ...)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def txt_record(public_key_pem):
    der_b64 = "".join(
        line.strip()
        for line in public_key_pem.splitlines()
        if line.strip() and not line.startswith("-----")
    )
    return f"v=DKIM1; k=rsa; p={der_b64}".encode("ascii")


def signature_tags(message):
    """The first DKIM-Signature's tags, h= split into header names (lower case)."""
    d = dkim.DKIM(message)
    for name, value in d.headers:
        if name.lower() == b"dkim-signature":
            tags = dkim.util.parse_tag_value(value)
            out = {k.decode(): v.decode(errors="replace") for k, v in tags.items()}
            out.pop("b", None)
            out["h"] = [h.strip().lower() for h in out.get("h", "").split(":") if h.strip()]
            return out
    return None


def main():
    parser = argparse.ArgumentParser(description="verify a DKIM signature (see the docstring)")
    parser.add_argument("--public-key", required=True, help="PEM SubjectPublicKeyInfo")
    parser.add_argument("--domain", required=True, help="the d= the record is published for")
    parser.add_argument("--selector", required=True, help="the s= the record is published for")
    args = parser.parse_args()
    with open(args.public_key, encoding="ascii") as f:
        record = txt_record(f.read())
    published = f"{args.selector}._domainkey.{args.domain}.".encode("ascii").lower()
    asked = []

    def dnsfunc(name, timeout=5):
        asked.append(name.decode(errors="replace"))
        return record if name.lower() == published else None

    message = sys.stdin.buffer.read()
    lines = Lines()
    logger = logging.getLogger("dkim_verify")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(lines)
    result = {"verified": False, "error": None, "tags": None, "log": lines.lines}
    try:
        result["tags"] = signature_tags(message)
        verifier = dkim.DKIM(message, logger=logger)
        result["verified"] = bool(verifier.verify(dnsfunc=dnsfunc))
    except dkim.DKIMException as e:
        result["error"] = f"{type(e).__name__}: {e}"
    lines.lines.extend(f"asked DNS for {name}" for name in asked)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
