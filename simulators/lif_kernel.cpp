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

constexpr int64_t CHUNK = 2048;  // neurons per task: the chunk's state arrays stay in L2 while T steps stream by

// Neuron modes (template argument): spiking with reset at the spike's step, or snnTorch's order.
enum Mode { NONSPIKING = 0, IMM_SUB = 1, IMM_ZERO = 2, NEXT_SUB = 3, NEXT_ZERO = 4 };
enum Surr { FAST_SIGMOID = 0, SIGMOID = 1, ATAN = 2, TRIANGLE = 3 };

struct Params {
  double alpha, beta, gamma, leak, v_th, v_reset;
  bool has_current, delay;
};

// Prefetch the n values at p (the next time step's slice of an input stream).
template <typename S>
inline void prefetch(const S* p, int64_t n) {
  if (!p) return;
  for (int64_t k = 0; k < n; k += 64 / (int64_t)sizeof(S)) __builtin_prefetch(p + k, 0, 1);
}

template <typename S>
inline const S* ptr_or_null(const at::Tensor& t) {
  return t.numel() ? t.data_ptr<S>() : nullptr;
}

// One step of a chunk of n <= CHUNK neurons: the forward equations of simulators/lif.py, as a few
// simple loops over the chunk (each one vectorizes; the chunk's arrays stay in L1).
// x: this step's currents; pre/spk/mem: where to write (null: not wanted; may alias x, which is read
// first).  i, v, zprev: the chunk's state, updated in place.
template <typename S, int MODE>
inline void forward_step(const S* x, S* pre, S* spk, S* mem, S* __restrict__ i, S* __restrict__ v,
                         uint8_t* __restrict__ zprev, int64_t n, const Params& q) {
  alignas(64) S d[CHUNK];
  alignas(64) S z[CHUNK];
  const S alpha = (S)q.alpha, beta = (S)q.beta, gamma = (S)q.gamma, leak = (S)q.leak;
  const S v_th = (S)q.v_th, v_reset = (S)q.v_reset;
  if (q.has_current) {
    if (q.delay) {
      for (int64_t k = 0; k < n; ++k) { d[k] = i[k]; i[k] = x[k] + alpha * i[k]; }
    } else {
      for (int64_t k = 0; k < n; ++k) { const S u = x[k] + alpha * i[k]; i[k] = u; d[k] = u; }
    }
  } else {
    if (q.delay) {
      for (int64_t k = 0; k < n; ++k) { d[k] = i[k]; i[k] = x[k]; }
    } else {
      for (int64_t k = 0; k < n; ++k) { d[k] = x[k]; i[k] = x[k]; }
    }
  }
  if (q.gamma != 1.0) for (int64_t k = 0; k < n; ++k) d[k] = d[k] * gamma;
  if (q.leak != 0.0) for (int64_t k = 0; k < n; ++k) d[k] = d[k] + leak;
  for (int64_t k = 0; k < n; ++k) {
    S p = d[k] + beta * v[k];
    if constexpr (MODE == NONSPIKING) {
      v[k] = p;
      z[k] = 0;
    } else if constexpr (MODE == IMM_SUB) {
      const S zk = p > v_th ? (S)1 : (S)0;
      z[k] = zk;
      v[k] = p - v_th * zk;
    } else if constexpr (MODE == IMM_ZERO) {
      z[k] = p > v_th ? (S)1 : (S)0;
      v[k] = p > v_th ? v_reset : p;
    } else if constexpr (MODE == NEXT_SUB) {
      p = p - v_th * (S)zprev[k];
      z[k] = p > v_th ? (S)1 : (S)0;
      zprev[k] = p > v_th;
      v[k] = p;
    } else {  // NEXT_ZERO
      p = zprev[k] ? v_reset : p;
      z[k] = p > v_th ? (S)1 : (S)0;
      zprev[k] = p > v_th;
      v[k] = p;
    }
    d[k] = p;
  }
  if (pre) for (int64_t k = 0; k < n; ++k) pre[k] = d[k];
  if (spk) for (int64_t k = 0; k < n; ++k) spk[k] = z[k];
  if (mem) for (int64_t k = 0; k < n; ++k) mem[k] = v[k];
}

// One chunk of neurons [j0, j0 + n) over all T steps (x, pre, spk, mem: [T, M]).
template <typename S, int MODE>
inline void forward_chunk(const S* x, S* pre, S* spk, S* mem, S* i, S* v, uint8_t* zprev, int64_t T, int64_t M,
                          int64_t j0, int64_t n, const Params& q) {
  for (int64_t t = 0; t < T; ++t) {
    const int64_t o = t * M + j0;
    if (t + 1 < T) prefetch(x + o + M, n);
    forward_step<S, MODE>(x + o, pre ? pre + o : nullptr, spk ? spk + o : nullptr, mem ? mem + o : nullptr, i, v,
                          zprev, n, q);
  }
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
      forward_chunk<S, MODE>(xp, prep, spkp, memp, ip + j0, vp + j0, zprev, T, M, j0, n, q);
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

// Backward of one chunk: the adjoint recursion of simulators/lif.py (_FusedLIF), one reverse pass;
// per step a few simple loops over the chunk (state arrays in L1).
template <typename S, int MODE, int SURR>
void backward_chunk(const S* pre, const S* gz, const S* gv, const S* gvT, const S* giT, const S* v0, S* dx,
                    S* dv0, S* di0, int64_t T, int64_t M, int64_t j0, int64_t n, const Params& q, S slope,
                    bool detach) {
  const S alpha = (S)q.alpha, beta = (S)q.beta, gamma = (S)q.gamma, v_th = (S)q.v_th, v_reset = (S)q.v_reset;
  const bool cur = q.has_current, delay = q.delay;
  alignas(64) S dp_next[CHUNK], dc_next[CHUNK], du_next[CHUNK], A[CHUNK], G[CHUNK], du[CHUNK];
  for (int64_t k = 0; k < n; ++k) {
    dp_next[k] = 0;
    du_next[k] = 0;
    dc_next[k] = giT ? giT[j0 + k] : (S)0;
  }
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t o = t * M + j0;
    const S* __restrict__ pt = pre ? pre + o : nullptr;
    if (t > 0) {
      prefetch(pre ? pre + o - M : nullptr, n);
      prefetch(gz ? gz + o - M : nullptr, n);
      prefetch(gv ? gv + o - M : nullptr, n);
    }
    // G = dL/dv[t] (membrane output), A = dL/dz[t] S'(p - v_th)
    if (gv) for (int64_t k = 0; k < n; ++k) G[k] = gv[o + k];
    else for (int64_t k = 0; k < n; ++k) G[k] = 0;
    if (t == T - 1 && gvT) for (int64_t k = 0; k < n; ++k) G[k] = G[k] + gvT[j0 + k];
    if (MODE != NONSPIKING && gz) {
      for (int64_t k = 0; k < n; ++k) A[k] = gz[o + k] * surrogate<S, SURR>(pt[k] - v_th, slope);
    } else {
      for (int64_t k = 0; k < n; ++k) A[k] = 0;
    }
    // dp[t] = A + c G + M dp[t+1]
    if constexpr (MODE == NONSPIKING || MODE == NEXT_SUB) {
      for (int64_t k = 0; k < n; ++k) { const S dp = A[k] + G[k] + beta * dp_next[k]; dp_next[k] = dp; du[k] = dp; }
    } else if constexpr (MODE == IMM_SUB) {
      if (detach) {
        for (int64_t k = 0; k < n; ++k) { const S dp = A[k] + G[k] + beta * dp_next[k]; dp_next[k] = dp; du[k] = dp; }
      } else {
        for (int64_t k = 0; k < n; ++k) {
          const S c = surrogate<S, SURR>(pt[k] - v_th, slope) * (-v_th) + (S)1;
          const S dp = A[k] + c * G[k] + (c * beta) * dp_next[k];
          dp_next[k] = dp;
          du[k] = dp;
        }
      }
    } else if constexpr (MODE == IMM_ZERO) {
      for (int64_t k = 0; k < n; ++k) {
        S c = (S)1 - (pt[k] > v_th ? (S)1 : (S)0);
        if (!detach) c = c + (v_reset - pt[k]) * surrogate<S, SURR>(pt[k] - v_th, slope);
        const S dp = A[k] + c * G[k] + (c * beta) * dp_next[k];
        dp_next[k] = dp;
        du[k] = dp;
      }
    } else {  // NEXT_ZERO: u[t] is zeroed where the neuron spiked at t-1
      const S* pp = t > 0 ? pre + o - M : v0 + j0;
      for (int64_t k = 0; k < n; ++k) {
        const S m = ((S)1 - (pt[k] > v_th ? (S)1 : (S)0)) * beta;
        const S dp = A[k] + G[k] + m * dp_next[k];
        dp_next[k] = dp;
        du[k] = pp[k] > v_th ? (S)0 : dp;
      }
    }
    // the current's adjoint and dL/dx[t]
    S* __restrict__ out = dx + o;
    if (!delay) {
      if (t == T - 1) {
        for (int64_t k = 0; k < n; ++k) {
          const S dc = gamma * du[k] + (giT ? giT[j0 + k] : (S)0);
          dc_next[k] = dc;
          out[k] = dc;
        }
      } else if (cur) {
        for (int64_t k = 0; k < n; ++k) {
          const S dc = gamma * du[k] + alpha * dc_next[k];
          dc_next[k] = dc;
          out[k] = dc;
        }
      } else {
        for (int64_t k = 0; k < n; ++k) { const S dc = gamma * du[k]; dc_next[k] = dc; out[k] = dc; }
      }
    } else {
      if (t == T - 1) {
        for (int64_t k = 0; k < n; ++k) { const S dc = giT ? giT[j0 + k] : (S)0; dc_next[k] = dc; out[k] = dc; }
      } else if (cur) {
        for (int64_t k = 0; k < n; ++k) {
          const S dc = gamma * du_next[k] + alpha * dc_next[k];
          dc_next[k] = dc;
          out[k] = dc;
        }
      } else {
        for (int64_t k = 0; k < n; ++k) { const S dc = gamma * du_next[k]; dc_next[k] = dc; out[k] = dc; }
      }
      for (int64_t k = 0; k < n; ++k) du_next[k] = du[k];
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
  auto run = [&](auto impl) { impl(pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach); };
  switch (surr) {
    case FAST_SIGMOID: return run(backward_impl<S, MODE, FAST_SIGMOID>);
    case SIGMOID: return run(backward_impl<S, MODE, SIGMOID>);
    case ATAN: return run(backward_impl<S, MODE, ATAN>);
    default: return run(backward_impl<S, MODE, TRIANGLE>);
  }
}

// Adds to c the number of nonzero entries of x[0:n]; sets bad if one is neither 0 nor 1 (vectorized).
template <typename S>
inline void count_row(const S* __restrict__ x, int64_t n, int64_t& c, int& bad) {
  for (int64_t k0 = 0; k0 < n; k0 += 4096) {
    const int64_t k1 = std::min(n, k0 + 4096);
    int32_t cnt = 0, b = 0;
    for (int64_t k = k0; k < k1; ++k) {
      const S v = x[k];
      cnt += v != (S)0;
      b |= (v != (S)0) & (v != (S)1);
    }
    c += cnt;
    bad |= b;
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
      int64_t c = 0;
      int bad = 0;
      count_row(x + r * n_in, n_in, c, bad);
      off[r + 1] = c;
      if (bad) good = false;
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

// acc[0:TILE] = bias + sum over the listed rows of w (row stride ld): the sums live in vector registers.
template <typename S>
inline void gather_tile(const S* w, int64_t ld, const int32_t* rows, int64_t count, const S* bias, S* acc) {
  constexpr int L = 64 / sizeof(S);  // lanes of a 64-byte vector
  constexpr int V = TILE / L;
  typedef S vec __attribute__((vector_size(64), aligned(sizeof(S))));
  vec a[V];
  for (int u = 0; u < V; ++u) {
    if (bias) __builtin_memcpy(&a[u], bias + u * L, sizeof(vec));
    else a[u] = vec{} ;
  }
  for (int64_t e = 0; e < count; ++e) {
    const S* row = w + (int64_t)rows[e] * ld;
#pragma GCC unroll 16
    for (int u = 0; u < V; ++u) {
      vec x;
      __builtin_memcpy(&x, row + u * L, sizeof(vec));
      a[u] += x;
    }
  }
  for (int u = 0; u < V; ++u) __builtin_memcpy(acc + u * L, &a[u], sizeof(vec));
}

// Event-driven layer forward without gradients: synaptic input gathered from the weight rows of the
// active inputs (w_t = W^T, [n_in, n_out]), then the LIF step, fused per (batch row, column tile).
template <typename S, int MODE>
void event_impl(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias, at::Tensor& spk, at::Tensor& mem,
                at::Tensor& i_state, at::Tensor& v_state, const Params& q, const std::vector<int64_t>& off,
                const std::vector<int32_t>& col) {
  const int64_t T = x.size(0), B = x.size(1), n_out = w_t.size(1);
  const S* wp = w_t.data_ptr<S>();
  const S* bp = ptr_or_null<S>(bias);
  S* spkp = spk.numel() ? spk.data_ptr<S>() : nullptr;
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
        if (n == TILE) {
          gather_tile<S>(wp + c0, n_out, col.data() + off[r], off[r + 1] - off[r], bp ? bp + c0 : nullptr, acc);
        } else {
          for (int64_t k = 0; k < n; ++k) acc[k] = bp ? bp[c0 + k] : (S)0;
          for (int64_t e = off[r]; e < off[r + 1]; ++e) {
            const S* w = wp + (int64_t)col[e] * n_out + c0;
            for (int64_t k = 0; k < n; ++k) acc[k] += w[k];
          }
        }
        // one LIF step of this row's tile, the gathered sums as its currents
        const int64_t o = t * M + j0;
        forward_step<S, MODE>(acc, nullptr, spkp ? spkp + o : nullptr, memp ? memp + o : nullptr, ip + j0, vp + j0,
                              zprev, n, q);
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
    auto run = [&](auto impl) { impl(s, pre, gz, gv, gvT, giT, v0, dx, dv0, di0, q, slope, detach); };
    switch (mode) {
      case NONSPIKING: run(backward_surr<scalar_t, NONSPIKING>); break;
      case IMM_SUB: run(backward_surr<scalar_t, IMM_SUB>); break;
      case IMM_ZERO: run(backward_surr<scalar_t, IMM_ZERO>); break;
      case NEXT_SUB: run(backward_surr<scalar_t, NEXT_SUB>); break;
      default: run(backward_surr<scalar_t, NEXT_ZERO>); break;
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
      int bad = 0;
      count_row(p + a, b - a, c, bad);
      const int id = at::get_thread_num();
      counts[id] += c;
      if (bad) bins[id] = 0;
    });
    for (int k = 0; k <= nt; ++k) {
      nnz += counts[k];
      binary = binary && bins[k];
    }
  });
  const double n = (double)std::max<int64_t>(1, x.numel());
  return {(double)nnz / n, binary ? 1.0 : 0.0};
}
