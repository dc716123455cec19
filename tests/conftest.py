"""Shared fixtures for evalkit's own tests."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_server import OpenAIServer
from tinymodels import make_tiny_llama

# --- offline environment and tiny models (tests/tinymodels.py) -------------------------------

# The importlib_metadata backport (a litellm dependency) replaces the standard library's
# distribution finder on import. If that first happens inside an in-process pytester run,
# pytester restores sys.meta_path afterwards and no finder is left: every later
# importlib.metadata lookup in this process fails. Importing it here, before any pytester
# snapshot, keeps its finder installed for good (a few milliseconds).
with contextlib.suppress(ImportError):
    importlib.import_module("importlib_metadata")

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "EVALKIT_PROGRESS": "0"}
"""huggingface_hub reads HF_HUB_OFFLINE when first imported, so test modules must import
transformers inside tests (after this fixture), never at module level. EVALKIT_HOME is left
alone so the real model's one-time conversion is shared across test runs."""


@pytest.fixture(scope="session", autouse=True)
def offline_env() -> Iterator[None]:
    """No test may reach the hub: the machines have no internet and tests must not hang."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in OFFLINE_ENV.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a ChatML chat template (seed 0), saved once per session."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-seed0"), seed=0)


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture and tokenizer as ``tiny_model``, different weights (seed 1)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-seed1"), seed=1)


# --- a real OpenAI-compatible server on 127.0.0.1 (tests/openai_server.py) ------------------


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A fresh server per test on a random free port; ``openai_server.base`` is its /v1 URL."""
    with OpenAIServer() as server:
        yield server
