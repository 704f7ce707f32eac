import sys

from dreamdata_logging.tools.cli import main

sys.exit(main())
