import sys

from boltzformer.cli import main

sys.exit(main())
