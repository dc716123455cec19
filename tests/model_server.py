"""A real transformers model behind ``openai_server.OpenAIServer``: the routes through which a
vLLM server scores a given text, answered from the model's own forward pass, in vLLM 0.32's
formats (read from its source: ``entrypoints/serve/tokenize/``, ``entrypoints/openai/completion/``
and ``tokenizers/detokenizer_utils.py``). ``ModelRoutes(folder).install(server)`` adds:

- ``POST /tokenize``: ``{"messages", "add_generation_prompt"}`` -> the chat template applied and
  tokenized without added special tokens (vLLM's chat rendering); ``{"prompt",
  "add_special_tokens"}`` -> the text tokenized. Reply ``{"tokens", "count", "max_model_len"}``.
- ``POST /detokenize``: ``{"tokens"}`` -> ``{"prompt": tokenizer.decode(tokens)}``.
- ``POST /v1/completions`` with ``echo: true`` and ``max_tokens: 0`` (anything else gets a 400,
  as from a server without that support): the prompt (ids, or text) in one unpadded forward
  pass; per position the log-prob of its token and of the ``logprobs`` most likely tokens
  (log-softmax of the logits in float64), the position's own token listed first as vLLM lists
  it, None for the first position. Tokens are named as vLLM names them: ``token_id:N`` when the
  request asks ``return_tokens_as_token_ids``, else each decoded alone, with the leading spaces a
  Metaspace tokenizer drops put back. ``names="text"`` plays a server that ignores
  ``return_tokens_as_token_ids``; ``names="pieces"`` one that also names tokens by their raw
  vocabulary pieces (``▁sky``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from openai_server import OpenAIServer

Reply = tuple[int, dict[str, Any]]


class ModelRoutes:
    def __init__(self, folder: Path, names: str = "vllm") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.names = names
        config = json.loads(self.tokenizer.backend_tokenizer.to_str())
        self.metaspace = (config.get("pre_tokenizer") or {}).get("type") == "Metaspace"
        self.lock = threading.Lock()  # one forward pass at a time: the HTTP server is threaded

    def install(self, server: OpenAIServer) -> OpenAIServer:
        server.routes.update(
            {
                "/tokenize": self.tokenize,
                "/detokenize": self.detokenize,
                "/v1/completions": self.completions,
            }
        )
        return server

    def tokenize(self, body: dict[str, Any]) -> Reply:
        if "messages" in body:
            text = self.tokenizer.apply_chat_template(
                body["messages"],
                tokenize=False,
                add_generation_prompt=body.get("add_generation_prompt", True),
            )
            special = bool(body.get("add_special_tokens", False))
        else:
            text, special = body["prompt"], bool(body.get("add_special_tokens", True))
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return 200, {"tokens": ids, "count": len(ids), "max_model_len": 512}

    def detokenize(self, body: dict[str, Any]) -> Reply:
        return 200, {"prompt": self.tokenizer.decode(body["tokens"])}

    def completions(self, body: dict[str, Any]) -> Reply:
        if not body.get("echo") or body.get("max_tokens") != 0 or body.get("logprobs") is None:
            message = "this server scores prompts only: echo, logprobs and max_tokens 0"
            return 400, {"error": {"message": message, "type": "BadRequestError"}}
        prompt = body["prompt"]
        ids = prompt if isinstance(prompt, list) else self.tokenizer(prompt)["input_ids"]
        by_id = self.names == "vllm" and bool(body.get("return_tokens_as_token_ids"))
        logprobs = self._logprobs(ids, int(body["logprobs"]), by_id)
        choice = {"index": 0, "text": self.tokenizer.decode(ids), "logprobs": logprobs,
                  "finish_reason": "length"}  # fmt: skip
        usage = {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}
        return 200, {"id": "cmpl-0", "object": "text_completion", "created": 1_700_000_000,
                     "model": body.get("model"), "choices": [choice], "usage": usage}  # fmt: skip

    def _logprobs(self, ids: list[int], k: int, by_id: bool) -> dict[str, Any]:
        import torch

        with self.lock, torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
        table = torch.log_softmax(logits.double(), dim=-1)

        def name(token_id: int) -> str:
            return f"token_id:{token_id}" if by_id else self.name(token_id)

        tokens = [name(i) for i in ids]
        top: list[dict[str, float] | None] = [None]
        chosen: list[float | None] = [None]
        for position in range(1, len(ids)):
            row = table[position - 1]
            values, best = torch.topk(row, k)
            entries = {tokens[position]: float(row[ids[position]])}  # its own token first
            entries.update((name(int(i)), float(v)) for v, i in zip(values, best, strict=True))
            top.append(entries)
            chosen.append(float(row[ids[position]]))
        offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
        return {"tokens": tokens, "token_logprobs": chosen, "top_logprobs": top,
                "text_offset": offsets}  # fmt: skip

    def name(self, token_id: int) -> str:
        """vLLM's ``convert_ids_list_to_tokens`` for one id (or its raw piece)."""
        piece = self.tokenizer.convert_ids_to_tokens([token_id])[0] or ""
        if self.names == "pieces":
            return piece
        text = self.tokenizer.decode([token_id])
        if not self.metaspace:
            return text
        markers = len(piece) - len(piece.lstrip("\u2581"))
        missing = markers - (len(text) - len(text.lstrip(" ")))
        return " " * missing + text if missing > 0 else text
