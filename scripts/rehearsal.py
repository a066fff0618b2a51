"""Helpers of scripts/rehearse-image.sh: the check of the job's output image and the figures file.

    python scripts/rehearsal.py check-image OUT_DIR
    python scripts/rehearsal.py figures --dir DIR [--extra KEY=VALUE ...]

Run with the rehearsal's venv (it has Pillow from requirements.txt); the smoke figures are read with the
smoke test's own parser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from comfy_worker_build.smoke import parse_figures  # noqa: E402

# test_input.json's 64×64 image is (250, 200, 10) and (20, 40, 200). ImageInvert computes 1 - x on ComfyUI's
# float image and SaveImage truncates 255·y to uint8, so some channels land one below 255 - x:
# (235, 215, 54) and (4, 54, 245), scaled to 128×128.
EXPECTED_SIZE = (128, 128)
EXPECTED_COLOURS = {(235, 215, 54), (4, 54, 245)}


def check_image(path: Path) -> list[str]:
    """Problems with the job's output image: its size and its exact colours."""
    from PIL import Image

    with Image.open(path) as image:
        size = image.size
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 16) or []}
    problems = []
    if size != EXPECTED_SIZE:
        problems.append(f"{path.name} is {size[0]}x{size[1]}, not {EXPECTED_SIZE[0]}x{EXPECTED_SIZE[1]}")
    if colours != EXPECTED_COLOURS:
        problems.append(f"{path.name} has the colours {sorted(colours)[:8]}, not {sorted(EXPECTED_COLOURS)}")
    return problems


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path`, links not followed (what `du -sb --apparent-size` counts)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


_DOWNLOADING = re.compile(r"^\s*Downloading (\S+) \(([\d.]+) (bytes|kB|MB|GB)\)\s*$", re.MULTILINE)
_UNITS = {"bytes": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def pip_downloads(log_text: str) -> dict[str, int]:
    """Files pip downloaded and their sizes, from its `Downloading NAME (SIZE)` lines (SIZE is rounded
    to pip's one decimal). Used because pip's own cache stays empty when the index's responses carry no
    caching headers, as behind some proxies."""
    return {name: round(float(size) * _UNITS[unit]) for name, size, unit in _DOWNLOADING.findall(log_text)}


def read_steps(path: Path) -> dict[str, float]:
    """`name<TAB>seconds` lines written by the rehearsal, in order."""
    steps: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, seconds = line.partition("\t")
            if name and seconds:
                steps[name] = round(float(seconds), 1)
    return steps


def job_timings(run_log: str) -> dict[str, Any]:
    """The `timings: {...}` line run_job.py prints for the job."""
    match = re.search(r"^timings: (\{.*\})$", run_log, re.MULTILINE)
    return json.loads(match.group(1)) if match else {}


def collect_figures(rehearsal_dir: Path, extra: dict[str, str | int]) -> dict[str, Any]:
    logs = rehearsal_dir / "logs"
    smoke_log = logs / "smoke.log"
    run_log = logs / "run-job.log"
    smoke = parse_figures(smoke_log.read_text(errors="replace")) if smoke_log.exists() else {}
    timings = job_timings(run_log.read_text(errors="replace")) if run_log.exists() else {}
    cache = rehearsal_dir / "pip-cache"
    downloads: dict[str, int] = {}
    for log in sorted(logs.glob("*.log")):
        if log.name != "run-job.log":  # the README command's own venv is not the image's
            downloads.update(pip_downloads(log.read_text(errors="replace")))
    figures: dict[str, Any] = dict(extra)
    figures.update({
        "pip_downloaded_files": len(downloads),
        "pip_downloaded_bytes": sum(downloads.values()),
        "pip_cache_bytes": tree_bytes(cache),
        "venv_bytes": tree_bytes(rehearsal_dir / "venv"),
        "comfyui_bytes": tree_bytes(rehearsal_dir / "comfyui"),
        "step_seconds": read_steps(rehearsal_dir / "steps.tsv"),
        "smoke": smoke,
        "readme_job_total_seconds": timings.get("total"),
        "readme_job_execute_seconds": timings.get("execute"),
    })
    return figures


def _extra(pairs: Sequence[str]) -> dict[str, str | int]:
    """KEY=VALUE pairs; a value of digits alone is a number."""
    values: dict[str, str | int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--extra {pair!r}: expected KEY=VALUE")
        values[key] = int(value) if value.isdigit() else value
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-image", help="check the PNG(s) the job wrote")
    check.add_argument("out_dir", type=Path)
    figures = commands.add_parser("figures", help="write DIR/figures.json and print it")
    figures.add_argument("--dir", type=Path, required=True)
    figures.add_argument("--extra", action="append", default=[], help="KEY=VALUE added to the figures")
    args = parser.parse_args(argv)

    if args.command == "check-image":
        images = sorted(args.out_dir.glob("*.png"))
        problems = [f"expected one PNG in {args.out_dir}, found {len(images)}"] if len(images) != 1 else []
        for image in images:
            problems += check_image(image)
        for problem in problems:
            print(f"output image: {problem}", file=sys.stderr)
        if not problems:
            print(f"output image: {images[0].name} is 128x128 with exactly the colours "
                  f"{sorted(EXPECTED_COLOURS)}")
        return 1 if problems else 0

    result = collect_figures(args.dir, _extra(args.extra))
    (args.dir / "figures.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
