"""`python -m cxr_keras.cli`: the `cxr` command."""

import sys

from cxr_keras.cli import main

sys.exit(main())
