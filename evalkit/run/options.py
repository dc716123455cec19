"""What a run of a suite is asked to do: ``RunOptions``. Apart from the runner so that pytest's
session (built at every pytest start, evalkit's plugin being an entry point) and collection do
not import the run pipeline, the gates and numpy: they load when a suite runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evalkit._files import progress_enabled
from evalkit.cache import Cache
from evalkit.errors import UPDATE_COMMAND


@dataclass
class RunOptions:
    report_dir: Path
    cache: Cache
    limit: int | None = None
    candidates: Sequence[str] | None = None
    device: str | None = None
    update_baseline: bool = False
    seed: int = 0
    progress: bool = field(default_factory=progress_enabled)
    full: bool = False
    """Ignore the candidates' own ``limit:`` (``--evalkit-full``): every example for everyone."""
    update_command: str = UPDATE_COMMAND
    """What messages tell the user to run to accept baselines (pytest's option, or the CLI's)."""
