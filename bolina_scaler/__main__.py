"""``python -m bolina_scaler`` is the ``bolina-scaler`` command."""

import sys

from bolina_scaler.cli import main

sys.exit(main())
