"""Coherent nanophotonic processors: Mach-Zehnder meshes, SVD layers and their non-idealities.

A weight matrix is realized as ``M = s * U diag(sigma) V^dagger`` (Shen et al., Nature Photonics 11,
441 (2017)): the unitaries ``V^dagger`` and ``U`` are meshes of Mach-Zehnder interferometers (MZIs) whose
phase shifters are the trainable parameters, ``sigma`` a column of attenuators, and the scale ``s`` (what
the passive optics cannot hold) stays digital.

Conventions (every formula below is what the code computes)
----------------------------------------------------------
Fields are complex amplitudes in units of ``sqrt(P_ref)`` (``P_ref``: the optical power of one mode at
input amplitude 1), row vectors ``x [batch, N]``; a mesh maps ``x -> x U^T`` (so ``y = U x`` per sample).
Phases are in radians in the functional core.

- 50:50 coupler (splitting angle ``a = pi/4``; with a ratio error ``a = pi/4 + alpha``)::

      B(a) = [[cos a, i sin a], [i sin a, cos a]]

- MZI on modes ``(m, m+1)``: external phase ``phi`` on the upper input arm, coupler, internal phase
  ``theta`` on the upper arm, coupler::

      T(theta, phi) = B(a2) diag(e^{i theta}, 1) B(a1) diag(e^{i phi}, 1)
                    = i e^{i theta/2} [[e^{i phi} sin(theta/2),  cos(theta/2)],
                                       [e^{i phi} cos(theta/2), -sin(theta/2)]]     (ideal couplers)

  ``theta = 0``: cross state (mode m -> m+1); ``theta = pi``: bar state.  Insertion loss multiplies ``T``
  by the amplitude transmission ``t = 10^(-loss_db/20)``.
- A mesh of ``N`` modes is a list of MZIs (top mode ``m``) applied in order, then an output phase screen
  ``diag(e^{i out})`` (``N`` phases): ``U = diag(e^{i out}) T_K ... T_1``.  MZIs are grouped into
  *columns* (each MZI in the earliest column after every earlier MZI that shares a mode with it) and
  stored ordered by ``(column, mode)``; a forward applies one column at a time to the whole batch:
  ``y_j = D_j x_j + Up_j x_{j+1} + Lo_j x_{j-1}``, i.e. ``O(N)`` work per column per sample and a fixed
  handful of kernel launches per column (``O(N)`` launches, ``O(N^2)`` work per sample in all).
- Reck (triangular, Reck et al. 1994): diagonals ``(0,1),(1,2),...,(N-2,N-1)``, then ``(0,1)...(N-3,N-2)``,
  ...; ``N(N-1)/2`` MZIs in ``2N-3`` columns.  Clements (rectangular, Clements et al., Optica 3, 1460
  (2016)): ``N`` columns, column ``k`` holds the MZIs with top mode ``m = k mod 2, k mod 2 + 2, ...``;
  ``N(N-1)/2`` MZIs.  :func:`decompose` finds the phases of any unitary exactly (nulling by Givens-like
  MZI rotations; Clements' alternating scheme, with the left-hand rotations moved through the diagonal
  by ``T^-1(theta, phi) diag(d0, d1) = diag(-e^{-i theta} e^{-i phi} d1, -e^{-i theta} d1) T(theta, arg d0 - arg d1)``).
- SVD layer (``n_in`` inputs, ``n_out`` outputs, ``k = min(n_in, n_out)``): ``V`` mesh on ``n_in`` modes
  realizes ``V^dagger``; the first ``k`` of its outputs pass attenuators with signed amplitude
  transmission ``sigma`` (``|sigma| <= 1``: an attenuator and a 0/pi phase shifter; ``|sigma| <= gain_max``
  only with ``amplifier=True``), the other modes are terminated; the ``U`` mesh on ``n_out`` modes
  (inputs ``k..n_out-1`` dark) realizes ``U``.  Field out: ``E = U[:, :k] diag(sigma) V^dagger[:k, :] x``.

Non-idealities (:class:`PhotonicOptions`; all off by default, each seeded)
-------------------------------------------------------------------------
Order from a phase *setting* ``p`` (what the controller is asked for) to the phase in the light:

1. DAC and heater (``dac_bits > 0``): thermo-optic phase ``phase = gamma V^2`` (``gamma`` in rad/V^2,
   heater voltage ``V`` in ``[0, v_max]`` volts).  ``p`` is wrapped to ``[0, 2 pi)``, ``V = sqrt(p/gamma)``
   (clipped to ``v_max``), quantized to ``V_q = LSB round(V/LSB)``, ``LSB = v_max/(2^dac_bits - 1)``, and the
   heater gives ``gamma V_q^2``.  So ``|V_q - V| <= LSB/2`` and ``|phase - p| <= gamma LSB/2 (2V + LSB/2)``.
2. Thermal crosstalk (``crosstalk`` = kappa): heaters next to each other on the chip (same heater column,
   neighbouring MZIs, i.e. top modes ``m`` and ``m+2`` in one MZI column; neighbouring output phase
   shifters) heat each other: ``phase_h += sum_j kappa_hj * heater_j`` with ``heater_j`` the heater phase of
   ``j`` in ``[0, 2 pi)`` (a heater's power is proportional to its phase), ``kappa_hj = crosstalk``
   (times ``1 + crosstalk_spread n``, ``n`` standard normal, static).
3. Static phase error (``phase_error``, rad std, fabrication) plus slow drift (``drift``, rad std of one
   random-walk step of every phase error per ``drift_tick`` samples of device time, seeded by
   ``(seed, tick)``, so the state at a device time does not depend on batch sizes).
4. Per-shot phase noise (``phase_noise`` = s, rad std, a fresh draw per sample and phase shifter):
   ``p -> p + s z``, ``z ~ N(0, 1)``.  ``phase_noise_trunc = c > 0`` truncates the draws to ``|z| < c``
   (``z`` redrawn until it lies inside; variance ``s^2 (1 - 2 c g(c) / (2 G(c) - 1))``, ``g``/``G`` the standard
   normal pdf/cdf: 0.7737 s^2 at ``c = 2``).  ``phase_noise_model``: ``shifters`` (default) draws for every
   phase shifter (``theta``, ``phi``, ``out``) of both meshes; ``mixing`` draws only for the internal phase
   of each MZI and applies it push-pull (``+s z/2`` on the upper arm, ``-s z/2`` on the lower arm), so the
   MZI becomes ``T e^{-i s z/2}`` evaluated at ``theta + s z``; with ideal couplers that is
   ``Rot(-s z/2) T(theta, phi)``, ``Rot(a) = [[cos a, -sin a], [sin a, cos a]]``: a pure change of the mixing
   angle ``theta/2`` by ``s z/2``, no common phase (the noise model of real Givens-rotation meshes with
   rotation-angle noise of std ``s/2``, e.g. torchonn's ``set_phase_variation``; ``bench/photonic_peers.py``).
Couplers: splitting angle error ``alpha ~ N(0, bs_error^2)`` (rad), two couplers per MZI (static).
Insertion loss: ``loss_db`` dB per MZI (per-MZI spread ``loss_db_std`` dB, static).
Nonlinearity (``nonlinearity="saturable"``): a thin saturable absorber on each output mode::

    E_out = E exp(-(alpha0_L / 2) / (1 + |E|^2 / I_sat))

(power transmission ``exp(-alpha0_L / (1 + I/I_sat))``: ``exp(-alpha0_L)`` for weak light, ``-> 1`` when
saturated; ``alpha0_L = sa_depth`` small-signal optical depth, ``I_sat = sa_isat`` in ``P_ref``; the
absorber is thin, i.e. the intensity does not change along it).
Detection: ``intensity``: ``y = |E|^2`` (units of ``P_ref``); ``homodyne``: ``y = Re(E e^{-i lo_phase})``
(units of ``sqrt(P_ref)``, local oscillator of unit amplitude).  Photodetector noise on ``y``:
``y + noise |y| n1 + shot_noise sqrt(|y|) n2 + noise_floor n3`` (relative, shot-like and additive std).

The functional core (:func:`mesh_spec`, :func:`mzi_matrix`, :func:`mesh_field`, :func:`mesh_matrix`,
:func:`decompose`, :func:`svd_decompose`, :func:`realized_phases`, :func:`layer_field`, :func:`detect`,
:func:`measure`, :func:`advance`) is pure over explicit tensors; :class:`PhotonicSubstrate` wraps it in the
:class:`~simulators.substrate.Substrate` protocol and is registered as the substrate family ``photonic``
(variants ``clements``, ``reck``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from simulators.errors import SettingError, SubstrateFault
from simulators.substrate import RANGE_TOLERANCE, SUBSTRATE_FAMILIES, check_batch, check_options

KINDS = ("clements", "reck")
DETECTIONS = ("intensity", "homodyne")
NONLINEARITIES = ("none", "saturable")
PHASE_NOISE_MODELS = ("shifters", "mixing")
INPUT_RANGE = (-1.0, 1.0)
PHASE_UNIT = math.pi
"""Hardware parameters (``set_params``) give phases in units of ``PHASE_UNIT`` rad (half-turns): ``[-1, 1]``
spans the whole circle, the same range as the inputs."""
MESHES = ("v", "u")
PHASE_KEYS = ("theta", "phi", "out")
TWO_PI = 2 * math.pi


# ------------------------------------------------------------------ mesh layout
@dataclass(frozen=True, eq=False)
class MeshSpec:
    """The layout of one mesh (no phases).

    n: modes.  kind: ``clements`` | ``reck``.
    modes: ``[K]`` top mode ``m`` of each MZI (it acts on ``m, m+1``), MZIs ordered by ``(column, mode)``.
    cols: ``[K]`` column of each MZI; n_cols: number of columns.
    d_index / up_index / lo_index: ``[n_cols * n]`` gather indices that lay the MZI elements out per column
        (:func:`column_coefficients`): into ``[T00 (K), T11 (K), 1]``, ``[T01 (K), 0]`` and ``[T10 (K), 0]``.
    neighbours: ``[Q, 2]`` (receiver, source) heater pairs that are physically adjacent (both directions),
        indexing the heater vector ``[theta (K), phi (K), out (n)]``.
    """

    n: int
    kind: str
    modes: torch.Tensor
    cols: torch.Tensor
    n_cols: int
    d_index: torch.Tensor
    up_index: torch.Tensor
    lo_index: torch.Tensor
    neighbours: torch.Tensor

    @property
    def n_mzi(self) -> int:
        return int(self.modes.numel())

    @property
    def n_heaters(self) -> int:
        """Phase shifters: ``theta`` and ``phi`` of each MZI plus ``n`` output phases."""
        return 2 * self.n_mzi + self.n


def _layout_sequence(n: int, kind: str) -> list[int]:
    """Top modes of the MZIs in application order."""
    if kind == "reck":
        return [m for r in range(n - 1, 0, -1) for m in range(r)]
    return [m for k in range(n) for m in range(k % 2, n - 1, 2)]


def _asap_columns(seq: list[int], n: int) -> list[int]:
    """Column of each MZI of ``seq``: one after the latest earlier MZI sharing a mode (commuting reorder)."""
    busy = [0] * max(n, 1)
    cols = []
    for m in seq:
        c = max(busy[m], busy[m + 1])
        cols.append(c)
        busy[m] = busy[m + 1] = c + 1
    return cols


@functools.lru_cache(maxsize=64)
def mesh_spec(n: int, kind: str = "clements") -> MeshSpec:
    """The :class:`MeshSpec` of an ``n``-mode ``kind`` mesh (cached; tensors are read-only by convention)."""
    if kind not in KINDS:
        raise SettingError(f"mesh kind '{kind}' is not one of {', '.join(KINDS)}")
    if int(n) < 1:
        raise SettingError(f"a mesh needs at least 1 mode, got {n}")
    n = int(n)
    seq = _layout_sequence(n, kind)
    cols = _asap_columns(seq, n)
    order = sorted(range(len(seq)), key=lambda i: (cols[i], seq[i]))
    modes = torch.tensor([seq[i] for i in order], dtype=torch.long)
    colt = torch.tensor([cols[i] for i in order], dtype=torch.long)
    n_cols = (max(cols) + 1) if cols else 0
    k = len(seq)
    pos = {(int(c), int(m)): i for i, (c, m) in enumerate(zip(colt.tolist(), modes.tolist()))}
    pairs = []
    for (c, m), i in pos.items():
        j = pos.get((c, m + 2))
        if j is not None:
            for off in (0, k):  # theta-theta and phi-phi neighbours
                pairs += [(i + off, j + off), (j + off, i + off)]
    for m in range(n - 1):
        pairs += [(2 * k + m, 2 * k + m + 1), (2 * k + m + 1, 2 * k + m)]
    neighbours = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    size = n_cols * n
    d_index = torch.full((size,), 2 * k, dtype=torch.long)
    up_index = torch.full((size,), k, dtype=torch.long)
    lo_index = torch.full((size,), k, dtype=torch.long)
    top = colt * n + modes
    ids = torch.arange(k)
    d_index[top], d_index[top + 1] = ids, k + ids
    up_index[top], lo_index[top + 1] = ids, ids
    return MeshSpec(n, kind, modes, colt, n_cols, d_index, up_index, lo_index, neighbours)


# ------------------------------------------------------------------ MZIs and meshes
def coupler_angles(alpha: torch.Tensor | float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos a, sin a)`` of a coupler with splitting angle ``a = pi/4 + alpha``."""
    a = math.pi / 4 + (alpha if alpha is not None else 0.0)
    a = torch.as_tensor(a, dtype=torch.float64)
    return torch.cos(a), torch.sin(a)


def mzi_matrix(theta: torch.Tensor, phi: torch.Tensor, alpha1=None, alpha2=None, amp=None) -> torch.Tensor:
    """``T(theta, phi)`` of the module docstring, ``[..., 2, 2]`` complex (dtype from ``theta``).

    alpha1, alpha2: splitting-angle errors of the first and second coupler (rad); amp: amplitude
    transmission (insertion loss; real, or complex for a common phase factor of the MZI, e.g. push-pull
    noise).  Elementwise, with ``c_k = cos a_k``, ``s_k = sin a_k``::

        T00 = e^{i phi} (c1 c2 e^{i theta} - s1 s2)     T01 = i (s1 c2 e^{i theta} + c1 s2)
        T10 = i e^{i phi} (c1 s2 e^{i theta} + s1 c2)   T11 = c1 c2 - s1 s2 e^{i theta}
    """
    t = _mzi_elements(theta, phi, alpha1, alpha2, amp)
    return torch.stack([torch.stack(t[:2], -1), torch.stack(t[2:], -1)], -2)


def _cdtype(real: torch.dtype) -> torch.dtype:
    return torch.complex128 if real == torch.float64 else torch.complex64


def _mzi_elements(theta, phi, alpha1=None, alpha2=None, amp=None):
    theta = torch.as_tensor(theta)
    if not theta.is_floating_point():
        theta = theta.to(torch.float64)
    real = theta.dtype
    cd = _cdtype(real)
    et = torch.polar(torch.ones_like(theta), theta)
    ep = torch.polar(torch.ones_like(theta), torch.as_tensor(phi, dtype=real).expand_as(theta))
    if alpha1 is None and alpha2 is None:
        h = 0.5
        t00 = ep * (et - 1) * h
        t01 = 1j * (et + 1) * h
        t10 = 1j * ep * (et + 1) * h
        t11 = (1 - et) * h
    else:
        c1, s1 = (v.to(real) for v in coupler_angles(alpha1))
        c2, s2 = (v.to(real) for v in coupler_angles(alpha2))
        t00 = ep * (c1 * c2 * et - s1 * s2)
        t01 = 1j * (s1 * c2 * et + c1 * s2)
        t10 = 1j * ep * (c1 * s2 * et + s1 * c2)
        t11 = c1 * c2 - s1 * s2 * et
    out = [v.to(cd) for v in (t00, t01, t10, t11)]
    if amp is not None:
        a = torch.as_tensor(amp)
        a = a.to(cd) if a.is_complex() else a.to(real).to(cd)
        out = [v * a for v in out]
    shape = torch.broadcast_shapes(*(v.shape for v in out))
    return [v.expand(shape) for v in out]


def column_coefficients(spec: MeshSpec, theta, phi, alpha1=None, alpha2=None, amp=None):
    """Per-column coefficients ``(D, Up, Lo)``, each ``[..., n_cols, n]`` complex, of ``y_j = D_j x_j +
    Up_j x_{j+1} + Lo_j x_{j-1}``; leading dims of ``theta [..., K]`` (e.g. per-sample phases) are kept."""
    t00, t01, t10, t11 = _mzi_elements(theta, phi, alpha1, alpha2, amp)
    lead = t00.shape[:-1]
    dev = t00.device
    one = torch.ones(*lead, 1, dtype=t00.dtype, device=dev)
    d = torch.cat([t00, t11, one], -1).index_select(-1, spec.d_index.to(dev))  # one gather per array
    up = torch.cat([t01, one * 0], -1).index_select(-1, spec.up_index.to(dev))
    lo = torch.cat([t10, one * 0], -1).index_select(-1, spec.lo_index.to(dev))
    shape = (*lead, spec.n_cols, spec.n)
    return d.reshape(shape), up.reshape(shape), lo.reshape(shape)


UNITARY_BLOCK = 16
"""Columns per group (and modes per block) of :func:`mesh_unitary`'s blocked product."""
METHODS = ("auto", "columns", "unitary")
UNITARY_CACHE_SIZE = 16


class _UnitaryMemo:
    """Memo of :func:`mesh_unitary` for gradient-free calls (weight-stationary inference): the last
    ``UNITARY_CACHE_SIZE`` results, each with copies of its arguments; a hit needs every argument equal
    (``torch.equal``, O(K) work) and the same block, dtype and device, so the result is always what a fresh
    build would return.  Calls that need gradients never use it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: list[tuple[tuple, tuple, torch.Tensor]] = []
        self.hits = self.misses = 0

    @staticmethod
    def _key(spec: MeshSpec, block: int, args: tuple) -> tuple:
        t = next(a for a in args if isinstance(a, torch.Tensor))
        return (spec.n, spec.kind, int(block), t.dtype, t.device)

    def get(self, spec: MeshSpec, block: int, args: tuple):
        key = self._key(spec, block, args)
        for k, saved, u in self.entries:
            if k == key and all((a is None and b is None) or (a is not None and b is not None and a.shape == b.shape
                                                              and a.dtype == b.dtype and torch.equal(a, b))
                                for a, b in zip(args, saved)):
                self.hits += 1
                return u
        self.misses += 1
        return None

    def put(self, spec: MeshSpec, block: int, args: tuple, u: torch.Tensor) -> None:
        saved = tuple(None if a is None else a.detach().clone() for a in args)
        self.entries.insert(0, (self._key(spec, block, args), saved, u.detach()))
        del self.entries[self.size:]


UNITARY_MEMO = _UnitaryMemo(UNITARY_CACHE_SIZE)


def mesh_field(x: torch.Tensor, spec: MeshSpec, theta, phi, out, *, alpha1=None, alpha2=None, amp=None,
               method: str = "auto", cache: bool = True) -> torch.Tensor:
    """Field after the mesh: ``x [batch, n]`` complex -> ``[batch, n]``, i.e. ``y = U x`` per sample.

    theta, phi: ``[K]`` or per-sample ``[batch, K]`` (rad); out: ``[n]`` or ``[batch, n]`` (rad).
    Two evaluations of the same product, differentiable in every phase and error argument:

    - ``columns``: each column of MZIs is one fused update of the whole batch,
      ``y_j = D_j x_j + Up_j x_{j+1} + Lo_j x_{j-1}`` (``3 n`` complex MACs per column per sample, elementwise);
      the only one for per-sample phases (per-shot phase noise).
    - ``unitary`` (weight-stationary): ``U`` is built once by :func:`mesh_unitary` (a blocked product whose
      work is matrix products) and the batch takes one dense matmul ``x U^T``.
    - ``auto``: ``unitary`` when the phases and errors are shared by the batch and either no gradient is needed
      (``U`` is then memoized, see ``cache``) or the mesh has more than ``UNITARY_BLOCK`` columns and
      ``16 * batch >= n`` (where building ``U`` costs less than the column updates of the batch); else ``columns``.

    cache: on the unitary path, without gradients (``torch.no_grad()`` or no argument requiring grad), reuse
    ``U`` while the phases and errors stay equal (:data:`UNITARY_MEMO`): a weight-stationary mesh then costs one
    dense matmul per batch.  ``cache=False`` rebuilds it on every call.
    """
    if x.shape[-1] != spec.n:
        raise SettingError(f"mesh of {spec.n} modes got fields of width {x.shape[-1]}")
    if method not in METHODS:
        raise SettingError(f"mesh_field method '{method}' is not one of {', '.join(METHODS)}")
    if method != "columns" and spec.n_mzi:
        shared = all(torch.as_tensor(v).dim() <= 1 for v in (theta, phi, out, alpha1, alpha2, amp) if v is not None)
        batch = x.shape[0] if x.dim() == 2 else 1
        if method == "unitary" and not shared:
            raise SettingError("mesh_field method 'unitary' needs phases shared by the batch ([K], not [batch, K]); "
                               "use method 'columns' for per-sample phases")
        args = tuple(None if v is None else torch.as_tensor(v) for v in (theta, phi, out, alpha1, alpha2, amp))
        memo = shared and cache and not (torch.is_grad_enabled() and any(a is not None and a.requires_grad
                                                                         for a in args))
        auto = memo or (spec.n_cols > UNITARY_BLOCK and 16 * batch >= spec.n)
        if shared and x.dim() == 2 and (method == "unitary" or auto):
            u = UNITARY_MEMO.get(spec, UNITARY_BLOCK, args) if memo else None
            if u is None:
                u = mesh_unitary(spec, theta, phi, out, alpha1=alpha1, alpha2=alpha2, amp=amp)
                if memo:
                    UNITARY_MEMO.put(spec, UNITARY_BLOCK, args, u)
            return x.to(u.dtype) @ u.transpose(-1, -2)
    if spec.n_mzi:
        d, up, lo = column_coefficients(spec, theta, phi, alpha1, alpha2, amp)
        x = x.to(d.dtype)
        for dc, uc, lc in zip(d.unbind(-2), up.unbind(-2), lo.unbind(-2)):
            x = dc * x + uc * x.roll(-1, -1) + lc * x.roll(1, -1)
    out = torch.as_tensor(out)
    return x * torch.polar(torch.ones_like(out), out).to(x.dtype if x.is_complex() else _cdtype(out.dtype))


def mesh_matrix(spec: MeshSpec, theta, phi, out, **errors) -> torch.Tensor:
    """The ``[n, n]`` transfer matrix ``U`` of the mesh (``y = U x``), differentiable in the phases, by the
    column updates of the identity (the reference :func:`mesh_unitary` is tested against)."""
    theta = torch.as_tensor(theta)
    real = theta.dtype if theta.is_floating_point() else torch.float64
    eye = torch.eye(spec.n, dtype=_cdtype(real), device=theta.device)
    return mesh_field(eye, spec, theta, phi, out, method="columns", **errors).transpose(-1, -2)


def _band_groups(spec: MeshSpec, d: torch.Tensor, up: torch.Tensor, lo: torch.Tensor, b: int) -> torch.Tensor:
    """Products of ``b`` consecutive MZI columns as block-tridiagonal matrices ``[G, nb, 3, b, b]``.

    ``G = ceil(n_cols / b)`` groups (the last padded with identity columns), ``nb = ceil(n / b)`` mode blocks
    (padded modes are dark: zero rows and columns).  Entry ``[g, i, k]`` is the block of the group's matrix
    at block row ``i``, block column ``i + k - 1``: each column couples only neighbouring modes, so ``b``
    columns move light by at most ``b`` modes and every other block is zero.  Built by the column updates of
    all groups at once on the identity, each input mode carrying only the window of ``3 b`` output modes
    around its block (``3 b n`` entries per group instead of ``n^2``).
    """
    n, nc = spec.n, spec.n_cols
    nb, groups = -(-n // b), -(-nc // b)
    width = (nb + 2) * b  # one dark block on each side of the modes
    dev, cd = d.device, d.dtype

    def padded(v: torch.Tensor, fill: float) -> torch.Tensor:
        out = torch.full((groups * b, width), fill, dtype=cd, device=dev)
        out[nc:, b:b + n] = fill
        out = out.index_copy(0, torch.arange(nc, device=dev),
                             torch.nn.functional.pad(v, (b, width - b - n)))
        return out

    rows = (torch.arange(nb, device=dev)[:, None] * b + torch.arange(3 * b, device=dev)[None, :])  # [nb, 3b]
    dp = padded(d, 0.0)
    dp[nc:, b:b + n] = 1.0  # identity columns after the last real one
    coef = [v.reshape(groups, b, width)[:, :, rows].unsqueeze(-2) for v in (dp, padded(up, 0.0), padded(lo, 0.0))]
    # state [G, nb, b (input mode in block), 3b + 2 (window of output modes, one zero slot each side)]
    eye = torch.eye(b, dtype=cd, device=dev)
    state = torch.nn.functional.pad(eye, (b + 1, b + 1)).expand(groups, nb, b, 3 * b + 2)
    for s in range(b):
        dc, uc, lc = (c[:, s] for c in coef)
        mid = dc * state[..., 1:-1] + uc * state[..., 2:] + lc * state[..., :-2]
        state = torch.nn.functional.pad(mid, (1, 1))
    # blocks[g, j, k, r, i] = M_g[row block j - 1 + k, column block j][r, i]
    blocks = state[..., 1:-1].reshape(groups, nb, b, 3, b).permute(0, 1, 3, 4, 2)
    blocks = torch.nn.functional.pad(blocks, (0, 0, 0, 0, 0, 0, 1, 1))  # zero block columns -1 and nb
    return torch.stack([blocks[:, 0:nb, 2], blocks[:, 1:nb + 1, 1], blocks[:, 2:nb + 2, 0]], 2)


def _tridiag_product(a: torch.Tensor, bm: torch.Tensor) -> torch.Tensor:
    """``A B`` of two stacks of block-tridiagonal matrices ``[G, nb, 3, b, b]`` as block-tridiagonal matrices
    of twice the block size ``[G, ceil(nb/2), 3, 2b, 2b]`` (the product is block-pentadiagonal in blocks of
    ``b``: ``C[i, i+d] = sum_{d1 + d2 = d} A[i, i+d1] B[i+d1, i+d]``, nine batched matmuls)."""
    g, nb, _, b, _ = a.shape
    bp = torch.nn.functional.pad(bm, (0, 0, 0, 0, 0, 0, 1, 1))  # block rows -1 and nb are zero
    c = [None] * 5
    for d1 in (-1, 0, 1):
        ad = a[:, :, d1 + 1]
        shifted = bp[:, 1 + d1:1 + d1 + nb]
        for d2 in (-1, 0, 1):
            term = ad @ shifted[:, :, d2 + 1]
            k = d1 + d2 + 2
            c[k] = term if c[k] is None else c[k] + term
    c5 = torch.stack(c, 2)  # [G, nb, 5, b, b]
    if nb % 2:
        c5 = torch.nn.functional.pad(c5, (0, 0, 0, 0, 0, 0, 0, 1))
    zero = c5.new_zeros(c5[:, 0::2, 0].shape)
    out = []
    for big in (-1, 0, 1):
        rows = []
        for r in (0, 1):
            cols = []
            for s in (0, 1):
                k = 2 * big + s - r
                cols.append(c5[:, r::2, k + 2] if abs(k) <= 2 else zero)
            rows.append(torch.cat(cols, -1))
        out.append(torch.cat(rows, -2))
    return torch.stack(out, 2)


def _tridiag_dense(t: torch.Tensor) -> torch.Tensor:
    """``[G, nb, 3, b, b]`` block-tridiagonal -> dense ``[G, nb b, nb b]``."""
    g, nb, _, b, _ = t.shape
    dense = t.new_zeros(g, nb, b, nb + 2, b)  # block columns -1 .. nb
    idx = torch.arange(nb, device=t.device)
    for k in range(3):
        dense[:, idx, :, idx + k] = t[:, :, k].permute(1, 0, 2, 3)
    return dense[:, :, :, 1:nb + 1].reshape(g, nb * b, nb * b)


def mesh_unitary(spec: MeshSpec, theta, phi, out, *, alpha1=None, alpha2=None, amp=None,
                 block: int = UNITARY_BLOCK) -> torch.Tensor:
    """The ``[n, n]`` transfer matrix ``U`` (``y = U x``) by a blocked product; equals :func:`mesh_matrix`.

    Phases and errors are shared (``theta, phi [K]``, ``out [n]``).  The ``n_cols`` columns are cut into groups
    of ``b = block`` columns; each group's product is block-tridiagonal in blocks of ``b`` modes
    (:func:`_band_groups`, built by ``b`` column updates of all groups at once), pairs of neighbouring groups
    are multiplied as block-tridiagonal matrices of twice the block size (:func:`_tridiag_product`: nine
    batched matmuls per level, ``log2(n_cols / b)`` levels) until at most three blocks remain, then the
    remaining dense matrices are multiplied and the output phase screen applied.  Work: about
    ``3 n n_cols b`` elementwise complex MACs plus ``O(n^3)`` in matrix products, against ``3 n^2 n_cols`` for the
    column updates of the identity.  Differentiable in every argument.
    """
    if torch.as_tensor(theta).dim() > 1 or torch.as_tensor(out).dim() > 1:
        raise SettingError("mesh_unitary needs phases shared by the batch (theta [K], out [n]); per-sample "
                           "phases need mesh_field(..., method='columns')")
    theta = torch.as_tensor(theta)
    real = theta.dtype if theta.is_floating_point() else torch.float64
    n = spec.n
    out = torch.as_tensor(out).to(real)
    screen = torch.polar(torch.ones_like(out), out).to(_cdtype(real))
    if not spec.n_mzi:
        return torch.diag_embed(screen.expand(n)) if n else torch.zeros(0, 0, dtype=_cdtype(real))
    d, up, lo = column_coefficients(spec, theta, phi, alpha1, alpha2, amp)
    b = max(1, min(int(block), n))
    t = _band_groups(spec, d, up, lo, b)
    while t.shape[0] > 1 and t.shape[1] > 3:
        if t.shape[0] % 2:  # an identity group at the end (applied last)
            eye = torch.zeros_like(t[:1])
            eye[:, :, 1] = torch.eye(t.shape[-1], dtype=t.dtype, device=t.device)
            t = torch.cat([t, eye])
        t = _tridiag_product(t[1::2], t[0::2])  # later group on the left
    mats = _tridiag_dense(t)
    u = mats[0]
    for m in mats[1:]:
        u = m @ u
    return screen[:, None] * u[:n, :n]


# ------------------------------------------------------------------ decomposition
def _mzi_np(theta: float, phi: float) -> np.ndarray:
    et, ep = np.exp(1j * theta), np.exp(1j * phi)
    return 0.5 * np.array([[ep * (et - 1), 1j * (et + 1)], [1j * ep * (et + 1), 1 - et]])


def _null_right(u: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """Phases of ``T`` on columns ``(c, c+1)`` such that ``(U T^-1)[r, c] = 0``; applies it to ``u``."""
    a, b = u[r, c], u[r, c + 1]
    theta = 2 * math.atan2(abs(b), abs(a))
    phi = float(np.angle(a) - np.angle(-b))
    u[:, c:c + 2] = u[:, c:c + 2] @ _mzi_np(theta, phi).conj().T
    return theta, phi


def _null_left(u: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """Phases of ``T`` on rows ``(r-1, r)`` such that ``(T U)[r, c] = 0``; applies it to ``u``."""
    a, b = u[r - 1, c], u[r, c]
    theta = 2 * math.atan2(abs(a), abs(b))
    phi = float(np.angle(b) - np.angle(a))
    u[r - 1:r + 1, :] = _mzi_np(theta, phi) @ u[r - 1:r + 1, :]
    return theta, phi


def decompose(unitary, kind: str = "clements", *,
              check: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Phases ``(theta [K], phi [K], out [n])`` (float64, rad) with ``mesh_matrix(spec, ...) == unitary``.

    ``unitary``: ``[n, n]`` complex; refused (one line) if ``||U^dagger U - I||_max > check``.
    Reck: every MZI nulls one entry by a right multiplication ``U T^-1`` (row ``n-1`` left to right, then
    row ``n-2``, ...).  Clements: alternating right and left nullings along the anti-diagonals, then the
    left MZIs are moved through the remaining diagonal (module docstring).
    """
    u = np.array(torch.as_tensor(unitary).detach().cpu().numpy(), dtype=np.complex128)
    if u.ndim != 2 or u.shape[0] != u.shape[1]:
        raise SettingError(f"decompose needs a square matrix, got shape {list(u.shape)}")
    n = u.shape[0]
    err = float(np.abs(u.conj().T @ u - np.eye(n)).max()) if n else 0.0
    if err > check:
        raise SettingError(f"decompose needs a unitary matrix (max |U^dagger U - I| = {err:.3g} > {check:g}); "
                           "use svd_decompose for a general matrix")
    spec = mesh_spec(n, kind)
    ops: list[tuple[int, float, float]] = []  # (top mode, theta, phi) in application order
    if kind == "reck":
        for r in range(n - 1, 0, -1):
            for c in range(r):
                ops.append((c, *_null_right(u, r, c)))
        d = np.diag(u).copy()
    else:
        right, left = [], []
        for i in range(n - 1):
            if i % 2 == 0:
                for j in range(i + 1):
                    right.append((i - j, *_null_right(u, n - 1 - j, i - j)))
            else:
                for j in range(1, i + 2):
                    row = n + j - i - 2
                    left.append((row - 1, *_null_left(u, row, j - 1)))
        d = np.diag(u).copy()
        moved = []
        for m, theta, phi in reversed(left):  # T^-1 D = D' T(theta, arg d_m - arg d_{m+1})
            d0, d1 = d[m], d[m + 1]
            new_phi = float(np.angle(d0) - np.angle(d1))
            d[m] = -np.exp(-1j * theta) * np.exp(-1j * phi) * d1
            d[m + 1] = -np.exp(-1j * theta) * d1
            moved.append((m, theta, new_phi))
        ops = right + moved
    cols = _asap_columns([m for m, _, _ in ops], n)
    index = {(int(c), int(m)): i for i, (c, m) in enumerate(zip(spec.cols.tolist(), spec.modes.tolist()))}
    theta = torch.zeros(spec.n_mzi, dtype=torch.float64)
    phi = torch.zeros(spec.n_mzi, dtype=torch.float64)
    for (m, t, p), c in zip(ops, cols):
        i = index.get((c, m))
        if i is None:  # pragma: no cover - the layouts above are built to match
            raise RuntimeError(f"decomposition produced an MZI at column {c}, mode {m} outside the {kind} layout")
        theta[i], phi[i] = t, p
    out = torch.from_numpy(np.angle(d).astype(np.float64))
    return theta, torch.remainder(phi, TWO_PI), out


def svd_decompose(matrix, kind: str = "clements", *, amplifier: bool = False, gain_max: float = 1.0):
    """Map any real or complex ``[n_out, n_in]`` matrix onto ``V`` mesh + ``sigma`` + ``U`` mesh.

    Returns ``(params, scale)``: ``params`` holds ``v_theta, v_phi, v_out`` (the ``V^dagger`` mesh, ``n_in``
    modes), ``sigma`` (``[min(n_in, n_out)]``) and ``u_theta, u_phi, u_out`` (rad, float64), with
    ``matrix = scale * U[:, :k] diag(sigma) V^dagger[:k, :]``.  Attenuators only: ``scale`` = the largest
    singular value (the largest ``sigma`` is 1); with an amplifier: ``scale = max(1, s_max / gain_max)``.
    The digital side multiplies the (homodyne-detected) field by ``scale``.
    """
    m = torch.as_tensor(matrix)
    if m.dim() != 2:
        raise SettingError(f"svd_decompose needs a 2-D matrix [n_out, n_in], got shape {list(m.shape)}")
    m = m.to(torch.complex128)
    uu, s, vh = torch.linalg.svd(m, full_matrices=True)
    smax = float(s.max()) if s.numel() else 0.0
    if amplifier:
        scale = smax / float(gain_max) if smax > float(gain_max) else 1.0
    else:
        scale = smax if smax > 0 else 1.0  # the largest attenuator is fully open
    params = {}
    for name, unitary in (("v", vh), ("u", uu)):
        theta, phi, out = decompose(unitary, kind)
        params.update({f"{name}_theta": theta, f"{name}_phi": phi, f"{name}_out": out})
    params["sigma"] = (s / scale).to(torch.float64)
    return params, scale


# ------------------------------------------------------------------ options and hidden state
@dataclass(frozen=True)
class PhotonicOptions:
    """Settings of one photonic SVD layer (units in brackets; defaults: ideal, every non-ideality off).

    kind: ``clements`` | ``reck`` (both meshes).  n_in, n_out: modes in and out.
    detection: ``intensity`` (|E|^2 [P_ref]) | ``homodyne`` (Re(E e^{-i lo_phase}) [sqrt(P_ref)]); lo_phase [rad].
    nonlinearity: ``none`` | ``saturable``; sa_depth: small-signal optical depth alpha0_L [nepers of power];
        sa_isat: saturation intensity [P_ref].
    amplifier: allow |sigma| up to gain_max [amplitude gain] (else attenuation only, |sigma| <= 1).
    loss_db [dB per MZI], loss_db_std [dB, static per-MZI spread].
    bs_error: std of each coupler's splitting-angle error [rad] (static).
    phase_error: std of the static fabrication phase error of each phase shifter [rad].
    phase_noise: std of per-shot phase noise [rad], a fresh draw per sample and phase shifter.
    phase_noise_trunc: truncate the per-shot draws at +-phase_noise_trunc * phase_noise [in units of the std];
        0: untruncated Gaussian.
    phase_noise_model: ``shifters`` (every phase shifter of both meshes) | ``mixing`` (the internal phase of
        each MZI only, driven push-pull: a pure mixing-angle change, module docstring item 4).
    crosstalk: fraction kappa of a heater's phase seen by each physical neighbour [dimensionless];
        crosstalk_spread: relative static spread of kappa.
    dac_bits: heater DAC resolution [bits] (0: ideal continuous phases); heater_vmax [V];
        heater_gamma: thermo-optic coefficient gamma [rad/V^2] (0: ``2 pi / heater_vmax^2``, full circle at v_max).
    noise [relative], shot_noise [sqrt(output units)], noise_floor [output units]: photodetector noise.
    drift: std of one random-walk step of every phase error [rad] per drift_tick [samples].
    seed: draws the fabrication errors, crosstalk, drift, the initial settings and the noise.
    """

    kind: str = "clements"
    n_in: int = 4
    n_out: int = 4
    detection: str = "intensity"
    lo_phase: float = 0.0
    nonlinearity: str = "none"
    sa_depth: float = 1.0
    sa_isat: float = 1.0
    amplifier: bool = False
    gain_max: float = 1.0
    loss_db: float = 0.0
    loss_db_std: float = 0.0
    bs_error: float = 0.0
    phase_error: float = 0.0
    phase_noise: float = 0.0
    phase_noise_trunc: float = 0.0
    phase_noise_model: str = "shifters"
    crosstalk: float = 0.0
    crosstalk_spread: float = 0.0
    dac_bits: int = 0
    heater_vmax: float = 5.0
    heater_gamma: float = 0.0
    noise: float = 0.0
    shot_noise: float = 0.0
    noise_floor: float = 0.0
    drift: float = 0.0
    drift_tick: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"mesh kind '{self.kind}' is not one of {', '.join(KINDS)}")
        if self.detection not in DETECTIONS:
            raise ValueError(f"detection '{self.detection}' is not one of {', '.join(DETECTIONS)}")
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity '{self.nonlinearity}' is not one of {', '.join(NONLINEARITIES)}")
        if self.phase_noise_model not in PHASE_NOISE_MODELS:
            raise ValueError(f"phase_noise_model '{self.phase_noise_model}' is not one of "
                             f"{', '.join(PHASE_NOISE_MODELS)}")
        if int(self.n_in) < 1 or int(self.n_out) < 1:
            raise ValueError(f"need n_in >= 1 and n_out >= 1 (got {self.n_in}, {self.n_out})")
        for name in ("loss_db", "loss_db_std", "bs_error", "phase_error", "phase_noise", "phase_noise_trunc",
                     "crosstalk", "crosstalk_spread",
                     "noise", "shot_noise", "noise_floor", "drift", "sa_depth", "heater_gamma"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= int(self.dac_bits) <= 24:
            raise ValueError(f"dac_bits must be 0 (ideal) .. 24, got {self.dac_bits}")
        if self.heater_vmax <= 0 or self.sa_isat <= 0 or self.drift_tick < 1 or self.gain_max < 1:
            raise ValueError("heater_vmax > 0, sa_isat > 0, drift_tick >= 1 and gain_max >= 1 are required")

    @property
    def gamma(self) -> float:
        """Thermo-optic coefficient in rad/V^2."""
        return float(self.heater_gamma) or TWO_PI / self.heater_vmax ** 2

    @property
    def sigma_limit(self) -> float:
        return float(self.gain_max) if self.amplifier else 1.0

    @property
    def k(self) -> int:
        return min(self.n_in, self.n_out)

    def specs(self) -> dict[str, MeshSpec]:
        return {"v": mesh_spec(self.n_in, self.kind), "u": mesh_spec(self.n_out, self.kind)}


def _generator(*key: int) -> torch.Generator:
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def init_hidden(opt: PhotonicOptions) -> dict[str, torch.Tensor]:
    """Static fabrication state drawn from ``opt.seed`` (float64), per mesh ``v`` and ``u``:
    ``{mesh}_dphase [H]`` phase errors (rad; H heaters ordered ``theta, phi, out``), ``{mesh}_alpha1/2 [K]``
    coupler errors (rad), ``{mesh}_amp [K]`` MZI amplitude transmissions, ``{mesh}_kappa [Q]`` crosstalk
    coefficients of ``spec.neighbours``.  Each kind of error has its own generator, so switching one on
    does not change the others."""
    hidden = {}
    for i, (name, spec) in enumerate(opt.specs().items()):
        def draw(tag: int, shape, mesh_id: int = i) -> torch.Tensor:
            return torch.randn(shape, generator=_generator(opt.seed, 10 + mesh_id, tag), dtype=torch.float64)

        k = spec.n_mzi
        hidden[f"{name}_dphase"] = opt.phase_error * draw(1, (spec.n_heaters,))
        hidden[f"{name}_alpha1"] = opt.bs_error * draw(2, (k,))
        hidden[f"{name}_alpha2"] = opt.bs_error * draw(3, (k,))
        loss = opt.loss_db + opt.loss_db_std * draw(4, (k,))
        hidden[f"{name}_amp"] = torch.pow(10.0, -loss.clamp_min(0.0) / 20.0)
        q = spec.neighbours.shape[0]
        hidden[f"{name}_kappa"] = opt.crosstalk * (1.0 + opt.crosstalk_spread * draw(5, (q,)))
    return hidden


@dataclass
class PhotonicState:
    """Explicit state of a photonic substrate: ``hidden`` (see :func:`init_hidden`, drifted), ``clock``
    (device time: samples measured), ``ticks`` (drift steps applied), ``noise_rng`` (generator state)."""

    hidden: dict[str, torch.Tensor]
    clock: int = 0
    ticks: int = 0
    noise_rng: torch.Tensor = field(default_factory=lambda: torch.Generator().manual_seed(0).get_state())


def advance(state: PhotonicState, n_samples: int, opt: PhotonicOptions) -> PhotonicState:
    """Pure: the state after ``n_samples`` more samples of device time (drift steps on the phase errors)."""
    clock = state.clock + int(n_samples)
    target = clock // opt.drift_tick if opt.drift > 0 else state.ticks
    hidden, ticks = state.hidden, state.ticks
    if target > ticks:
        hidden = dict(hidden)
        while ticks < target:
            for i, name in enumerate(MESHES):
                key = f"{name}_dphase"
                g = _generator(opt.seed, 2, ticks, i)
                hidden[key] = hidden[key] + opt.drift * torch.randn(hidden[key].shape, generator=g, dtype=torch.float64)
            ticks += 1
    return dataclasses.replace(state, hidden=hidden, clock=clock, ticks=ticks)


# ------------------------------------------------------------------ from settings to the light
class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def dac_phase(p: torch.Tensor, opt: PhotonicOptions, *, ste: bool = False) -> torch.Tensor:
    """Phase a heater gives for the setting ``p`` (rad) through a ``dac_bits`` DAC and ``phase = gamma V^2``.

    ``p`` is wrapped to ``[0, 2 pi)``; ``V = sqrt(p / gamma)`` clipped to ``[0, v_max]``; ``V_q = LSB round(V/LSB)``.
    ``ste=True``: the rounding passes gradients straight through (for in-silico training).
    """
    if opt.dac_bits <= 0:
        return p
    gamma, lsb = opt.gamma, opt.heater_vmax / (2 ** int(opt.dac_bits) - 1)
    v = torch.sqrt((torch.remainder(p, TWO_PI) / gamma).clamp_min(1e-30)).clamp(max=opt.heater_vmax)
    code = _RoundSTE.apply(v / lsb) if ste else torch.round(v / lsb)
    return gamma * (code * lsb) ** 2


def phase_shots(opt: PhotonicOptions, batch: int, sigma: float, generator: torch.Generator | None,
                dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Per-shot phase noise ``{mesh: [batch, H]}`` (rad; heaters ordered ``theta, phi, out``) of std ``sigma``,
    per ``opt.phase_noise_trunc`` and ``opt.phase_noise_model`` (module docstring item 4): ``sigma z``, ``z``
    standard normal, redrawn where ``|z| >= phase_noise_trunc`` (if > 0); ``mixing``: ``phi`` and ``out``
    columns are zero (the ``theta`` draws are applied push-pull by :func:`layer_field`).  The default options
    draw exactly ``sigma * randn(batch, H)`` per mesh (``v`` then ``u``) from ``generator``."""
    c = float(opt.phase_noise_trunc)
    shots = {}
    for mesh, spec in opt.specs().items():
        z = torch.randn(batch, spec.n_heaters, generator=generator, dtype=dtype)
        if c > 0:
            bad = z.abs() >= c
            while bool(bad.any()):
                z[bad] = torch.randn(int(bad.sum()), generator=generator, dtype=dtype)
                bad = z.abs() >= c
        if opt.phase_noise_model == "mixing":
            z[:, spec.n_mzi:] = 0.0
        shots[mesh] = float(sigma) * z
    return shots


def realized_phases(setting: torch.Tensor, hidden: dict, mesh: str, spec: MeshSpec, opt: PhotonicOptions, *,
                    shot: torch.Tensor | None = None, ste: bool = False) -> torch.Tensor:
    """Phases in the light ``[..., H]`` (rad) from the heater settings ``[H]`` (rad): DAC, crosstalk, static
    error + drift, then the per-shot noise ``shot`` (``[batch, H]`` rad, or None)."""
    phase = dac_phase(setting, opt, ste=ste)
    kappa = hidden.get(f"{mesh}_kappa")
    if opt.crosstalk > 0 and kappa is not None and kappa.numel():
        heat = torch.remainder(phase, TWO_PI)
        nb = spec.neighbours.to(phase.device)
        recv, src = nb[:, 0], nb[:, 1]
        phase = phase.index_add(-1, recv, kappa.to(phase.dtype) * heat.index_select(-1, src))
    phase = phase + hidden[f"{mesh}_dphase"].to(phase.dtype)
    if shot is not None:
        phase = phase + shot.to(phase.dtype)
    return phase


def saturable_absorber(e: torch.Tensor, depth: float, isat: float) -> torch.Tensor:
    """``E exp(-(depth/2) / (1 + |E|^2/isat))`` (thin saturable absorber, module docstring)."""
    inten = e.real ** 2 + e.imag ** 2
    return e * torch.exp(-(0.5 * depth) / (1.0 + inten / isat)).to(e.dtype)


def layer_field(x: torch.Tensor, settings: dict[str, torch.Tensor], opt: PhotonicOptions, hidden: dict | None = None, *,
                shots: dict[str, torch.Tensor] | None = None, ste: bool = False, ideal: bool = False) -> torch.Tensor:
    """Complex field after the SVD layer (and the nonlinearity), ``[batch, n_out]``.

    x: ``[batch, n_in]`` real (or complex) field amplitudes; settings: ``v_theta, v_phi, v_out, sigma, u_theta,
    u_phi, u_out`` in rad (sigma: signed amplitude transmission); hidden: :func:`init_hidden` state (None or
    ``ideal=True``: a perfect chip, no DAC); shots: per-mesh ``[batch, H]`` phase noise (rad), added to the
    realized phases (also on a perfect chip).
    complex128 for float64 inputs, complex64 otherwise; differentiable in ``x`` and every setting.
    """
    specs = opt.specs()
    real = x.dtype if x.is_floating_point() else (torch.float64 if x.dtype == torch.complex128 else torch.float32)
    e = x.to(_cdtype(real))
    for mesh in MESHES:
        spec = specs[mesh]
        setting = torch.cat([settings[f"{mesh}_{k}"].reshape(-1).to(real) for k in PHASE_KEYS])
        if ideal or hidden is None:
            phase, errors = setting, {}
            if shots is not None and shots.get(mesh) is not None:
                phase = phase + shots[mesh].to(real)
        else:
            phase = realized_phases(setting, hidden, mesh, spec, opt, shot=None if shots is None else shots.get(mesh),
                                    ste=ste)
            errors = {}
            if opt.bs_error > 0:
                errors.update(alpha1=hidden[f"{mesh}_alpha1"].to(real), alpha2=hidden[f"{mesh}_alpha2"].to(real))
            if opt.loss_db > 0 or opt.loss_db_std > 0:
                errors["amp"] = hidden[f"{mesh}_amp"].to(real)
        k = spec.n_mzi
        if opt.phase_noise_model == "mixing" and shots is not None and shots.get(mesh) is not None and k:
            # push-pull drive: the common phase e^{-i delta/2} of each MZI (module docstring item 4)
            half = -0.5 * shots[mesh][..., :k].to(real)
            pull = torch.polar(torch.ones_like(half), half)
            errors["amp"] = pull if errors.get("amp") is None else pull * errors["amp"].to(pull.dtype)
        e = mesh_field(e, spec, phase[..., :k], phase[..., k:2 * k], phase[..., 2 * k:], **errors)
        if mesh == "v":
            sigma = settings["sigma"].reshape(-1).to(real)
            e = e[..., :opt.k] * sigma.to(e.dtype)
            if opt.n_out > opt.k:
                e = torch.cat([e, e.new_zeros(*e.shape[:-1], opt.n_out - opt.k)], -1)
    if opt.nonlinearity == "saturable":
        e = saturable_absorber(e, opt.sa_depth, opt.sa_isat)
    return e


def detect(e: torch.Tensor, opt: PhotonicOptions) -> torch.Tensor:
    """``|E|^2`` (intensity) or ``Re(E e^{-i lo_phase})`` (homodyne); real, dtype of ``E``'s parts."""
    if opt.detection == "homodyne":
        return (e * complex(math.cos(opt.lo_phase), -math.sin(opt.lo_phase))).real
    return e.real ** 2 + e.imag ** 2


def measure(y: torch.Tensor, opt: PhotonicOptions, g: torch.Generator) -> torch.Tensor:
    """Photodetector noise on the detected ``y`` (draws from ``g``): ``y + noise |y| n1 + shot_noise sqrt(|y|) n2
    + noise_floor n3``."""
    clean, out = y, y
    if opt.noise > 0:
        out = out + opt.noise * clean.abs() * torch.randn(y.shape, generator=g, dtype=y.dtype)
    if opt.shot_noise > 0:
        out = out + opt.shot_noise * clean.abs().sqrt() * torch.randn(y.shape, generator=g, dtype=y.dtype)
    if opt.noise_floor > 0:
        out = out + opt.noise_floor * torch.randn(y.shape, generator=g, dtype=y.dtype)
    return out


def layer_macs(opt: PhotonicOptions) -> int:
    """Real multiply-accumulates per sample of one :func:`layer_field` + :func:`detect` (3 complex MACs per
    mode per column = 12 real, plus output phases and sigma)."""
    total = 0
    for spec in opt.specs().values():
        total += 12 * spec.n * spec.n_cols + 4 * spec.n
    return total + 2 * opt.k + 2 * opt.n_out


def fidelity(target: torch.Tensor, realized: torch.Tensor) -> float:
    """``|tr(U_target^dagger U_realized)| / N`` (1 for equal unitaries, also up to a global phase; < 1 for any
    other pair of unitaries, and for lossy ``U_realized``)."""
    t, r = torch.as_tensor(target), torch.as_tensor(realized)
    if t.shape != r.shape or t.dim() != 2 or t.shape[0] != t.shape[1]:
        raise SettingError(f"fidelity needs two square matrices of the same size, "
                           f"got {list(t.shape)} and {list(r.shape)}")
    r = r.to(t.dtype)
    return float(torch.abs(torch.trace(t.conj().T @ r))) / max(int(t.shape[0]), 1)


# ------------------------------------------------------------------ the substrate
PARAM_NAMES = ("v_theta", "v_phi", "v_out", "sigma", "u_theta", "u_phi", "u_out")


class PhotonicSubstrate:
    """A photonic SVD layer behind the :class:`~simulators.substrate.Substrate` protocol.

    Inputs: ``[batch, n_in]`` in ``[-1, 1]``, the real field amplitudes (sign by a 0/pi phase modulator) of
    the input modes, units ``sqrt(P_ref)``.  Outputs: ``[batch, n_out]`` detected values (``detection``).
    Hardware parameters (``set_params``/``get_params``): the phase settings ``v_theta, v_phi [K_in]``,
    ``v_out [n_in]``, ``u_theta, u_phi [K_out]``, ``u_out [n_out]`` in units of ``pi`` rad (any finite value;
    the controller wraps it), and ``sigma [min(n_in, n_out)]``, signed amplitude transmissions in
    ``[-1, 1]`` (``[-gain_max, gain_max]`` with an amplifier).  Power-on settings: a seeded random matrix
    (Gaussian entries) mapped by :func:`svd_decompose`.  Hidden (not readable through the protocol):
    fabrication phase errors, coupler errors, losses, the crosstalk coefficients and the drift
    (:func:`init_hidden`, :func:`advance`).
    Counters: ``n_evals`` (samples measured), ``n_calls``, ``exact_calls``.
    """

    input_range = INPUT_RANGE

    def __init__(self, options: PhotonicOptions) -> None:
        self.options = options
        self.n_in, self.n_out = int(options.n_in), int(options.n_out)
        self._state = PhotonicState(hidden=init_hidden(options), noise_rng=_generator(options.seed, 4).get_state())
        self._noise = torch.Generator()
        self._noise.set_state(self._state.noise_rng)
        g = _generator(options.seed, 5)
        m = torch.randn(self.n_out, self.n_in, generator=g, dtype=torch.float64)
        params, _ = svd_decompose(m, options.kind)
        self._settings = {k: self._to_units(k, v) for k, v in params.items()}
        self.n_evals = self.n_calls = self.exact_calls = 0

    # -- units
    @staticmethod
    def _to_units(name: str, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().to(torch.float32)
        if name != "sigma":
            value = torch.remainder(value / PHASE_UNIT + 1.0, 2.0) - 1.0
        return value.clone()

    def _radians(self, params: dict[str, torch.Tensor], real: torch.dtype) -> dict[str, torch.Tensor]:
        out = {}
        for name in PARAM_NAMES:
            v = params.get(name, self._settings[name])
            v = torch.as_tensor(v).to(real)
            out[name] = v if name == "sigma" else v * PHASE_UNIT
        return out

    @property
    def kind(self) -> str:
        return f"photonic:{self.options.kind}"

    def param_shapes(self) -> dict[str, list[int]]:
        return {k: list(v.shape) for k, v in self._settings.items()}

    # -- protocol
    def _check_inputs(self, x: torch.Tensor) -> None:
        check_batch(self.kind, x, self.n_in, self.input_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One noisy measurement per sample, ``[batch, n_out]`` float32 (computed in complex128); advances
        device time by the batch size (a batch is measured at the hidden state of its first sample)."""
        self.n_calls += 1
        self._check_inputs(x)
        opt = self.options
        with torch.no_grad():
            x = x.detach().to(torch.float64)
            shots = None
            if opt.phase_noise > 0:
                shots = phase_shots(opt, x.shape[0], opt.phase_noise, self._noise)
            e = layer_field(x, self._radians({}, torch.float64), opt, self._state.hidden, shots=shots)
            y = measure(detect(e, opt), opt, self._noise)
        self.n_evals += int(x.shape[0])
        self._state = advance(self._state, int(x.shape[0]), opt)
        return y.to(torch.float32)

    def set_params(self, params: dict[str, torch.Tensor]) -> None:
        """Write phase settings (units of pi rad) and/or ``sigma``; refused whole if any entry is bad."""
        new = {}
        for name, value in params.items():
            if name not in self._settings:
                raise SubstrateFault(f"{self.kind} has no hardware parameter '{name}'; "
                                     f"it has: {', '.join(PARAM_NAMES)}")
            value = torch.as_tensor(value).detach().to(torch.float32).reshape(-1)
            want = self._settings[name].numel()
            if value.numel() != want:
                raise SubstrateFault(f"{self.kind} {name} needs {want} values, got {value.numel()}")
            if not bool(torch.isfinite(value).all()):
                raise SubstrateFault(f"{self.kind} {name} has non-finite values")
            if name == "sigma":
                lim = self.options.sigma_limit
                if value.numel() and float(value.abs().max()) > lim + RANGE_TOLERANCE:
                    hint = "" if self.options.amplifier else " (attenuators only; set amplifier = true for gain)"
                    raise SubstrateFault(f"{self.kind} sigma must lie in [{-lim:g}, {lim:g}]{hint}, "
                                         f"got max |sigma| = {float(value.abs().max()):.4g}")
                new[name] = value.clone()
            else:
                new[name] = self._to_units(name, value * PHASE_UNIT)
        self._settings.update(new)

    def get_params(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self._settings.items()}

    def reset(self) -> None:
        """Power-on state of the dynamics: an MZI mesh has none (no memory between samples); written
        settings and the (drifted) chip stay."""

    def describe(self) -> dict:
        o = self.options
        lim = o.sigma_limit
        ranges = {k: ([-lim, lim] if k == "sigma" else [-1.0, 1.0]) for k in PARAM_NAMES}
        periodic = {k: k != "sigma" for k in PARAM_NAMES}  # phases: period 2 (units of pi rad), wrap, never clamp
        return {
            "kind": self.kind, "n_in": self.n_in, "n_out": self.n_out, "input_range": list(self.input_range),
            "params": self.param_shapes(), "param_ranges": ranges, "param_periodic": periodic,
            "param_units": {k: ("amplitude transmission" if k == "sigma" else "pi rad") for k in PARAM_NAMES},
            "detection": o.detection, "nonlinearity": o.nonlinearity, "amplifier": o.amplifier,
            "noise": o.noise, "shot_noise": o.shot_noise, "noise_floor": o.noise_floor, "phase_noise": o.phase_noise,
            "phase_noise_trunc": o.phase_noise_trunc, "phase_noise_model": o.phase_noise_model,
            "loss_db": o.loss_db, "dac_bits": o.dac_bits, "drift": o.drift, "drift_tick": o.drift_tick,
            "n_mzi": sum(s.n_mzi for s in o.specs().values()),
        }

    # -- device time
    @property
    def clock(self) -> int:
        return self._state.clock

    def advance_time(self, n_samples: int) -> None:
        """Let ``n_samples`` of device time pass without measuring (drift keeps going)."""
        self._state = advance(self._state, int(n_samples), self.options)

    # -- explicit, documented escape hatch for in-silico training and exact twins
    def exact_forward(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None, *,
                      ideal: bool = False, phase_noise: float = 0.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Differentiable, noise-free response at the current hidden state (no clock advance, no draws).

        ``params`` may hold any hardware parameter (same units as ``set_params``; e.g. torch Parameters to
        differentiate with respect to); the others are the written settings.  Static non-idealities
        (fabrication errors, couplers, loss, crosstalk, drift so far, the DAC with straight-through
        rounding) are included; per-shot phase noise and detector noise are not.  ``ideal=True`` evaluates a
        perfect chip.  ``phase_noise > 0`` (rad std): hardware-aware training, a fresh Gaussian draw per sample
        and phase shifter (:func:`phase_shots`: the options' ``phase_noise_model`` and ``phase_noise_trunc``
        apply; from ``generator``, the chip's own noise generator is not touched) added to the
        phases in the light (on a perfect chip too); the draw does not depend on ``params``, so gradients
        with respect to the settings are those of the perturbed chip.  Dtype follows ``x`` (float64 ->
        complex128 inside).  Only for in-silico backpropagation and exact twins: a real device has no such
        method.
        """
        self.exact_calls += 1
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise SubstrateFault(f"{self.kind} expects inputs [batch, {self.n_in}], got {tuple(x.shape)}")
        if not float(phase_noise) >= 0:
            raise SettingError(f"{self.kind} exact_forward phase_noise must be >= 0 rad, got {phase_noise}")
        real = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        shots = None
        if phase_noise > 0:
            shots = phase_shots(self.options, x.shape[0], float(phase_noise), generator, real)
        e = layer_field(x.to(real), self._radians(params or {}, real), self.options, self._state.hidden,
                        shots=shots, ste=True, ideal=ideal)
        return detect(e, self.options)

    def mesh_matrices(self, *, ideal: bool = False) -> dict[str, torch.Tensor]:
        """Transfer matrices ``{"v": [n_in, n_in], "u": [n_out, n_out]}`` (complex128) of the two meshes at the
        written settings: ``ideal=True`` the target (a perfect chip), else what the chip realizes now (DAC,
        crosstalk, static errors and drift so far, couplers, loss; no per-shot noise).  Only for reports and
        tests (a real chip would need a calibration measurement)."""
        opt, real = self.options, torch.float64
        settings = self._radians({}, real)
        out = {}
        for mesh, spec in opt.specs().items():
            setting = torch.cat([settings[f"{mesh}_{k}"].reshape(-1) for k in PHASE_KEYS])
            errors = {}
            if ideal:
                phase = setting
            else:
                hidden = self._state.hidden
                phase = realized_phases(setting, hidden, mesh, spec, opt)
                if opt.bs_error > 0:
                    errors.update(alpha1=hidden[f"{mesh}_alpha1"], alpha2=hidden[f"{mesh}_alpha2"])
                if opt.loss_db > 0 or opt.loss_db_std > 0:
                    errors["amp"] = hidden[f"{mesh}_amp"]
            k = spec.n_mzi
            out[mesh] = mesh_matrix(spec, phase[:k], phase[k:2 * k], phase[2 * k:], **errors)
        return out

    def simulation_macs(self, batch: int) -> int:
        """Digital MACs of one :meth:`exact_forward` over ``batch`` samples."""
        return int(batch) * layer_macs(self.options)

    def program(self, matrix) -> float:
        """Write the settings that realize ``matrix [n_out, n_in]`` on an ideal chip (:func:`svd_decompose`);
        returns the digital scale ``s`` (the layer computes ``matrix x = s * field``)."""
        m = torch.as_tensor(matrix)
        if tuple(m.shape) != (self.n_out, self.n_in):
            raise SettingError(f"{self.kind} programs [{self.n_out}, {self.n_in}] matrices, got {list(m.shape)}")
        params, scale = svd_decompose(m, self.options.kind, amplifier=self.options.amplifier,
                                      gain_max=self.options.gain_max)
        self.set_params({k: (v if k == "sigma" else v / PHASE_UNIT) for k, v in params.items()})
        return scale

    # -- checkpointing of the explicit state
    def state_dict(self) -> dict:
        s = self._state
        return {"hidden": {k: v.clone() for k, v in s.hidden.items()}, "clock": s.clock, "ticks": s.ticks,
                "noise_rng": self._noise.get_state(), "settings": self.get_params(), "n_evals": self.n_evals}

    def load_state_dict(self, state: dict) -> None:
        self._state = PhotonicState(hidden={k: v.clone() for k, v in state["hidden"].items()},
                                    clock=int(state["clock"]),
                                    ticks=int(state["ticks"]), noise_rng=state["noise_rng"])
        self._noise.set_state(state["noise_rng"])
        self._settings = {k: v.clone() for k, v in state["settings"].items()}
        self.n_evals = int(state.get("n_evals", 0))


_FLOAT_OPTIONS = {f.name for f in dataclasses.fields(PhotonicOptions)} - {"kind", "n_in", "n_out", "seed"}


@SUBSTRATE_FAMILIES.register("photonic", variants=KINDS, emulatable=True)
def open_photonic(variant: str, n_in: int, n_out: int, *, seed: int = 0, options: dict) -> PhotonicSubstrate:
    """``photonic:<clements|reck>``: options are fields of :class:`PhotonicOptions` (``loss_db``, ``phase_noise``,
    ``dac_bits``, ``detection``, ...)."""
    options = dict(options)
    check_options(f"photonic:{variant}", options, _FLOAT_OPTIONS)
    try:
        for key in ("dac_bits", "drift_tick"):
            if key in options:
                options[key] = int(options[key])
        if "amplifier" in options and not isinstance(options["amplifier"], bool):
            raise ValueError(f"amplifier must be true or false, got {options['amplifier']!r}")
        return PhotonicSubstrate(PhotonicOptions(kind=variant, n_in=n_in, n_out=n_out, seed=seed, **options))
    except (TypeError, ValueError) as exc:
        raise SettingError(f"substrate photonic:{variant}: {exc}") from None
