"""Where the SFQ rate model (``simulators.sfq_rate``) departs from the pulse emulator (``simulators.sfq``).

Measurements, stage by stage, on random small networks drawn like those of
``tests/test_sfq.py::test_rate_model_agrees_with_pulse_emulator`` but from other seeds (``--seed``;
``--test-nets`` uses the test's own networks, for reporting only: nothing is fitted here).  Errors
are normalized like the test: ``|r_emulator - r_model| / max_j x_j``.

Stages (``python -m bench.sfq_rate_diagnosis [--seed 7] [--nets 6] [--reps 40]``):

1. per neuron: hidden or output, emulator rate, model rate, error;
2. hidden trains: measured Fano factor ``Var N(T) / E N(T)`` over windows of ``T`` = 0.5, 1, 2, 5 ns
   against the model's ``CV^2``;
3. second layer given the measured hidden rates: the model's second layer fed the emulator's hidden
   rates (with the model's Fano factors, and with the measured ones), against the emulator;
4. correlation: the second layer of the emulator fed hidden trains shuffled across batch samples
   (each hidden neuron's train comes from another, independent sample: same rates and statistics,
   no common input pulses), against the unshuffled run and the model;
5. merger stage of the second layer: the measured merged excitatory / inhibitory rates against the
   model's ``merger_rate`` on the measured input rates;
6. neuron stage: the measured firing rate against ``neuron_rate`` given the measured merged rates
   and Fano factors of the arrival trains.

The pipeline below repeats :func:`simulators.sfq.emulate`'s layer loop with the same random draws
(checked: its rates equal ``emulate``'s for the same seed), keeping the intermediate trains.
One thread; takes a few minutes.  Timing is not measured.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from simulators.sfq import (
    NEVER,
    CellParams,
    Layer,
    _depth,
    _select,
    compact,
    count,
    dc_to_sfq,
    delay,
    emulate,
    merge,
    neuron,
    path_delay_ps,
    rate_readout,
    switch_probability,
)
from simulators.sfq_rate import layer_rate, network_rate, sfq_to_rate

CELLS = CellParams()


def random_net(rng, widths):
    """As ``tests/test_sfq.py::_random_net``."""
    layers = []
    for a, b in zip(widths, widths[1:]):
        signs = rng.choice([-1, 1], size=(b, a))
        signs[:, 0] = 1
        layers.append(Layer(signs, rng.uniform(95, 115, (b, a)), rng.uniform(60, 95, b)))
    return layers


def run_layer(t, layer, cells, rng):
    """One layer of ``emulate`` (nominal chip): input trains ``[B, n_in, K]`` -> (out trains, merged exc, inh)."""
    stages = np.arange(layer.n_in) * int(cells.stagger_jtls)
    t = np.where(t == NEVER, NEVER, t + cells.ticks(cells.jtl_ps) * stages[None, :, None])
    t = delay(t, cells.ticks(_depth(layer.n_out) * cells.splitter_ps + cells.synapse_ps))
    p = switch_probability(layer.bias_syn, cells.i50_uA, cells.sigma_syn_uA)
    from simulators.sfq import synapse

    exc, inh, _ = synapse(t, p, layer.signs, rng)
    fan_in = max(int((layer.signs != 0).sum(axis=1).max()), 1)
    dead = cells.ticks(cells.merger_dead_ps)
    merged = []
    for train, s in ((exc, 1), (inh, -1)):
        n_in_merger = (layer.signs == s).sum(axis=1)
        raw = compact(train.reshape(train.shape[:2] + (-1,)))
        m = _select((n_in_merger > 1)[None, :, None], merge(train, dead), raw)
        merged.append(delay(m, cells.ticks(_depth(fan_in) * cells.merger_ps)))
    ic = np.full(layer.n_out, cells.neuron_ic_uA)
    fired, _ = neuron(merged[0], merged[1], layer.bias_neu[None, :], ic[None, :], cells, rng)
    return delay(fired, cells.ticks(cells.neuron_ps)), merged[0], merged[1]


def fano(t, start, window_ns, cells, T_ns):
    """Count Fano factor ``Var N(T) / E N(T)`` per train (pooled over the batch) in the readout window."""
    n_win = int(window_ns // T_ns)
    edges = start + np.arange(n_win + 1) * cells.ticks(T_ns * 1000.0)
    valid = t != NEVER
    counts = np.stack(
        [((t >= edges[i]) & (t < edges[i + 1]) & valid).sum(-1) for i in range(n_win)], -1
    )  # [B, n, n_win]
    c = counts.reshape(-1, counts.shape[-2], n_win) if counts.ndim == 3 else counts
    c = np.moveaxis(c, 1, 0).reshape(c.shape[1], -1)
    mean = c.mean(-1)
    return np.where(mean > 0, c.var(-1) / np.maximum(mean, 1e-12), np.nan)


def counts_in_windows(t, start, window_ns, cells, T_ns):
    """Pulse counts ``[B, n, n_win]`` in consecutive windows of ``T_ns`` inside the readout window."""
    n_win = int(window_ns // T_ns)
    edges = start + np.arange(n_win + 1) * cells.ticks(T_ns * 1000.0)
    valid = t != NEVER
    return np.stack([((t >= edges[i]) & (t < edges[i + 1]) & valid).sum(-1) for i in range(n_win)], -1)


def cov_rate(a, b, T_ns):
    """Count covariance per ns ``Cov(N_a(T), N_b(T)) / T`` pooled over batch and windows: a, b ``[B, n_win]``."""
    a = a.reshape(-1).astype(float)
    b = b.reshape(-1).astype(float)
    return float(((a - a.mean()) * (b - b.mean())).mean() / T_ns)


def shuffle(t, rng):
    """Each train ``[B, n, K]`` of each neuron from an independently permuted batch sample."""
    out = t.copy()
    for i in range(t.shape[1]):
        out[:, i] = t[rng.permutation(t.shape[0]), i]
    return out


def diagnose(mode, layers, x, reps, window_ns, seed, log):
    cells = CELLS
    b = reps
    xs = np.repeat(x, b, 0)
    res = emulate(xs, layers, cells, window_ns=window_ns, seed=seed, input_mode=mode, chunk=b)
    rng = np.random.default_rng(seed)
    d_ps = path_delay_ps(layers, cells)
    start = cells.ticks(d_ps)
    t_in = dc_to_sfq(xs, window_ns + d_ps / 1000.0, cells, rng, mode)
    h, m1e, m1i = run_layer(t_in, layers[0], cells, rng)
    out, m2e, m2i = run_layer(h, layers[1], cells, rng)
    rates_out = rate_readout(out, start, window_ns, cells)
    assert np.allclose(rates_out, res.rates), "replica differs from emulate"
    rates_h = rate_readout(h, start, window_ns, cells)
    scale = float(x.max())

    rl = sfq_to_rate(layers, cells)
    xt = torch.tensor(x)
    mo_out, mo_h = network_rate(xt, rl, cells, input_mode=mode, return_hidden=True)
    _, fano_h_model = layer_rate(
        xt, rl[0], cells, poisson_inputs=mode == "poisson",
        fano_in=1.0 if mode == "poisson" else __import__("simulators.sfq_rate").sfq_rate.PERIODIC_FANO,
        return_fano=True,
    )
    em_h, em_o = rates_h.mean(0), rates_out.mean(0)
    log(f"  hidden emu {np.round(em_h, 2)} model {np.round(mo_h[0].numpy()[0], 2)} "
        f"err% {np.round(100 * np.abs(em_h - mo_h[0].numpy()[0]) / scale, 1)}")
    log(f"  output emu {np.round(em_o, 2)} model {np.round(mo_out.numpy()[0], 2)} "
        f"err% {np.round(100 * np.abs(em_o - mo_out.numpy()[0]) / scale, 1)}")
    # 2. Fano factors of the hidden trains (the window starts where the readout starts; hidden trains are steady)
    for T in (0.5, 1.0, 2.0, 5.0):
        log(f"  hidden Fano T={T} ns: {np.round(fano(h, start, window_ns, cells, T), 3)}")
    log(f"  hidden Fano model (CV^2): {np.round(fano_h_model.numpy()[0], 3)}")
    # 3. second layer given the measured hidden rates
    hm = torch.tensor(em_h[None])
    f_meas = torch.tensor(fano(h, start, window_ns, cells, 5.0)[None])
    l2_modelF = layer_rate(hm, rl[1], cells, fano_in=fano_h_model)
    l2_measF = layer_rate(hm, rl[1], cells, fano_in=torch.nan_to_num(f_meas, nan=1.0))
    log(f"  layer2 | measured hidden rates, model Fano: {np.round(l2_modelF.numpy()[0], 2)} err% "
        f"{np.round(100 * np.abs(em_o - l2_modelF.numpy()[0]) / scale, 1)}")
    log(f"  layer2 | measured hidden rates, measured Fano(5ns): {np.round(l2_measF.numpy()[0], 2)} err% "
        f"{np.round(100 * np.abs(em_o - l2_measF.numpy()[0]) / scale, 1)}")
    # 4. correlation: shuffle hidden trains across samples
    rng2 = np.random.default_rng(seed + 1000)
    out_s, m2e_s, m2i_s = run_layer(shuffle(h, rng2), layers[1], cells, rng2)
    rs = rate_readout(out_s, start, window_ns, cells).mean(0)
    log(f"  layer2 emu, hidden shuffled: {np.round(rs, 2)} (unshuffled {np.round(em_o, 2)}) "
        f"diff% {np.round(100 * (rs - em_o) / scale, 1)}; model err vs shuffled% "
        f"{np.round(100 * np.abs(rs - l2_modelF.numpy()[0]) / scale, 1)}")
    # 5. merger stage: measured merged rates against merger_rate on the measured synapse output rates
    w = rl[1].w * rl[1].active
    lam_e = (torch.relu(w)[None] * hm[:, None, :])
    lam_i = (torch.relu(-w)[None] * hm[:, None, :])
    tau = cells.merger_dead_ps / 1000.0
    from simulators.sfq_rate import merger_rate

    for name, lam, mt, mts in (("exc", lam_e, m2e, m2e_s), ("inh", lam_i, m2i, m2i_s)):
        meas = rate_readout(mt, start, window_ns, cells).mean(0)
        meas_s = rate_readout(mts, start, window_ns, cells).mean(0)
        mod0 = merger_rate(lam, tau, 0.0)[0].numpy()
        mod1 = merger_rate(lam, tau, 1.0)[0].numpy()
        log(f"  merger {name}: emu {np.round(meas, 2)} shuffled {np.round(meas_s, 2)} model(s=0) {np.round(mod0, 2)} "
            f"(s=1) {np.round(mod1, 2)}  sum-in {np.round(lam.sum(-1)[0].numpy(), 2)}")
        log(f"  merged {name} Fano T=1/5ns: {np.round(fano(mt, start, window_ns, cells, 1.0), 3)} "
            f"{np.round(fano(mt, start, window_ns, cells, 5.0), 3)}; shuffled "
            f"{np.round(fano(mts, start, window_ns, cells, 5.0), 3)}")
    # 6. neuron stage given the measured arrival trains: rates, variances and the exc-inh covariance of the
    # merged trains (count windows of T), with and without the covariance
    from simulators.sfq_rate import neuron_rate

    n_exc = (layers[1].signs == 1).sum(1)
    gap = np.where(n_exc > 1, tau, 1.0 / cells.clock_GHz)
    hazard = lam_e.sum(-1)[0]
    for T in (0.5, 1.0, 5.0):
        ce = counts_in_windows(m2e, start, window_ns, cells, T)
        ci = counts_in_windows(m2i, start, window_ns, cells, T)
        for name, lo_ in (("", None),):
            pass
        le = ce.mean((0, 2)) / T
        li = ci.mean((0, 2)) / T
        ve = np.array([cov_rate(ce[:, i], ce[:, i], T) for i in range(ce.shape[1])])
        vi = np.array([cov_rate(ci[:, i], ci[:, i], T) for i in range(ci.shape[1])])
        cc = np.array([cov_rate(ce[:, i], ci[:, i], T) for i in range(ci.shape[1])])
        fe_ = torch.tensor(np.where(le > 0, ve / np.maximum(le, 1e-12), 1.0))
        fi_ = torch.tensor(np.where(li > 0, vi / np.maximum(li, 1e-12), 1.0))
        args_ = (torch.tensor(le), torch.tensor(li), torch.tensor(layers[1].bias_neu), cells, None, torch.tensor(gap))
        r_nc = neuron_rate(*args_, fe_, fi_, exc_hazard_GHz=hazard).numpy()
        r_c = neuron_rate(*args_, fe_, fi_, exc_hazard_GHz=hazard, cov_ei_GHz=torch.tensor(cc)).numpy()
        log(f"  neuron | measured arrivals T={T}: V+ {np.round(ve, 2)} V- {np.round(vi, 2)} C {np.round(cc, 2)}; "
            f"r(C=0) err% {np.round(100 * np.abs(r_nc - em_o) / scale, 1)}, r(C) err% "
            f"{np.round(100 * np.abs(r_c - em_o) / scale, 1)}")
    # hidden count covariance matrix (per ns)
    for T in (1.0, 5.0):
        ch = counts_in_windows(h, start, window_ns, cells, T)
        cm = np.array([[cov_rate(ch[:, i], ch[:, k], T) for k in range(ch.shape[1])] for i in range(ch.shape[1])])
        log(f"  hidden count cov/ns T={T}: {np.round(cm, 2).tolist()}")
    _, _, cov_model = layer_rate(
        xt, rl[0], cells, poisson_inputs=mode == "poisson",
        fano_in=1.0 if mode == "poisson" else __import__("simulators.sfq_rate").sfq_rate.PERIODIC_FANO,
        return_cov=True,
    )
    log(f"  hidden count cov/ns model (linear response): {np.round(cov_model[0].numpy(), 2).tolist()}")
    return em_h, em_o, mo_h[0].numpy()[0], mo_out.numpy()[0], rs, l2_modelF.numpy()[0]


def agreement(mode, widths, seed, nets, reps=20, window_ns=100.0, arrivals="correlated"):
    """Worst error (fraction of the largest input rate) over every neuron of ``nets`` random networks, the
    test's protocol on networks drawn from ``seed``; returns (worst, worst hidden, worst output)."""
    rng = np.random.default_rng(seed)
    wh, wo = 0.0, 0.0
    for trial in range(nets):
        layers = random_net(rng, widths)
        x = rng.uniform(5, 20, (1, widths[0]))
        res = emulate(np.repeat(x, reps, 0), layers, CELLS, window_ns=window_ns, seed=trial, input_mode=mode)
        model, hidden = network_rate(
            torch.tensor(x), sfq_to_rate(layers, CELLS), CELLS, input_mode=mode, return_hidden=True, arrivals=arrivals
        )
        wo = max(wo, float(np.abs(res.rates.mean(0) - model.numpy()[0]).max() / x.max()))
        for e, m in zip(res.hidden_rates, hidden):
            wh = max(wh, float(np.abs(e.mean(0) - m.numpy()[0]).max() / x.max()))
    return max(wh, wo), wh, wo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--nets", type=int, default=5)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--window", type=float, default=100.0)
    ap.add_argument("--mode", default="poisson")
    ap.add_argument("--test-nets", action="store_true", help="the test's own networks (report only)")
    ap.add_argument("--table", action="store_true", help="worst errors per case on networks from --seed")
    args = ap.parse_args()
    if args.table:
        for mode, widths in (("poisson", [3, 4]), ("poisson", [3, 4, 2]), ("periodic", [3, 4]), ("periodic", [3, 4, 2])):
            for arrivals in ("correlated", "independent"):
                w, wh, wo = agreement(mode, widths, args.seed, args.nets, arrivals=arrivals)
                print(f"{mode:8s} {widths} {arrivals:11s} worst {100 * w:.1f} % (hidden {100 * wh:.1f}, "
                      f"output {100 * wo:.1f}) over {args.nets} nets from seed {args.seed}", flush=True)
        return
    widths = [3, 4, 2]
    rng = np.random.default_rng(2026 + 3 + (args.mode == "periodic") if args.test_nets else args.seed)
    for trial in range(args.nets):
        layers = random_net(rng, widths)
        x = rng.uniform(5, 20, (1, widths[0]))
        print(f"net {trial} mode {args.mode} x {np.round(x[0], 2)}")
        diagnose(args.mode, layers, x, args.reps, args.window, trial, print)


if __name__ == "__main__":
    main()
