"""Shared fixtures. Real data in ../shared/data is optional: tests that need it skip cleanly when absent."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data():
    from farm.data import shared_data_dir

    d = shared_data_dir()
    if d is None:
        pytest.skip("../shared/data is absent (set FARM_SHARED_DATA to run this test)")
    return d
