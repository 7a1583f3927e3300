"""``python -m benchmarks``: the same as ``jax-td3 bench``."""

import sys

from jax_td3.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
