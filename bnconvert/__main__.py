"""``python -m bnconvert …`` runs the command line (the same as the ``bnconvert`` script)."""
import sys

from bnconvert.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
