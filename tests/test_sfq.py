"""SFQ pulse emulator and rate model: switching statistics, neuron and merger rates against closed forms,
PyLSE's published cell delays, agreement of the rate model with the emulator, conversions, training
helpers, accounting and the Substrate contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simulators.errors import SettingError, SubstrateFault
from simulators.sfq import (
    NEVER,
    CellParams,
    Layer,
    Variation,
    count,
    dc_to_sfq,
    decision_latency_ps,
    delay,
    emulate,
    energy,
    merge,
    neuron,
    path_delay_ps,
    synapse,
)
from simulators.sfq_rate import (
    RateLayer,
    coincidence_factor,
    float_to_sfq,
    layer_rate,
    merger_rate,
    merger_trains,
    network_rate,
    neuron_rate,
    renewal_overlap,
    sfq_to_rate,
    spsa,
    superposition_cv2,
    train_biases,
    transmission,
    type_correlation,
)
from simulators.substrate import Substrate, open_substrate_spec

CELLS = CellParams()


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


# ------------------------------------------------------------------------------------ cells
@pytest.mark.parametrize("bias", [92.0, 100.0, 104.0])
def test_synapse_fraction_within_binomial_interval(bias):
    rng = np.random.default_rng(1)
    t = dc_to_sfq(np.full((40, 1), 20.0), 50.0, CELLS, rng)  # 40 x 1000 pulses
    p = _phi((bias - CELLS.i50_uA) / CELLS.sigma_syn_uA)  # independent of the code under test
    exc, inh, c = synapse(t, np.array([[p], [p]]), np.array([[1], [-1]]), rng)
    n = int(count(t).sum())
    assert c["arriving"] == 2 * n
    for train in (exc[:, 0], inh[:, 1]):
        k = int((train != NEVER).sum())
        half = 3.29 * math.sqrt(p * (1 - p) / n)  # 99.9 % normal interval of a binomial fraction
        assert abs(k / n - p) <= half, (k / n, p, half)
    assert (exc[:, 1] == NEVER).all() and (inh[:, 0] == NEVER).all()  # routing by sign


def test_input_converter_rates_and_jitter():
    rng = np.random.default_rng(0)
    t = dc_to_sfq(np.array([[0.0, 5.0, 50.0]]), 20.0, CellParams(jitter_ps=0.0), rng)
    assert count(t).tolist() == [[0, 100, 1000]]  # periodic without jitter: exactly r * W pulses
    t = dc_to_sfq(np.array([[0.0, 5.0, 50.0]]), 20.0, CELLS, rng)
    assert abs(count(t)[0, 2] - 1000) <= 1  # jitter may move one pulse across the window edge
    gaps = np.diff(t[0, 2, :1000]) * CELLS.dt_ps
    assert abs(gaps.mean() - 20.0) < 0.05 and 0.3 < gaps.std() < 1.2  # 50 GHz, jitter 0.5 ps -> gap std 0.71 ps
    with pytest.raises(SubstrateFault, match="clock rate"):
        dc_to_sfq(np.array([[150.0]]), 1.0, CELLS, rng)


def test_neuron_rate_curve_is_monotone_and_saturates_at_clock():
    rng = np.random.default_rng(2)
    rates = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]
    cells = CellParams(clock_GHz=100.0, jitter_ps=0.0)
    wide = CellParams(clock_GHz=1e4, jitter_ps=0.0)  # lets the converter make trains faster than the clock
    measured = []
    for r in rates:
        window = 20.0 if r < 100 else 2.0
        exc = dc_to_sfq(np.full((20, 1), r), window, wide, rng, mode="poisson")[:, 0]
        out, _ = neuron(exc, np.full((20, 1), NEVER), np.full(20, 70.0), np.full(20, 100.0), cells, rng)
        measured.append(count(out).mean() / window)
    model = neuron_rate(
        torch.tensor(rates, dtype=torch.float64),
        torch.zeros(len(rates), dtype=torch.float64),
        torch.tensor(70.0, dtype=torch.float64),
        cells,
    ).numpy()
    assert np.all(np.diff(model) > 0) and model[-1] < cells.clock_GHz
    assert np.all(np.diff(measured) > -0.02 * np.array(measured[1:]))  # monotone within counting noise
    assert max(measured) <= cells.clock_GHz
    assert measured[-1] > 0.9 * cells.clock_GHz  # theta = 1.5 fluxons: r = (lam/2) / (1 + lam/2 * 10 ps) -> 93.75
    # threshold between 1 and 2 fluxons (I_n = 70, dI = 20, I_c = 100): every 2nd fluxon fires, minus the reset loss
    for r, m in zip(rates, measured):
        golden = (r / 2) / (1 + (r / 2) / cells.clock_GHz)
        assert abs(m - golden) <= 0.05 * golden + 0.05, (r, m, golden)
        assert abs(m - model[rates.index(r)]) <= 0.05 * golden + 0.05


def test_merger_collisions_follow_poisson_formula():
    rng = np.random.default_rng(3)
    lam, n_in, window = 15.0, 4, 50.0
    t = dc_to_sfq(np.full((20, n_in), lam), window, CELLS, rng, mode="poisson")
    out = merge(t, CELLS.ticks(CELLS.merger_dead_ps))
    total = n_in * lam
    tau = 8.2e-3  # ns: PyLSE's merger firing delay, used as the dead time
    golden = total / (1 + total * tau)
    measured = count(out).mean() / window
    assert abs(measured - golden) < 0.02 * golden, (measured, golden)
    assert abs(count(t).sum(-1).mean() / window - total) < 0.02 * total  # and collisions did lower the rate
    # two pulses closer than the dead time collide into one; farther apart, both pass
    pair = lambda gap: np.array([[[0], [CELLS.ticks(gap)]]])  # noqa: E731
    assert count(merge(pair(5.0), CELLS.ticks(8.2))).item() == 1
    assert count(merge(pair(9.0), CELLS.ticks(8.2))).item() == 2


def _merge_mc(trains: np.ndarray, lo_ns: float, hi_ns: float, se: bool = False):
    """The emulator's merger on trains ``[B, J, K]``: mean output rate (GHz) in ``[lo, hi)`` (and its standard
    error over the ``B`` windows)."""
    out = merge(np.sort(trains, -1), CELLS.ticks(CELLS.merger_dead_ps))
    inside = (out != NEVER) & (out >= CELLS.ticks(lo_ns * 1000)) & (out < CELLS.ticks(hi_ns * 1000))
    r = inside.sum(-1) / (hi_ns - lo_ns)
    return (float(r.mean()), float(r.std() / math.sqrt(r.size))) if se else float(r.mean())


def test_merger_of_periodic_trains_against_monte_carlo():
    """``merger_rate`` for trains without self-collisions (``s = 0``) against the emulator's merger on independent,
    randomly phased periodic trains thinned by synapses (300 x 100 ns each; within 3 standard errors of the
    mean, measured over the windows, + 0.5 %), against the closed forms, and its limits.

    Closed form (two trains, exact): an arrival of one train is absorbed when the other's pulse lies in the
    ``tau`` before it, so ``out = l1 + l2 - 2 tau l1 l2``.  Depth 2 is exact there and for three trains, depth 1
    (the model of 2026-12-03) is not: e.g. 20, 17.3 GHz: 31.63 (depth 2) vs 32.38 (depth 1) GHz.  Many small
    trains: the Poisson formula ``Lam / (1 + Lam tau)``; Poisson sources (``s = 1``) unchanged.
    """
    tau = CELLS.merger_dead_ps / 1000.0
    rng = np.random.default_rng(17)
    cases = (  # input rates (GHz), transmission probabilities
        ((20.0, 17.3), (1.0, 1.0)),
        ((19.82, 19.79, 18.24), (0.98, 0.6, 0.97)),  # the worst neuron of seed 9, one periodic layer
        ((20.0, 15.3, 10.7), (1.0, 1.0, 1.0)),
        ((20.0, 19.0, 18.0, 17.0), (1.0, 0.5, 0.8, 1.0)),
        ((40.0, 35.0, 30.0), (1.0, 1.0, 1.0)),
    )
    for x, p in cases:
        t = dc_to_sfq(np.tile(np.array(x)[None], (300, 1)), 100.0, CELLS, rng, "periodic")
        t = np.where(rng.random(t.shape) < np.array(p)[None, :, None], t, NEVER)
        measured, se = _merge_mc(t[:, None], 2.0, 100.0, se=True)
        lam = torch.tensor(np.array(x) * np.array(p))
        d2, d1 = float(merger_rate(lam, tau, 0.0, depth=2)), float(merger_rate(lam, tau, 0.0))
        assert abs(d2 - measured) < 3 * se + 0.005 * measured, (x, p, measured, se, d2, d1)
        assert abs(d2 - measured) < abs(d1 - measured), (x, p, measured, d2, d1)
    for l1, l2 in ((20.0, 17.3), (50.0, 45.0), (3.0, 90.0)):
        lam = torch.tensor([l1, l2], dtype=torch.float64)
        assert float(merger_rate(lam, tau, 0.0, 2)) == pytest.approx(l1 + l2 - 2 * tau * l1 * l2, rel=1e-12)
        assert float(merger_rate(lam, tau, 0.0)) == pytest.approx(l1 / (1 + tau * l2) + l2 / (1 + tau * l1))
    # three trains: the exact recursion M(A) = sum_j lam_j (1 - tau M(A \ j)) with M(pair) = closed form above
    lam = torch.tensor([19.4, 11.9, 17.7], dtype=torch.float64)
    l = lam.tolist()
    pair = lambda a, b: a + b - 2 * tau * a * b  # noqa: E731
    exact = sum(l[j] * (1 - tau * pair(*[l[k] for k in range(3) if k != j])) for j in range(3))
    assert float(merger_rate(lam, tau, 0.0, 2)) == pytest.approx(exact, rel=1e-12)
    # many small trains: the Poisson formula (and Poisson sources keep it at any depth)
    lam = torch.full((400,), 0.2, dtype=torch.float64)
    assert float(merger_rate(lam, tau, 0.0, 2)) == pytest.approx(80 / (1 + 80 * tau), rel=2e-3)
    lam = torch.tensor([[12.0, 7.0, 30.0], [5.0, 5.0, 0.0]], dtype=torch.float64)
    poisson = lam.sum(-1) / (1 + lam.sum(-1) * tau)
    assert torch.allclose(merger_rate(lam, tau, 1.0), poisson)
    assert torch.allclose(merger_rate(lam, tau, 1.0, 2), poisson)
    # one train passes unchanged; per-train rates sum to the merger's; differentiable
    assert float(merger_rate(torch.tensor([0.0, 23.0, 0.0], dtype=torch.float64), tau, 0.0, 2)) == pytest.approx(23.0)
    assert torch.allclose(merger_trains(lam, tau, 0.0, 2).sum(-1), merger_rate(lam, tau, 0.0, 2))
    lam = torch.tensor([[12.0, 7.0, 30.0, 4.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: merger_rate(z, tau, 0.0, 2), (lam,))
    with pytest.raises(SettingError, match="merger depth"):
        merger_rate(lam, tau, 0.0, depth=3)


def test_correlated_trains_collide_less_coincidence_factor_against_emulator():
    """Copies of one input pulse in two hidden neurons' trains reach a merger stagger-spaced (11.4 ps > tau): the
    merger of correlated hidden trains against ``merger_trains`` with :func:`coincidence_factor`, on the
    emulator's pulses.

    A 3-4 layer of counters (every excitatory arrival fires) on periodic inputs (12, 8.8, 7.3 GHz); its four
    output trains (10-21 GHz), delayed by the next layer's stagger as in ``emulate``, feed one merger directly (no
    synapse).  The pair factors come from the layer's :class:`Coincidence` (``layer_rate(...,
    return_coincidence=True)``), applied to the measured hidden rates.  Measured (seed 23): correlated 49.4 GHz,
    shuffled across samples (independent) 43.8, plain depth 2 43.6, with the pair factors 50.5 GHz: the factors
    explain 80 % of the correlation's effect.  Per pair, the mean count of ``k``'s pulses in the ``tau`` before a
    pulse of ``j`` relative to ``tau lam_k``: the hole behind ``k``'s copy (adjacent pair, ``k = j - 1``) 0.231
    measured against 0.245; other pairs 0.67-0.82 against 0.60-0.62 (a shared source that is inhibitory for ``k``
    also tells when ``k`` was last inhibited; not modelled: bench/RESULTS.md).  Hand checks: two trains that carry
    only copies of one periodic source never collide (``c = 0``); trains of different sources are independent
    (``c = 1``).
    """
    tau = CELLS.merger_dead_ps / 1000.0
    rng = np.random.default_rng(23)
    signs = np.array([[1, 1, 1], [1, -1, 1], [1, 1, -1], [1, 1, 1]])
    bias_syn = np.array([[110.0, 106, 103], [108, 110, 112], [104, 110, 110], [101, 107, 110]])
    layer = Layer(signs, bias_syn, np.full(4, 88.0))  # P(fire at k = 1) = Phi(4): counters
    x = np.array([[19.3, 14.1, 11.7]]) / 1.6
    reps = 200
    cells = CELLS
    t = dc_to_sfq(np.repeat(x, reps, 0), 60.0, cells, rng, "periodic")
    stages = np.arange(3) * cells.stagger_jtls
    t = np.where(t == NEVER, NEVER, t + cells.ticks(cells.jtl_ps) * stages[None, :, None])
    p = transmission(torch.tensor(bias_syn), cells).numpy()
    exc, inh, _ = synapse(t, p, signs, rng)
    m_exc, m_inh = (merge(z, cells.ticks(cells.merger_dead_ps)) for z in (exc, inh))  # [B, 4, K]
    w = max(m_exc.shape[-1], m_inh.shape[-1])
    pad = lambda z: np.pad(z, ((0, 0), (0, 0), (0, w - z.shape[-1])), constant_values=NEVER)  # noqa: E731
    fired, _ = neuron(pad(m_exc), pad(m_inh), layer.bias_neu[None], np.full((1, 4), cells.neuron_ic_uA), cells, rng)
    lo, hi = cells.ticks(2000), cells.ticks(58000)
    rates = ((fired != NEVER) & (fired >= lo) & (fired < hi)).sum(-1).mean(0) / 56.0
    staggered = np.where(fired == NEVER, NEVER, fired + cells.ticks(cells.jtl_ps) * (np.arange(4) * 2)[None, :, None])
    shuffled = np.stack([staggered[rng.permutation(reps), i] for i in range(4)], 1)
    corr, indep = _merge_mc(staggered, 3.0, 57.0), _merge_mc(shuffled, 3.0, 57.0)
    *_, co = layer_rate(torch.tensor(x), sfq_to_rate([layer], cells)[0], cells, fano_in=0.0, return_fano=True,
                        return_coincidence=True, periodic_inputs=True)
    c = coincidence_factor(co, cells)
    lam = torch.tensor(rates)[None]
    with_c = float(merger_trains(lam, tau, 0.0, 2, c).sum())
    plain = float(merger_rate(lam, tau, 0.0, 2))
    assert corr - indep > 3.0, (corr, indep)  # correlated trains collide much less
    assert abs(plain - indep) < 0.02 * indep, (plain, indep)
    assert abs(with_c - corr) < 0.3 * abs(corr - plain), (with_c, corr, plain)
    # the hole behind k's copy: k's pulses in the tau before j's, relative to tau lam_k (j = 1, k = 0)
    n_in_window = n_j = 0
    for b in range(reps):
        tj = staggered[b, 1][(staggered[b, 1] != NEVER) & (staggered[b, 1] > lo + 500) & (staggered[b, 1] < hi - 500)]
        tk = np.sort(staggered[b, 0][staggered[b, 0] != NEVER])
        n_in_window += int((np.searchsorted(tk, tj) - np.searchsorted(tk, tj - cells.ticks(8.2), side="right")).sum())
        n_j += tj.size
    measured = n_in_window / n_j / (tau * rates[0])
    assert abs(measured - float(c[0, 1, 0])) < 0.05, (measured, float(c[0, 1, 0]))
    # hand cases: two trains carrying only copies of one periodic source (20 GHz); trains of two sources
    share = torch.tensor([[[1.0], [1.0]]], dtype=torch.float64)
    one = type(co)(share, torch.full_like(share, 0.5), torch.tensor([[0.05]], dtype=torch.float64))
    assert torch.allclose(coincidence_factor(one, cells)[0, 0, 1], torch.tensor(0.0, dtype=torch.float64))
    apart = type(co)(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64), torch.zeros(1, 2, 2,
                     dtype=torch.float64), torch.tensor([[0.05, 0.05]], dtype=torch.float64))
    assert torch.allclose(coincidence_factor(apart, cells)[0, 0, 1], torch.tensor(1.0, dtype=torch.float64))


def test_cell_delays_reproduce_pylse_defaults():
    # PyLSE (UCSBarchlab/PyLSE, pylse/sfq_cells.py) default firing delays: JTL 5.7 ps, M 8.2 ps, S 4.3 ps
    assert (CELLS.jtl_ps, CELLS.merger_ps, CELLS.splitter_ps) == (5.7, 8.2, 4.3)
    t = np.array([[[0]]])
    a = delay(t, CELLS.ticks(CELLS.jtl_ps))
    m = delay(
        merge(np.concatenate([a, np.full_like(a, NEVER)], axis=-2)[:, None], CELLS.ticks(CELLS.merger_dead_ps)),
        CELLS.ticks(CELLS.merger_ps),
    )
    left = right = delay(m, CELLS.ticks(CELLS.splitter_ps))
    assert left.item() * CELLS.dt_ps == pytest.approx(5.7 + 8.2 + 4.3)
    assert right.item() * CELLS.dt_ps == pytest.approx(18.2)
    # a 1-input, 1-neuron network: synapse (one JTL) + neuron read-out (PyLSE DRO, 5.1 ps)
    assert path_delay_ps([Layer([[1]], [[120.0]], [95.0])], CELLS) == pytest.approx(5.7 + 5.1)


# ------------------------------------------------------------------------------ rate model
def test_neuron_rate_hand_derived():
    cells = CellParams(n_max=1, n_min=0, sigma_neu_uA=0.01)
    one = torch.tensor(1.0, dtype=torch.float64)
    # n_max = 1, fires on the first fluxon (I_n = 90: P(1) = 1): r0 = lam+; no reset loss for regular trains
    r = neuron_rate(10 * one, 0 * one, 90 * one, cells, exc_min_gap_ns=1.0)
    assert float(r) == pytest.approx(10.0)
    # Poisson train: the 10 ps reset loses arrivals: r = lam / (1 + lam tau_r)
    assert float(neuron_rate(10 * one, 0 * one, 90 * one, cells)) == pytest.approx(10 / 1.1)
    # every 2nd fluxon fires (theta = 1.5): r = (lam / 2) / (1 + lam tau_r / 2), exact for a Poisson train
    two = CellParams(n_max=2, n_min=0, sigma_neu_uA=0.01)
    assert float(neuron_rate(10 * one, 0 * one, 70 * one, two)) == pytest.approx(5 / 1.05)
    # the rest without reset (clock 1e9 GHz: tau_r = 1e-9 ns)
    fast = dict(clock_GHz=1e9, sigma_neu_uA=0.01)
    # capacity 2, threshold 2 fluxons, q = 1/2 (Poisson, independent types): pi = (2/3, 1/3), f = 1/6, r0 = 20/6
    cells2 = CellParams(n_max=2, n_min=0, **fast)
    r = neuron_rate(10 * one, 10 * one, 70 * one, cells2)
    assert float(r) == pytest.approx(20 / 6, rel=1e-6)
    # regular trains (Fano 0) at q = 1/2 strictly alternate E, I, E, ...: the count never reaches 2 (the count
    # chain; the renewal chain approaches it as the interval CV^2 -> 0: Gamma intervals of CV 3 % and 1 % let the
    # phases of independent trains drift, so two arrivals of one type occasionally follow each other) ...
    r = neuron_rate(10 * one, 10 * one, 70 * one, cells2, fano_exc=0.0, fano_inh=0.0, types="counts")
    assert float(r) == pytest.approx(0.0, abs=1e-6)
    r3, r1 = (
        float(neuron_rate(10 * one, 10 * one, 70 * one, cells2, fano_exc=c, fano_inh=c, types="renewal"))
        for c in (1e-3, 1e-4)
    )
    assert 0 < r1 < 0.5 * r3 < 0.1
    # ... and with threshold 1 every excitatory arrival fires: r = lam+
    r = neuron_rate(10 * one, 10 * one, 90 * one, cells2, fano_exc=0.0, fano_inh=0.0)
    assert float(r) == pytest.approx(10.0, rel=1e-6)
    # one antifluxon allowed (n_min = -1), fire at k = 1, q = 1/2: states {-1, 0} each 1/2, f = 1/4, r0 = 20/4
    cells3 = CellParams(n_max=1, n_min=-1, **fast)
    r = neuron_rate(10 * one, 10 * one, 90 * one, cells3)
    assert float(r) == pytest.approx(5.0, rel=1e-6)
    # output Fano factor: every 2nd arrival of a Poisson train fires: Erlang-2 intervals, CV^2 = 1/2
    _, fano = neuron_rate(10 * one, 0 * one, 70 * one, cells2, return_fano=True)
    assert float(fano) == pytest.approx(0.5, rel=1e-6)
    _, fano = neuron_rate(10 * one, 0 * one, 90 * one, cells2, return_fano=True)  # every arrival: Poisson again
    assert float(fano) == pytest.approx(1.0, rel=1e-6)


def _gamma_trains(rng, lam, cv2, n):
    """``n`` intervals of a stationary Gamma renewal train (mean ``1 / lam`` ns, ``CV^2``): its arrival times, the
    first one at a stationary forward-recurrence time (a length-biased interval, uniformly split)."""
    a = 1.0 / cv2
    first = rng.gamma(a + 1, 1.0 / (a * lam)) * rng.random()
    return first + np.concatenate([[0.0], np.cumsum(rng.gamma(a, 1.0 / (a * lam), n - 1))])


def test_renewal_type_correlation_against_monte_carlo_and_limits():
    # independent Gamma renewal streams: the lag-1 type correlation P(E|E) - P(E|I) of the merged sequence, counted
    # on simulated trains (2e5 arrivals each; standard error < 0.003) against 1 - Lambda int S+ S- dt
    rng = np.random.default_rng(5)
    cases = ((10.0, 5.0, 0.5, 0.5), (10.0, 5.0, 0.3, 2.0), (7.0, 12.0, 0.1, 0.25), (4.0, 4.0, 1.0, 0.05))
    for lam_e, lam_i, c_e, c_i in cases:
        te = _gamma_trains(rng, lam_e, c_e, 200000)
        ti = _gamma_trains(rng, lam_i, c_i, int(200000 * lam_i / lam_e))
        end = min(te[-1], ti[-1])
        te, ti = te[te < end], ti[ti < end]
        s = np.concatenate([np.ones(len(te)), np.zeros(len(ti))])[np.argsort(np.concatenate([te, ti]))]
        a_e = ((s[:-1] == 1) & (s[1:] == 1)).sum() / (s[:-1] == 1).sum()
        a_i = ((s[:-1] == 0) & (s[1:] == 1)).sum() / (s[:-1] == 0).sum()
        t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
        rho = float(type_correlation(t(lam_e), t(lam_i), t(c_e), t(c_i)))
        assert rho == pytest.approx(a_e - a_i, abs=0.01), (lam_e, lam_i, c_e, c_i, rho, a_e - a_i)
    one = torch.tensor(1.0, dtype=torch.float64)
    # Poisson streams: independent types (Lambda K = 1); periodic ones: K = min(T+, T-), Lambda K = min(1 / q+-)
    assert float(renewal_overlap(3 * one, 9 * one, 1.0, 1.0)) == pytest.approx(1.0, abs=1e-6)
    assert float(renewal_overlap(3 * one, 9 * one, 1e-4, 1e-4)) == pytest.approx(4 / 3, rel=0.01)
    assert float(renewal_overlap(6 * one, 6 * one, 1e-4, 1e-4)) == pytest.approx(2.0, rel=0.02)
    # no correlation coefficient: the count chain's g = F+ F- Lambda / (V+ + V-) for "counts"
    assert float(type_correlation(10 * one, 5 * one, 0.5, 0.5, chain="counts")) == pytest.approx(-1 / 3)
    with pytest.raises(SettingError, match="type chain"):
        type_correlation(one, one, 1.0, 1.0, chain="bogus")
    # differentiable in the rates and the CV^2 (the shape's derivative of Q(a, x) by central difference)
    args = [torch.tensor([3.0, 8.0], dtype=torch.float64, requires_grad=True),
            torch.tensor([5.0, 2.0], dtype=torch.float64, requires_grad=True),
            torch.tensor([0.4, 1.3], dtype=torch.float64, requires_grad=True),
            torch.tensor([0.7, 0.2], dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(lambda a, b, c, d: type_correlation(a, b, c, d, 0.2), args, atol=1e-6, rtol=1e-4)


def test_superposition_cv2_against_closed_forms_and_monte_carlo():
    t = lambda *v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    # one train: its own CV^2; Poisson trains: 1; two periodic trains of one rate: intervals U(0, T): CV^2 = 1/3
    assert float(superposition_cv2(t(7.0, 0.0), t(0.4, 1.0))) == pytest.approx(0.4, abs=1e-4)
    assert float(superposition_cv2(t(3.0, 8.0, 1.0), t(1.0, 1.0, 1.0))) == pytest.approx(1.0, abs=1e-4)
    assert float(superposition_cv2(t(5.0, 5.0), t(1e-4, 1e-4))) == pytest.approx(1 / 3, abs=0.01)
    # Gamma trains superposed, Monte Carlo (intervals of the merged train); the model's version integrates the 3
    # fastest trains one by one and the rest as equal trains (6 trains: 0.4203 against 0.4208 exact)
    rng = np.random.default_rng(6)
    cases = (((10.0, 4.0), (0.3, 0.5)), ((6.0, 6.0, 3.0), (0.2, 0.6, 1.5)), ((12.0, 2.0, 2.0), (0.05, 0.9, 0.9)),
             ((12.0, 5.0, 2.0, 1.0, 1.0, 0.5), (0.05, 0.5, 0.9, 0.9, 0.2, 1.0)))
    for lams, cs in cases:
        trains = [_gamma_trains(rng, l, c, int(40000 * l)) for l, c in zip(lams, cs)]
        end = min(x[-1] for x in trains)
        gaps = np.diff(np.sort(np.concatenate([x[x < end] for x in trains])))
        for exact in (True, False):
            got = float(superposition_cv2(t(*lams), t(*cs), exact=exact))
            assert got == pytest.approx(gaps.var() / gaps.mean() ** 2, abs=0.01), (lams, cs, exact, got)
    lam = torch.tensor([[6.0, 2.0, 3.0, 1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([[0.2, 0.9, 0.5, 1.2, 0.7]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(superposition_cv2, (lam, c), atol=1e-5, rtol=1e-3)


def test_rate_model_is_differentiable():
    lam = torch.tensor([3.0, 8.0], dtype=torch.float64, requires_grad=True)
    inh = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    bias = torch.tensor([72.0, 81.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: neuron_rate(a, b, c, CELLS), (lam, inh, bias))
    bs = torch.tensor([[98.0, 104.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b: transmission(b, CELLS), (bs,))


def _random_net(rng, widths, second_layer_excitatory=False):
    layers = []
    for li, (a, b) in enumerate(zip(widths, widths[1:])):
        signs = rng.choice([-1, 1], size=(b, a))
        signs[:, 0] = 1
        if li > 0 and second_layer_excitatory:
            signs[:] = 1
        layers.append(Layer(signs, rng.uniform(95, 115, (b, a)), rng.uniform(60, 95, b)))
    return layers


AGREEMENT_CASES = [  # measured worst: renewal type chain 1.02, 4.12, 3.61, 6.30 %; count chain 1.08, 5.19, 5.48, 7.65 %
    ("poisson", [3, 4], "renewal", 0.05),
    ("poisson", [3, 4, 2], "renewal", 0.045),
    ("periodic", [3, 4], "renewal", 0.04),
    ("periodic", [3, 4, 2], "renewal", 0.065),
    ("poisson", [3, 4], "counts", 0.05),
    ("poisson", [3, 4, 2], "counts", 0.055),
    ("periodic", [3, 4], "counts", 0.06),
    ("periodic", [3, 4, 2], "counts", 0.08),
]


@pytest.mark.parametrize("mode,widths,types,bound", AGREEMENT_CASES)
def test_rate_model_agrees_with_pulse_emulator(mode, widths, types, bound):
    """Every neuron of random small networks: ``|r_emulator - r_model| <= bound * max_j x_j``.

    Normalization: the error of each neuron's rate (GHz) is divided by the largest input rate
    ``max_j x_j`` (GHz, 5-20 GHz here) of the network's input pattern, the full scale of the rate
    code (the XOR margin is normalized the same way).  Random routing (both signs in every layer,
    input 0 excitatory), synapse biases U[95, 115] uA, neuron biases U[60, 95] uA, 5 networks per
    case (seeded; not the networks ``PERIODIC_FANO`` was fitted on).  The emulator's rate is the
    mean over 20 x 100 ns: its standard error ``sqrt(r / 2000 ns)`` is <= 0.1 GHz, <= 0.5 % of the
    full scale at 20 GHz, so the bounds are not met by counting noise.  Hidden neurons are checked too.

    Bounds: 5 % for one layer with Poisson inputs (the model's assumption; measured worst 1.02 %;
    1.08 % with the count type chain, 2.0 % before the arrival-type correlation and the reset terms).  The
    others are regression bounds, set just above the measured worst with the renewal type chain
    (``types="renewal"``; the count chain, still the default, keeps its bounds 5.5, 6 and 8 %, measured 5.19, 5.48
    and 7.65 %): two layers with Poisson inputs 4.12 % (5.19 % with the count type chain; 7.8 % before
    the count covariances between a layer's trains, the exc-inh covariance in the chain, the reset hazards of
    the chain's next type and the effective streams after the reset; 9.2 % before the type correlation), one
    periodic layer 3.61 % (5.48, 8.0, 22.9 %), two periodic layers 6.30 % (7.65, 16.2, 28.1 %).  On other random
    networks (``bench/sfq_rate_diagnosis.py --table --seed 7|8|9``) the worst errors are 0.8-1.1, 4.6-8.6,
    2.5-6.9 and 4.1-12.3 %: the one-step chain over arrival types misses the longer memory of nearly periodic
    trains, the lag-1 correlation of correlated streams is approximate, and the merger's collisions between
    correlated trains are those of independent ones (bench/RESULTS.md).
    """
    rng = np.random.default_rng(2026 + len(widths) + (mode == "periodic"))
    worst = 0.0
    for trial in range(5):
        layers = _random_net(rng, widths)
        x = rng.uniform(5, 20, (1, widths[0]))
        res = emulate(np.repeat(x, 20, 0), layers, CELLS, window_ns=100, seed=trial, input_mode=mode)
        model, hidden = network_rate(
            torch.tensor(x), sfq_to_rate(layers, CELLS), CELLS, input_mode=mode, return_hidden=True, types=types
        )
        em = [res.rates.mean(0)] + [h.mean(0) for h in res.hidden_rates]
        mo = [model.numpy()[0]] + [h.numpy()[0] for h in hidden]
        err = np.concatenate([np.abs(e - m) for e, m in zip(em, mo)]) / x.max()
        assert np.all(err <= bound), (trial, em, mo, err)
        worst = max(worst, float(err.max()))
    assert worst > 0.002  # the comparison ran on firing networks


def test_layer_covariance_linear_response_against_closed_form_and_emulator():
    # two neurons firing on every excitatory fluxon (P(0) = 0, P(1) = 1) share one Poisson input (5 GHz) through
    # synapses p = 0.9, 0.6: r_i = p_i x / (1 + p_i x tau_r) (Poisson thinning, 10 ps reset), so the linear response
    # J_i = dr_i / dx = p_i / (1 + p_i x tau_r)^2 and Cov(N_1, N_2) / T = J_1 J_2 x (no reset: p_1 p_2 x = 2.7)
    cells = CellParams(sigma_neu_uA=0.01)
    p = np.array([0.9, 0.6])
    z = np.array([1.2815515655446004, 0.2533471031357997])  # Phi^-1(0.9), Phi^-1(0.6)
    layer = Layer(np.ones((2, 1)), (cells.i50_uA + cells.sigma_syn_uA * z)[:, None], np.array([90.0, 90.0]))
    x, tau_r = 5.0, 1.0 / cells.clock_GHz
    r, _, cov = layer_rate(
        torch.tensor([[x]], dtype=torch.float64), sfq_to_rate([layer], cells)[0], cells, poisson_inputs=True,
        return_cov=True,
    )
    assert r[0].numpy() == pytest.approx(p * x / (1 + p * x * tau_r), rel=1e-6)
    jac = p / (1 + p * x * tau_r) ** 2
    assert float(cov[0, 0, 1]) == pytest.approx(jac[0] * jac[1] * x, rel=1e-6) and float(cov[0, 0, 0]) == 0.0
    # the emulator's count covariance over 5 ns windows (200 x 10 windows; standard error about 2 %)
    res = emulate(np.full((200, 1), x), [layer], cells, window_ns=50, seed=1, input_mode="poisson")
    start, w = cells.ticks(res.delay_ps), cells.ticks(5000.0)
    t = res.out_times
    counts = np.stack([((t >= start + k * w) & (t < start + (k + 1) * w)).sum(-1) for k in range(10)], -1)
    a, b = counts[:, 0].reshape(-1).astype(float), counts[:, 1].reshape(-1).astype(float)
    measured = float(np.mean((a - a.mean()) * (b - b.mean()))) / 5.0
    assert measured == pytest.approx(jac[0] * jac[1] * x, rel=0.1)


def test_exc_inh_covariance_in_the_chain():
    # count chain: V+ = V- = lam (Poisson), covariance C = kappa lam: the conditional variance of N+ given N+ + N-
    # per arrival, (V+ V- - C^2) / (V+ + V- + 2 C) = lam (1 - kappa) / 2, is that of two independent trains of Fano
    # factor 1 - kappa (F lam / 2): the same chain, the same rate.  Renewal chain: Poisson streams have rho = 0
    # (g = 1), so the covariance factor gives the count chain's g: the same rate as the count chain
    cells = CellParams(n_max=3, n_min=-1, sigma_neu_uA=2.0)
    one = torch.tensor(1.0, dtype=torch.float64)
    lam, bias = 8.0 * one, 82.0 * one
    base = neuron_rate(lam, lam, bias, cells)
    assert float(base) == pytest.approx(float(neuron_rate(lam, lam, bias, cells, types="renewal")), rel=1e-9)
    for kappa in (0.3, -0.4):
        r = neuron_rate(lam, lam, bias, cells, cov_ei_GHz=kappa * lam, types="counts")
        ref = neuron_rate(lam, lam, bias, cells, fano_exc=1 - kappa, fano_inh=1 - kappa, types="counts")
        assert float(r) == pytest.approx(float(ref), rel=1e-9)
        renewal = neuron_rate(lam, lam, bias, cells, cov_ei_GHz=kappa * lam, types="renewal")
        assert float(renewal) == pytest.approx(float(r), rel=1e-6)
    # exc and inh arriving together alternate more: fewer firings; zero covariance is the previous model
    assert float(neuron_rate(lam, lam, bias, cells, cov_ei_GHz=0.3 * lam)) < float(base)
    assert float(neuron_rate(lam, lam, bias, cells, cov_ei_GHz=0.0)) == float(base)
    c = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    lam_e = torch.tensor([6.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: neuron_rate(a, 4.0 * one, bias, CELLS, cov_ei_GHz=b), (lam_e, c))


def test_reset_memory_flux_balance():
    # fire at k = 1 (P(1) = 1, P(0) = 0), one antifluxon; regular trains (Fano 0) at 20 and 10 GHz: the chain never
    # has two inhibitory arrivals in a row, so every inhibitory arrival costs one firing (flux balance
    # r = lam+' - lam-').  Excitatory gap = reset (none lost); inhibitory ones lost in the reset per firing:
    # lam- tau_r (1 - rho), rho = -(1 - q) / q = -1/2 (q = 2/3): n- = 0.15.  With memory they leave the stream:
    # r = 20 - (10 - 0.15 r), r = 10 / 0.85
    cells = CellParams(n_max=1, n_min=-1, sigma_neu_uA=0.01)
    one = torch.tensor(1.0, dtype=torch.float64)
    args = (20 * one, 10 * one, 90 * one, cells, None, 0.01, 0.0, 0.0)
    assert float(neuron_rate(*args, memory=(1.0, 1.0))) == pytest.approx(10 / 0.85, rel=2e-3)
    # without memory the reset is a pause (the chain's next types are drawn again): fewer firings
    assert float(neuron_rate(*args)) < 10 / 0.85 - 0.5


def test_independent_arrivals_is_the_previous_model():
    # arrivals="independent": Poisson chain over k only, reset r = r0 / (1 + r0 max(tau_r - gap, 0)).
    # A periodic single input (gap 1 / clock: no reset loss) with q = 1/2, n_max = 2, threshold 2: pi = (2/3, 1/3)
    # as in test_neuron_rate_hand_derived, so r = 20 / 6 whatever the (correlated) model says about regular trains.
    cells = CellParams(n_max=2, n_min=0, sigma_neu_uA=0.01)
    layer = RateLayer(torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.tensor([70.0], dtype=torch.float64))
    x = torch.tensor([[10.0, 10.0]], dtype=torch.float64)
    r = network_rate(x, [layer], cells, arrivals="independent")
    assert float(r) == pytest.approx(20 / 6, rel=1e-6)
    assert float(network_rate(x, [layer], cells)) < float(r)  # regular trains alternate more: fewer firings
    with pytest.raises(SettingError, match="arrivals"):
        network_rate(x, [layer], cells, arrivals="bogus")


def test_float_to_sfq_round_trip():
    w = torch.tensor([[0.9, -0.3, 0.0], [-0.999, 0.5, 0.02]], dtype=torch.float64)
    layers = float_to_sfq([RateLayer(w, torch.tensor([70.0, 130.0], dtype=torch.float64))], CELLS)
    assert layers[0].signs.tolist() == [[1, -1, 0], [-1, 1, 1]]
    assert layers[0].bias_neu.tolist() == [70.0, 100.0]  # clipped to the neuron bias range
    back = sfq_to_rate(layers, CELLS)[0]
    got = (back.w * back.active).numpy()
    lo_p = _phi((CELLS.syn_range_uA[0] - 100) / 5)
    hi_p = _phi((CELLS.syn_range_uA[1] - 100) / 5)
    expect = np.sign(w.numpy()) * np.clip(np.abs(w.numpy()), lo_p, hi_p)
    assert np.allclose(got, expect, atol=1e-9)
    # I = I_50 + sigma * Phi^-1(|w|): |w| = 0.5 sits at I_50
    assert layers[0].bias_syn[1, 1] == pytest.approx(100.0)
    with pytest.raises(SettingError, match=r"\[-1, 1\]"):
        float_to_sfq([RateLayer(torch.tensor([[1.5]]), torch.tensor([70.0]))], CELLS)


def test_offline_bias_training_lowers_model_loss():
    layers = [Layer([[1, -1]], [[100.0, 100.0]], [80.0])]
    x = torch.tensor([[10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    target = torch.tensor([8.0, 0.0], dtype=torch.float64)
    loss = lambda out: ((out[:, 0] - target) ** 2).mean()  # noqa: E731
    before = float(loss(network_rate(x, sfq_to_rate(layers, CELLS), CELLS)))
    trained = train_biases(layers, x, loss, CELLS, steps=100, lr_uA=1.0)
    after = float(loss(network_rate(x, sfq_to_rate(trained, CELLS), CELLS)))
    assert after < 0.1 * before
    assert trained[0].bias_syn[0, 0] > 102  # the excitatory synapse opened (p from 0.5 to > 0.66)


def test_spsa_descends_a_noisy_quadratic():
    rng = np.random.default_rng(0)
    goal = np.array([90.0, 110.0, 100.0])
    measure = lambda p: float(((p["b"] - goal) ** 2).sum() + rng.normal(0, 1.0))  # noqa: E731
    res = spsa(measure, {"b": np.array([80.0, 80.0, 80.0])}, {"b": (75.0, 125.0)}, steps=200, a_uA=3.0, c_uA=2.0)
    assert np.abs(res.params["b"] - goal).max() < 3.0
    assert res.n_measurements == 2 * (200 + 4)  # 4 calibration pairs


# ------------------------------------------------------------------------- accounting, misc
def test_event_driven_cost_does_not_depend_on_grid():
    layers = _random_net(np.random.default_rng(5), [3, 2])
    x = np.full((4, 3), 10.0)
    a = emulate(x, layers, CellParams(dt_ps=0.1), window_ns=5, seed=1)
    b = emulate(x, layers, CellParams(dt_ps=0.01), window_ns=5, seed=1)  # 10x the grid steps
    assert a.out_times.shape == b.out_times.shape  # same pulses to process
    assert a.pulses["dc_sfq"] == b.pulses["dc_sfq"]


def test_energy_accounting():
    layers = [Layer([[1, 1]], [[125.0, 125.0]], [95.0])]
    res = emulate(np.array([[10.0, 10.0]]), layers, CELLS, window_ns=10, seed=0)
    e = energy(res, layers, CELLS, "rsfq")
    assert e["dynamic_J"] == pytest.approx(res.switches * 100e-6 * 2.067833848e-15)
    assert e["static_W"] == pytest.approx(e["n_jj"] * 0.7 * 100e-6 * 2.5e-3)
    assert energy(res, layers, CELLS, "ersfq")["static_W"] == 0.0
    p = res.pulses
    # 10 GHz for W + D = 10.03 ns: 100 or 101 pulses per input; p = Phi(5) passes (almost surely) all
    assert 200 <= p["dc_sfq"] <= 202 and p["synapse_pass"] == p["synapse_in"] == p["dc_sfq"]
    assert p["merger_out"] < p["merger_in"] or p["merger_out"] == p["merger_in"]


def test_decision_latency_hand_made():
    ticks = lambda *ps: [int(v / CELLS.dt_ps) for v in ps]  # noqa: E731
    out = np.full((2, 2, 3), NEVER)
    out[0, 0, :2] = ticks(50, 90)  # output 0 leads at 50 ps, tie (undecided) at 70 ps, leads again from 90 ps
    out[0, 1, :1] = ticks(70)
    out[1, 1, :3] = ticks(40, 60, 80)  # output 0 leads first, 1 takes over at 60 ps
    out[1, 0, :1] = ticks(30)
    lat = decision_latency_ps(out, 0, CELLS)
    assert lat.tolist() == [90.0, 60.0]


def test_variation_is_seeded_and_bounded():
    a = Variation.draw([(3, 2)], bias_spread=0.05, ic_spread=0.02, seed=7)
    b = Variation.draw([(3, 2)], bias_spread=0.05, ic_spread=0.02, seed=7)
    assert np.array_equal(a.syn_bias[0], b.syn_bias[0]) and np.abs(a.syn_bias[0]).max() <= 0.05
    assert np.abs(a.neu_ic[0]).max() <= 0.02
    with pytest.raises(SettingError, match="bias_spread"):
        Variation.draw([(1, 1)], bias_spread=1.5)


def test_substrate_contract_and_errors():
    sub = open_substrate_spec("sfq:rsfq", 2, 1, seed=3, options={"hidden": [2], "window_ns": 5.0})
    assert isinstance(sub, Substrate)
    d = sub.describe()
    assert d["kind"] == "sfq-rsfq" and d["params"] == {
        "bias_syn_0": [2, 2],
        "bias_neu_0": [2],
        "bias_syn_1": [1, 2],
        "bias_neu_1": [1],
    }
    sub.set_params({"bias_syn_0": torch.full((2, 2), 200.0)})
    assert sub.get_params()["bias_syn_0"].max() == CELLS.syn_range_uA[1]  # the bias DAC clips
    y = sub.forward(torch.tensor([[10.0, 0.0], [0.0, 0.0]]))
    assert y.shape == (2, 1) and y.dtype == torch.float32 and float(y[1, 0]) == 0.0
    again = open_substrate_spec("sfq:rsfq", 2, 1, seed=3, options={"hidden": [2], "window_ns": 5.0})
    again.set_params({"bias_syn_0": torch.full((2, 2), 200.0)})
    assert torch.equal(again.forward(torch.tensor([[10.0, 0.0], [0.0, 0.0]])), y)  # seeded
    assert sub.last["energy"]["total_J"] > 0
    with pytest.raises(SettingError, match="unknown option 'hiden'"):
        open_substrate_spec("sfq:rsfq", 2, 1, options={"hiden": [2]})
    with pytest.raises(SettingError, match="no hardware parameter"):
        sub.set_params({"bias_syn_7": torch.zeros(1)})
    with pytest.raises(SubstrateFault, match="expects input rates"):
        sub.forward(torch.zeros(2, 3))
    with pytest.raises(SubstrateFault, match="clock rate"):
        sub.forward(torch.tensor([[500.0, 0.0]]))


@pytest.mark.slow
def test_xor_case_study_quick():
    from examples.sfq_xor import main

    report = main(["--quick", "--out", "/dev/null"])
    for part in ("nominal_offline", "nominal_in_situ"):
        assert report[part]["all_correct_seeds"] == report[part]["seeds"]
        assert report[part]["margin_of_mean_rates"] >= 0.3


def test_substrate_rate_twin_is_differentiable_and_close():
    sub = open_substrate_spec(
        "sfq:ersfq",
        3,
        2,
        seed=1,
        options={"hidden": [4], "window_ns": 20.0, "input_mode": "poisson", "routing": "random"},
    )
    rng = np.random.default_rng(4)
    sub.set_params({
        "bias_syn_0": torch.tensor(rng.uniform(95, 115, (4, 3))),
        "bias_neu_0": torch.tensor(rng.uniform(60, 95, 4)),
        "bias_syn_1": torch.full((2, 4), 110.0),
        "bias_neu_1": torch.full((2,), 90.0),
    })
    sub.set_routing([np.array([[1, -1, 1], [1, 1, -1], [1, -1, -1], [1, 1, 1]]), np.ones((2, 4))])
    b = sub.get_params()["bias_syn_0"].double().requires_grad_()
    x = torch.tensor([[12.0, 8.0, 15.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: sub.rate_forward(x, {"bias_syn_0": z}), (b,))
    measured = sub.forward(x.float().repeat(40, 1)).double().mean(0)
    model = sub.rate_forward(x)[0].detach()
    assert torch.all((measured - model).abs() <= 0.05 * model + 0.15), (measured, model)


def test_sfq_network_behind_the_serial_emulator(tmp_path):
    from devices import SerialDevice
    from devices.emulator import Emulator

    opts = {"hidden": [2], "window_ns": 5.0}
    reference = open_substrate_spec("sfq:rsfq", 2, 1, seed=5, options=opts)
    with (
        Emulator(open_substrate_spec("sfq:rsfq", 2, 1, seed=5, options=opts), link=tmp_path / "ttySFQ") as emu,
        SerialDevice(emu.port, timeout=2.0) as dev,
    ):
        assert dev.describe()["kind"] == "serial:sfq-rsfq"
        assert dev.input_range == (0.0, 100.0)
        biases = {
            "bias_syn_0": torch.full((2, 2), 115.0),
            "bias_neu_0": torch.full((2,), 72.0),
            "bias_syn_1": torch.full((1, 2), 120.0),
            "bias_neu_1": torch.full((1,), 92.0),
        }
        dev.set_params(biases)
        reference.set_params(biases)
        x = torch.tensor([[10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [0.0, 0.0]])
        assert torch.equal(dev.forward(x), reference.forward(x))  # same seed, same measurement stream
        assert torch.equal(dev.get_params()["bias_neu_0"], biases["bias_neu_0"])


def test_sfq_rate_diagnosis_rates_option_parses_and_refuses_bad_ranges():
    import argparse

    from bench.sfq_rate_diagnosis import rate_range

    assert rate_range("1,5") == (1.0, 5.0) and rate_range("2.5,2.5") == (2.5, 2.5)
    for bad in ("5", "5,20,30", "a,b", "20,5", "0,5"):
        with pytest.raises(argparse.ArgumentTypeError, match="LO"):
            rate_range(bad)
