"""peft LoRA adapters on an HF candidate: locate, fingerprint, attach, and refuse the silent cases.

An adapter that does not apply is worse than an error: the suite would report the base model's
answers under the adapter's name. So attaching fails loudly when the adapter was trained on
another base model (by name or files where they can be compared, and by weight shapes always),
when its target modules or tensors match nothing in the model, and when it changes nothing (all
LoRA B matrices zero, as saved before training). ``peft`` is imported inside functions.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.candidates.models import ALIASES, ResolvedModel, fingerprint_files
from evalkit.errors import CandidateError

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class AdapterFolder:
    """A peft adapter folder on disk, read and checked without loading any weights."""

    path: Path
    config: dict[str, Any]
    weights: Path
    who: str
    """``candidate 'name'`` for messages."""

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path") or None

    @property
    def target_modules(self) -> list[str] | str | None:
        targets = self.config.get("target_modules")
        return sorted(targets) if isinstance(targets, list) else targets

    def error(self, problem: str, fix: str) -> CandidateError:
        return CandidateError(f"{self.who}: adapter {self.path}: {problem}; {fix}")


def read_adapter(spec_adapter: str, base_dir: Path, who: str) -> AdapterFolder:
    """The folder ``adapter:`` names (relative to the suite file), checked to be a LoRA adapter
    written by peft's ``save_pretrained``."""
    path = Path(spec_adapter).expanduser()
    path = (path if path.is_absolute() else Path(base_dir) / path).resolve()
    if not path.is_dir():
        raise CandidateError(
            f"{who}: adapter folder {path} does not exist; check 'adapter:' (relative paths "
            "are relative to the suite file) or create the adapter first"
        )
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CandidateError(
            f"{who}: adapter {path}: cannot read {CONFIG_FILE} ({exc}); give a folder written "
            "by peft's save_pretrained (adapter_config.json + adapter_model.safetensors)"
        ) from None
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise CandidateError(
            f"{who}: adapter {path} has no {' or '.join(WEIGHT_FILES)}; give a folder written "
            "by peft's save_pretrained"
        )
    folder = AdapterFolder(path=path, config=config, weights=weights, who=who)
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise folder.error(
            f"peft_type is {peft_type!r}, and evalkit applies LoRA adapters only",
            "give a LoRA adapter (peft_type LORA, which includes DoRA and rsLoRA)",
        )
    return folder


def fingerprint(folder: AdapterFolder, merge: bool) -> dict[str, Any]:
    """Hash of the adapter's weights and config (memoized file hashes), plus ``merge``."""
    return {"files": fingerprint_files(folder.path), "merge": merge}


# -- the base model ----------------------------------------------------------------------------


def check_base(folder: AdapterFolder, resolved: ResolvedModel, model: str) -> str:
    """Compare the adapter's recorded base model with what the candidate loads, where that can
    be compared; raise on a mismatch. Returns how it matched, for the run record."""
    base = folder.base_model
    if base is None:
        return "not recorded in adapter_config.json; weight shapes checked"
    if base in {model, resolved.name, resolved.hub_id, str(resolved.path)}:
        return "same name"
    base_folder = _local_folder(base)
    if base_folder is not None and resolved.path is not None:
        if base_folder == resolved.path.resolve():
            return "same folder"
        if fingerprint_files(base_folder) == fingerprint_files(resolved.path):
            return "same files"
        raise _base_mismatch(folder, base, model, "its files differ")
    if base in ALIASES or (resolved.kind == "hub" and _HUB_ID.match(base)):
        raise _base_mismatch(folder, base, model, "a different model")
    return f"'{base}' is not on this machine to compare; weight shapes checked"


def _local_folder(base: str) -> Path | None:
    """The folder a base name stands for here: an alias (materialized) or an existing folder."""
    if base in ALIASES:
        return ALIASES[base].materialize().resolve()
    path = Path(base).expanduser()
    return path.resolve() if (path / "config.json").is_file() else None


def _base_mismatch(folder: AdapterFolder, base: str, model: str, why: str) -> CandidateError:
    return folder.error(
        f"it was trained on '{base}', but the candidate loads '{model}' ({why})",
        f"set 'model: {base}' or train the adapter on '{model}'; if both really are the same "
        f'weights, write base_model_name_or_path: "{model}" into its {CONFIG_FILE}',
    )


# -- attaching -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttachedAdapter:
    """What loading the adapter established, for ``describe``."""

    base_check: str
    lora_modules: int
    merged: bool


def attach(
    model: Any, folder: AdapterFolder, *, merge: bool, base_check: str, device: torch.device
) -> tuple[Any, AttachedAdapter]:
    """Wrap ``model`` in the adapter (merged into the weights when ``merge``), after checking
    that every adapter tensor found its place and that the adapter changes something."""
    from peft import PeftModel  # (callers load inside _quiet.loading_quietly)

    _check_targets(model, folder)
    try:
        peft_model = PeftModel.from_pretrained(
            model, str(folder.path), is_trainable=False, torch_device=str(device)
        )
    except Exception as exc:  # peft raises RuntimeError (shapes), ValueError, KeyError, ...
        raise _load_error(folder, exc) from exc
    modules = _check_loaded(peft_model, folder)
    if merge:
        peft_model = peft_model.merge_and_unload()
    return peft_model, AttachedAdapter(base_check=base_check, lora_modules=modules, merged=merge)


def _check_targets(model: Any, folder: AdapterFolder) -> None:
    """peft says only "not found"; name what the model has so the user can see the mismatch."""
    targets = folder.target_modules
    if not targets or targets == "all-linear":
        return
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(targets, str):
        found = any(re.fullmatch(targets, name) for name in names)
    else:
        found = any(name == t or name.endswith("." + t) for t in targets for name in names)
    if not found:
        raise folder.error(
            f"none of its target modules ({_listing(targets)}) exist in the model, whose linear "
            f"layers are {_listing(_linear_names(model))}",
            "the adapter was trained for another architecture: set 'model:' to its base model",
        )


def _linear_names(model: Any) -> list[str]:
    import torch

    linear = (name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    return sorted({name.rsplit(".", 1)[-1] for name in linear})


def _load_error(folder: AdapterFolder, exc: Exception) -> CandidateError:
    text = str(exc)
    if "size mismatch" in text:
        shapes = next((line.strip() for line in text.splitlines() if "size mismatch" in line), "")
        base = folder.base_model or "an unrecorded base model"
        return folder.error(
            f"its weights do not fit this model, so it was trained on another base model "
            f"(adapter_config.json says '{base}'): {shapes}",
            "set 'model:' to the model the adapter was trained on",
        )
    reason = (text.strip().splitlines() or [type(exc).__name__])[0]
    return folder.error(
        f"peft could not load it ({type(exc).__name__}: {reason})",
        "check that the folder was written by peft's save_pretrained for this model",
    )


def _check_loaded(peft_model: Any, folder: AdapterFolder) -> int:
    """Every tensor of the file must have a place in the model and every LoRA tensor of the
    model must come from the file; and the adapter must change something. Returns the number
    of LoRA modules."""
    from peft import get_peft_model_state_dict
    from peft.utils import load_peft_weights

    in_file = set(load_peft_weights(str(folder.path), device="cpu"))
    # save_embedding_layers=False: "auto" looks the base model up (a warning for aliases) to
    # decide about full embedding copies, which are not LoRA tensors and not compared here.
    in_model = set(get_peft_model_state_dict(peft_model, save_embedding_layers=False))
    if stray := sorted(key for key in in_file - in_model if "lora_" in key):
        raise folder.error(
            f"{len(stray)} of its {len(in_file)} tensors match no module of the model (e.g. "
            f"'{stray[0]}'), so they would be silently ignored",
            "the adapter was saved for another architecture or module naming: set 'model:' to "
            "its base model",
        )
    if absent := sorted(in_model - in_file):
        raise folder.error(
            f"{folder.weights.name} lacks {len(absent)} of the {len(in_model)} tensors its "
            f"config asks for (e.g. '{absent[0]}'), which would stay at their initial values",
            "the file is incomplete or belongs to another config: save the adapter again",
        )
    modules, active = _lora_activity(peft_model)
    changes_elsewhere = folder.config.get("use_dora") or folder.config.get("modules_to_save")
    if active == 0 and not changes_elsewhere:
        raise folder.error(
            f"all {modules} LoRA modules have a zero B (or A) matrix, so the adapter changes "
            "nothing (it was saved before training, or training did not update it)",
            "train the adapter (or check its training run) and save it again",
        )
    return modules


def _lora_activity(peft_model: Any) -> tuple[int, int]:
    """(LoRA modules, modules whose B·A is not zero)."""
    from peft.tuners.lora import LoraLayer

    modules = active = 0
    for module in peft_model.modules():
        if not isinstance(module, LoraLayer):
            continue
        pairs = [(module.lora_A[k].weight, module.lora_B[k].weight) for k in module.lora_A]
        embedding_a, embedding_b = module.lora_embedding_A, module.lora_embedding_B
        pairs += [(embedding_a[k], embedding_b[k]) for k in embedding_a]
        modules += 1
        active += any(bool(a.any()) and bool(b.any()) for a, b in pairs)
    return modules, active


# -- run record ----------------------------------------------------------------------------------


def describe(
    folder: AdapterFolder, merge: bool, attached: AttachedAdapter | None
) -> dict[str, Any]:
    """Adapter facts for run.json: where, which files, rank, scaling, targets, merged."""
    config = folder.config
    rank, alpha = config.get("r"), config.get("lora_alpha")
    facts: dict[str, Any] = {
        "path": str(folder.path),
        "hash": fingerprint_files(folder.path),
        "base_model": folder.base_model,
        "r": rank,
        "alpha": alpha,
        "scaling": _scaling(rank, alpha, bool(config.get("use_rslora"))),
        "target_modules": folder.target_modules,
        "use_dora": bool(config.get("use_dora")),
        "merged": merge,
    }
    if attached is not None:
        facts.update(base_check=attached.base_check, lora_modules=attached.lora_modules)
    return facts


def _scaling(rank: Any, alpha: Any, rslora: bool) -> float | None:
    """LoRA's update multiplier: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    if not isinstance(rank, int | float) or not isinstance(alpha, int | float) or rank <= 0:
        return None
    return float(alpha) / (math.sqrt(rank) if rslora else float(rank))


def _listing(names: list[str] | str, limit: int = 12) -> str:
    if isinstance(names, str):
        return f"pattern '{names}'"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
