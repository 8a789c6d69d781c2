"""``python -m collector`` = ``quota-ledger collect``."""

import sys

from ledger.cli import main

if __name__ == "__main__":
    sys.exit(main(["collect", *sys.argv[1:]]))
