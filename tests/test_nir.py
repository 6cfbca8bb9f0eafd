"""NIR: ours -> file -> ours is exact; graphs exported by Norse and snnTorch run on our engine
with the peer's own output spikes; where a peer's exporter is broken, the test says exactly how."""

from __future__ import annotations

import dataclasses
import math
import warnings

import nir
import numpy as np
import pytest
import torch

from neuro.errors import ConfigError
from neuro.export import from_nir, read_nir, to_nir, write_nir
from neuro.export.nir import NIRResetWarning
from neuro.layers.chain import SpikingChain
from neuro.layers.lif import LIFLayer
from neuro.layers.spiking_mlp import SpikingMLP
from simulators.lif import LIFParameters
from simulators.surrogate import Surrogate

T, B = 30, 4


def _spikes(n, seed, p=0.3):
    return (torch.rand(T, B, n, generator=torch.Generator().manual_seed(seed)) < p).float()


@pytest.mark.parametrize("params", [
    [LIFParameters(), LIFParameters(tau_syn=None, reset="zero", v_reset=-0.1, spiking=False)],
    [LIFParameters(reset_timing="next_step", integrator="euler", input_gain="unit", surrogate=Surrogate("atan", 3.0)),
     LIFParameters(tau_syn=None, tau_mem=math.inf, input_gain="unit", v_th=0.7)],  # IF output
])
def test_round_trip_through_a_file_is_exact(tmp_path, params):
    torch.manual_seed(0)
    layers = [LIFLayer(8, 6, params[0], bias=True), LIFLayer(6, 3, params[1])]
    with torch.no_grad():
        for layer in layers:
            layer.linear.weight.mul_(6.0)
    model = SpikingChain(layers)
    with pytest.warns(NIRResetWarning, match="lif0.* reset by subtraction"):  # the default reset is "subtract"
        path = write_nir(model, tmp_path / "m.nir")
    back = read_nir(path)
    for a, b in zip(model.layers, back.layers):
        assert a.params == b.params
        assert torch.equal(a.linear.weight, b.linear.weight)
        assert (a.linear.bias is None) == (b.linear.bias is None)
    x = _spikes(8, 1)
    ta, tb = model.forward_traces(x), back.forward_traces(x)
    assert ta[0].spikes.sum() > 0
    for u, v in zip(ta, tb):
        assert torch.equal(u.spikes, v.spikes) and torch.equal(u.membrane, v.membrane)


def test_to_nir_states_dt_units_and_the_nir_parameters():
    p = LIFParameters(tau_mem=0.02, tau_syn=0.004, dt=5e-4, v_th=1.5, input_gain="unit")
    g = to_nir(SpikingMLP(5, [4], 2, lif=dataclasses.replace(p, reset="zero")))
    assert g.metadata["dt"] == 5e-4 and g.metadata["time_unit"] == "s"
    assert [type(g.nodes[k]).__name__ for k in ("input", "fc0", "lif0", "fc1", "lif1", "output")] == \
        ["Input", "Linear", "CubaLIF", "Linear", "CubaLIF", "Output"]
    n = g.nodes["lif0"]
    assert np.all(n.tau_mem == 0.02) and np.all(n.tau_syn == 0.004) and np.all(n.v_threshold == 1.5)
    # unit gain: r = 1 / (1 - beta); a current jump x is w_in = 1 / (1 - alpha) of tau_syn dI/dt = -I + w_in S
    assert n.r[0] == pytest.approx(1.0 / (1.0 - math.exp(-5e-4 / 0.02)))
    assert n.w_in[0] == pytest.approx(1.0 / (1.0 - math.exp(-5e-4 / 0.004)))


def test_foreign_graph_follows_the_nir_equations():
    # A hand-written NIR CubaLIF graph; Euler at dt: I += dt/tau_syn (-I + w_in S), v += dt/tau_mem (v_leak - v + r I)
    dt, w = 1e-3, np.array([[2.0]])
    g = nir.NIRGraph.from_list(nir.Input(input_type=np.array([1])), nir.Linear(weight=w),
                               nir.CubaLIF(tau_syn=np.array([4e-3]), tau_mem=np.array([1e-2]), r=np.array([3.0]),
                                           v_leak=np.array([0.0]), v_threshold=np.array([1.0]), w_in=np.array([5.0])),
                               nir.Output(output_type=np.array([1])))
    model = from_nir(g, dt=dt)
    x = torch.zeros(12, 1, 1)
    x[0] = 1.0
    got = model.forward_traces(x)[0]
    i = v = 0.0
    want_v, want_z = [], []
    for t in range(12):
        i += dt / 4e-3 * (-i + 5.0 * 2.0 * float(x[t]))
        v += dt / 1e-2 * (-v + 3.0 * i)
        z = v > 1.0
        v = 0.0 if z else v
        want_v.append(v)
        want_z.append(float(z))
    assert got.membrane.flatten().tolist() == pytest.approx(want_v, rel=1e-6)
    assert got.spikes.flatten().tolist() == want_z and sum(want_z) >= 1
    with pytest.raises(ConfigError, match="pass dt="):
        from_nir(g)


def _norse_model(seed):
    import norse.torch as norse

    torch.manual_seed(seed)
    fc1, fc2 = torch.nn.Linear(7, 6, bias=False), torch.nn.Linear(6, 3)
    with torch.no_grad():
        fc1.weight.mul_(8.0)
        fc2.weight.mul_(8.0)
    cell1 = norse.LIFCell(norse.LIFParameters(v_leak=torch.as_tensor(0.0)))
    cell2 = norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.as_tensor(50.0)))
    return norse.SequentialState(fc1, cell1, fc2, cell2), (fc1, cell1, fc2, cell2)


def test_norse_exported_graph_runs_on_our_engine_with_norses_spikes():
    import norse.torch as norse

    model, (fc1, cell1, fc2, cell2) = _norse_model(0)
    x = _spikes(7, 2)
    s1 = s2 = None
    want_h, want_out = [], []
    with torch.no_grad():
        for x_t in x.unbind(0):
            h, s1 = cell1(fc1(x_t), s1)
            out, s2 = cell2(fc2(h), s2)
            want_h.append(h)
            want_out.append(out)
    want_h, want_out = torch.stack(want_h), torch.stack(want_out)
    graph = norse.to_nir(model, torch.zeros(1, 7))
    ours = from_nir(graph, dt=1e-3, dialect="norse")
    with torch.no_grad():
        got = ours.forward_traces(x)
    assert want_h.sum() > 0 and want_out.sum() > 0
    assert torch.equal(got[0].spikes, want_h)
    assert torch.equal(got[1].spikes, want_out)


def test_norse_exporter_defects_are_what_the_dialect_undoes():
    import norse.torch as norse

    model, _ = _norse_model(0)
    graph = norse.to_nir(model, torch.zeros(1, 7))
    cuba = graph.nodes["1"]
    # Norse 1.1 writes tau = dt / tau_inv = dt * tau (1e-3 * 10 ms), not tau = 10 ms
    assert float(cuba.tau_mem) == pytest.approx(1e-3 * 1e-2) and float(cuba.tau_syn) == pytest.approx(1e-3 * 5e-3)
    # and w_in = 1 although LIFCell's current jumps by the input (NIR would need tau_syn / dt = 5)
    assert float(np.asarray(cuba.w_in).reshape(-1)[0]) == 1.0
    # its parameters are 0-d tensors, which nir.write cannot store
    with pytest.raises(TypeError, match="Scalar datasets"):
        nir.write("/dev/null", graph)
    # read literally (standard NIR semantics) the time constants are 1000x too short for dt
    with pytest.raises(ConfigError, match="forward Euler needs dt"):
        from_nir(graph, dt=1e-3)


def _snntorch_net(reset):
    import snntorch as snn

    torch.manual_seed(3)
    fc1, fc2 = torch.nn.Linear(7, 6), torch.nn.Linear(6, 3)
    with torch.no_grad():
        fc1.weight.mul_(2.0)
        fc2.weight.mul_(2.0)
    return torch.nn.Sequential(
        fc1, snn.Leaky(beta=torch.full((6,), 0.9), threshold=torch.ones(6), init_hidden=True, reset_mechanism=reset),
        fc2, snn.Leaky(beta=torch.full((3,), 0.8), threshold=torch.ones(3), init_hidden=True, output=True,
                       reset_mechanism=reset))


def _run_snntorch(net, x):
    from snntorch import utils

    utils.reset(net)
    out = []
    with torch.no_grad():
        for x_t in x.unbind(0):
            spk, _ = net(x_t)
            out.append(spk)
    return torch.stack(out)


def test_snntorch_exported_graph_runs_on_our_engine_with_snntorchs_spikes():
    from snntorch.export_nir import export_to_nir

    net = _snntorch_net("zero")
    x = _spikes(7, 4, p=0.4)
    want = _run_snntorch(net, x)
    graph = export_to_nir(net, torch.zeros(7))  # unbatched sample: see the defects test
    ours = from_nir(graph, dt=1e-4, dialect="snntorch")  # snnTorch 1.0 hard-codes dt = 1e-4 s
    with torch.no_grad():
        got = ours(x)
    assert want.sum() > 0
    assert torch.equal(got, want)


def test_snntorch_exporter_defects():
    import snntorch as snn
    from snntorch.export_nir import export_to_nir

    # (1) the usual scalar beta: type inference fails inside export_to_nir
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    with pytest.raises(ValueError, match="type mismatch"):
        export_to_nir(net, torch.zeros(5))
    # (2) a batched sample input fails too
    with pytest.raises(ValueError, match="type mismatch"):
        export_to_nir(_snntorch_net("zero"), torch.zeros(1, 7))
    # (3) reset-by-subtraction is not exported: the graph says v_reset = 0, so the imported network
    #     resets to zero and its spikes differ from snnTorch's own subtractive simulation
    net = _snntorch_net("subtract")
    graph = export_to_nir(net, torch.zeros(7))
    assert np.all(graph.nodes["1"].v_reset == 0)
    x = _spikes(7, 4, p=0.4)
    with torch.no_grad():
        assert not torch.equal(from_nir(graph, dt=1e-4, dialect="snntorch")(x), _run_snntorch(net, x))


def test_bad_graphs_fail_with_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_nir(tmp_path / "missing.nir")
    (tmp_path / "junk.nir").write_text("not hdf5")
    with pytest.raises(ConfigError, match="cannot read NIR file"):
        read_nir(tmp_path / "junk.nir")
    g = nir.NIRGraph.from_list(nir.Input(input_type=np.array([2])), nir.Linear(weight=np.ones((2, 2))),
                               nir.LIF(tau=np.array([1e-2, 2e-2]), r=np.ones(2), v_leak=np.zeros(2),
                                       v_threshold=np.ones(2)), nir.Output(output_type=np.array([2])))
    with pytest.raises(ConfigError, match="tau differs between neurons"):
        from_nir(g, dt=1e-3)
    with pytest.raises(ConfigError, match="unknown NIR dialect"):
        from_nir(g, dt=1e-3, dialect="lava")
    with pytest.raises(ConfigError, match="exports a LIFLayer"):
        to_nir(torch.nn.Linear(2, 2))


def _unsupported_chains():
    def inp():
        return nir.Input(input_type=np.array([2]))

    def out():
        return nir.Output(output_type=np.array([2]))

    def lin():
        return nir.Linear(weight=np.ones((2, 2)))

    def aff():
        return nir.Affine(weight=np.ones((2, 2)), bias=np.zeros(2))

    return [
        ([inp(), lin(), out()], "NIR node 'linear' (Linear) feeds the Output without a neuron node"),
        ([inp(), lin(), nir.Threshold(threshold=np.ones(2)), out()],
         "NIR node 'threshold' is a Threshold after 'linear'"),
        ([inp(), aff(), nir.Scale(scale=np.ones(2)), out()], "NIR node 'scale' is a Scale after 'affine'"),
        ([inp(), aff(), nir.Delay(delay=np.ones(2)), out()], "NIR node 'delay' is a Delay after 'affine'"),
        ([inp(), aff(), lin(), out()], "NIR node 'linear' is a Linear after 'affine'"),
        ([inp(), out()], "the NIR graph has no layer"),
    ]


@pytest.mark.parametrize("chain, message", _unsupported_chains())
def test_unsupported_or_missing_nodes_are_refused_naming_the_node(chain, message):
    graph = nir.NIRGraph.from_list(*chain)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        from_nir(graph, dt=1e-3)
    assert len(str(info.value).splitlines()) == 1


def _two_layer_chain(reset: str) -> SpikingChain:
    torch.manual_seed(0)
    p = LIFParameters(reset=reset)
    layers = [LIFLayer(10, 8, p, bias=True), LIFLayer(8, 4, p)]
    with torch.no_grad():
        for layer in layers:
            layer.linear.weight.mul_(4.0)
    return SpikingChain(layers)


def _as_foreign(graph):
    """The graph as any other NIR reader sees it: our metadata stripped, NIR semantics only."""
    for node in graph.nodes.values():
        if hasattr(node, "metadata"):
            node.metadata = {}
    return graph


def test_reset_to_zero_exports_silently_and_a_plain_nir_reader_reproduces_every_spike():
    model = _two_layer_chain("zero")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NIRResetWarning)
        graph = _as_foreign(to_nir(model, strict=True))
    p = model.layers[0].params
    back = from_nir(graph, dt=p.dt, integrator=p.integrator, reset="zero")  # NIR: reset to v_reset at the spike
    x = (torch.rand(50, 8, 10, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    ours, theirs = model.forward_traces(x), back.forward_traces(x)
    assert all(t.spikes.sum() > 0 for t in ours)
    for a, b in zip(ours, theirs):
        assert torch.equal(a.spikes, b.spikes)


def test_subtract_reset_warns_with_the_fix_and_strict_refuses_it():
    model = _two_layer_chain("subtract")
    with pytest.warns(NIRResetWarning, match=r'reset to v_reset = 0 instead .*\[model.lif\] reset = "zero"'):
        graph = to_nir(model)
    assert graph.nodes["lif0"].metadata["neurohil_reset"] == "subtract"
    with pytest.raises(ConfigError, match="lif0, lif1 reset by subtraction"):
        to_nir(model, strict=True)
    # why: a reader that follows NIR (reset to v_reset) gives other spikes than the trained network
    p = model.layers[0].params
    back = from_nir(_as_foreign(graph), dt=p.dt, integrator=p.integrator, reset="zero")
    x = (torch.rand(50, 8, 10, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    agree = float((model.forward_traces(x)[0].spikes == back.forward_traces(x)[0].spikes).float().mean())
    assert agree < 0.97, agree
