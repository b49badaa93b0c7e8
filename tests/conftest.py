"""Shared fixtures. Real data in ../shared/data is optional: tests that need it skip cleanly when absent."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# tiny models: one thread is several times faster than two contended ones (also for subprocesses we start);
# this is the one place the tests set it
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def shared_data():
    from farm.data import shared_data_dir

    d = shared_data_dir()
    if d is None:
        pytest.skip("../shared/data is absent (set FARM_SHARED_DATA to run this test)")
    return d
