import sys

from kmi.audit.cli import main

sys.exit(main())
