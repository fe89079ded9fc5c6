"""A stand-in for an OpenAI-compatible chat-completions API, for the demo (scripts/demo.sh): it
lets `ai.hints` and `ai.evaluate` run without a key or a model. Not a model: every question
gets the same three hints, worded after the question's type, which never state an answer; an
answer to grade gets each criterion's full marks when it holds a word (of five letters or more)
of the criterion's description, and 0 otherwise.

    python3 scripts/ai_mock.py    # prints `listening on PORT`, serves /v1/chat/completions

Listens on 127.0.0.1 on a free port, and ends when its standard input closes (the demo runs it
as a coprocess). Each reply bills 300 prompt tokens and 60 completion tokens.
"""

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HINTS = {
    "mcq": ("Cross out the options you can rule out at once.",
            "Compare what is left against the one property the question turns on.",
            "Two options remain after that; test each against the question's exact wording."),
    "integer": ("Estimate the size of the answer before you calculate.",
                "Write the relation between the quantities given, then solve it for the unknown.",
                "Do the last calculation carefully and check it by working backwards."),
}
DEFAULT = ("Say in your own words what the question asks.",
           "Recall the definition or rule that applies here.",
           "Work it through step by step and stop before the last step.")


def grade(prompt):
    """The reply to a grading request: the JSON between <grading> and </grading>."""
    data = json.loads(prompt.split("<grading>\n", 1)[1].rsplit("\n</grading>", 1)[0])
    answer = data["answer"].lower()
    criteria = []
    for c in data["criteria"]:
        words = [w for w in re.findall(r"[a-z]+", c["description"].lower()) if len(w) >= 5]
        met = any(w in answer for w in words)
        criteria.append({"id": c["id"], "awarded": c["marks"] if met else "0",
                         "feedback": "Covered." if met else "Not covered: " + c["description"]})
    return json.dumps({"criteria": criteria, "feedback": "Graded by the demo's stand-in."})


class Completions(BaseHTTPRequestHandler):
    def do_POST(self):
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        messages = body.get("messages") or [{}]
        prompt = messages[-1].get("content", "")  # the user's: the question as JSON
        if "<grading>" in prompt:
            content = grade(prompt)
        else:
            kind = re.search(r'\\?"type\\?"\s*:\s*\\?"(\w+)', prompt)
            nudge, method, near = HINTS.get(kind.group(1) if kind else "", DEFAULT)
            content = json.dumps({"nudge": nudge, "method": method, "near_solution": near})
        reply = json.dumps({
            "id": "chatcmpl-demo", "object": "chat.completion", "model": body.get("model", "demo"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 60, "total_tokens": 360},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Completions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening on {server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the demo ends
    server.shutdown()


if __name__ == "__main__":
    main()
