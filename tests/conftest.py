"""Shared fixtures: a seed reset per test, a tiny real Fashion-MNIST subset, the shared/ data folder."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fashion_small():
    """2,000 training, 500 validation and 1,000 test images of the real Fashion-MNIST (stratified, fixed)."""
    from tinyfm.config import DataConfig
    from tinyfm.data import load_data

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (run scripts/setup.sh)")
    return load_data(DataConfig(train_subset=2000, val_size=500, test_subset=1000))


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> Path:
    """`tinyfm run --quick` once per session, as a user runs it (a subprocess); returns the run directory."""
    import subprocess
    import sys

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (run scripts/setup.sh)")
    out = tmp_path_factory.mktemp("quick") / "run"
    proc = subprocess.run([sys.executable, "-m", "tinyfm", "run", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out.parent / "stdout.txt").write_text(proc.stdout)
    return out


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
