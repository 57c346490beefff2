"""The compression table of the main job: every variant of the seed CNN, measured in one run.

Runs `tinyfm run` (the default recipe: fp32, int8, structured pruning, dsconv, low rank, distillation), or
reads an existing run directory with --run, and writes benchmarks/out/compress.json and the `compress`
section of BENCHMARKS.md (and of README.md and docs/compression.md, between their `compress` markers).
The numbers come from the run's results.json: nothing is typed twice.

Usage:
    python benchmarks/compress.py                      # tinyfm run into runs/fashion-mnist, then the table
    python benchmarks/compress.py --run runs/fashion-mnist
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line, save_json, update_section  # noqa: E402

from tinyfm.io import read_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", ROOT / "docs" / "compression.md")
from tinyfm.report import markdown_table, variant_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="an existing run directory (default: run `tinyfm run` now)")
    ap.add_argument("--recipe", default="fashion-mnist")
    args = ap.parse_args()
    run_dir = args.run
    command = f"python benchmarks/compress.py --run {run_dir}" if run_dir else "python benchmarks/compress.py"
    if run_dir is None:
        run_dir = Path("runs") / args.recipe
        subprocess.run([sys.executable, "-m", "tinyfm", "run", "--recipe", args.recipe, "--out", str(run_dir)],
                       check=True)
    results = read_json(run_dir / "results.json")
    rows = variant_rows(results)
    save_json("compress", {"run": str(run_dir), "results": results, "rows": rows})
    rejected = "".join(f"\n- rejected **{r['name']}**: {r['reason']}" for r in results.get("rejected", []))
    notes = "".join(f"\n- **{v['name']}**: {v['notes']}" for v in results["variants"] if v.get("notes"))
    body = (f"## Compression: every variant of the seed CNN (`tinyfm run`, recipe {args.recipe})\n\n"
            f"{markdown_table(rows)}\n\nΔ, size × and speed-ups are against {results.get('baseline')}; test split "
            f"({results['data']['test']} images); latency batch 1, throughput batch "
            f"{results['variants'][0].get('throughput_batch')}, {results['machine'].get('threads')} threads, "
            f"{results['variants'][0].get('repeats')} interleaved rounds (median).{notes}{rejected}\n\n"
            f"Command: `{command}` (the run itself: `tinyfm run`, {results.get('seconds_total', 0) / 60:.1f} min"
            f"{_stages(results)})  \n"
            f"Machine: {machine_line({**results['machine'], 'loadavg': []})}")
    update_section("compress", body)
    for doc in DOCS:  # the same table where the README and the compression guide show it (between the markers)
        if "<!-- compress:begin -->" in doc.read_text(encoding="utf-8"):
            update_section("compress", body.replace("## Compression", "### Compression", 1), doc)
    print(body)


def _stages(results: dict) -> str:
    stages = results.get("seconds_by_stage") or {}
    return ": " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()) if stages else ""


if __name__ == "__main__":
    main()
