"""Learning rules: each writes pseudo-gradients into ``.grad`` (see :mod:`neuro.rules.base`)."""

from neuro.rules.base import Batch, Requirements, Rule, check_compatible
from neuro.rules.bptt import BPTT

__all__ = ["Batch", "Requirements", "Rule", "check_compatible", "BPTT"]
