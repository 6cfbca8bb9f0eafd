"""bench/snn_engines.py: results taken on a busy machine are marked invalid and never compared."""

from __future__ import annotations

from bench import machine, snn_engines


def _res(ms, *, others=0.0, load=0.3, peak=10.0):
    return {"times": [ms / 1e3], "peak_mb": peak, "hidden_activity": 0.1, "others_cpu": others,
            "load_before": load, "load_after": load, "load_start": 0.2}


def _results(overrides=None):
    overrides = overrides or {}
    r = {}
    for mode in ("fwd", "fwdbwd"):
        for eng, ms in (("roofline", 100.0), ("matmul_folded", 80.0), ("native", 90.0), ("snntorch", 150.0),
                        ("norse", 120.0)):
            r[("784", 25, mode, eng, 0.2)] = [overrides.get((mode, eng), _res(ms))]
    for act, ev, dn in ((0.01, 20.0, 90.0), (0.05, 40.0, 90.0), (0.1, 80.0, 90.0), (0.2, 160.0, 90.0)):
        r[("784", 25, "fwd", "event", act)] = [_res(ev)]
        r[("784", 25, "fwd", "native", act)] = [_res(dn)]
    return r


def test_summary_compares_only_valid_results():
    s = snn_engines.summary(_results())
    # ours 0.90 of the roofline, peers 1.50 / 1.20: 1.20 / 0.90 = 1.33x faster than the best peer
    assert "| 784-1000-10, T=25, forward | 0.90 | 1.50 | 1.20 | 1.33x |" in s
    busy = _results({("fwdbwd", "norse"): _res(120.0, others=0.8)})
    s = snn_engines.summary(busy)
    assert "| 784-1000-10, T=25, fwd+bwd | invalid |" in s
    assert "| 784-1000-10, T=25, forward | 0.90 |" in s  # the other pass is still compared
    assert "invalid" in snn_engines.table(busy) and "**no**" in snn_engines.table(busy)


def test_validity_rules():
    assert snn_engines.valid(_res(1.0))
    assert not snn_engines.valid(_res(1.0, others=0.5))  # another process used half a core meanwhile
    assert not snn_engines.valid(_res(1.0, load=snn_engines.THREADS + 1.6))
    assert not snn_engines.valid({**_res(1.0), "load_start": 2.0})
    assert machine.valid({"load_before": 0.4, "load_after": 2.9}, own_threads=2)
    assert not machine.valid({"load_before": 1.6, "load_after": 0.5})


def test_crossover_is_interpolated_from_the_event_to_dense_ratio():
    # event/dense: 0.22, 0.44, 0.89, 1.78 -> crosses 1 between 10 % and 20 %: 0.1 + 0.11/0.89 * 0.1
    c = snn_engines.crossover(_results())
    assert abs(c - (0.1 + (1 - 80 / 90) / (160 / 90 - 80 / 90) * 0.1)) < 1e-12
    busy = _results()
    busy[("784", 25, "fwd", "event", 0.05)] = [_res(40.0, others=1.0)]
    assert snn_engines.crossover(busy) is None
