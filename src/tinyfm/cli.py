"""The `tinyfm` command: `run` (the main job), `train`, `eval`, `predict`, `export`, `serve`, `report`, `models`,
`recipes`.

Every command takes the recipe flags (`--recipe`, then per-setting flags that override it). Bad input
prints one line naming the file, flag or value and exits with status 2; nothing existing is overwritten.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tinyfm.errors import TinyfmError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="tinyfm: train small models, make them fast, shrink them, and measure every step.")

Recipe = Annotated[str, typer.Option("--recipe", "-r", help="Built-in recipe name or a YAML/JSON file.")]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/<recipe name>).")]
Quick = Annotated[bool, typer.Option("--quick", help="A data subset (10,000 training images) and 3 epochs: "
                                     "a demo in about a minute.")]
DataDir = Annotated[str | None, typer.Option("--data-dir", help="Dataset directory (default $TINYFM_DATA, "
                                             "then the system directory).")]
Download = Annotated[bool | None, typer.Option("--download/--no-download", help="Fetch missing data (checksummed).")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Registry model name (see `tinyfm models`).")]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Training epochs.")]
Batch = Annotated[int | None, typer.Option("--batch-size", help="Global batch size.")]
Lr = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
Device = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps.")]
Amp = Annotated[str | None, typer.Option("--amp", help="auto | off | bf16 | fp16.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Training seed.")]
Threads = Annotated[int | None, typer.Option("--threads", help="Threads for training and timing.")]
Augment = Annotated[bool | None, typer.Option("--augment/--no-augment", help="Random shifts and flips.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
ChannelsLast = Annotated[bool | None, typer.Option("--channels-last/--no-channels-last",
                                                   help="NHWC memory format for convolution models.")]
Compile = Annotated[bool | None, typer.Option("--compile/--no-compile", help="Wrap the model in torch.compile.")]
GradAccum = Annotated[int | None, typer.Option("--grad-accum", help="Micro-batches accumulated per optimizer step.")]
Set = Annotated[list[str] | None, typer.Option("--set", help="Override any recipe setting: KEY=VALUE with a dotted "
                                               "key, e.g. --set train.weight_decay=0.01 (repeatable).")]
RunDir = Annotated[Path, typer.Argument(help="A run directory written by `tinyfm run` or `tinyfm train`.")]


def _config(recipe: str, quick: bool, **flags: Any):
    from tinyfm.config import load_recipe, parse_set
    from tinyfm.pipeline import quick_overrides

    names = {"data_dir": "data.data_dir", "download": "data.download", "model": "model.name",
             "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr", "device": "train.device",
             "amp": "train.amp", "seed": "train.seed", "augment": "data.augment",
             "channels_last": "train.channels_last", "compile": "train.compile", "grad_accum": "train.grad_accum"}
    base = load_recipe(recipe)
    overrides = quick_overrides(base.task) if quick else {}
    settings = parse_set(flags.get("settings"))
    if flags.get("model") not in (None, base.model.name) or settings.get("model.name") not in (None, base.model.name):
        overrides["model.kwargs"] = {}  # the recipe's kwargs are its own model's (MiniLM's pooling); --set adds new
    overrides.update(settings)  # --set first: the named flags are the more specific
    overrides.update({names[k]: v for k, v in flags.items() if k in names and v is not None})
    if flags.get("threads") is not None:
        overrides.update({"train.threads": flags["threads"], "measure.threads": flags["threads"]})
    cfg = load_recipe(recipe, overrides)
    if quick:
        cfg.name = f"{cfg.name}-quick"
    return cfg


@app.command()
def run(recipe: Recipe = "fashion-mnist", out: Out = None, quick: Quick = False, data_dir: DataDir = None,
        download: Download = None, model: Model = None, epochs: Epochs = None, batch_size: Batch = None,
        lr: Lr = None, device: Device = None, amp: Amp = None, seed: Seed = None, threads: Threads = None,
        augment: Augment = None, channels_last: ChannelsLast = None, compile: Compile = None,
        grad_accum: GradAccum = None, settings: Set = None, quiet: Quiet = False) -> None:
    """The main job: data -> train -> test accuracy -> ONNX export + parity -> measure -> report."""
    from tinyfm.pipeline import run as run_pipeline

    cfg = _config(recipe, quick, data_dir=data_dir, download=download, model=model, epochs=epochs,
                  batch_size=batch_size, lr=lr, device=device, amp=amp, seed=seed, threads=threads, augment=augment,
                  channels_last=channels_last, compile=compile, grad_accum=grad_accum, settings=settings)
    run_dir, results = run_pipeline(cfg, out, quiet=quiet)
    _print_summary(run_dir, results)


@app.command()
def train(recipe: Recipe = "fashion-mnist", out: Out = None, quick: Quick = False, data_dir: DataDir = None,
          download: Download = None, model: Model = None, epochs: Epochs = None, batch_size: Batch = None,
          lr: Lr = None, device: Device = None, amp: Amp = None, seed: Seed = None, threads: Threads = None,
          augment: Augment = None, channels_last: ChannelsLast = None, compile: Compile = None,
          grad_accum: GradAccum = None, settings: Set = None, resume: Annotated[Path | None, typer.Option(
              "--resume", help="Continue the run in this directory from its last checkpoint.")] = None,
          nproc: Annotated[int | None, typer.Option(
              "--nproc", help="Data-parallel processes on this machine (re-runs this command under torchrun).")] = None,
          quiet: Quiet = False) -> None:
    """Train only: config.json, metrics.jsonl, model.safetensors + model.json, last.ckpt, results.json."""
    from tinyfm.pipeline import train_only

    if nproc is not None:  # re-run under torchrun (which is given the arguments without --nproc)
        from tinyfm.train.launch import launch_torchrun

        raise typer.Exit(launch_torchrun(nproc, sys.argv[2:]))

    if resume is not None:
        from tinyfm.errors import ConfigError
        from tinyfm.pipeline import load_run_config, with_data_dir

        given = {"--out": out, "--quick": quick or None, "--download": download, "--model": model, "--epochs": epochs,
                 "--batch-size": batch_size, "--lr": lr, "--device": device, "--amp": amp, "--seed": seed,
                 "--threads": threads, "--augment": augment, "--channels-last": channels_last, "--compile": compile,
                 "--grad-accum": grad_accum, "--set": settings or None}
        changed = [flag for flag, value in given.items() if value is not None]
        if changed:  # the checkpoint's optimizer, schedule and epochs belong to the run's own settings
            raise ConfigError(f"--resume {resume}: continues with the settings in its config.json; "
                              f"{', '.join(changed)} cannot change them (drop them, or start a new run)")
        cfg = with_data_dir(load_run_config(resume), data_dir)
        run_dir = train_only(cfg, resume, quiet=quiet, resume=True)
    else:
        cfg = _config(recipe, quick, data_dir=data_dir, download=download, model=model, epochs=epochs,
                      batch_size=batch_size, lr=lr, device=device, amp=amp, seed=seed, threads=threads,
                      augment=augment, channels_last=channels_last, compile=compile, grad_accum=grad_accum,
                      settings=settings)
        run_dir = train_only(cfg, out, quiet=quiet)
    if run_dir is not None:
        from tinyfm.io import read_json

        _print_summary(run_dir, read_json(run_dir / "results.json"))


@app.command("eval")
def eval_(run_dir: RunDir, data_dir: DataDir = None, onnx: Annotated[bool, typer.Option(
        "--onnx", help="Evaluate model.onnx with ONNX Runtime instead of PyTorch.")] = False) -> None:
    """Test accuracy of a run's model (rebuilt from model.json + model.safetensors, or model.onnx)."""
    from tinyfm.pipeline import evaluate_run

    res = evaluate_run(run_dir, data_dir=data_dir, onnx=onnx)
    typer.echo(f"{res['model']}: test accuracy {res['accuracy']:.2%} on {res['n']} {res['unit']} ({res['runtime']})")


@app.command()
def predict(run_dir: RunDir, inputs: Annotated[list[Path] | None, typer.Argument(
                help="PNG/JPEG images or .npy arrays (image runs).")] = None,
            top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes to show per input.")] = 3,
            invert: Annotated[bool, typer.Option("--invert", help="Invert grey levels (dark object on light "
                                                 "background -> Fashion-MNIST style).")] = False,
            onnx: Annotated[bool, typer.Option("--onnx", help="Use model.onnx (ONNX Runtime).")] = False,
            text: Annotated[list[str] | None, typer.Option(
                "--text", "-t", help="A text to classify (text runs; repeatable).")] = None,
            texts_file: Annotated[Path | None, typer.Option(
                "--texts-file", help="A UTF-8 file of texts to classify, one per line (text runs).")] = None) -> None:
    """Top-k classes with probabilities for each input image, or for each text of a text run."""
    from tinyfm.pipeline import predict_files, predict_texts

    if top_k < 1:
        raise TinyfmError(f"--top-k: got {top_k}, expected an integer >= 1")
    if text or texts_file:
        from tinyfm.data.textfiles import shorten

        for t, preds in predict_texts(run_dir, list(text or []), texts_file, top_k=top_k, onnx=onnx):
            # the text is echoed to say which line is which
            typer.echo(f"{shorten(t, 80)}: " + ", ".join(f"{name} {p:.1%}" for name, p in preds))
        return
    if not inputs:
        raise TinyfmError("predict: give image files, or --text / --texts-file for a text run")
    for path, preds in predict_files(run_dir, inputs, top_k=top_k, invert=invert, onnx=onnx):
        typer.echo(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in preds))


@app.command()
def export(run_dir: RunDir, data_dir: DataDir = None) -> None:
    """(Re-)export model.onnx from a run's weights and check parity against PyTorch on test inputs."""
    from tinyfm.pipeline import export_run

    parity = export_run(run_dir, data_dir=data_dir)
    typer.echo(f"{run_dir / 'model.onnx'}: parity on {parity['n']} test {parity['unit']}: max |Δlogit| "
               f"{parity['max_abs_diff']:.2e}, argmax agreement {parity['argmax_agreement']:.2%}")


@app.command()
def compress(run_dir: RunDir, passes: Annotated[str | None, typer.Option(
        "--passes", "-p", help="Variants to build: comma between variants, + between chained passes, e.g. "
        "quantize,prune+quantize,dsconv (default: the recipe's compress.variants).")] = None,
        max_drop: Annotated[float | None, typer.Option(
            "--max-drop", help="Pick the smallest variant within this validation-accuracy drop (pp).")] = None,
        data_dir: DataDir = None, quiet: Quiet = False) -> None:
    """Build compressed variants of a run (quantize, prune, dsconv, distill, lowrank) and measure them."""
    from tinyfm.pipeline import compress_run

    results = compress_run(run_dir, passes, max_drop, data_dir=data_dir, quiet=quiet)
    _print_sensitivity(run_dir, [v["name"] for v in results["variants"]])
    _print_summary(run_dir, results)
    _print_selection(results.get("selection"))


def _print_sensitivity(run_dir: Path, names: list[str]) -> None:
    """Per-layer int8 sensitivity tables recorded by the quantize pass (variants/<name>/variant.json)."""
    from rich.console import Console
    from rich.table import Table

    from tinyfm.io import read_json

    for name in names:
        path = run_dir / "variants" / name / "variant.json"
        steps = read_json(path)["steps"] if path.is_file() else []
        for step in steps:
            rows = step["changes"].get("sensitivity") if step["pass"] == "quantize" else None
            if not rows:
                continue
            t = Table(title=f"{name}: per-layer int8 sensitivity (validation split)")
            keys = list(rows[0])
            for k in keys:
                t.add_column(k)
            for r in rows:
                t.add_row(*(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys))
            Console(width=None if sys.stdout.isatty() else 160).print(t)


def _print_selection(selection: dict[str, Any] | None) -> None:
    if not selection:
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"accuracy control: max drop {selection['max_drop_pp']} pp (validation split)")
    for col in ("variant", "val acc %", "drop pp", "size KiB", "decision"):
        t.add_column(col)
    for d in selection["decisions"]:
        mark = "[green]chosen[/]" if d["name"] == selection["chosen"] else d["reason"]
        t.add_row(d["name"], f"{d['val_accuracy'] * 100:.2f}", f"{d['drop_pp']:+.2f}", f"{d['size_bytes'] / 1024:.1f}",
                  mark)
    Console(width=None if sys.stdout.isatty() else 160).print(t)


@app.command()
def serve(run_dir: RunDir, variant: Annotated[str, typer.Option(
        "--variant", help="Variant to serve: fp32-onnx (model.onnx) or a name under variants/.")] = "fp32-onnx",
        host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
        workers: Annotated[int, typer.Option("--workers", help="Server processes, one ORT session each.")] = 1,
        threads: Annotated[int | None, typer.Option("--threads", help="ORT threads per process (default: "
                                                    "usable cores / workers).")] = None,
        max_batch: Annotated[int, typer.Option("--max-batch", help="Most samples per ORT call when micro-batching "
                                               "(1 = no batching).")] = 32,
        max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="How long a batch waits to fill up.")] = 2.0,
        max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Largest request body (else HTTP "
                                                    "413).")] = 4 * 1024 * 1024,
        access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = False,
        ) -> None:
    """Serve a run's ONNX model over HTTP: a web page at /, POST /v1/predict, /v1/models, /health, /metrics."""
    from tinyfm.deploy.serve import ServeConfig
    from tinyfm.deploy.serve import serve as serve_run

    cfg = ServeConfig(variant=variant, host=host, port=port, workers=workers, threads=threads, max_batch=max_batch,
                      max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, access_log=access_log)
    typer.echo(f"serving {run_dir} (variant {variant}) on http://{host}:{port}/  (API docs: /docs)", err=True)
    serve_run(run_dir, cfg)


@app.command()
def report(run_dir: RunDir) -> None:
    """(Re-)write report.md, report.html and plots/ from a run's results.json and metrics.jsonl."""
    from tinyfm.io import read_json
    from tinyfm.report import write_report

    write_report(run_dir)
    _print_summary(run_dir, read_json(run_dir / "results.json"))


@app.command()
def models(pattern: Annotated[str, typer.Argument(help="Glob pattern.")] = "*") -> None:
    """List registered models with their parameter counts."""
    from tinyfm.measure import count_params
    from tinyfm.models import create_model, list_models

    for name in list_models(pattern):
        typer.echo(f"{name:20s} {count_params(create_model(name)):>12,d} parameters")


@app.command()
def recipes() -> None:
    """List the built-in recipes."""
    from tinyfm.config import list_recipes

    for name in list_recipes():
        typer.echo(name)


def _print_summary(run_dir: Path, results: dict[str, Any]) -> None:
    from rich.console import Console

    from tinyfm.report import results_table

    console = Console(width=None if sys.stdout.isatty() else 160)  # a pipe or file gets the whole table
    console.print(results_table(results))
    reports = [str(p) for p in (run_dir / "report.html", run_dir / "report.md") if p.is_file()]
    # `tinyfm train` writes no report: say how to get one instead of naming files that are not there
    where = f"report: {', '.join(reports)}" if reports else f"no report yet: tinyfm report {run_dir}"
    console.print(f"run directory: [bold]{run_dir}[/]  ({where})")


def main() -> None:
    """Entry point: user errors -> one line on stderr and exit 2; Ctrl-C -> exit 130; SIGTERM is handled like Ctrl-C."""
    import signal

    def _terminate(signum, frame):  # unwind normally so staging folders and temp files are removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        rc = app(standalone_mode=False)
        if rc == 130:  # typer >= 0.20 turns a KeyboardInterrupt inside a command into Exit(130)
            raise KeyboardInterrupt
        if isinstance(rc, int) and rc:  # typer.Exit(code) returns its code in non-standalone mode
            sys.exit(rc)
    except TinyfmError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: the run directory was left as it was", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        if isinstance(e, _usage_errors()):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, typer.Abort):  # click's Abort in older typer, typer's own in newer: public either way
            sys.exit(130)
        raise


def _usage_errors() -> tuple[type, ...]:
    """ClickException of every click that may parse our arguments: typer >= 0.20 ships its own copy as
    typer._click, older typer uses the click package; an `except click.ClickException` misses the other."""
    import importlib

    found = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(name).ClickException)
        except ImportError:
            continue
    return tuple(found)


if __name__ == "__main__":
    main()
