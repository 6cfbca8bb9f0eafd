"""Pure math shared by layers and rules (no parameters, no state): :mod:`.forward_forward`
(goodness, FF losses, length normalization, label embedding, wrong-label sampling).

Layers may import this package; it imports nothing from :mod:`neuro` but torch.
"""
