"""``python -m roomcast``: the same as the ``roomcast`` command."""

import sys

from .cli import main

sys.exit(main())
