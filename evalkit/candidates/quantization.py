"""bitsandbytes weight quantization of an HF candidate: settings, backend checks, CPU quirks.

``hf.py`` calls these hooks around ``from_pretrained``. torch, transformers and bitsandbytes are
imported inside functions: ``fingerprint`` runs on fully cached runs and must stay cheap.

What really happens on CPU (bitsandbytes 0.50.2, measured on a 2-core x86 machine):
- 8-bit and 4-bit (nf4, fp4, double quant, any compute dtype) load and generate.
- On CPUs with AVX512-BF16, bitsandbytes repacks each 4-bit layer on its first forward pass for a
  fused bf16 kernel that needs ``out_features`` divisible by 32 and ``in_features`` by the
  quantization block size (64); other layers crash (``AssertionError: N must be divisible by
  block_n``, or a reshape error). We keep such layers on bitsandbytes' portable path
  (dequantize, then matmul), which every other CPU uses anyway.
- The 8-bit matmul logs "inputs will be cast ... to float16" on every call (thousands of lines
  per suite); that is how LLM.int8 works, so we drop the line.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit._quiet import quiet_libraries
from evalkit.errors import CandidateError
from evalkit.spec import QuantizationSpec

if TYPE_CHECKING:
    import torch

CPU_4BIT_BLOCK = 32
"""bitsandbytes' AVX512-BF16 4-bit kernel packs ``out_features`` in blocks of this size."""


def settings(spec: QuantizationSpec, dtype_name: str) -> dict[str, Any]:
    """The quantization as it will run (defaults filled in), for fingerprints and run.json."""
    if spec.bits == 8:
        return {"method": "bitsandbytes", "bits": 8}
    return {
        "method": "bitsandbytes",
        "bits": 4,
        "type": spec.type,
        "double_quant": spec.double_quant,
        "compute_dtype": spec.compute_dtype or dtype_name,
    }


def fingerprint(spec: QuantizationSpec, dtype_name: str, device_type: str) -> dict[str, Any]:
    """Settings plus what changes quantized answers beyond them: the bitsandbytes version and,
    for 4-bit on CPU, which kernel runs (the AVX512-BF16 one computes in bfloat16).
    ``device_type`` is ``torch.device.type``, passed as text so torch need not be imported."""
    facts = settings(spec, dtype_name)
    facts["bitsandbytes"] = _installed_version("bitsandbytes")
    if spec.bits == 4 and device_type == "cpu":
        facts["cpu_kernel"] = "avx512_bf16" if cpu_has_avx512_bf16() else "portable"
    return facts


def check_backend(spec: QuantizationSpec, device: torch.device, who: str) -> None:
    """One clear error when the installed packages cannot quantize on ``device``."""
    for package in ("bitsandbytes", "accelerate"):
        if importlib.util.find_spec(package) is None:
            raise CandidateError(
                f"{who}: quantization needs the package {package}, which is not installed; "
                f"install it with `pip install {package}` or remove 'quantization:'"
            )
    quiet_libraries()
    try:
        import bitsandbytes
    except Exception as exc:  # a broken native library raises OSError, RuntimeError, ...
        raise CandidateError(
            f"{who}: bitsandbytes is installed but failed to import ({_first_line(exc)}); "
            "reinstall it with `pip install --force-reinstall bitsandbytes` or remove "
            "'quantization:'"
        ) from None
    supported = set(getattr(bitsandbytes, "supported_torch_devices", {"cuda"}))
    if device.type not in supported:
        raise CandidateError(
            f"{who}: bitsandbytes {_installed_version('bitsandbytes')} cannot quantize on "
            f"'{device.type}' (it supports {', '.join(sorted(supported))}); run this candidate "
            "on a supported device (device: cpu or cuda) or remove 'quantization:'"
        )
    if spec.bits == 4 and spec.compute_dtype == "bfloat16" and device.type == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise CandidateError(
                f"{who}: compute_dtype bfloat16 is not supported by this GPU; "
                "use compute_dtype: float16"
            )


def load_kwargs(
    spec: QuantizationSpec | None, dtype_name: str, device: torch.device
) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments: the BitsAndBytesConfig, and a device map, because
    bitsandbytes quantizes while the weights are placed (a quantized model is not moved later)."""
    if spec is None:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    if spec.bits == 8:
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=spec.type,
            bnb_4bit_use_double_quant=spec.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, spec.compute_dtype or dtype_name),
        )
    return {"quantization_config": config, "device_map": {"": str(device)}}


def prepare_loaded(model: Any, device: torch.device) -> dict[str, Any]:
    """After loading: keep 4-bit layers the fused CPU kernel cannot pack on the portable path,
    and measure the quantization constants. Returns facts for ``describe``."""
    import bitsandbytes as bnb

    portable = []
    if device.type == "cpu":
        for name, module in model.named_modules():
            if (
                isinstance(module, bnb.nn.Linear4bit)
                and getattr(module, "support_avx512bf16_for_cpu", False)
                and not _packable(module)
            ):
                module.support_avx512bf16_for_cpu = False
                portable.append(name)
    facts: dict[str, Any] = {
        "quantized_layers": sum(
            isinstance(m, bnb.nn.Linear4bit | bnb.nn.Linear8bitLt) for m in model.modules()
        ),
        "constants_bytes": quantization_constants_bytes(model),
    }
    if portable:
        facts["cpu_portable_layers"] = len(portable)
    return facts


def _packable(module: Any) -> bool:
    """Whether bitsandbytes' fused CPU kernel can repack this 4-bit layer: output rows in whole
    blocks of 32, and each row's quantization blocks (``blocksize``, 64 by default) not
    straddling rows."""
    blocksize = module.weight.quant_state.blocksize
    return module.out_features % CPU_4BIT_BLOCK == 0 and module.in_features % blocksize == 0


def quantization_constants_bytes(model: Any) -> int:
    """Bytes of the scales bitsandbytes keeps beside the quantized weights (4-bit absmax and
    code books, nested ones with double quant; 8-bit row scales). ``get_memory_footprint``
    counts parameters and buffers only, so it misses these (about 4% of an nf4 model)."""
    import torch

    seen: dict[int, int] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        for tensor in _constant_tensors(weight):
            if isinstance(tensor, torch.Tensor):
                seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def _constant_tensors(weight: Any) -> list[Any]:
    state = getattr(weight, "quant_state", None)
    tensors = [getattr(weight, "SCB", None)]
    if state is not None:
        tensors += [state.absmax, state.code]
        if getattr(state, "nested", False):
            tensors += [state.state2.absmax, state.state2.code, state.offset]
    return tensors


@functools.cache
def cpu_has_avx512_bf16() -> bool:
    """What bitsandbytes checks before using its fused 4-bit CPU kernel, read without importing
    it (``/proc/cpuinfo`` on Linux; other systems are reported as not having it)."""
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(
        line.startswith("flags") and "avx512_bf16" in line.split() for line in text.splitlines()
    )


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
