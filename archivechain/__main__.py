import sys

from archivechain import main

sys.exit(main())
