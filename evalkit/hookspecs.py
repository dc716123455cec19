"""Hooks evalkit adds to pytest. Implement them in ``conftest.py`` or in a pytest plugin.

pytest recognizes hook implementations in conftest files and plugins only by the ``pytest_``
prefix, so evalkit's hooks carry it (as pytest-xdist's ``pytest_xdist_*`` and pytest-html's
``pytest_html_*`` do).
"""

from __future__ import annotations

from typing import Any, Protocol

import pytest


class MetricRegistrar(Protocol):
    def __call__(self, name: str, factory: Any, *, group: bool = False) -> None:
        """Make ``name`` usable in suites; ``factory(**options)`` builds the metric (a metric
        class, or a function decorated with ``@evalkit.metric``), or with ``group=True``
        returns ``{column: metric}``. The built-in metrics register through the same call."""
        ...


@pytest.hookspec(historic=True)
def pytest_evalkit_register_metrics(register: MetricRegistrar) -> None:
    """Register metrics for suites, e.g. ``register("brevity", Brevity)``.

    Called once per plugin and per conftest.py, before any suite that the conftest.py applies
    to is collected: at configure time for plugins and the conftest files pytest loads first,
    and when pytest loads a deeper conftest.py (before it collects that folder). Metrics are
    registered for the whole session.
    """
