"""`torchrun --nproc_per_node 2 -m rlalign demo`: the demo's orchestration at two ranks.

Its own module (and the single-process demo test its own), so that the two long runs start
early and on different pytest-xdist workers.
"""

from __future__ import annotations

import json

import pytest

from demo.test_quick_demo import SMALLEST_SIZES
from rlalign.data.verifiers import REPORT_CARD_KEYS
from stages.test_distributed import run_with_gloo_retry

# The demo's orchestration at two ranks, at the smallest sizes that run every stage: what the
# demo adds to the stages under torchrun (one report, rank 0 printing, the global batch split
# over the ranks). That each stage learns is checked at one rank by `make goals-quick`, and that
# two ranks train the same weights as one process is shown stage by stage in
# stages/test_distributed.py; together they cover the full two-rank demo, at a fifth of its time.
# Without the reward model's prior: its forward over every preference pair of the world (~1,400
# sequences, a fifth of this test's time) is the single-process demo test's, and its split over
# two ranks is test_distributed.py's reward-prior case.
TWO_RANK_SIZES = [*SMALLEST_SIZES, "reward_prior_coef=0"]


@pytest.mark.slow
def test_quick_demo_on_two_ranks(tmp_path, request):
    """`torchrun --nproc_per_node 2 -m rlalign demo --quick`: every stage runs data-parallel on
    2 CPU ranks with the single process's global batches, and rank 0 alone prints and writes
    one report."""
    import os
    import subprocess
    import sys

    out = tmp_path / "demo2"

    def start(retry: bool) -> tuple[int, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             "-m", "rlalign", "demo", "--quick", "--out", str(out), *TWO_RANK_SIZES],
            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        return proc.returncode, proc.stdout + proc.stderr

    launched = run_with_gloo_retry(start)  # a retry is a warning and a gloo_retry property
    launched.report(request.node)
    assert launched.code == 0, launched.output[-6000:]
    stdout = launched.output
    assert stdout.count("report card on the held-out questions") == 1
    report = json.loads((out / "report.json").read_text())
    assert set(report["stages"]) == {"pretrained", "sft", "rl"}
    for card in report["stages"].values():
        assert all(0.0 <= card[key] <= 1.0 for key in REPORT_CARD_KEYS)
    for stage in ("pretrain", "sft", "reward", "rl"):
        assert (out / stage / "final" / "config.json").is_file()
        rows = [json.loads(x) for x in (out / stage / "metrics.jsonl").read_text().splitlines()]
        assert len({r["step"] for r in rows if "loss" in r}) == len(
            [r for r in rows if "loss" in r]
        )
    config = (out / "sft" / "config.yaml").read_text()
    assert "global_batch_size: 16" in config and "per_device_train_batch_size: 8" in config
