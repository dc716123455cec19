"""Generate ``train_terse.jsonl``: a TRAIN split that teaches the answer format of the demo suites.

The LoRA adapter of the demo (``golden/train_adapter.py``) learns *form*, not the test answers:
capitals -> the city only, units -> the number only. So no input here may appear in the golden
test files (``capitals.jsonl``, ``units.jsonl``):

- capitals: capitals of states and provinces (US, Canada, Australia), never of countries; a
  region whose name is also a country in the golden file (Georgia) is dropped;
- units: unit pairs the golden file does not ask about (meters -> millimeters, hours ->
  seconds, ...), with the same question template, answers computed from exact factors.

Each row carries ``suite`` (which suite's prompt renders it) and that suite's fields. The output is
deterministic (no randomness); re-run to regenerate, and a test checks that the committed file is
what this script writes and that no input overlaps a golden input:

    python golden/make_train_terse.py
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "train_terse.jsonl"
GOLDEN_CAPITALS = HERE / "capitals.jsonl"

REGION_CAPITALS: list[tuple[str, str]] = [
    # United States
    ("Alabama", "Montgomery"),
    ("Alaska", "Juneau"),
    ("Arizona", "Phoenix"),
    ("Arkansas", "Little Rock"),
    ("California", "Sacramento"),
    ("Colorado", "Denver"),
    ("Connecticut", "Hartford"),
    ("Delaware", "Dover"),
    ("Florida", "Tallahassee"),
    ("Georgia", "Atlanta"),  # also a country in capitals.jsonl: dropped by build_rows
    ("Hawaii", "Honolulu"),
    ("Idaho", "Boise"),
    ("Illinois", "Springfield"),
    ("Indiana", "Indianapolis"),
    ("Iowa", "Des Moines"),
    ("Kansas", "Topeka"),
    ("Kentucky", "Frankfort"),
    ("Louisiana", "Baton Rouge"),
    ("Maine", "Augusta"),
    ("Maryland", "Annapolis"),
    ("Massachusetts", "Boston"),
    ("Michigan", "Lansing"),
    ("Minnesota", "Saint Paul"),
    ("Mississippi", "Jackson"),
    ("Missouri", "Jefferson City"),
    ("Montana", "Helena"),
    ("Nebraska", "Lincoln"),
    ("Nevada", "Carson City"),
    ("New Hampshire", "Concord"),
    ("New Jersey", "Trenton"),
    ("New Mexico", "Santa Fe"),
    ("New York", "Albany"),
    ("North Carolina", "Raleigh"),
    ("North Dakota", "Bismarck"),
    ("Ohio", "Columbus"),
    ("Oklahoma", "Oklahoma City"),
    ("Oregon", "Salem"),
    ("Pennsylvania", "Harrisburg"),
    ("Rhode Island", "Providence"),
    ("South Carolina", "Columbia"),
    ("South Dakota", "Pierre"),
    ("Tennessee", "Nashville"),
    ("Texas", "Austin"),
    ("Utah", "Salt Lake City"),
    ("Vermont", "Montpelier"),
    ("Virginia", "Richmond"),
    ("Washington", "Olympia"),
    ("West Virginia", "Charleston"),
    ("Wisconsin", "Madison"),
    ("Wyoming", "Cheyenne"),
    # Canada
    ("Alberta", "Edmonton"),
    ("British Columbia", "Victoria"),
    ("Manitoba", "Winnipeg"),
    ("New Brunswick", "Fredericton"),
    ("Newfoundland and Labrador", "St. John's"),
    ("Nova Scotia", "Halifax"),
    ("Ontario", "Toronto"),
    ("Prince Edward Island", "Charlottetown"),
    ("Quebec", "Quebec City"),
    ("Saskatchewan", "Regina"),
    ("Yukon", "Whitehorse"),
    ("Northwest Territories", "Yellowknife"),
    ("Nunavut", "Iqaluit"),
    # Australia
    ("New South Wales", "Sydney"),
    ("Victoria", "Melbourne"),
    ("Queensland", "Brisbane"),
    ("South Australia", "Adelaide"),
    ("Western Australia", "Perth"),
    ("Tasmania", "Hobart"),
]


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
MG = Unit("mg", "milligram", "milligrams")
WEEK = Unit("wk", "week", "weeks")
DAY = Unit("d", "day", "days")
HOUR = Unit("h", "hour", "hours")
MINUTE = Unit("min", "minute", "minutes")
SECOND = Unit("s", "second", "seconds")
YARD = Unit("yd", "yard", "yards")
INCH = Unit("in", "inch", "inches")
DECADE = Unit("dec", "decade", "decades")
CENTURY = Unit("cen", "century", "centuries")
YEAR = Unit("yr", "year", "years")
DOLLAR = Unit("usd", "dollar", "dollars")
CENT = Unit("ct", "cent", "cents")

# Pairs that units.jsonl never asks about (it uses km->m, m->cm, cm->mm, kg->g, ...).
TRAIN_FACTORS: list[tuple[Unit, Unit, int]] = [
    (M, MM, 1000),
    (KM, CM, 100000),
    (HOUR, SECOND, 3600),
    (DAY, MINUTE, 1440),
    (WEEK, HOUR, 168),
    (YARD, INCH, 36),
    (KG, MG, 1000000),
    (DECADE, YEAR, 10),
    (CENTURY, YEAR, 100),
    (DOLLAR, CENT, 100),
]
FORWARD_QUANTITIES = [1, 2, 3, 4, 6, 9]
REVERSE_PAIRS = {("h", "s"), ("d", "min"), ("wk", "h"), ("m", "mm")}
REVERSE_QUANTITIES = [1, 3, 4]


def golden_countries() -> set[str]:
    """Country names in the golden capitals file, lower-cased."""
    with GOLDEN_CAPITALS.open(encoding="utf-8") as handle:
        return {json.loads(line)["country"].lower() for line in handle if line.strip()}


def capital_rows() -> list[dict[str, str]]:
    taken = golden_countries()
    return [
        {
            "id": f"train-cap-{_slug(region)}",
            "suite": "capitals",
            "country": region,
            "reference": city,
        }
        for region, city in REGION_CAPITALS
        if region.lower() not in taken
    ]


def unit_rows() -> list[dict[str, str]]:
    rows = []
    for big, small, factor in TRAIN_FACTORS:
        for quantity in FORWARD_QUANTITIES:
            question = f"How many {small.plural} are in {quantity} {big.name(quantity)}?"
            rows.append(_unit_row(big, small, quantity, question, quantity * factor))
    for big, small, factor in TRAIN_FACTORS:
        if (big.code, small.code) not in REVERSE_PAIRS:
            continue
        for quantity in REVERSE_QUANTITIES:
            amount = quantity * factor
            question = f"How many {big.plural} are in {amount} {small.name(amount)}?"
            rows.append(_unit_row(small, big, amount, question, quantity))
    return rows


def _unit_row(
    source: Unit, target: Unit, amount: int, question: str, answer: int
) -> dict[str, str]:
    return {
        "id": f"train-units-{source.code}-{target.code}-{amount}",
        "suite": "units",
        "question": question,
        "reference": str(answer),
    }


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def build_rows() -> list[dict[str, str]]:
    """Every training row, in a fixed order."""
    return capital_rows() + unit_rows()


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
