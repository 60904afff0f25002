"""Child process of the kill -9 tests: ``rlalign ARGS...`` that hangs at a chosen point.

``KILL_AT`` says where (``MARKER`` is created there, then the process sleeps until the parent
sends SIGKILL, so the kill lands exactly at that point):

- ``checkpoint:N``: while writing ``step_N``'s trainer state (the model weights are already in
  the temporary checkpoint directory, the state file is not);
- ``step:N``: inside optimizer step N, after the gradients are computed and before the update.

The ``__main__`` guard matters: reward functions run in spawned worker processes, which import
this script again.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from rlalign import checkpoint, cli
from rlalign.train import loop


def hang() -> None:
    open(os.environ["MARKER"], "w").close()
    time.sleep(600)
    sys.exit("the parent never killed this process")


def install(where: str, target: int) -> None:
    if where == "checkpoint":
        real_save = torch.save
        temporary = f".step_{target}."

        def hanging_save(obj, path, *args, **kwargs):
            if temporary in str(path):
                hang()
            return real_save(obj, path, *args, **kwargs)

        checkpoint.torch.save = hanging_save
    elif where == "step":
        current = {"step": 0}
        real_train_step = loop.Trainer.train_step
        real_update = torch.optim.AdamW.step

        def train_step(self):
            current["step"] = self.step + 1
            return real_train_step(self)

        def update(self, *args, **kwargs):
            if current["step"] == target:
                hang()
            return real_update(self, *args, **kwargs)

        loop.Trainer.train_step = train_step
        torch.optim.AdamW.step = update
    else:
        sys.exit(f"KILL_AT={where}:{target}: expected checkpoint:N or step:N")


if __name__ == "__main__":
    where, _, number = os.environ["KILL_AT"].partition(":")
    install(where, int(number))
    sys.exit(cli.main(sys.argv[1:]))
