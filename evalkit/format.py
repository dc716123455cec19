"""How evalkit writes numbers, confidence intervals and p-values, in one place.

Two precisions on purpose: pytest messages (a failing gate item) print 4 significant digits so
a reader can compare them with run.json; the report, the Markdown summary and the verdict table
print shorter numbers that fit a table cell. Each function names the place that uses it.
"""

from __future__ import annotations

import math

P_FLOOR = 0.001
"""p-values below this are written as '<0.001' in the report and the summary."""


def counted(number: int, noun: str) -> str:
    """``1 suite``, ``3 suites``: a count with its noun (regular plurals only)."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def precise(value: float | None) -> str:
    """4 significant digits (gate messages): 'n/a' for no value."""
    return "n/a" if value is None else f"{value:.4g}"


def precise_signed(value: float) -> str:
    """A change in a gate message, always with its sign."""
    return f"{value:+.4g}"


def short(value: float | None, digits: int = 3) -> str:
    """Short human number (report, summary): 3 significant digits, no exponent for everyday
    magnitudes, thousands separated."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1e-3:
        decimals = max(0, digits - 1 - math.floor(math.log10(magnitude)))
        return f"{value:.{decimals}f}"
    return f"{value:.{digits - 1}e}"


def short_signed(value: float | None) -> str:
    """A change in the report or summary: '+' before positive values, 'n/a' for none."""
    text = short(value)
    return text if value is None or text.startswith("-") or text == "0" else "+" + text


def tick(value: float) -> str:
    """Chart tick labels are round numbers already: print them without padding zeros."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.6g}"


def fixed(value: float | None, missing: str = "") -> str:
    """3 decimals (the terminal verdict table, judge agreement)."""
    return missing if value is None else f"{value:.3f}"


def fixed_signed(value: float) -> str:
    return f"{value:+.3f}"


def p_value(value: float | None, missing: str = "n/a") -> str:
    """A p-value in the report or summary: 3 decimals, '<0.001' below that."""
    if value is None:
        return missing
    return f"<{P_FLOOR}" if value < P_FLOOR else f"{value:.3f}"


def p_equals(value: float | None) -> str:
    """'p' followed by this reads 'p=0.042' or 'p<0.001'."""
    text = p_value(value)
    return text if text.startswith("<") else f"={text}"


def p_significant(value: float) -> str:
    """A p-value in a gate message or the verdict table: 3 significant digits."""
    return f"{value:.3g}"
