"""The ``engine_options:`` block of a candidate: how ``engine: vllm`` runs its server
(evalkit.spec imports it; kept apart so the suite spec stays readable). Self-contained:
pydantic only. Which engines accept it is the candidate registry's to say."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EngineOptions(BaseModel):
    """How ``engine: vllm`` runs its server (see evalkit/candidates/vllm.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # as evalkit.spec's models

    python: str | None = Field(
        None,
        description="interpreter of an environment with vLLM (default: .venv-vllm/bin/python "
        "from `make vllm`, else `vllm` on PATH)",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split across")
    data_parallel_size: int = Field(1, ge=1, description="model replicas serving requests")
    gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0)
    max_model_len: int | None = Field(None, ge=16, description="default: the model's own")
    concurrency: int = Field(16, ge=1, description="requests in flight at once")
    startup_timeout_s: float = Field(900.0, gt=0, description="wait this long for /health")
    args: list[str] = Field(default_factory=list, description="more `vllm serve` flags")
