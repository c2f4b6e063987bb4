"""``python -m musiclm`` = the ``musiclm`` command."""

import sys

from musiclm.cli import main

sys.exit(main())
