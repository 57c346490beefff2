"""`tinyfm train --nproc N`: re-run the same command under torchrun, N data-parallel processes on this machine.

The training code does not change: each process joins the group torchrun prepares (see
:mod:`tinyfm.train.distributed`), trains on its shard of every batch, and only rank 0 writes the run directory.
For several machines call torchrun yourself (docs/acceleration.md):
``torchrun --nnodes 2 --node-rank R --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m tinyfm train``.

Example:
    launch_torchrun(2, ["--recipe", "fashion-mnist", "--nproc", "2", "--out", "runs/ddp"])  # -> exit code
"""

from __future__ import annotations

import os
import subprocess
import sys

from tinyfm.errors import ConfigError
from tinyfm.train.device import default_threads


def strip_nproc(argv: list[str]) -> list[str]:
    """`argv` without its `--nproc N` / `--nproc=N` options (the processes torchrun starts must not launch again).

    Example:
        strip_nproc(["--nproc", "2", "-q"])  # ['-q']
    """
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command line that runs `tinyfm train <argv>` in `nproc` processes on this machine.

    `--standalone` starts a local rendezvous on a free port, so two such runs on one machine do not collide
    (torchrun docs, "Single-node multi-worker").

    Args:
        nproc: processes (one per GPU on a GPU machine; on CPU each gets cores / nproc threads).
        argv: the arguments that followed `tinyfm train`, with or without `--nproc`.

    Returns:
        The command as a list, starting with this Python interpreter.

    Example:
        torchrun_command(2, ["-q"])
        # [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node', '2', '--standalone',
        #  '-m', 'tinyfm', 'train', '-q']
    """
    if nproc < 1:
        raise ConfigError(f"--nproc: got {nproc}, expected a value >= 1")
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone",
            "-m", "tinyfm", "train", *strip_nproc(argv)]


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run `tinyfm train <argv without --nproc>` under torchrun with `nproc` processes and wait for it.

    Each process gets OMP_NUM_THREADS = cores // nproc unless it is set already (torchrun would otherwise set 1
    and print a warning); the trainer sets torch's threads the same way (:func:`tinyfm.train.default_threads`).

    Args:
        nproc: processes on this machine.
        argv: the arguments that followed `tinyfm train` (e.g. ``sys.argv[2:]``).

    Returns:
        torchrun's exit code (0 when every process succeeded).

    Example:
        raise SystemExit(launch_torchrun(2, sys.argv[2:]))
    """
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        raise ConfigError("--nproc: already running under torchrun (drop --nproc, or call torchrun directly)")
    cmd = torchrun_command(nproc, argv)
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", str(default_threads(nproc)))
    return subprocess.run(cmd, env=env, check=False).returncode
