"""Option checking shared by every metric: a typo in a suite must never be silently ignored.

Metric factories get the options a suite wrote as keyword arguments. ``checked_factory`` wraps a
constructor so unknown names fail with the valid list (and a "did you mean"), and
``check_type`` says which YAML type an option wants. ``create`` turns the TypeError/ValueError
raised here into one SpecError naming the suite file and line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any


def check_option_names(options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Reject misspelled options with the valid list."""
    allowed = sorted(allowed)
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            valid = ", ".join(allowed) if allowed else "none"
            raise TypeError(f"unknown option '{key}'.{hint} Valid options: {valid}")


def check_type(option: str, value: Any, types: tuple[type, ...]) -> None:
    """YAML gives bools, ints, floats, strings and lists; say which one an option wants."""
    # bool is an int subclass; an integer option given `true` is almost surely a mistake.
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise TypeError(f"option '{option}' must be {wanted}, got {value!r}")


def checked_factory(metric: str, build: Callable[..., Any], allowed: Iterable[str]) -> Any:
    """Wrap a constructor so unknown option names get a message listing the valid ones."""
    allowed = tuple(allowed)

    def factory(**options: Any) -> Any:
        check_option_names(options, allowed)
        return build(**options)

    factory.__name__ = f"create_{metric}"
    factory.__qualname__ = f"{getattr(build, '__qualname__', metric)}.create"
    factory.__module__ = getattr(build, "__module__", __name__)
    factory.__doc__ = f"Build the '{metric}' metric from its suite options ({', '.join(allowed)})."
    return factory


def library_version(distribution: str) -> str:
    """The installed version of a library, for signatures (it can change what is computed)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"
