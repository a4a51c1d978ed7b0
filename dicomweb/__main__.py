"""`python -m dicomweb` runs the command line."""

import sys

from dicomweb.cli import main

sys.exit(main())
