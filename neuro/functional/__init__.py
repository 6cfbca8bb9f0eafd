"""Pure math shared by layers and rules (no parameters, no state): :mod:`.forward_forward`
(goodness, FF losses, length normalization, label embedding, wrong-label sampling) and
:mod:`.sharding` (random draws per sample that do not depend on data-parallel batch shards).

Layers may import this package; it imports nothing from :mod:`neuro` but torch.
"""
