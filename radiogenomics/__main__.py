import sys

from radiogenomics.cli.app import main

sys.exit(main())
