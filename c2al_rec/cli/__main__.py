"""``python -m c2al_rec.cli`` = ``c2al-rec``."""

import sys

from .main import main

sys.exit(main())
