"""The compression table of a main job: every variant of the trained model, measured in one run.

Runs `tinyfm run` (the default recipe: fp32, int8, structured pruning, dsconv, low rank, distillation; or
--recipe reviews: MiniLM fine-tuned, its int8 form, word-level students with and without distillation), or
reads an existing run directory with --run, and writes benchmarks/out/<section>.json and that section of
BENCHMARKS.md (`compress` for the images, `nlp` for the reviews), and the same table between the section's
markers in README.md / docs/compression.md / docs/nlp.md. The numbers come from the run's results.json:
nothing is typed twice.

Usage:
    python benchmarks/compress.py                      # tinyfm run into runs/fashion-mnist, then the table
    python benchmarks/compress.py --run runs/fashion-mnist
    python benchmarks/compress.py --recipe reviews --run runs/reviews
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
# recipe -> (section name, title, the documents that show the table between `<!-- section:begin/end -->`)
SECTIONS = {
    "fashion-mnist": ("compress", "Compression: every variant of the seed CNN",
                      (ROOT / "README.md", ROOT / "docs" / "compression.md")),
    "reviews": ("nlp", "Text: MiniLM fine-tuned, its int8 form and distilled students",
                (ROOT / "README.md", ROOT / "docs" / "nlp.md")),
}
from tinyfm.report import markdown_table, variant_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="an existing run directory (default: run `tinyfm run` now)")
    ap.add_argument("--recipe", default="fashion-mnist")
    args = ap.parse_args()
    run_dir = args.run
    recipe = "" if args.recipe == "fashion-mnist" else f" --recipe {args.recipe}"
    command = f"python benchmarks/compress.py{recipe}" + (f" --run {run_dir}" if run_dir else "")
    if run_dir is None:
        run_dir = Path("runs") / args.recipe
        subprocess.run([sys.executable, "-m", "tinyfm", "run", "--recipe", args.recipe, "--out", str(run_dir)],
                       check=True)
    section, title, docs = SECTIONS.get(args.recipe, ("compress", f"Compression ({args.recipe})", ()))
    results = read_json(run_dir / "results.json")
    rows = variant_rows(results)
    unit = "texts" if results.get("task") == "text-classification" else "images"
    save_json(section, {"run": str(run_dir), "results": results, "rows": rows})
    rejected = "".join(f"\n- rejected **{r['name']}**: {r['reason']}" for r in results.get("rejected", []))
    notes = "".join(f"\n- **{v['name']}**: {v['notes']}" for v in results["variants"] if v.get("notes"))
    body = (f"## {title} (`tinyfm run`, recipe {args.recipe})\n\n"
            f"{markdown_table(rows)}\n\nΔ, size × and speed-ups are against {results.get('baseline')}; test split "
            f"({results['data']['test']:,} {unit}); latency batch 1, throughput batch "
            f"{results['variants'][0].get('throughput_batch')}, {results['machine'].get('threads')} threads, "
            f"{results['variants'][0].get('repeats')} interleaved rounds (median).{notes}{rejected}\n\n"
            f"Command: `{command}` (the run itself: `tinyfm run{recipe}`, "
            f"{results.get('seconds_total', 0) / 60:.1f} min"
            f"{_stages(results)})  \n"
            f"Machine: {machine_line({**results['machine'], 'loadavg': []})}")
    update_section(section, body)
    for doc in docs:  # the same table where the README and the guides show it (between the markers)
        if f"<!-- {section}:begin -->" in doc.read_text(encoding="utf-8"):
            update_section(section, body.replace("## ", "### ", 1), doc)
    print(body)


def _stages(results: dict) -> str:
    stages = results.get("seconds_by_stage") or {}
    return ": " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()) if stages else ""


if __name__ == "__main__":
    main()
