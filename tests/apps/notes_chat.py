"""A small real async pipeline: it asks an OpenAI-compatible server (the tests' stand-in,
tests/openai_server.py, at the URL in $NOTES_CHAT_BASE) with httpx and returns the reply, its
token counts and a cost. tests/test_call_candidate.py evaluates it as a ``call:`` candidate."""

from __future__ import annotations

import os
from typing import Any

import httpx

PRICE_PER_OUTPUT_TOKEN = 0.0001


async def answer(question: str, id: str) -> dict[str, Any]:
    base = os.environ["NOTES_CHAT_BASE"]
    body = {
        "model": "notes",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 16,
        "user": id,
    }
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        reply = await client.post(f"{base}/chat/completions", json=body)
        reply.raise_for_status()
        data = reply.json()
    usage = data["usage"]
    return {
        "output": data["choices"][0]["message"]["content"],
        "tokens": {"prompt": usage["prompt_tokens"], "output": usage["completion_tokens"]},
        "cost": PRICE_PER_OUTPUT_TOKEN * usage["completion_tokens"],
    }
