import sys

from cxrlab.cli import main

sys.exit(main())
