"""``python -m mpidispatch``: see :mod:`mpidispatch.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
