"""Cross-checking implementations: one update at a time (``update_level``) or whole training runs
(``run_level``), with one difference measure and one report (``compare``).

The update level drives two adapters (``jax_td3.adapters``); ``run_parity`` is our JAX update
against the PyTorch reference, ``compare_adapters`` any two adapters. The run level steps two
training loops with different backends in lockstep, and says whether two runs that separate do so
by chaos or by a bug (``Verdict``). ``jax_td3.parity.mutants`` (not imported here) is a catalogue of
deliberately wrong updates the checker must find.
"""

from jax_td3.parity.compare import Divergence, ParityReport, QuantityStats, Tracker, Verdict, compare
from jax_td3.parity.run_level import (
    RUN_FLOAT32_TOLERANCE,
    RUN_FLOAT64_TOLERANCE,
    RunTracker,
    UnknownTensorError,
    check_weight_name,
    decide_verdict,
    default_run_tolerance,
    perturb_one_ulp,
    plot_drift,
    resume_trainer,
    run_whole_parity,
)
from jax_td3.parity.update_level import (
    FLOAT32_FORWARD_TOLERANCE,
    FLOAT32_TOLERANCE,
    FLOAT64_TOLERANCE,
    FORWARD_QUANTITIES,
    SharedDraws,
    compare_adapters,
    default_tolerance,
    run_parity,
)

__all__ = ["Divergence", "FLOAT32_FORWARD_TOLERANCE", "FLOAT32_TOLERANCE", "FLOAT64_TOLERANCE", "FORWARD_QUANTITIES",
           "ParityReport", "QuantityStats", "RUN_FLOAT32_TOLERANCE", "RUN_FLOAT64_TOLERANCE", "RunTracker",
           "SharedDraws", "Tracker", "UnknownTensorError", "Verdict", "check_weight_name", "compare",
           "compare_adapters", "decide_verdict", "default_run_tolerance", "default_tolerance", "perturb_one_ulp",
           "plot_drift", "resume_trainer", "run_parity", "run_whole_parity"]
