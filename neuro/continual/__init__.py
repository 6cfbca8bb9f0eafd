"""Continual learning: task streams trained one task after another without forgetting the earlier ones.

* :mod:`neuro.continual.base`: ``[continual]`` settings (:class:`ContinualSpec`), the strategy
  contract (:class:`ContinualRule`, a wrapper around any rule), the registry :data:`STRATEGIES`
  and the capture of each layer's presynaptic activity.
* strategies: ``finetune`` and ``multitask`` (:mod:`~neuro.continual.base`), ``hlop``
  (:class:`~neuro.continual.hlop.HebbianProjection`), ``ewc``, ``gpm``.
* :mod:`neuro.continual.workflow`: the task loop behind ``neuro train --continual NAME``
  (per-task checkpoints, resume, the accuracy matrix R, ACC and BWT).
"""

from neuro.continual.base import STRATEGIES, ContinualRule, ContinualSpec, build_strategy, projectable_layers

__all__ = ["STRATEGIES", "ContinualRule", "ContinualSpec", "HebbianProjection", "build_strategy", "projectable_layers"]


def __getattr__(name):
    if name == "HebbianProjection":
        from neuro.continual.hlop import HebbianProjection

        return HebbianProjection
    raise AttributeError(name)
