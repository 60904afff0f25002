"""torchrun child of the distributed tests: ``rlalign ARGV`` for every ARGV of a JSON plan, in
turn, in the same processes.

``python -m torch.distributed.run ... _torchrun_plan.py PLAN.json`` where PLAN.json is a list
of argument lists. Imports, the launch and the process group are paid once for the whole
plan. The group stays up from the first run to the last: ``rlalign`` leaves it at the end of
each command, but joining a new group in the same processes after leaving one was seen to hang,
or to lose a peer (gloo: "Connection closed by peer"), so leaving is put off to the end of the
plan. Every rank prints one line per run,
``RESULT_MARK <rank> <exit code> <index>``, runs the next one whatever the code was (a user
error stops every rank alike, so the ranks stay in step), and exits with the largest code.

The ``__main__`` guard matters: reward functions run in spawned worker processes, which import
this script again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

RESULT_MARK = "torchrun-plan-result:"


def run_plan(plan: Path) -> int:
    from rlalign import dist
    from rlalign.cli import main

    dist.init_distributed()
    leave = dist.shutdown_distributed
    dist.shutdown_distributed = lambda: None  # what ``main`` calls when a command ends
    rank = os.environ.get("RANK", "0")
    worst = 0
    try:
        for index, argv in enumerate(json.loads(plan.read_text())):
            code = main(argv)
            # one write of the whole line: print() writes the text and its newline apart,
            # and unbuffered, two ranks' lines sharing the pipe can interleave between them
            sys.stdout.write(f"{RESULT_MARK} {rank} {code} {index}\n")
            sys.stdout.flush()
            worst = max(worst, code)
        # torchrun stops the other ranks once one exits with an error: wait until every rank
        # has reported its last run
        dist.barrier()
    finally:
        leave()
    return worst


if __name__ == "__main__":
    sys.exit(run_plan(Path(sys.argv[1])))
