"""Merge the per-topic results in docs/benchmarks/*.md into docs/benchmarks.md (run after any benchmark).

    .venv/bin/python benchmarks/merge_results.py
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"
ORDER = ["io", "sim", "motion", "ctf", "ctf_real", "picking", "picking_retrain", "pipeline", "endtoend", "web", "templates"]


def _demote_headings(text: str) -> str:
    """Turn each section's headings one level down (outside fenced code) so they nest under the title."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if (line.startswith("#") and not fenced) else line)
    return "\n".join(out)


def main() -> None:
    parts = sorted((DOCS / "benchmarks").glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    header = [
        "# cryowarp benchmarks",
        "",
        "Measured results, one section per stage; each section names the command that produced it and the",
        "machine it ran on. Regenerate a section by running its `benchmarks/bench_<topic>.py`, then this file",
        "with `.venv/bin/python benchmarks/merge_results.py`. Timings on this 2-vCPU VM vary by up to 3× between",
        "runs (toolchain.md), so medians of several runs are given where the budget allowed, and sections",
        "say when a number comes from a single run.",
        "",
        f"Reference machine: {os.cpu_count()} vCPU ({platform.processor() or platform.machine()}), 24 GB RAM, no GPU, "
        f"Python {platform.python_version()}, torch {torch.__version__}.",
        "",
    ]
    body = []
    for p in parts:
        body += [_demote_headings(p.read_text().strip()), ""]
    (DOCS / "benchmarks.md").write_text("\n".join(header + body) + "\n")
    print(f"wrote {DOCS / 'benchmarks.md'} from {len(parts)} sections")


if __name__ == "__main__":
    main()
