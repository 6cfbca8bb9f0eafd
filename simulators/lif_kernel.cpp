// Compiled kernels of the fused LIF engine (simulators/lif_kernel.py builds this file with
// torch.utils.cpp_extension.load_inline).  The equations are those of simulators/lif.py; every
// neuron is independent, so each kernel runs the whole time loop for a chunk of neurons and the
// chunks run in parallel (at::parallel_for: torch's intra-op threads).  Arrays are [T, M] with
// M = batch * neurons, row-major and contiguous; a tensor with zero elements means "absent".

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t CHUNK = 512;  // neurons per task: a few [CHUNK] state arrays stay in L1

// Neuron modes (template argument): spiking with reset at the spike's step, or snnTorch's order.
enum Mode { NONSPIKING = 0, IMM_SUB = 1, IMM_ZERO = 2, NEXT_SUB = 3, NEXT_ZERO = 4 };
enum Surr { FAST_SIGMOID = 0, SIGMOID = 1, ATAN = 2, TRIANGLE = 3 };

struct Params {
  double alpha, beta, gamma, leak, v_th, v_reset;
  bool has_current, delay;
};

template <typename S>
inline const S* ptr_or_null(const at::Tensor& t) {
  return t.numel() ? t.data_ptr<S>() : nullptr;
}

// One chunk of neurons [j0, j0 + n) over all T steps: the forward equations of simulators/lif.py.
// x: currents [T, M]; any of pre/spk/mem may be null (not wanted) and may alias x (each element is
// read before it is written).  i, v: state of the chunk, updated in place.
template <typename S, int MODE>
inline void forward_chunk(const S* x, S* pre, S* spk, S* mem, S* i, S* v, S* iprev, uint8_t* zprev,
                          int64_t T, int64_t M, int64_t j0, int64_t n, const Params& q) {
  const S alpha = (S)q.alpha, beta = (S)q.beta, gamma = (S)q.gamma, leak = (S)q.leak;
  const S v_th = (S)q.v_th, v_reset = (S)q.v_reset;
  const bool cur = q.has_current, delay = q.delay, scale = q.gamma != 1.0, shift = q.leak != 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t o = t * M + j0;
    for (int64_t k = 0; k < n; ++k) {
      const S xin = x[o + k];
      const S inew = cur ? (S)(xin + alpha * i[k]) : xin;
      S d = delay ? i[k] : inew;  // i[k] holds the previous step's current
      if (scale) d = d * gamma;
      if (shift) d = d + leak;
      S p = d + beta * v[k];
      S z = 0, vout;
      if constexpr (MODE == NONSPIKING) {
        vout = p;
      } else if constexpr (MODE == IMM_SUB) {
        z = p > v_th ? (S)1 : (S)0;
        vout = p - v_th * z;
      } else if constexpr (MODE == IMM_ZERO) {
        z = p > v_th ? (S)1 : (S)0;
        vout = p > v_th ? v_reset : p;
      } else if constexpr (MODE == NEXT_SUB) {
        p = p - v_th * (S)zprev[k];
        z = p > v_th ? (S)1 : (S)0;
        zprev[k] = p > v_th;
        vout = p;
      } else {  // NEXT_ZERO
        if (zprev[k]) p = v_reset;
        z = p > v_th ? (S)1 : (S)0;
        zprev[k] = p > v_th;
        vout = p;
      }
      i[k] = inew;
      v[k] = vout;
      if (pre) pre[o + k] = p;
      if (spk) spk[o + k] = z;
      if (mem) mem[o + k] = vout;
    }
  }
  (void)iprev;
}

template <typename S, int MODE>
void forward_impl(const at::Tensor& x, const at::Tensor& pre, const at::Tensor& spk, const at::Tensor& mem,
                  at::Tensor& i_state, at::Tensor& v_state, const Params& q) {
  const int64_t T = x.size(0), M = x.size(1);
  const S* xp = x.data_ptr<S>();
  S* prep = pre.numel() ? pre.data_ptr<S>() : nullptr;
  S* spkp = spk.numel() ? spk.data_ptr<S>() : nullptr;
  S* memp = mem.numel() ? mem.data_ptr<S>() : nullptr;
  S* ip = i_state.data_ptr<S>();
  S* vp = v_state.data_ptr<S>();
  const S v_th = (S)q.v_th;
  const int64_t chunks = (M + CHUNK - 1) / CHUNK;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, T * CHUNK));
  at::parallel_for(0, chunks, grain, [&](int64_t c0, int64_t c1) {
    uint8_t zprev[CHUNK];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t j0 = c * CHUNK, n = std::min(CHUNK, M - j0);
      for (int64_t k = 0; k < n; ++k) zprev[k] = vp[j0 + k] > v_th;
      forward_chunk<S, MODE>(xp, prep, spkp, memp, ip + j0, vp + j0, nullptr, zprev, T, M, j0, n, q);
    }
  });
}

int mode_of(bool spiking, bool next_step, bool zero) {
  if (!spiking) return NONSPIKING;
  if (next_step) return zero ? NEXT_ZERO : NEXT_SUB;
  return zero ? IMM_ZERO : IMM_SUB;
}

template <typename S, int SURR>
inline S surrogate(S x, S k) {
  if constexpr (SURR == FAST_SIGMOID) {
    const S a = (S)1 + k * std::abs(x);
    return (S)0.5 * k / (a * a);
  } else if constexpr (SURR == SIGMOID) {
    const S s = (S)1 / ((S)1 + std::exp(-k * x));
    return k * s * ((S)1 - s);
  } else if constexpr (SURR == ATAN) {
    const S y = (S)(0.5 * M_PI) * k * x;
    return (S)0.5 * k / ((S)1 + y * y);
  } else {
    return k * std::max((S)0, (S)1 - k * std::abs(x));
  }
}

// Backward of one chunk: the adjoint recursion of simulators/lif.py (_FusedLIF), one reverse pass.
template <typename S, int MODE, int SURR>
void backward_chunk(const S* pre, const S* gz, const S* gv, const S* gvT, const S* giT, const S* v0, S* dx,
                    S* dv0, S* di0, int64_t T, int64_t M, int64_t j0, int64_t n, const Params& q, S slope,
                    bool detach) {
  const S alpha = (S)q.alpha, beta = (S)q.beta, gamma = (S)q.gamma, v_th = (S)q.v_th, v_reset = (S)q.v_reset;
  const bool cur = q.has_current, delay = q.delay;
  S dp_next[CHUNK], dc_next[CHUNK], du_next[CHUNK];
  for (int64_t k = 0; k < n; ++k) {
    dp_next[k] = 0;
    du_next[k] = 0;
    dc_next[k] = giT ? giT[j0 + k] : (S)0;  // with delay: d_cur[T-1] = dL/di_final
  }
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t o = t * M + j0;
    for (int64_t k = 0; k < n; ++k) {
      const S p = MODE == NONSPIKING ? (S)0 : pre[o + k];  // no pre stored for a leaky integrator
      S g_v = gv ? gv[o + k] : (S)0;
      if (t == T - 1 && gvT) g_v = g_v + gvT[j0 + k];
      const S g_z = gz ? gz[o + k] : (S)0;
      S A, Mt;
      if constexpr (MODE == NONSPIKING) {
        A = g_v;
        Mt = beta;
      } else {
        const S sd = surrogate<S, SURR>(p - v_th, slope);
        if constexpr (MODE == IMM_SUB) {
          A = g_z * sd;
          if (detach) {
            A = A + g_v;
            Mt = beta;
          } else {
            const S c = sd * (-v_th) + (S)1;
            A = A + c * g_v;
            Mt = c * beta;
          }
        } else if constexpr (MODE == IMM_ZERO) {
          S c = (S)1 - (p > v_th ? (S)1 : (S)0);
          if (!detach) c = c + (v_reset - p) * sd;
          A = g_z * sd + c * g_v;
          Mt = c * beta;
        } else if constexpr (MODE == NEXT_SUB) {
          A = g_z * sd + g_v;
          Mt = beta;
        } else {  // NEXT_ZERO
          A = g_z * sd + g_v;
          Mt = ((S)1 - (p > v_th ? (S)1 : (S)0)) * beta;
        }
      }
      const S dp = A + Mt * dp_next[k];
      dp_next[k] = dp;
      S du = dp;  // dL/du[t]: the gradient reaching the drive of step t
      if constexpr (MODE == NEXT_ZERO) {
        const bool zp = t > 0 ? pre[o - M + k] > v_th : v0[j0 + k] > v_th;
        du = zp ? (S)0 : dp;
      }
      if (!delay) {
        S dc = gamma * du;
        if (t == T - 1) {
          if (giT) dc = dc + giT[j0 + k];
        } else if (cur) {
          dc = dc + alpha * dc_next[k];
        }
        dc_next[k] = dc;
        dx[o + k] = dc;
      } else {
        S dc;
        if (t == T - 1) {
          dc = giT ? giT[j0 + k] : (S)0;
        } else {
          dc = gamma * du_next[k];
          if (cur) dc = dc + alpha * dc_next[k];
        }
        dc_next[k] = dc;
        du_next[k] = du;
        dx[o + k] = dc;
      }
    }
  }
  for (int64_t k = 0; k < n; ++k) {
    const S du0 = (MODE == NEXT_ZERO && v0[j0 + k] > v_th) ? (S)0 : dp_next[k];
    dv0[j0 + k] = beta * du0;
    if (!delay) {
      di0[j0 + k] = cur ? dc_next[k] * alpha : (S)0;
    } else {
      di0[j0 + k] = cur ? dc_next[k] * alpha + du0 * gamma : du0 * gamma;
    }
  }
}

template <typename S, int MODE, int SURR>
void backward_impl(const at::Tensor& pre, const at::Tensor& gz, const at::Tensor& gv, const at::Tensor& gvT,
                   const at::Tensor& giT, const at::Tensor& v0, at::Tensor& dx, at::Tensor& dv0, at::Tensor& di0,
                   const Params& q, double slope, bool detach) {
  const int64_t T = dx.size(0), M = dx.size(1);
  const S *prep = ptr_or_null<S>(pre), *gzp = ptr_or_null<S>(gz), *gvp = ptr_or_null<S>(gv);
  const S *gvTp = ptr_or_null<S>(gvT), *giTp = ptr_or_null<S>(giT), *v0p = v0.data_ptr<S>();
  S *dxp = dx.data_ptr<S>(), *dv0p = dv0.data_ptr<S>(), *di0p = di0.data_ptr<S>();
  const int64_t chunks = (M + CHUNK - 1) / CHUNK;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, T * CHUNK));
  at::parallel_for(0, chunks, grain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t j0 = c * CHUNK, n = std::min(CHUNK, M - j0);
      backward_chunk<S, MODE, SURR>(prep, gzp, gvp, gvTp, giTp, v0p, dxp, dv0p, di0p, T, M, j0, n, q, (S)slope,
                                    detach);
    }
  });
}

Params make_params(double alpha, double beta, double gamma, double leak, double v_th, double v_reset,
                   bool has_current, bool delay) {
  return Params{alpha, beta, gamma, leak, v_th, v_reset, has_current, delay};
}

template <typename S, int MODE>
void backward_surr(int surr, const at::Tensor& pre, const at::Tensor& gz, const at::Tensor& gv, const at::Tensor& gvT,
                   const at::Tensor& giT, const at::Tensor& v0, at::Tensor& dx, at::Tensor& dv0, at::Tensor& di0,
                   const Params& q, double slope, bool detach) {
  switch (surr) {
    case FAST_SIGMOID: return backward_impl<S, MODE, FAST_SIGMOID>(pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach);
    case SIGMOID: return backward_impl<S, MODE, SIGMOID>(pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach);
    case ATAN: return backward_impl<S, MODE, ATAN>(pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach);
    default: return backward_impl<S, MODE, TRIANGLE>(pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach);
  }
}

// Compressed rows of a binary [R, n_in] matrix: offsets [R + 1] and column indices (int32).
// Returns false if an entry is neither 0 nor 1.
template <typename S>
bool compress_rows(const S* x, int64_t R, int64_t n_in, std::vector<int64_t>& off, std::vector<int32_t>& col) {
  off.assign(R + 1, 0);
  std::atomic<bool> ok{true};
  at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
    bool good = true;
    for (int64_t r = r0; r < r1; ++r) {
      const S* row = x + r * n_in;
      int64_t c = 0;
      for (int64_t k = 0; k < n_in; ++k) {
        c += row[k] != (S)0;
        good &= (row[k] == (S)0) | (row[k] == (S)1);
      }
      off[r + 1] = c;
    }
    if (!good) ok = false;
  });
  if (!ok.load()) return false;
  for (int64_t r = 0; r < R; ++r) off[r + 1] += off[r];
  col.resize(off[R]);
  at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const S* row = x + r * n_in;
      int32_t* out = col.data() + off[r];
      for (int64_t k = 0; k < n_in; ++k)
        if (row[k] != (S)0) *out++ = (int32_t)k;
    }
  });
  return true;
}

constexpr int64_t TILE = 128;  // output columns per task: a [n_in, TILE] weight tile stays in L2

// Event-driven layer forward without gradients: synaptic input gathered from the weight rows of the
// active inputs (w_t = W^T, [n_in, n_out]), then the LIF step, fused per (batch row, column tile).
template <typename S, int MODE>
void event_impl(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias, at::Tensor& spk, at::Tensor& mem,
                at::Tensor& i_state, at::Tensor& v_state, const Params& q, const std::vector<int64_t>& off,
                const std::vector<int32_t>& col) {
  const int64_t T = x.size(0), B = x.size(1), n_out = w_t.size(1);
  const S* wp = w_t.data_ptr<S>();
  const S* bp = ptr_or_null<S>(bias);
  S* spkp = spk.data_ptr<S>();
  S* memp = mem.numel() ? mem.data_ptr<S>() : nullptr;
  S* ip = i_state.data_ptr<S>();
  S* vp = v_state.data_ptr<S>();
  const S v_th = (S)q.v_th;
  const int64_t tiles = (n_out + TILE - 1) / TILE;
  const int64_t M = B * n_out;  // the [T, B, n_out] output seen as [T, M]
  // task = tile * B + b: consecutive tasks share a weight tile
  at::parallel_for(0, tiles * B, 1, [&](int64_t a0, int64_t a1) {
    alignas(64) S acc[TILE];
    uint8_t zprev[TILE];
    for (int64_t a = a0; a < a1; ++a) {
      const int64_t tile = a / B, b = a % B;
      const int64_t c0 = tile * TILE, n = std::min(TILE, n_out - c0);
      const int64_t j0 = b * n_out + c0;
      for (int64_t k = 0; k < n; ++k) zprev[k] = vp[j0 + k] > v_th;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t r = t * B + b;
        for (int64_t k = 0; k < n; ++k) acc[k] = bp ? bp[c0 + k] : (S)0;
        for (int64_t e = off[r]; e < off[r + 1]; ++e) {
          const S* w = wp + (int64_t)col[e] * n_out + c0;
          for (int64_t k = 0; k < n; ++k) acc[k] += w[k];
        }
        // one LIF step of this row's tile: acc as the "currents" of a T = 1, M = n problem
        S* out = spkp + t * M + j0;
        forward_chunk<S, MODE>(acc, nullptr, out, memp ? memp + t * M + j0 : nullptr, ip + j0, vp + j0, nullptr,
                               zprev, 1, n, 0, n, q);
      }
    }
  });
}

}  // namespace

// currents [T, M]; outputs pre/spikes/membrane [T, M] or empty; i_state, v_state [M] (in: initial, out: final)
void lif_forward(at::Tensor x, at::Tensor pre, at::Tensor spk, at::Tensor mem, at::Tensor i_state, at::Tensor v_state,
                 double alpha, double beta, double gamma, double leak, double v_th, double v_reset, bool has_current,
                 bool delay, bool spiking, bool next_step, bool zero) {
  const Params q = make_params(alpha, beta, gamma, leak, v_th, v_reset, has_current, delay);
  const int mode = mode_of(spiking, next_step, zero);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_forward", [&] {
    switch (mode) {
      case NONSPIKING: forward_impl<scalar_t, NONSPIKING>(x, pre, spk, mem, i_state, v_state, q); break;
      case IMM_SUB: forward_impl<scalar_t, IMM_SUB>(x, pre, spk, mem, i_state, v_state, q); break;
      case IMM_ZERO: forward_impl<scalar_t, IMM_ZERO>(x, pre, spk, mem, i_state, v_state, q); break;
      case NEXT_SUB: forward_impl<scalar_t, NEXT_SUB>(x, pre, spk, mem, i_state, v_state, q); break;
      default: forward_impl<scalar_t, NEXT_ZERO>(x, pre, spk, mem, i_state, v_state, q); break;
    }
  });
}

// pre [T, M]; gz, gv [T, M] or empty; gvT, giT [M] or empty; v0 [M]; outputs dx [T, M], dv0, di0 [M]
void lif_backward(at::Tensor pre, at::Tensor gz, at::Tensor gv, at::Tensor gvT, at::Tensor giT, at::Tensor v0,
                  at::Tensor dx, at::Tensor dv0, at::Tensor di0, double alpha, double beta, double gamma, double v_th,
                  double v_reset, bool has_current, bool delay, bool spiking, bool next_step, bool zero, bool detach,
                  int64_t surr, double slope) {
  const Params q = make_params(alpha, beta, gamma, 0.0, v_th, v_reset, has_current, delay);
  const int mode = mode_of(spiking, next_step, zero);
  const int s = (int)surr;
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "lif_backward", [&] {
    switch (mode) {
      case NONSPIKING: backward_surr<scalar_t, NONSPIKING>(s, pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach); break;
      case IMM_SUB: backward_surr<scalar_t, IMM_SUB>(s, pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach); break;
      case IMM_ZERO: backward_surr<scalar_t, IMM_ZERO>(s, pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach); break;
      case NEXT_SUB: backward_surr<scalar_t, NEXT_SUB>(s, pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach); break;
      default: backward_surr<scalar_t, NEXT_ZERO>(s, pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach); break;
    }
  });
}

// x [T, B, n_in] binary; w_t [n_in, n_out]; bias [n_out] or empty; spk [T, B, n_out]; mem same or empty;
// i_state, v_state [B, n_out].  Returns the number of active inputs, or -1 if x is not binary.
int64_t lif_event_forward(at::Tensor x, at::Tensor w_t, at::Tensor bias, at::Tensor spk, at::Tensor mem,
                          at::Tensor i_state, at::Tensor v_state, double alpha, double beta, double gamma, double leak,
                          double v_th, double v_reset, bool has_current, bool delay, bool spiking, bool next_step,
                          bool zero) {
  const Params q = make_params(alpha, beta, gamma, leak, v_th, v_reset, has_current, delay);
  const int mode = mode_of(spiking, next_step, zero);
  int64_t nnz = -1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lif_event_forward", [&] {
    std::vector<int64_t> off;
    std::vector<int32_t> col;
    if (!compress_rows<scalar_t>(x.data_ptr<scalar_t>(), x.size(0) * x.size(1), x.size(2), off, col)) return;
    nnz = (int64_t)col.size();
    switch (mode) {
      case NONSPIKING: event_impl<scalar_t, NONSPIKING>(x, w_t, bias, spk, mem, i_state, v_state, q, off, col); break;
      case IMM_SUB: event_impl<scalar_t, IMM_SUB>(x, w_t, bias, spk, mem, i_state, v_state, q, off, col); break;
      case IMM_ZERO: event_impl<scalar_t, IMM_ZERO>(x, w_t, bias, spk, mem, i_state, v_state, q, off, col); break;
      case NEXT_SUB: event_impl<scalar_t, NEXT_SUB>(x, w_t, bias, spk, mem, i_state, v_state, q, off, col); break;
      default: event_impl<scalar_t, NEXT_ZERO>(x, w_t, bias, spk, mem, i_state, v_state, q, off, col); break;
    }
  });
  return nnz;
}

// Fraction of nonzero entries of x and whether all of them are 1 (one pass, all threads).
std::vector<double> activity(at::Tensor x) {
  int64_t nnz = 0;
  bool binary = true;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "activity", [&] {
    const scalar_t* p = x.data_ptr<scalar_t>();
    const int64_t n = x.numel();
    const int nt = at::get_num_threads();
    std::vector<int64_t> counts(nt + 1, 0);
    std::vector<uint8_t> bins(nt + 1, 1);
    at::parallel_for(0, n, 1 << 16, [&](int64_t a, int64_t b) {
      int64_t c = 0;
      bool good = true;
      for (int64_t k = a; k < b; ++k) {
        c += p[k] != (scalar_t)0;
        good &= (p[k] == (scalar_t)0) | (p[k] == (scalar_t)1);
      }
      const int id = at::get_thread_num();
      counts[id] += c;
      if (!good) bins[id] = 0;
    });
    for (int k = 0; k <= nt; ++k) {
      nnz += counts[k];
      binary = binary && bins[k];
    }
  });
  const double n = (double)std::max<int64_t>(1, x.numel());
  return {(double)nnz / n, binary ? 1.0 : 0.0};
}
