"""Training: the one loop (``loop.train``) and the rooms it uses, each named for what it holds.

    loop.py          the stages 0-7, top to bottom
    state.py         run state, config checks, checkpoint contents, what may change on resume
    rng.py           every RNG as checkpointable state
    batches.py       the data order and the batch source
    nets.py          G, D, EMA, Adam, AMP scalers, DDP/compile wrapping, the optimiser step
    distributed.py   torchrun ranks, device, AMP dtype
    budget.py        the minutes budget, timed evaluations, run progress
    signals.py       Ctrl-C / SIGTERM: checkpoint and leave
    progress.py      the console
    lifecycle.py     run folder, tracked run, hooks, the end-of-run report
    losses.py, diffaug.py, schedules.py   what the steps compute
"""

from augforge.training.lifecycle import RunInfo, TrainResult
from augforge.training.loop import train

__all__ = ["RunInfo", "TrainResult", "train"]
