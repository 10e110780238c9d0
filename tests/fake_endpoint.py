"""A chat-completions server on loopback for the OpenAI-compatible judge's tests.

It reads the score distribution it should answer with from the response being judged
("trait: 80=0.6 90=0.3 | coherence: 100=0.9"), or answers every prompt with one given
`top` list; it counts requests, records bodies and headers, and can be scripted to fail
(HTTP status, slow answer past the client timeout, dropped connection, an echoed key).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ANSWER = re.compile(r"\[ANSWER START\]\n(.*)\n\[ANSWER END\]", re.S)
PROBE = "Reply with the number 57 and nothing else."  # number_probe.PROMPT, written out


class FakeServer:
    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: list = []  # failures to serve first: 429, 500, "slow", "drop", ...
        self.delay = 0.0
        self.in_flight = self.max_in_flight = 0
        self.logprobs = True
        self.top = None  # a top_logprobs list to send instead of the real one
        self.tokens = ["1"]  # the answer's tokens (logprobs.content), the first with `top`
        self.number = ["57"]  # the tokens answering a prompt that judges nothing (the probe)
        self.refuse = None  # prompts holding this text get HTTP 400 (a content filter)
        self.declined = None  # a 200 that declines: merged into the choice, no logprobs
        self.get_status = 404  # what a GET (the model list, a followed redirect) is answered
        self.listing = None  # a model list to answer a GET with instead (200)
        self.capacity = None  # answer 429 to requests past this many in flight (a rate limit)
        self.throttled = 0  # the 429s `capacity` sent
        self.working = 0  # requests counted against `capacity`
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):  # what a followed 301/302/303 turns a POST into
                with server.lock:
                    server.headers.append(dict(self.headers))
                if server.listing is not None:
                    return server.send(self, 200, server.listing)
                message = f"no such route; you sent {self.headers.get('Authorization')}"
                return server.send(self, server.get_status, {"error": {"message": message}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    action = server.script.pop(0) if server.script else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    server.serve(self, action, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def serve(self, handler, action, body):
        if handler.path != "/v1/chat/completions":
            return self.send(handler, 404, {"error": {"message": "no such route"}})
        if isinstance(action, tuple) and action[0] == "late":  # ("late", seconds, action)
            time.sleep(action[1])
            action = action[2]
        if isinstance(action, tuple) and action[0] == "redirect":
            _, code, location = action
            return self.send(handler, code, {}, {"Location": location})
        if action == "error_200":  # a gateway's 200 carrying an error instead of an answer
            message = f"upstream overloaded {handler.headers.get('Authorization', '')}"
            return self.send(handler, 200, {"error": {"message": message}})
        if action == "refused_200":  # a client error passed on in a 200 body
            return self.send(handler, 200, {"error": {"message": "too long", "code": "400"}})
        if action == "garbled":  # a 200 whose body was cut off (by a proxy, say)
            data = b'{"id": "x", "choices": [{"index": 0, "logpr'
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return None
        if isinstance(action, tuple) and action[0] == "echo_after":  # ("echo_after", pad)
            auth = handler.headers.get("Authorization", "")
            return self.send(handler, 400, {"error": {"message": "x" * action[1] + auth}})
        if isinstance(action, tuple) and action[0] == "reason":  # the key in the status line
            handler.send_response(action[1], f"Unauthorized {handler.headers['Authorization']}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        if isinstance(action, tuple) and action[0] == "escaped":  # ("escaped", status, how)
            key = handler.headers["Authorization"].removeprefix("Bearer ")
            data = action[2](key).encode()  # the key as the server's encoder writes it
            handler.send_response(action[1])
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return None
        if action == "drop":
            handler.close_connection = True
            return None
        if action == "no_choices":  # a gateway's empty 200 on an upstream hiccup
            return self.send(handler, 200, {"id": "x", "object": "chat.completion", "choices": []})
        if action == "slow":
            time.sleep(1.0)
        elif isinstance(action, int):
            # Echo the key back like some servers do: the client must scrub it.
            auth = handler.headers.get("Authorization", "")
            return self.send(
                handler,
                action,
                {"error": {"message": f"status {action} {auth}"}},
                {"Retry-After": "0"},
            )
        if self.capacity is not None:
            with self.lock:  # counted until its answer is ready, so a client that has it
                over = self.working >= self.capacity  # may send the next one at once
                self.throttled += over
                self.working += not over
            if over:
                return self.send(
                    handler, 429, {"error": {"message": "rate limit"}}, {"Retry-After": "0"}
                )
        time.sleep(self.delay)
        if self.capacity is not None:
            with self.lock:
                self.working -= 1
        prompt = body["messages"][-1]["content"]
        if self.refuse is not None and self.refuse in prompt:
            return self.send(handler, 400, {"error": {"message": "content_filter triggered"}})
        if self.declined is not None:
            choice = {"index": 0, "message": {"role": "assistant", "content": ""}}
            choice["logprobs"] = {"content": []}
            return self.send(handler, 200, {"id": "x", "choices": [{**choice, **self.declined}]})
        found = ANSWER.search(prompt)
        if prompt == PROBE and self.top is None:  # `number_probe`'s request
            said = [{"token": t, "logprob": -0.1, "top_logprobs": []} for t in self.number]
            choice = {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": "".join(self.number)},
            }
            if self.logprobs:
                choice["logprobs"] = {"content": said}
            return self.send(handler, 200, {"id": "x", "model": body["model"], "choices": [choice]})
        kind = "coherence" if "coherent" in prompt else "trait"
        top = [
            {"token": t, "logprob": math.log(p), "bytes": None}
            for t, p in (distribution(found.group(1), kind) if found else [])
        ]
        choice = {
            "index": 0,
            "finish_reason": "length",
            "message": {
                "role": "assistant",
                "content": "" if self.top is not None or not top else top[0]["token"],
            },
        }
        if self.top is not None:
            top = self.top
        if self.logprobs:
            choice["logprobs"] = {
                "content": [
                    {"token": t, "logprob": -0.1, "top_logprobs": top if i == 0 else []}
                    for i, t in enumerate(self.tokens)
                ]
                if top or self.top is not None
                else []
            }
        return self.send(
            handler,
            200,
            {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [choice]},
        )

    @staticmethod
    def send(handler, status, payload, headers=None):
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def distribution(response: str, kind: str) -> list[tuple[str, float]]:
    """Parse 'trait: 80=0.6 x=0.1 | coherence: 100=0.9' into [(token, prob)] for `kind`."""
    for part in response.split("|"):
        name, _, spec = part.partition(":")
        if name.strip() == kind:
            pairs = [item.rsplit("=", 1) for item in spec.split()]
            return [(tok.replace("_", " "), float(p)) for tok, p in pairs]
    return [("oops", 0.9)]


def judge_block(server: FakeServer, cache: Path, /, **judge) -> dict:
    """A params `judge` block for `server`: the openai judge, its cache in `cache`, key from
    STEEROPS_TEST_JUDGE_KEY, quick retries; `judge` overrides any key (cache_dir too)."""
    return {
        "kind": "openai",
        "base_url": server.url,
        "model": "judge-mini",
        "api_key_env": "STEEROPS_TEST_JUDGE_KEY",
        "cache_dir": str(cache),
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "timeout_s": 5.0,
        **judge,
    }
