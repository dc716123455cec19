"""Few-shot examples: the train file they come from, the seeded draw for each test example, and
the collection-time check that the train file shares no id and no input with the test set.

The draw depends only on the seed and the test example's id (``shot_rng``), never on the order,
the batch or ``--evalkit-limit``: an example is shown the same shots in every run, so its cache
key and its score are stable.
"""

from __future__ import annotations

import hashlib
import json
import random
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalkit.errors import SpecError
from evalkit.golden import Example, load_golden


def load_train(path: Path) -> list[Example]:
    """Every example of a train file; each needs a reference, which is the shot's answer. Bad
    lines raise a SpecError at the train file's line, as the golden file's do."""
    train = load_golden(path)
    for example in train:
        if not example.references:
            raise SpecError(
                "a train example needs a 'reference': it is the answer the shot shows",
                path=example.path,
                line=example.line,
                field="reference",
            )
    return train


def shot_rng(seed: int, example_id: str) -> random.Random:
    """The generator of one test example's draw: seeded by SHA-256 of ``"<seed>:<id>"``."""
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_shots(train: Sequence[Example], k: int, seed: int, example_id: str) -> list[Example]:
    """``k`` distinct train examples for one test example, in the drawn order."""
    return shot_rng(seed, example_id).sample(list(train), k)


def _normal(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def input_key(example: Example, fields: Sequence[str]) -> str:
    """What the model is asked, compared up to case and whitespace: the values of the fields
    the templates read (all fields but the id when they read none)."""
    names = list(fields) or sorted(k for k in example.fields if k != "id")
    return json.dumps([_normal(example.fields.get(name)) for name in names])


def check_disjoint(
    train: Sequence[Example], test: Sequence[Example], fields: Sequence[str], used_by: str
) -> None:
    """Raise a SpecError at the first train example whose id, or whose input (``input_key``),
    is also a test example's: shots would show the model a test question with its answer.
    ``used_by`` says which candidate field named the train file, for the message."""
    ids = {_normal(e.id): e for e in test}
    inputs = {input_key(e, fields): e for e in test}
    for shot in train:
        clash = ids.get(_normal(shot.id))
        what, field = "id", "id"
        if clash is None:
            clash = inputs.get(input_key(shot, fields))
            what, field = "input", ", ".join(fields) or None
        if clash is not None:
            raise SpecError(
                f"this train example has the same {what} as test example '{clash.id}' "
                f"({clash.where}); shots must never show the model a test question with its "
                f"answer: remove it from the train file ({used_by})",
                path=shot.path,
                line=shot.line,
                field=field,
            )
