"""Quantize a trained float spiking MLP to Loihi 2 fixed point; the NIR graph and the fixed-point spec.

Mapping (float layer: ``i = alpha i + W x``, ``v = beta v + gamma i``, spike ``v > v_th``,
reset to 0; Loihi: see :mod:`simulators.loihi`).  Per layer, with ``s`` the voltage scale
(Loihi voltage units per float volt)::

    du   = round(4096 (1 - alpha)) - 1        (alpha = 0, a delta synapse: du = 4095)
    dv   = round(4096 (1 - beta))
    q    = w_clip / 127                        float weight per mantissa step; w_clip = the
                                               clip_percentile-th percentile of |W| (100: max)
    m    = clip(round(W / q), -128, 127)       8-bit mantissa; Lava weight = 2 m
    s    = 128 2^e / (gamma q)                 so that (2 m 2^e) << 6 = s gamma W
    vth  = round(s v_th / 64)                  17 bits
    bias = s gamma b / (1 - alpha)             = bias_mant << bias_exp (exact for alpha = 0;
                                               otherwise the steady state of the current)

The weight exponent ``e`` (in [-8, 7]) is chosen per layer as the largest that keeps the
threshold within ``VTH_MAX >> headroom_bits`` and, when calibration inputs are given, the
largest current ``|u|`` and voltage ``|v|`` seen by the float model below ``2^22`` (half the
24-bit range, beyond which Loihi's current wraps around and its voltage saturates) and the
Dense output within 16 bits (Loihi's synaptic input width; Lava's model does not saturate it).

Everything Loihi cannot hold raises :class:`~neuro.errors.IncompatibleError` with the fix:
subtractive reset, non-zero ``v_reset``/``v_leak``, a delayed current, a non-spiking
(membrane readout) output layer, analog (``direct``) input, a layer that is not a
LIF layer, a threshold outside 17 bits.  Rounding, clipping and saturation are counted in
the :class:`QuantizationReport`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from neuro.errors import IncompatibleError
from simulators import loihi as fx

SPEC_VERSION = 1


@dataclass
class LoihiLayerSpec:
    """Fixed-point parameters of one Dense + LIF layer (integers as Lava takes them)."""

    synapse: str  # NIR node names
    neuron: str
    n_in: int
    n_out: int
    weight_exp: int
    du: int
    dv: int
    vth: int
    bias_exp: int
    weight_scale: float  # q: float weight per mantissa step
    voltage_scale: float  # s: Loihi voltage units per float volt


@dataclass
class LoihiFixedPointSpec:
    """The explicit fixed-point spec that travels beside the NIR graph (``fixed_point.json``).

    dt: seconds per step.  time_steps: steps per sample.  reset: spike reset ("zero").
    Bit widths and shifts are Loihi 2's as Lava's ``fixed_pt`` models define them.
    """

    dt: float
    time_steps: int
    layers: list[LoihiLayerSpec]
    reset: str = "zero"
    encoder: str = "rate"
    sign_mode: str = "MIXED"
    weight_mantissa_bits: int = 8
    decay_bits: int = fx.DECAY_BITS
    vth_bits: int = 17
    state_bits: int = fx.UV_BITS
    bias_mantissa_bits: int = 13
    act_shift: int = fx.ACT_SHIFT
    vth_shift: int = fx.VTH_SHIFT
    du_offset: int = fx.DU_OFFSET
    dv_offset: int = fx.DV_OFFSET
    version: int = SPEC_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LoihiFixedPointSpec:
        d = json.loads(text)
        d["layers"] = [LoihiLayerSpec(**lay) for lay in d["layers"]]
        return cls(**d)


@dataclass
class LayerQuantization:
    """What quantizing one layer did (counts and worst relative errors)."""

    weights_clipped: int
    weights_zeroed: int
    weight_rms_error: float  # RMS |W - q m| / max |W|
    alpha: float
    alpha_fixed: float
    beta: float
    beta_fixed: float
    v_th_rel_error: float
    bias_exact: bool
    bias_saturated: int
    calib_max_current: float | None = None  # max |u| / 2^23 on calibration data (float model, scaled)
    calib_max_dense: float | None = None  # max |a_out| / 2^15
    calib_max_voltage: float | None = None  # max |v| / 2^23
    twin_current_wraps: int | None = None
    twin_voltage_saturations: int | None = None


@dataclass
class QuantizationReport:
    layers: list[LayerQuantization] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for k, r in enumerate(self.layers):
            s = (
                f"layer {k}: {r.weights_clipped} weights clipped, {r.weights_zeroed} rounded to 0, "
                f"weight RMS error {100 * r.weight_rms_error:.2f}% of max; "
                f"alpha {r.alpha:.4f}->{r.alpha_fixed:.4f}, beta {r.beta:.4f}->{r.beta_fixed:.4f}, "
                f"v_th error {100 * r.v_th_rel_error:.3f}%"
            )
            if r.calib_max_current is not None:
                s += (
                    f"; calibration: max |u| {100 * r.calib_max_current:.1f}%, max |v| "
                    f"{100 * r.calib_max_voltage:.1f}% of 2^23, max Dense out {100 * r.calib_max_dense:.1f}% of 2^15"
                )
            if r.twin_current_wraps is not None:
                s += (
                    f"; twin: {r.twin_current_wraps} current wrap-arounds, "
                    f"{r.twin_voltage_saturations} voltage saturations"
                )
            out.append(s)
        return out + self.notes


@dataclass
class LoihiExport:
    """A deployable network: fixed-point spec, integer layer parameters and the NIR graph."""

    spec: LoihiFixedPointSpec
    layers: list[fx.LoihiLayerParams]

    def nir_graph(self):
        return loihi_nir_graph(self)

    def save(self, folder: str | Path) -> Path:
        """Write ``network.nir``, ``fixed_point.json`` and ``fixed_point.npz`` into ``folder``."""
        import nir

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        nir.write(str(folder / "network.nir"), self.nir_graph())
        (folder / "fixed_point.json").write_text(self.spec.to_json())
        arrays = {}
        for k, p in enumerate(self.layers):
            arrays[f"weights_{k}"] = p.weights.to(torch.int32).numpy()
            arrays[f"bias_mant_{k}"] = torch.as_tensor(p.bias_mant).expand(p.n_out).to(torch.int32).numpy()
        np.savez(folder / "fixed_point.npz", **arrays)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LoihiExport:
        folder = Path(folder)
        spec = LoihiFixedPointSpec.from_json((folder / "fixed_point.json").read_text())
        arrays = np.load(folder / "fixed_point.npz")
        layers = [
            fx.LoihiLayerParams(
                weights=torch.from_numpy(arrays[f"weights_{k}"].astype(np.int64)),
                weight_exp=lay.weight_exp,
                du=lay.du,
                dv=lay.dv,
                vth=lay.vth,
                bias_mant=torch.from_numpy(arrays[f"bias_mant_{k}"].astype(np.int64)),
                bias_exp=torch.tensor(lay.bias_exp),
            )
            for k, lay in enumerate(spec.layers)
        ]
        return cls(spec, layers)

    def check(self) -> None:
        """Raise IncompatibleError when any layer does not fit Loihi (weights, decays, threshold, bias),
        or the spec (what the Lava runner reads) disagrees with the integer layers (what the twin runs)."""
        if len(self.spec.layers) != len(self.layers):
            raise IncompatibleError(
                f"the fixed-point spec lists {len(self.spec.layers)} layers, the network has {len(self.layers)}"
            )
        for k, (lay, p) in enumerate(zip(self.spec.layers, self.layers)):
            spec_vals = (lay.n_in, lay.n_out, lay.weight_exp, lay.du, lay.dv, lay.vth, lay.bias_exp)
            be = torch.as_tensor(p.bias_exp)
            if be.numel() != 1:
                raise IncompatibleError(f"layer {k}: one bias exponent per layer is supported, got {be.numel()}")
            layer_vals = (p.n_in, p.n_out, p.weight_exp, p.du, p.dv, p.vth, int(be))
            if spec_vals != layer_vals:
                raise IncompatibleError(
                    f"layer {k}: the fixed-point spec says (n_in, n_out, weight_exp, du, dv, vth, bias_exp) = "
                    f"{spec_vals} but the integer layer has {layer_vals}; rebuild the export"
                )
        for k, p in enumerate(self.layers):
            problems = p.problems()
            if problems:
                raise IncompatibleError(
                    f"layer {k} does not fit Loihi 2: {'; '.join(problems)}; re-quantize it "
                    "(neuro.export.loihi.quantize) "
                    "or lower clip_percentile"
                )

    def run_twin(self, x: torch.Tensor, *, record_state: bool = False) -> fx.LoihiTrace:
        """Local-time twin run of input spikes ``x`` [T, batch, n_in] (each sample from zero state)."""
        self.check()
        return fx.run_network(x, self.layers, record_state=record_state)


def loihi_nir_graph(export: LoihiExport):
    """NIR graph of the deployed network: Input -> (Affine|Linear -> CubaLIF|LIF)* -> Output.

    Float parameters are the dequantized fixed-point ones (weights ``q m``, time constants
    from the fixed-point decays ``tau = -dt / ln(decay)``, ``r = gamma tau_mem / dt``);
    ``metadata`` names the fixed-point spec file, which is what makes the graph exact.
    """
    import nir

    spec = export.spec
    dt = spec.dt
    nodes = {"input": nir.Input(input_type={"input": np.array([spec.layers[0].n_in])})}
    edges = []
    prev = "input"
    for lay, p in zip(spec.layers, export.layers):
        w = (p.weights.double().numpy() / 2.0) * lay.weight_scale
        bias = p.effective_bias().double().numpy() / lay.voltage_scale
        n = lay.n_out
        alpha = (fx.DECAY_UNITY - lay.du - fx.DU_OFFSET) / fx.DECAY_UNITY
        beta = (fx.DECAY_UNITY - lay.dv - fx.DV_OFFSET) / fx.DECAY_UNITY
        tau_mem = -dt / math.log(beta) if 0 < beta < 1 else (math.inf if beta >= 1 else dt * 1e-6)
        r = (1.0 - beta) * tau_mem / dt if math.isfinite(tau_mem) else 1.0
        v_th = lay.vth * (1 << fx.VTH_SHIFT) / lay.voltage_scale
        if np.any(bias != 0):
            nodes[lay.synapse] = nir.Affine(weight=w.astype(np.float32), bias=bias.astype(np.float32))
        else:
            nodes[lay.synapse] = nir.Linear(weight=w.astype(np.float32))

        def full(val, n=n):
            return np.full(n, val, dtype=np.float32)

        if alpha > 0:
            nodes[lay.neuron] = nir.CubaLIF(
                tau_syn=full(-dt / math.log(alpha)),
                tau_mem=full(tau_mem),
                r=full(r),
                v_leak=full(0.0),
                v_threshold=full(v_th),
                v_reset=full(0.0),
            )
        else:
            nodes[lay.neuron] = nir.LIF(
                tau=full(tau_mem), r=full(r), v_leak=full(0.0), v_threshold=full(v_th), v_reset=full(0.0)
            )
        edges += [(prev, lay.synapse), (lay.synapse, lay.neuron)]
        prev = lay.neuron
    nodes["output"] = nir.Output(output_type={"output": np.array([spec.layers[-1].n_out])})
    edges.append((prev, "output"))
    return nir.NIRGraph(
        nodes=nodes, edges=edges, metadata={"dt": dt, "fixed_point_spec": "fixed_point.json", "reset": spec.reset}
    )


# --------------------------------------------------------------------------- quantize
def _check_model(model) -> list:
    from neuro.layers.lif import LIFLayer

    layers = getattr(model, "layers", None)
    if layers is None or not len(layers):
        raise IncompatibleError(
            f"{type(model).__name__} has no LIF layers to deploy; Loihi deployment takes a spiking MLP"
        )
    encoder = type(getattr(model, "encoder", None)).__name__
    if encoder == "DirectEncoder":
        raise IncompatibleError(
            "the model feeds analog currents (encoder 'direct'); Loihi's Dense takes spikes: train with encoder = "
            '"rate" or "latency"'
        )
    for k, layer in enumerate(layers):
        if not isinstance(layer, LIFLayer):
            raise IncompatibleError(
                f"layer {k} is a {type(layer).__name__}; only LIF layers (Dense + CUBA LIF) deploy to Loihi"
            )
        p = layer.params
        if not p.spiking:
            raise IncompatibleError(
                f"layer {k} is a non-spiking integrator (readout 'membrane_max'); Loihi deployment needs a spiking "
                'output: use readout "spike_count"'
            )
        if p.reset != "zero" or p.v_reset != 0.0:
            raise IncompatibleError(
                f"layer {k} resets by '{p.reset}' (v_reset={p.v_reset}); Loihi's LIF sets v = 0 after a spike: "
                'train with [model.lif] reset = "zero" and v_reset = 0'
            )
        if p.v_leak != 0.0:
            raise IncompatibleError(f"layer {k} has v_leak = {p.v_leak}; Loihi's LIF leaks to 0: train with v_leak = 0")
        if p.current_delay:
            raise IncompatibleError(
                f"layer {k} integrates the previous step's current (current_delay); Loihi uses the same step's: train "
                "with current_delay = false"
            )
        if p.v_th <= 0:
            raise IncompatibleError(f"layer {k} has v_th = {p.v_th}; Loihi thresholds are positive")
    return list(layers)


def _float_currents(model, x_spikes: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per layer, the float synaptic input ``W x + b``, current ``i`` and membrane [T, B, n] on calibration spikes."""
    out = []
    h = x_spikes
    with torch.no_grad():
        for layer in model.layers:
            drive = layer.linear(h)
            trace = layer.forward_trace(h)
            p = layer.params
            i = torch.empty_like(drive)
            acc = torch.zeros_like(drive[0])
            for t in range(drive.shape[0]):
                acc = p.alpha * acc + drive[t]
                i[t] = acc
            out.append((drive, i, trace.membrane))
            h = trace.spikes
    return out


def quantize(
    model,
    calibration: torch.Tensor | None = None,
    *,
    clip_percentile: float = 100.0,
    headroom_bits: int = 4,
) -> tuple[LoihiExport, QuantizationReport]:
    """Map a trained float spiking MLP to Loihi fixed point (module docstring).

    calibration: optional input spikes [T, B, n_in] used to choose each layer's weight
    exponent from the activity it causes (and to count the twin's wrap-arounds).
    """
    layers = _check_model(model)
    if not 0 < clip_percentile <= 100:
        raise ValueError(f"clip_percentile must be in (0, 100], got {clip_percentile}")
    calib = _float_currents(model, calibration) if calibration is not None else None
    report = QuantizationReport()
    specs, params = [], []
    for k, layer in enumerate(layers):
        p = layer.params
        W = layer.linear.weight.detach().double().cpu()
        b = layer.linear.bias.detach().double().cpu() if layer.linear.bias is not None else None
        alpha, beta, gamma = p.alpha, p.beta, p.gamma
        du = min(max(round(fx.DECAY_UNITY * (1 - alpha)) - fx.DU_OFFSET, 0), fx.DECAY_UNITY - 1)
        dv = min(max(round(fx.DECAY_UNITY * (1 - beta)) - fx.DV_OFFSET, 0), fx.DECAY_UNITY - 1)
        absw = W.abs().flatten()
        w_clip = float(np.percentile(absw.numpy(), clip_percentile)) if clip_percentile < 100 else float(absw.max())
        q = w_clip / fx.WEIGHT_MANT_MAX if w_clip > 0 else 1.0
        ratio = W / q
        m = ratio.round().clamp(fx.WEIGHT_MANT_MIN, fx.WEIGHT_MANT_MAX)
        clipped = int(((ratio < fx.WEIGHT_MANT_MIN - 0.5) | (ratio > fx.WEIGHT_MANT_MAX + 0.5)).sum())
        zeroed = int(((m == 0) & (W != 0)).sum())
        vth_cap = fx.VTH_MAX >> headroom_bits
        best = None
        for e in range(fx.WEIGHT_EXP_MAX, fx.WEIGHT_EXP_MIN - 1, -1):
            s = 128.0 * 2.0**e / (gamma * q)
            vth = round(s * p.v_th / 64.0)
            if vth > vth_cap:
                continue
            if calib is not None:
                drive, i, v = calib[k]
                if (
                    float((s * gamma * i).abs().max()) >= fx.UV_MAX / 2
                    or float((s * v).abs().max()) >= fx.UV_MAX / 2
                    or float((drive.abs() / q * 2 * 2.0**e).max()) >= 2**15
                ):
                    continue
            best = (e, s, vth)
            break
        if best is None:
            e = fx.WEIGHT_EXP_MIN
            s = 128.0 * 2.0**e / (gamma * q)
            vth = round(s * p.v_th / 64.0)
            if vth > fx.VTH_MAX:
                raise IncompatibleError(
                    f"layer {k}: the threshold needs {vth} in Loihi units at the smallest weight exponent, more than "
                    "17 bits "
                    f"({fx.VTH_MAX}); its weights are tiny next to v_th ({w_clip:.3g} vs {p.v_th}): retrain with "
                    "larger weights or a lower v_th"
                )
            report.notes.append(
                f"layer {k}: no weight exponent meets the calibration limits; using {e} (expect wrap-arounds)"
            )
        e, s, vth = best if best is not None else (e, s, vth)
        if vth < 1:
            raise IncompatibleError(
                f"layer {k}: the threshold rounds to 0 in Loihi units (weights {w_clip:.3g} dwarf v_th {p.v_th}); "
                "retrain with a larger v_th"
            )
        bias_exact, bias_sat = True, 0
        if b is not None:
            B = s * gamma * b / (1.0 - alpha)
            bias_exact = alpha == 0.0
            peak = float(B.abs().max())
            bexp = 0
            while bexp < fx.BIAS_EXP_MAX and peak / 2**bexp > fx.BIAS_MANT_MAX:
                bexp += 1
            bm_f = (B / 2**bexp).round()
            bias_sat = int(((bm_f < fx.BIAS_MANT_MIN) | (bm_f > fx.BIAS_MANT_MAX)).sum())
            bm = bm_f.clamp(fx.BIAS_MANT_MIN, fx.BIAS_MANT_MAX).long()
        else:
            bexp, bm = 0, torch.zeros(W.shape[0], dtype=torch.int64)
        lp = fx.LoihiLayerParams(
            weights=(2 * m).long(), weight_exp=e, du=du, dv=dv, vth=vth, bias_mant=bm, bias_exp=torch.tensor(bexp)
        )
        params.append(lp)
        specs.append(
            LoihiLayerSpec(
                synapse=f"fc{k}",
                neuron=f"lif{k}",
                n_in=W.shape[1],
                n_out=W.shape[0],
                weight_exp=e,
                du=du,
                dv=dv,
                vth=vth,
                bias_exp=bexp,
                weight_scale=q,
                voltage_scale=s,
            )
        )
        rq = LayerQuantization(
            weights_clipped=clipped,
            weights_zeroed=zeroed,
            weight_rms_error=float(((W - q * m) ** 2).mean().sqrt() / max(float(absw.max()), 1e-30)),
            alpha=alpha,
            alpha_fixed=(fx.DECAY_UNITY - du - fx.DU_OFFSET) / fx.DECAY_UNITY,
            beta=beta,
            beta_fixed=(fx.DECAY_UNITY - dv - fx.DV_OFFSET) / fx.DECAY_UNITY,
            v_th_rel_error=abs(vth * 64.0 / s - p.v_th) / p.v_th,
            bias_exact=bias_exact,
            bias_saturated=bias_sat,
        )
        if calib is not None:
            drive, i, v = calib[k]
            rq.calib_max_voltage = float((s * v).abs().max()) / fx.UV_MAX
            rq.calib_max_current = float((s * gamma * i).abs().max()) / fx.UV_MAX
            rq.calib_max_dense = float((drive.abs() / q * 2 * 2.0**e).max()) / 2**15
        report.layers.append(rq)
        if e < 0:
            report.notes.append(
                f"layer {k}: weight_exp {e} < 0: Loihi floors each Dense sum to a multiple of 2^{-e} (a rounding the "
                "float model lacks)"
            )
        if not bias_exact:
            report.notes.append(
                f"layer {k}: the float bias enters the current; Loihi's enters the voltage, mapped to its steady "
                "state (approximate while the current settles)"
            )
    time_steps = int(getattr(model, "time_steps", 0) or 0)
    encoder = {"RateEncoder": "rate", "LatencyEncoder": "latency"}.get(
        type(getattr(model, "encoder", None)).__name__, "spikes"
    )
    spec = LoihiFixedPointSpec(dt=layers[0].params.dt, time_steps=time_steps, layers=specs, encoder=encoder)
    export = LoihiExport(spec, params)
    export.check()
    if calibration is not None:
        trace = fx.run_network(calibration, params, record_state=True)
        for k, r in enumerate(report.layers):
            u = trace.currents[k]
            prev = torch.cat([torch.zeros_like(u[:1]), u[:-1]])
            r.twin_current_wraps = int(((u - prev).abs() > fx.UV_MAX).sum())  # jumps of more than 2^23
            r.twin_voltage_saturations = int((trace.voltages[k].abs() >= fx.UV_MAX - 1).sum())
    return export, report
