"""The real vLLM server on SmolLM2 (CPU): `make test-vllm` (after `make vllm`).

Starting a server costs 35-240 s on our loaded 2-core machines, so the session starts ONE: the
plain server with the LoRA module, before any test needs it. Every test and every suite run of
the session uses it through the active pool; the opt-in tests (``vllm_full``: `make
test-vllm-full`) start the n-gram speculative server they need (speculation is a server
setting) the same way, on first use. Without .venv-vllm the session fails with the `make vllm`
message: no skips.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_constants import CI_LIMIT, MODEL, REPO, run, write_suite

from evalkit.candidates.models import ensure_embedded_model
from evalkit.candidates.vllm import VllmCandidate
from evalkit.candidates.vllm_server import ServerPool
from evalkit.spec import CandidateSpec


def vllm_spec(**extra: object) -> CandidateSpec:
    return CandidateSpec(model=MODEL, engine="vllm", **extra)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def lora_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter (r=8 on q/k/v/o) for SmolLM2 with random, non-zero weights, written as
    peft's save_pretrained does: no package ships one, and training one takes a minute."""
    import torch
    from safetensors.torch import save_file

    base = ensure_embedded_model()
    config = json.loads((base / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    shapes = {"q_proj": (hidden, hidden), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
              "o_proj": (hidden, hidden)}  # fmt: skip
    rank = 8
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(layers):
        for name, (fan_in, fan_out) in shapes.items():
            key = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            a = torch.randn(rank, fan_in, generator=generator) / fan_in**0.5
            tensors[f"{key}.lora_A.weight"] = a
            tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.02
    folder = tmp_path_factory.mktemp("lora")
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 16,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "target_modules": sorted(shapes), "base_model_name_or_path": str(base),
        "inference_mode": True,
    }  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=1))
    return folder


@pytest.fixture(scope="session")
def suites(tmp_path_factory: pytest.TempPathFactory, lora_adapter: Path) -> dict[str, Path]:
    """The suites of the CI set, their transformers candidates run (and cached) first, so that
    they and the server's start-up (CPU-heavy) do not fight over 2 cores."""
    folder = tmp_path_factory.mktemp("suites")
    served = {"model": MODEL, "engine": "vllm"}
    lora = {
        "base": {"model": MODEL, "adapter": str(lora_adapter)},
        "lora": {"model": MODEL, "adapter": str(lora_adapter), "engine": "vllm"},
    }
    metrics = [{"contains": {"normalize": ["lower"]}}, "reference_perplexity", "kl_divergence",
               "top1_agreement"]  # fmt: skip
    paths = {
        "capitals": write_suite(folder, "capitals_engines", {"base": {"model": MODEL},
                                                             "served": served}, metrics),
        "lora": write_suite(folder, "capitals_lora", lora, ["exact_match"]),
    }  # fmt: skip
    for path in paths.values():
        run(path, ["base"], CI_LIMIT)
    return paths


@pytest.fixture(scope="session")
def vllm_pool(
    tmp_path_factory: pytest.TempPathFactory, lora_adapter: Path, suites: dict[str, Path]
) -> Iterator[ServerPool]:
    """The session's server (base model + LoRA module), started once; every server of the
    pool is stopped (engine processes included) at the end, which the teardown checks."""
    pool = ServerPool(tmp_path_factory.mktemp("vllm-logs"))
    with pool.active():
        candidate = VllmCandidate("session", vllm_spec(adapter=str(lora_adapter)), REPO, pool=pool)
        server = pool.server(candidate.plan(), candidate.options.startup_timeout_s)
        print(f"vLLM server ready in {server.startup_s:.0f} s: {server.log_path}")
        yield pool
        groups = [server.pid for server in pool.servers()]
    deadline = time.monotonic() + 30  # killed processes take a moment to be reaped
    while (leftovers := [p for p in _all_pids() if _group(p) in groups]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert not leftovers, f"processes of the vLLM servers outlived the session: {leftovers}"


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _group(pid: int) -> int | None:
    """The process group of a live (not zombie) process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[2])
    except (OSError, IndexError, ValueError):
        return None
