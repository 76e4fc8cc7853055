"""``python -m fastconv.face ...`` runs the face CLI."""
import sys

from .cli import main

sys.exit(main())
