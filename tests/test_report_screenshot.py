"""`evalkit report DIR --screenshot PNG`: the picture of a report (the README's docs/report.png)."""

from __future__ import annotations

import struct
from pathlib import Path

from reportdata import make_run, require_chromium

from evalkit.cli import main as cli_main
from evalkit.results import save_run


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_cli_screenshot_writes_a_png(tmp_path: Path) -> None:
    require_chromium()
    save_run(make_run(30, ("base", "lora")), tmp_path / "reports")
    out = tmp_path / "docs" / "report.png"
    assert cli_main(["report", str(tmp_path / "reports"), "--screenshot", str(out)]) == 0
    assert png_size(out) == (1280, 1500)
    assert out.stat().st_size > 20_000  # a rendered page, not a blank image
