import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Two threads at most (the suite's models are small); under pytest-xdist each worker takes its share.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
# and its own numba cache (librosa's beat tracker compiles on first use): two processes writing one
# cache at once can leave an entry that crashes the process that loads it
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault(
        "NUMBA_CACHE_DIR",
        os.path.join(tempfile.gettempdir(), f"musiclm-numba-{os.environ['PYTEST_XDIST_WORKER']}"),
    )
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _workers)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
