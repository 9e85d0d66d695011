"""The run estimate: GPU memory, fit and what would make a run fit, time and cost.

One idea per module, each built on the one before:

- :mod:`~runspec.estimate.strategy`: the data-parallel strategy the training code will choose.
- :mod:`~runspec.estimate.memory`: per-GPU memory of a training step under that strategy (and
  the memory a merged model needs when it is served).
- :mod:`~runspec.estimate.fit`: whether a :class:`~runspec.setup.TrainingSetup` fits its
  instances, and :class:`Suggestion` s (data) that would make it fit.
- :mod:`~runspec.estimate.cost`: training time on N GPUs (the speed-up assumption) and cost.
- :mod:`~runspec.estimate.run`: the whole-run estimate ``finetune estimate`` shows.

Used by the launch function (refuses a run that cannot fit before anything is paid for) and by
``finetune estimate``; both build the setup from the request (:mod:`runspec.setup`). Standard
library only; nothing is read at import time.
"""

from runspec.estimate.cost import (
    DEFAULT_MFU,
    DEFAULT_OVERHEAD_HOURS,
    SCALING_ASSUMPTION,
    CostEstimate,
    Speedup,
    Workload,
    estimate_cost,
    speedup,
    tokens_from_dataset,
    tokens_from_steps,
    training_hours,
)
from runspec.estimate.fit import (
    Change,
    FitReason,
    FitResult,
    Suggestion,
    cheapest_configuration,
    check_fit,
    fitting_configurations,
)
from runspec.estimate.memory import (
    GIB,
    MemoryEstimate,
    estimate_memory,
    lora_trainable_parameters,
    merge_memory_needed_gib,
    training_memory,
)
from runspec.estimate.run import (
    ConfigurationEstimate,
    RunEstimate,
    estimate_configuration,
    estimate_run,
)
from runspec.estimate.strategy import Strategy, StrategyDecision, decide_strategy, strategy_rule

__all__ = [
    "DEFAULT_MFU",
    "DEFAULT_OVERHEAD_HOURS",
    "GIB",
    "SCALING_ASSUMPTION",
    "Change",
    "ConfigurationEstimate",
    "CostEstimate",
    "FitReason",
    "FitResult",
    "MemoryEstimate",
    "RunEstimate",
    "Speedup",
    "Strategy",
    "StrategyDecision",
    "Suggestion",
    "Workload",
    "cheapest_configuration",
    "check_fit",
    "decide_strategy",
    "estimate_configuration",
    "estimate_cost",
    "estimate_memory",
    "estimate_run",
    "fitting_configurations",
    "lora_trainable_parameters",
    "merge_memory_needed_gib",
    "speedup",
    "strategy_rule",
    "tokens_from_dataset",
    "tokens_from_steps",
    "training_hours",
    "training_memory",
]
