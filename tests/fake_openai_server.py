"""A fault-injecting fake OpenAI-compatible server for tests (stdlib only, 127.0.0.1 only).

Each POST /v1/chat/completions consumes the next scripted fault, if any (else asks the optional
``responder`` for one), then answers like an OpenAI chat completion. It records every request with
the status it got, caps how many it serves and how long it lives, and stops itself after either
limit, so a forgotten server never outlives its test run.

Fault vocabulary (keys of one fault dict, combinable with "sleep"):
    {"status": 500, "headers": {...}, "body": {...}}  an HTTP error ("{authorization}" / "{api_key}" in
                                                     the body become the request's header / bare key)
    {"sleep": 2.0}                                   wait before answering (client timeouts)
    {"content": "..."} / {"content": None}           this answer text instead of the default reply (marks as
                                                     in "body": a server that puts the key in an answer)
    {"echo": True}                                   answer with the prompt itself (a model repeating it)
    {"tokens": [[text, {alt: logprob}], ...]}          this answer, token by token, with each token's listed
                                                     alternatives as its logprobs (when logprobs were asked)
    {"logprobs": False}                              list no token probabilities even when asked (a server
                                                     without them)
    {"drop": True}                                   close the connection without answering
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIServer:
    """A scripted OpenAI-compatible chat server bound to 127.0.0.1 on a free port.

    Args:
        reply: Default answer text (None sends ``content: null``).
        usage: Default usage object (None leaves it out of the response).
        reject_formats: response_format types refused (HTTP ``reject_status``), like a server without them.
        reject_status: 400 like most servers; llama-cpp-python's server answers 500.
        max_requests: Requests served before the server answers 503 and shuts itself down.
        lifetime: Seconds before the server shuts itself down.
        port: Port to bind (0: a free one). Binding a port known in advance lets a test start the
            server only after a client has failed to connect to it (connection refused).
        price_per_mtok: (prompt, answer) money per million tokens: usage then counts each request's own
            tokens (4 characters a token) and `billed` adds up what a paying server would charge.
        responder: ``responder(body, index)`` -> a fault dict (or None) for requests that find the
            scripted queue empty; ``index`` counts requests from 0. Lets a test fail by prompt content.
    """

    def __init__(
        self,
        *,
        reply: str | None = '{"picks": [{"id": 2, "reason": "fake"}]}',
        usage: dict | None = None,
        reject_formats: tuple[str, ...] = (),
        reject_status: int = 400,
        max_requests: int = 100,
        lifetime: float = 60.0,
        port: int = 0,
        responder: Callable[[dict[str, Any], int], dict[str, Any] | None] | None = None,
        price_per_mtok: tuple[float, float] | None = None,
    ) -> None:
        self.reply = reply
        self.price_per_mtok = price_per_mtok
        self.billed = 0.0
        self.usage = usage if usage is not None else {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}
        self.reject_formats = set(reject_formats)
        self.reject_status = reject_status
        self.max_requests = max_requests
        self.lifetime = lifetime
        self.responder = responder
        self.faults: deque[dict[str, Any]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *faults: dict[str, Any]) -> None:
        """Queue faults for the next requests: {"status", "headers", "body"}, {"sleep"}, {"content"}."""
        self.faults.extend(faults)

    def start(self) -> FakeOpenAIServer:
        serve = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        timer = threading.Timer(self.lifetime, self.stop)
        timer.daemon = True
        self._threads = [serve, timer]
        serve.start()
        timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice and from any thread."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        self._threads[1].cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- answering ------------------------------------------------------------------------

    def answer(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        """Decide (status, headers, json body) for one chat request; status 0 means drop the connection."""
        record = {"body": body, "headers": headers, "time": time.monotonic(), "status": None, "fault": {}}
        with self._lock:
            self.requests.append(record)
            index = len(self.requests) - 1
            fault = self.faults.popleft() if self.faults else None
        if index >= self.max_requests:
            threading.Thread(target=self.stop, daemon=True).start()
            return self._record(record, 503, {}, {"error": {"message": "fake server request cap reached"}})
        if fault is None:
            fault = (self.responder(body, index) if self.responder else None) or {}
        record["fault"] = fault
        if "sleep" in fault:
            self.stopped.wait(fault["sleep"])
        if fault.get("drop"):
            return self._record(record, 0, {}, None)
        if "status" in fault:
            return self._record(record, fault["status"], fault.get("headers", {}),
                                _render(fault.get("body", {}), headers))
        fmt = (body.get("response_format") or {}).get("type")
        if fmt in self.reject_formats:
            message = f"response_format type {fmt!r} is not supported by this server"
            return self._record(record, self.reject_status, {},
                                {"error": {"message": message, "type": "invalid_request_error"}})
        content = _first_user_text(body) if fault.get("echo") else _render(fault.get("content", self.reply), headers)
        tokens = _render(fault["tokens"], headers) if "tokens" in fault else None
        if tokens is not None and "content" not in fault:
            content = "".join(text for text, _alts in tokens)
        ask = body if fault.get("logprobs", True) else {**body, "logprobs": False}
        return self._record(record, 200, {}, self._completion(ask, content, tokens))

    @staticmethod
    def _record(record: dict[str, Any], status: int, headers: dict[str, str], body: Any) -> tuple:
        record["status"] = status
        return status, headers, body

    def _completion(self, body: dict[str, Any], content: str | None,
                    tokens: list | None = None) -> dict[str, Any]:
        """An OpenAI chat.completion object, with logprobs when they were asked for."""
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
            "logprobs": None,
        }
        if body.get("logprobs") and tokens is not None:
            choice["logprobs"] = {"content": [
                {"token": text, "logprob": alts.get(text, max(alts.values())), "bytes": None,
                 "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in alts.items()]}
                for text, alts in tokens]}
        elif body.get("logprobs") and body.get("top_logprobs"):
            tops = [{"token": str(d), "logprob": -float(d), "bytes": None} for d in range(1, 6)]
            choice["logprobs"] = {"content": [{"token": "1", "logprob": -1.0, "bytes": None, "top_logprobs": tops}]}
        out = {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [choice],
        }
        if self.price_per_mtok:
            prompt = sum(len(m.get("content") or "") for m in body.get("messages", [])) // 4 + 1
            answer = len(content or "") // 4 + 1
            with self._lock:
                self.billed += (prompt * self.price_per_mtok[0] + answer * self.price_per_mtok[1]) / 1e6
            out["usage"] = {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer}
        elif self.usage:
            out["usage"] = self.usage
        return out


def _first_user_text(body: dict[str, Any]) -> str:
    """The first user message of a chat request (the rendered selection prompt)."""
    return next((m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"), "")


def _render(body: Any, headers: dict[str, str]) -> Any:
    """Fill "{authorization}" (the header) and "{api_key}" (the bare key) in a scripted body, to mimic
    servers that echo the key back."""
    authorization = headers.get("authorization", "")
    key = authorization.split(" ", 1)[-1]
    return _fill(body, {"{authorization}": authorization, "{api_key}": key})


def _fill(value: Any, marks: dict[str, str]) -> Any:
    """Replace marks in every string of a JSON-like value."""
    if isinstance(value, str):
        for mark, text in marks.items():
            value = value.replace(mark, text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, marks) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, marks) for v in value]
    return value


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one FakeOpenAIServer."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {}, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
            else:
                self._send(404, {}, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._send(400, {}, {"error": {"message": "body is not JSON"}})
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {}, {"error": {"message": f"no route {self.path}"}})
                return
            headers = {key.lower(): value for key, value in self.headers.items()}
            self._send(*server.answer(body, headers))

        def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
            if status == 0:  # a "drop" fault: hang up without a response
                self.close_connection = True
                return
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test); nothing to answer

    return Handler
