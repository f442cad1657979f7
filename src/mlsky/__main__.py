import sys

from mlsky.cli import main

sys.exit(main())
