"""Where the SFQ rate model (``simulators.sfq_rate``) departs from the pulse emulator (``simulators.sfq``).

Measurements, stage by stage, on random small networks drawn like those of
``tests/test_sfq.py::test_rate_model_agrees_with_pulse_emulator`` (``random_net``), from ``--seed``
(``--test-nets``: the test's own networks, for reporting only; nothing is fitted here).  Errors are
normalized like the test: ``|r_emulator - r_model| / max_j x_j`` (in %).

``python -m bench.sfq_rate_diagnosis [--mode poisson|periodic] [--seed 7] [--nets 5] [--reps 20]``
prints, per two-layer network (3-4-2):

1. per neuron (hidden, output): emulator rate, model rate, error;
2. hidden trains: measured Fano factor ``Var N(T) / E N(T)`` (T = 0.5, 1, 5 ns) against the model's ``CV^2``,
   and the measured count covariance matrix per ns (T = 5 ns) against the model's linear response
   (``layer_rate(..., return_cov=True)``);
3. correlation: the emulator's second layer fed the hidden trains shuffled across batch samples (each
   hidden neuron's train from another, independent sample: same rates and statistics, no common input
   pulses), against the unshuffled run and the model's second layer given the measured hidden rates;
4. merger stage of the second layer: measured merged excitatory / inhibitory rates (shuffled too)
   against ``merger_rate`` on the measured hidden rates (``s = 0`` and ``s = 1``);
5. neuron stage given the measured arrival trains (merged rates, variances ``V+-`` and exc-inh
   covariance ``C`` per ns over 1 ns windows): ``neuron_rate`` without and with ``C``; the measured lag-1
   correlation of the arrival types ``rho = P(E|E) - P(E|I)`` against the model's, and the chain run
   with the measured ``rho``;
6. reset: arrivals (excitatory, inhibitory) that fall in the reset after each firing, per firing,
   against ``lam+- tau_r``.

``--table``: the worst and mean errors per case (the four cases of the test) on ``--nets`` networks from ``--seed``
(``--test-nets``: the test's own networks), with the type chain ``--types renewal|counts``, the mergers'
collision hierarchy ``--merger-depth 1|2`` (``simulators.sfq_rate.merger_rate``; default 1, the model of
2026-12-03) and, at depth 2, without the coincidence factors of correlated trains (``--no-copies``).

The pipeline repeats :func:`simulators.sfq.emulate`'s layer loop with the same random draws (checked:
its output rates equal ``emulate``'s for the same seed), keeping the intermediate trains.  One thread;
seconds per network.  No timing is measured.
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
    dc_to_sfq,
    delay,
    emulate,
    merge,
    neuron,
    path_delay_ps,
    rate_readout,
    switch_probability,
    synapse,
)
from simulators.sfq_rate import PERIODIC_FANO, layer_rate, merger_rate, network_rate, neuron_rate, sfq_to_rate

CELLS = CellParams()
CASES = (("poisson", [3, 4]), ("poisson", [3, 4, 2]), ("periodic", [3, 4]), ("periodic", [3, 4, 2]))


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


def counts_in_windows(t, start, window_ns, cells, T_ns):
    """Pulse counts ``[B, n, n_win]`` in consecutive windows of ``T_ns`` inside the readout window."""
    n_win = int(window_ns // T_ns)
    edges = start + np.arange(n_win + 1) * cells.ticks(T_ns * 1000.0)
    valid = t != NEVER
    return np.stack([((t >= edges[i]) & (t < edges[i + 1]) & valid).sum(-1) for i in range(n_win)], -1)


def cov_rate(a, b, T_ns):
    """Count covariance per ns ``Cov(N_a(T), N_b(T)) / T`` pooled over batch and windows."""
    a = a.reshape(-1).astype(float)
    b = b.reshape(-1).astype(float)
    return float(((a - a.mean()) * (b - b.mean())).mean() / T_ns)


def fano(t, start, window_ns, cells, T_ns):
    """Fano factor per train (pooled over the batch and windows of ``T_ns``); nan for silent trains."""
    c = counts_in_windows(t, start, window_ns, cells, T_ns)
    out = []
    for i in range(c.shape[1]):
        m = c[:, i].mean()
        out.append(cov_rate(c[:, i], c[:, i], T_ns) * T_ns / m if m > 0 else np.nan)
    return np.array(out)


def shuffle(t, rng):
    """Each neuron's trains ``[B, n, K]`` taken from an independently permuted batch sample."""
    out = t.copy()
    for i in range(t.shape[1]):
        out[:, i] = t[rng.permutation(t.shape[0]), i]
    return out


def lag1_types(me, mi, start):
    """Measured ``P(E|E)``, ``P(E|I)`` of consecutive arrivals per neuron (readout window): ``[n, 2]``."""
    out = []
    for i in range(me.shape[1]):
        ee = ne = ie = ni = 0
        for b in range(me.shape[0]):
            te = me[b, i][(me[b, i] != NEVER) & (me[b, i] >= start)]
            ti = mi[b, i][(mi[b, i] != NEVER) & (mi[b, i] >= start)]
            tt = np.concatenate([te, ti])
            s = np.concatenate([np.ones(len(te)), np.zeros(len(ti))])[np.argsort(tt, kind="stable")]
            ee += int(((s[:-1] == 1) & (s[1:] == 1)).sum())
            ne += int((s[:-1] == 1).sum())
            ie += int(((s[:-1] == 0) & (s[1:] == 1)).sum())
            ni += int((s[:-1] == 0).sum())
        out.append((ee / max(ne, 1), ie / max(ni, 1)))
    return np.array(out)


def reset_losses(fired, me, mi, cells):
    """Measured excitatory and inhibitory arrivals inside the reset after each firing, per firing: ``[n, 2]``."""
    reset, dn = cells.ticks(cells.reset_ps), cells.ticks(cells.neuron_ps)
    out = []
    for i in range(fired.shape[1]):
        nf = le = li = 0
        for b in range(fired.shape[0]):
            f = fired[b, i][fired[b, i] != NEVER] - dn
            te, ti = me[b, i][me[b, i] != NEVER], mi[b, i][mi[b, i] != NEVER]
            nf += len(f)
            le += sum(int(((te > x) & (te < x + reset)).sum()) for x in f)
            li += sum(int(((ti > x) & (ti < x + reset)).sum()) for x in f)
        out.append((le / max(nf, 1), li / max(nf, 1)))
    return np.array(out)


def pct(a, b, scale):
    return np.round(100 * np.abs(np.asarray(a) - np.asarray(b)) / scale, 1)


def diagnose(mode, layers, x, reps, window_ns, seed, log, depth=1):
    cells = CELLS
    xs = np.repeat(x, reps, 0)
    res = emulate(xs, layers, cells, window_ns=window_ns, seed=seed, input_mode=mode, chunk=reps)
    rng = np.random.default_rng(seed)
    d_ps = path_delay_ps(layers, cells)
    start = cells.ticks(d_ps)
    t_in = dc_to_sfq(xs, window_ns + d_ps / 1000.0, cells, rng, mode)
    h, _, _ = run_layer(t_in, layers[0], cells, rng)
    out, m2e, m2i = run_layer(h, layers[1], cells, rng)
    rates_out = rate_readout(out, start, window_ns, cells)
    assert np.allclose(rates_out, res.rates), "the replica differs from emulate"
    em_h, em_o = rate_readout(h, start, window_ns, cells).mean(0), rates_out.mean(0)
    scale = float(x.max())
    rl = sfq_to_rate(layers, cells)
    xt = torch.tensor(x)
    mo_out, mo_h = network_rate(xt, rl, cells, input_mode=mode, return_hidden=True, merger_depth=depth)
    mo_h, mo_out = mo_h[0].numpy()[0], mo_out.numpy()[0]
    f0 = 1.0 if mode == "poisson" else PERIODIC_FANO
    _, fano_h_model, cov_model = layer_rate(
        xt, rl[0], cells, poisson_inputs=mode == "poisson", fano_in=f0, return_cov=True, merger_depth=depth
    )
    # 1. rates
    log(f"  hidden emu {np.round(em_h, 2)} model {np.round(mo_h, 2)} err% {pct(em_h, mo_h, scale)}")
    log(f"  output emu {np.round(em_o, 2)} model {np.round(mo_out, 2)} err% {pct(em_o, mo_out, scale)}")
    # 2. hidden trains: Fano factors and covariances
    for T in (0.5, 1.0, 5.0):
        log(f"  hidden Fano T={T} ns: {np.round(fano(h, start, window_ns, cells, T), 3)}")
    log(f"  hidden Fano model (CV^2): {np.round(fano_h_model.numpy()[0], 3)}")
    ch = counts_in_windows(h, start, window_ns, cells, 5.0)
    n_h = ch.shape[1]
    cm = np.array([[cov_rate(ch[:, i], ch[:, k], 5.0) if i != k else 0.0 for k in range(n_h)] for i in range(n_h)])
    log(f"  hidden count cov/ns (T=5 ns, off-diagonal): {np.round(cm, 2).tolist()}")
    log(f"  hidden count cov/ns model (linear response): {np.round(cov_model[0].numpy(), 2).tolist()}")
    # 3. correlation: hidden trains shuffled across samples; the model's layer 2 on the measured hidden rates
    hm = torch.tensor(em_h[None])
    l2_nocov = layer_rate(hm, rl[1], cells, fano_in=fano_h_model, merger_depth=depth).numpy()[0]
    l2_cov = layer_rate(hm, rl[1], cells, fano_in=fano_h_model, cov_in=cov_model, merger_depth=depth).numpy()[0]
    rng2 = np.random.default_rng(seed + 1000)
    out_s, m2e_s, m2i_s = run_layer(shuffle(h, rng2), layers[1], cells, rng2)
    rs = rate_readout(out_s, start, window_ns, cells).mean(0)
    log(f"  layer 2 emu, hidden shuffled {np.round(rs, 2)} (unshuffled {np.round(em_o, 2)}): shift% "
        f"{np.round(100 * (rs - em_o) / scale, 1)}")
    log(f"  layer 2 model on measured hidden rates, no covariances {np.round(l2_nocov, 2)}: err% vs emu "
        f"{pct(em_o, l2_nocov, scale)}, vs shuffled emu {pct(rs, l2_nocov, scale)}; with covariances "
        f"{np.round(l2_cov, 2)}: err% vs emu {pct(em_o, l2_cov, scale)}")
    # 4. merger stage
    w = rl[1].w * rl[1].active
    tau = cells.merger_dead_ps / 1000.0
    lams = (torch.relu(w)[None] * hm[:, None, :], torch.relu(-w)[None] * hm[:, None, :])
    for name, lam, mt, mts in (("exc", lams[0], m2e, m2e_s), ("inh", lams[1], m2i, m2i_s)):
        meas = rate_readout(mt, start, window_ns, cells).mean(0)
        meas_s = rate_readout(mts, start, window_ns, cells).mean(0)
        m0, m1 = merger_rate(lam, tau, 0.0, depth)[0].numpy(), merger_rate(lam, tau, 1.0)[0].numpy()
        log(f"  merger {name}: emu {np.round(meas, 2)} shuffled {np.round(meas_s, 2)} model s=0 depth {depth} "
            f"{np.round(m0, 2)} "
            f"s=1 {np.round(m1, 2)} (inputs {np.round(lam.sum(-1)[0].numpy(), 2)})")
    # 5. neuron stage given the measured arrivals
    n_exc = (layers[1].signs == 1).sum(1)
    gap = torch.tensor(np.where(n_exc > 1, tau, 1.0 / cells.clock_GHz))
    hazard = lams[0].sum(-1)[0]
    ce = counts_in_windows(m2e, start, window_ns, cells, 1.0)
    ci = counts_in_windows(m2i, start, window_ns, cells, 1.0)
    le, li = ce.mean((0, 2)), ci.mean((0, 2))
    ve = np.array([cov_rate(ce[:, i], ce[:, i], 1.0) for i in range(ce.shape[1])])
    vi = np.array([cov_rate(ci[:, i], ci[:, i], 1.0) for i in range(ci.shape[1])])
    cc = np.array([cov_rate(ce[:, i], ci[:, i], 1.0) for i in range(ci.shape[1])])
    fe = torch.tensor(np.where(le > 0, ve / np.maximum(le, 1e-12), 1.0))
    fi = torch.tensor(np.where(li > 0, vi / np.maximum(li, 1e-12), 1.0))
    args = (torch.tensor(le), torch.tensor(li), torch.tensor(layers[1].bias_neu), cells, None, gap)
    r_nc = neuron_rate(*args, fe, fi, exc_hazard_GHz=hazard).numpy()
    r_c = neuron_rate(*args, fe, fi, exc_hazard_GHz=hazard, cov_ei_GHz=torch.tensor(cc)).numpy()
    log(f"  neuron | measured arrivals: V+ {np.round(ve, 2)} V- {np.round(vi, 2)} C {np.round(cc, 2)}; err% C=0 "
        f"{pct(em_o, r_nc, scale)}, measured C {pct(em_o, r_c, scale)}")
    lag = lag1_types(m2e, m2i, start)
    rho_emp = np.where((le > 0) & (li > 0), lag[:, 0] - lag[:, 1], 0.0)  # one type only: no correlation
    kappa = np.clip(cc / np.sqrt(np.maximum(ve * vi, 1e-20)), -0.98, 0.98)
    tot = le + li
    g = fe.numpy() * fi.numpy() * (1 - kappa**2) * tot / np.maximum(ve + vi + 2 * cc, 1e-12)
    q = le / np.maximum(tot, 1e-12)
    rho_min = -np.minimum(q / np.maximum(1 - q, 1e-9), (1 - q) / np.maximum(q, 1e-9))
    rho_mod = np.maximum((g - 1) / (g + 1), rho_min)
    g_emp = torch.tensor((1 + rho_emp) / (1 - rho_emp))
    r_emp = neuron_rate(*args, g_emp, g_emp, exc_hazard_GHz=hazard).numpy()
    log(f"  neuron | lag-1 type correlation: measured {np.round(rho_emp, 3)}, from the measured count statistics "
        f"{np.round(rho_mod, 3)}; chain with the measured rho: err% {pct(em_o, r_emp, scale)}")
    # 6. reset losses
    lost = reset_losses(out, m2e, m2i, cells)
    log(f"  reset | lost per firing: exc {np.round(lost[:, 0], 3)} inh {np.round(lost[:, 1], 3)} "
        f"(lam- tau_r {np.round(li / cells.clock_GHz, 3)})")


def agreement(
    mode, widths, seed, nets, reps=20, window_ns=100.0, arrivals="correlated", types="renewal", merger_depth=1,
    copies=True, rates_GHz=(5.0, 20.0),
):
    """Worst error (fraction of the largest input rate) over every neuron of ``nets`` random networks, the
    test's protocol on networks drawn from ``seed``: (worst, worst hidden, worst output, mean over neurons)."""
    rng = np.random.default_rng(seed)
    wh, wo, errs = 0.0, 0.0, []
    for trial in range(nets):
        layers = random_net(rng, widths)
        x = rng.uniform(*rates_GHz, (1, widths[0]))
        res = emulate(np.repeat(x, reps, 0), layers, CELLS, window_ns=window_ns, seed=trial, input_mode=mode)
        model, hidden = network_rate(
            torch.tensor(x), sfq_to_rate(layers, CELLS), CELLS, input_mode=mode, return_hidden=True, arrivals=arrivals,
            types=types, merger_depth=merger_depth, copies=copies,
        )
        eo = np.abs(res.rates.mean(0) - model.detach().numpy()[0]) / x.max()
        wo = max(wo, float(eo.max()))
        errs += list(eo)
        for e, m in zip(res.hidden_rates, hidden):
            eh = np.abs(e.mean(0) - m.detach().numpy()[0]) / x.max()
            wh = max(wh, float(eh.max()))
            errs += list(eh)
    return max(wh, wo), wh, wo, float(np.mean(errs))


def rate_range(text: str) -> tuple[float, float]:
    """``--rates LO,HI`` (GHz) as a pair with ``0 < LO <= HI``; a one-line argparse error otherwise."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in GHz (e.g. 5,20), got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 < LO <= HI (GHz), got {text!r}")
    return lo, hi


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--nets", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--window", type=float, default=100.0)
    ap.add_argument("--mode", default="poisson", choices=("poisson", "periodic"))
    ap.add_argument("--test-nets", action="store_true", help="the test's own networks (report only)")
    ap.add_argument("--table", action="store_true", help="worst errors per case on networks from --seed "
                    "(with --test-nets: the test's networks)")
    ap.add_argument("--types", default="renewal", choices=("renewal", "counts"), help="the neuron's type chain")
    ap.add_argument("--merger-depth", type=int, default=1, choices=(1, 2),
                    help="collision hierarchy of merger_rate for non-Poisson trains (1: the model of 2026-12-03)")
    ap.add_argument("--no-copies", action="store_true", help="merger depth 2 without the coincidence factors")
    ap.add_argument("--rates", type=rate_range, default=(5.0, 20.0),
                    help="input rates drawn uniformly from LO,HI GHz (the test: 5,20)")
    args = ap.parse_args()
    rates = args.rates
    if args.table:
        for mode, widths in CASES:
            seed = 2026 + len(widths) + (mode == "periodic") if args.test_nets else args.seed
            w, wh, wo, mean = agreement(mode, widths, seed, args.nets, types=args.types,
                                        merger_depth=args.merger_depth, copies=not args.no_copies, rates_GHz=rates)
            print(f"{mode:8s} {widths}: worst {100 * w:.2f} % (hidden {100 * wh:.2f}, output {100 * wo:.2f}), mean "
                  f"{100 * mean:.2f} % over {args.nets} networks from seed {seed} ({args.types} chain, merger depth "
                  f"{args.merger_depth}{', no copies' if args.no_copies else ''}; inputs U{list(rates)} GHz)",
                  flush=True)
        return
    widths = [3, 4, 2]
    rng = np.random.default_rng(2026 + 3 + (args.mode == "periodic") if args.test_nets else args.seed)
    for trial in range(args.nets):
        layers = random_net(rng, widths)
        x = rng.uniform(5, 20, (1, widths[0]))
        print(f"net {trial} mode {args.mode} x {np.round(x[0], 2)}", flush=True)
        diagnose(args.mode, layers, x, args.reps, args.window, trial, print, args.merger_depth)


if __name__ == "__main__":
    main()
