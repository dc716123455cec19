"""Generate ``units.jsonl``: unit-conversion questions with exact integer answers.

Every answer is computed here from an exact conversion factor, never typed by hand. The output
is deterministic (no randomness), so ids stay stable. Re-run this script to regenerate the file:

    python golden/make_units.py
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "units.jsonl"


@dataclass(frozen=True)
class Unit:
    code: str
    singular: str
    plural: str

    def name(self, quantity: int) -> str:
        return self.singular if quantity == 1 else self.plural


KM = Unit("km", "kilometer", "kilometers")
M = Unit("m", "meter", "meters")
CM = Unit("cm", "centimeter", "centimeters")
MM = Unit("mm", "millimeter", "millimeters")
KG = Unit("kg", "kilogram", "kilograms")
G = Unit("g", "gram", "grams")
MG = Unit("mg", "milligram", "milligrams")
HOUR = Unit("h", "hour", "hours")
MINUTE = Unit("min", "minute", "minutes")
SECOND = Unit("s", "second", "seconds")
DAY = Unit("d", "day", "days")
WEEK = Unit("wk", "week", "weeks")
LITER = Unit("l", "liter", "liters")
ML = Unit("ml", "milliliter", "milliliters")
YEAR = Unit("yr", "year", "years")
MONTH = Unit("mo", "month", "months")
FOOT = Unit("ft", "foot", "feet")
INCH = Unit("in", "inch", "inches")
YARD = Unit("yd", "yard", "yards")

# (larger unit, smaller unit, exact number of smaller units in one larger unit)
FACTORS: list[tuple[Unit, Unit, int]] = [
    (KM, M, 1000),
    (M, CM, 100),
    (CM, MM, 10),
    (KG, G, 1000),
    (G, MG, 1000),
    (HOUR, MINUTE, 60),
    (MINUTE, SECOND, 60),
    (DAY, HOUR, 24),
    (WEEK, DAY, 7),
    (LITER, ML, 1000),
    (YEAR, MONTH, 12),
    (FOOT, INCH, 12),
    (YARD, FOOT, 3),
]

# Quantities of the larger unit: small easy ones first, then larger ones.
FORWARD_QUANTITIES = [1, 2, 3, 10, 7, 12, 25, 48]

# Reverse conversions (smaller -> larger): quantities of the larger unit, so the answer is whole.
REVERSE_CODES = {("km", "m"), ("kg", "g"), ("h", "min"), ("l", "ml"), ("ft", "in"), ("wk", "d")}
REVERSE_QUANTITIES = [1, 2, 5, 9]

DOZEN_CODE = "dozen"
DOZEN_ITEMS = ["eggs", "cookies", "roses", "pencils", "donuts", "apples", "bagels", "cupcakes"]
DOZEN_QUANTITIES = [1, 2, 3, 4, 10, 6, 15, 25]

# The two easiest questions (base and sampling both answered them): sentinels a regression gate
# must never lose, whatever its statistics say (a flip in any sample fails the gate).
SENTINELS = {"units-km-m-001", "units-m-cm-001"}


def _row(from_code: str, to_code: str, counter: int, question: str, answer: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"units-{from_code}-{to_code}-{counter:03d}",
        "question": question,
        "reference": str(answer),
    }
    if row["id"] in SENTINELS:
        row["sentinel"] = True
    return row


def build_rows() -> list[dict[str, Any]]:
    """Return every question, in a fixed order."""
    rows: list[dict[str, Any]] = []
    for big, small, factor in FACTORS:
        for counter, quantity in enumerate(FORWARD_QUANTITIES, start=1):
            question = f"How many {small.plural} are in {quantity} {big.name(quantity)}?"
            rows.append(_row(big.code, small.code, counter, question, quantity * factor))
    for counter, (quantity, item) in enumerate(zip(DOZEN_QUANTITIES, DOZEN_ITEMS, strict=True), 1):
        question = f"How many {item} are in {quantity} dozen?"
        rows.append(_row(DOZEN_CODE, "items", counter, question, quantity * 12))
    for big, small, factor in FACTORS:
        if (big.code, small.code) not in REVERSE_CODES:
            continue
        for counter, quantity in enumerate(REVERSE_QUANTITIES, start=1):
            amount = quantity * factor
            question = f"How many {big.plural} are in {amount} {small.name(amount)}?"
            rows.append(_row(small.code, big.code, counter, question, amount // factor))
    return rows


def main() -> None:
    rows = build_rows()
    ids = [row["id"] for row in rows]
    if len(ids) != len(set(ids)):
        raise SystemExit("duplicate ids generated")
    with OUTPUT.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {OUTPUT}")


if __name__ == "__main__":
    main()
