"""``python -m rlalign`` (and ``torchrun -m rlalign``) runs the CLI."""

import sys

from rlalign.cli import main

sys.exit(main())
