"""The autouse fixture of conftest.py: each test starts from global generators seeded by its id."""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def test_global_generators_start_from_the_node_id_seed(request):
    seed = zlib.crc32(request.node.nodeid.encode())
    assert (
        torch.rand(3).tolist()
        == torch.rand(3, generator=torch.Generator().manual_seed(seed)).tolist()
    )
    assert np.random.random() == np.random.RandomState(seed).random_sample()
    assert random.random() == random.Random(seed).random()
