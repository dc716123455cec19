"""Third-party output an evalkit user did not ask for, silenced where it arises, narrowly.

Each filter matches one library logger and one message prefix, so the libraries' other warnings
and every real error still show. Nothing here imports the libraries: a logging filter attaches
to the logger object before the module that logs through it is imported.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from evalkit._files import progress_enabled

LOG_NOISE = (
    # bitsandbytes casts 8-bit matmul inputs on every call and says so.
    ("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast"),
    # On CPUs with AVX512-BF16 importing bitsandbytes (which peft and sentence-transformers do,
    # quantized or not) looks for the optional `kernels` package and logs that it is missing.
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels"),
    # Assisted generation: transformers' own candidate generator calls the draft's generate
    # with both a generation_config and max_new_tokens, then warns about its own call.
    ("transformers.generation.utils", "Passing `generation_config` together with"),
)

WARNING_NOISE = (
    # peft reads `model.is_gradient_checkpointing`, which transformers 5 deprecated.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # Importing bitsandbytes (peft and sentence-transformers do) makes torch compile a module
    # that still uses torch.jit.script_method; pytest shows it in its warnings summary.
    (DeprecationWarning, r"`torch.jit.script_method` is deprecated"),
)


class DropMessages(logging.Filter):
    """Drops the records of one logger whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@functools.cache
def quiet_libraries() -> None:
    """Install the log filters of ``LOG_NOISE`` (once per process)."""
    for logger, prefix in LOG_NOISE:
        logging.getLogger(logger).addFilter(DropMessages(prefix))


@contextmanager
def loading_quietly() -> Iterator[None]:
    """Around loading a model: the log filters, no deprecation notes from peft, and
    transformers' per-load "Loading weights" bars only while evalkit's progress bars are on
    (and then transient, so they do not stay on screen once the model is loaded)."""
    quiet_libraries()
    with warnings.catch_warnings(), _transformers_bars():
        for category, message in WARNING_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextmanager
def _transformers_bars() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    if not progress_enabled():
        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()
        return
    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    previous = getattr(hf_logging, "_tqdm_hook", None)
    if set_hook is None:  # an older transformers: leave its bars as they are
        yield
        return
    set_hook(_transient)
    try:
        yield
    finally:
        set_hook(previous)


def _transient(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return factory(*args, **{**kwargs, "leave": False})
