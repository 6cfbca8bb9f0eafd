"""The PhyLL benchmark's baselines and its tuning split (bench/physical_phyll.py).

- ``digital``: the physical layers *and their drive* removed, widths widened to the physical network's
  trainable parameter budget (checked against the count by hand: 2 x (40*20 + 20) = 1,640 against
  (20*31 + 31) + (31*31 + 31) = 1,643), and each block computing exactly ``W h + b`` of its raw input;
- ``wire``: the earlier stand-in (identity in place of the physics, drive and concatenation kept);
- ``holdout_validation``: tuning never sees a test token.
"""

from __future__ import annotations

import torch

from bench.physical_phyll import build_arm, holdout_validation


def test_digital_only_baseline_removes_physics_and_drive_at_the_same_budget():
    exp = build_arm("digital", "wave:scattering", seed=0, epochs=1)
    model = exp.model
    n_params = sum(p.numel() for b in model.blocks for p in b.digital.parameters())
    assert n_params == (20 * 31 + 31) + (31 * 31 + 31) == 1643
    assert abs(n_params - 2 * (40 * 20 + 20)) / 1640 < 0.01
    assert [b.digital.linear.in_features for b in model.blocks] == [20, 31]
    x = exp.data.train.x[:6]
    labels = torch.tensor([0, 1, 2, 3, 4, 6])
    outs = model.block_outputs(x, labels)
    h = model.embed(x, labels)
    for block, (_, a) in zip(model.blocks, outs):
        # no |h| / ||h|| drive and no concatenation: a plain affine map of the block's input (h can be negative)
        ref = h @ block.digital.linear.weight.T + block.digital.linear.bias
        assert torch.allclose(a, ref, atol=1e-5)
        h = a
    assert (outs[0][1] < 0).any()  # the input to block 2 keeps its signs (the old wire took |h|)


def test_wire_baseline_keeps_the_drive_and_the_concatenation():
    exp = build_arm("wire", "wave:scattering", seed=0, epochs=1)
    block = exp.model.blocks[0]
    h = exp.model.embed(exp.data.train.x[:4], torch.tensor([0, 1, 2, 3]))
    y, a = block(h)
    assert torch.allclose(y, h.abs() / (h.norm(dim=1, keepdim=True) + 1e-6), atol=1e-6)
    assert torch.allclose(a, block.digital.linear(torch.cat([y, h], dim=1)), atol=1e-6)


def test_validation_holdout_is_cut_from_train_only():
    exp = build_arm("digital", "wave:scattering", seed=3, epochs=1)
    data = exp.data
    tuned = holdout_validation(data, seed=3)
    assert len(tuned.train) + len(tuned.test) == len(data.train) == 207
    assert len(tuned.test) == round(0.2 * 207)

    def rows(t):
        return {tuple(r) for r in t.tolist()}

    train_rows, test_rows = rows(data.train.x), rows(data.test.x)
    assert rows(tuned.test.x) <= train_rows and rows(tuned.train.x) <= train_rows
    assert not rows(tuned.test.x) & test_rows and not rows(tuned.test.x) & rows(tuned.train.x)
    assert torch.equal(holdout_validation(data, seed=3).test.x, tuned.test.x)  # deterministic by seed
