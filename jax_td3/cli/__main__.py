"""``python -m jax_td3.cli ...`` is ``jax-td3 ...``."""

import sys

from jax_td3.cli import main

sys.exit(main())
