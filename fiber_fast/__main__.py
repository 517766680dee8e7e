"""``python -m fiber_fast ...``: the ``fiber-fast`` command line (for ``torchrun -m`` and ``deepspeed --module``)."""

import sys

from fiber_fast.cli import main

sys.exit(main())
