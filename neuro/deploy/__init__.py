"""Deployment workflows: quantize a trained run, run it on a deploy target, compare, report.

Targets are named in :data:`neuro.registry.DEPLOY_TARGETS` (``loihi-sim``, registered in
:mod:`neuro.deploy.loihi`).
"""

from neuro.deploy.loihi import deploy_loihi, encode_inputs, float_trace_from_spikes, scores_from_spikes

__all__ = ["deploy_loihi", "encode_inputs", "float_trace_from_spikes", "scores_from_spikes"]
