"""What a run records about where its results came from: the versions of the libraries that
compute them, and a hash of the golden examples they were computed on."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from importlib import metadata

import evalkit
from evalkit.golden import Example

KEY_LIBRARIES = (
    "torch", "transformers", "tokenizers", "sacrebleu", "rouge-score", "rapidfuzz",
    "pydantic", "numpy", "jinja2", "pytest",
)  # fmt: skip


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "evalkit": evalkit.__version__}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def dataset_hash(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.content_hash.encode())
    return digest.hexdigest()[:16]
