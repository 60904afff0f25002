"""Child process of the car's SIGKILL test: ``rlalign control train`` that hangs inside a
checkpoint write.

While writing ``step_<HANG_STEP>``'s trainer state it creates the file ``MARKER`` and sleeps, so
the parent can SIGKILL it exactly mid-write (the weights are already in the temporary directory,
the state file is not).
"""

from __future__ import annotations

import os
import sys
import time

from rlalign import checkpoint, cli

real_save = checkpoint.torch.save
hang = f".step_{os.environ['HANG_STEP']}."


def hanging_save(obj, path, *args, **kwargs):
    if hang in str(path):
        open(os.environ["MARKER"], "w").close()
        time.sleep(600)
    return real_save(obj, path, *args, **kwargs)


checkpoint.torch.save = hanging_save
sys.exit(cli.main(sys.argv[1:]))
