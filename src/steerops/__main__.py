import sys

from steerops.cli import main

sys.exit(main())
