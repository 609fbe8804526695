// Fused scaled-dot-product attention on the GPU, float32, FlashAttention-2 style. API and semantics:
// pygpt/cuda.h and pygpt/attention.h (masks, lse, dropout bits: exactly the CPU kernel's).
//
// Three kernels, 128 threads (4 warps) each, everything in fp32 on the CUDA cores (FMA):
//   forward  one block per (b, h, query tile of BQ rows): Q tile (scaled by 1/sqrt d) in shared
//            memory; for each key tile up to the causal diagonal: K tile -> S = Q Kᵀ, masks, online
//            softmax (running max m and sum l per row), P (dropped) -> shared, V tile in K's place,
//            O += P V. Writes out = O · (1/(1-p)) / l and lse = m + log l (+inf for empty rows).
//   dQ       one block per (b, h, query tile): Q, dO tiles stay; D = rowsum(dO ∘ O) computed once and
//            also written to the workspace; for each key tile: K, V tiles -> S and dP = dO Vᵀ,
//            P = exp(S − lse), dS = P ∘ (dP∘drop − D) -> shared, dQ += dS K. dq = dQ / sqrt d.
//   dK, dV   one block per (b, h, key tile of BK rows): K, V tiles stay; for each query tile from
//            the causal diagonal on: Q, dO tiles -> Sᵀ = K Qᵀ and dPᵀ = V dOᵀ, P, P' = P∘drop and dS
//            -> shared, dV += P'ᵀ dO, dK += dSᵀ (Q/sqrt d).
// dQ and (dK, dV) are separate kernels instead of one with atomicAdd into dQ: every output element
// is then one fixed sequence of FMAs, so results are deterministic (bit-identical run to run), at
// the price of computing S and dP twice in the backward (7 tile products instead of 5).
//
// Tiles. All operand tiles are stored row-major in shared memory, [row][D + 4], D the head dim
// rounded up to 32, 64, 128 or 256 and zero-padded (rows past the sequence are zero too). The
// +4 floats make the row stride an odd number of 16-byte units, so the float4 reads below hit
// distinct banks. Thread (tx, ty) = (tid % 8, tid / 8) owns, in a score tile, the rows
// ty·TM .. ty·TM+TM−1 and the columns tx + 8·j (j < TN); in an accumulator (O, dQ, dK, dV) the
// same rows and the columns tx·4 + 32·c + e (float4 c < D/32). The 8 threads of a row are 8
// consecutive lanes of one warp, so row max / row sum are 3 xor-shuffles. Two product shapes:
//   mm_nt  C[r][c] += Σ_k A[r][k] B[c][k]    (both rows contiguous in k: float4 along k)
//   mm_kn  C[r][:] += Σ_k At[k][r] B[k][:]   (At written transposed by us: float4 over r and :)
// S, dP use mm_nt; O, dQ, dK, dV use mm_kn with P / dS written transposed into shared memory.
// Global loads of a tile are float4 along the head dim when the operand allows it (d % 4 == 0,
// 16-byte aligned rows), element by element otherwise (odd d, unaligned views).
//
// Dropout: element e = ((b·H + h)·Tq + i)·Tk + j is kept iff mix64(mix64(key) + (e+1)·φ) >> 32 >=
// round(p·2^32) (pygpt/random.py), computed where the score is, in every kernel; never stored.
#include "common.cuh"

#include <algorithm>
#include <cmath>
#include <utility>

namespace pygpt {
namespace PYGPT_CUDA_NAMESPACE {
namespace {

using detail::fail_arg;

constexpr int kThreads = 128;

struct Params {
    int64_t B, H, Tq, Tk, off;  // off = Tk - Tq: causal allows key j for query i iff j <= i + off
    int d;
    int causal;
    float scale;                 // 1 / sqrt(d)
    int dropout;
    uint64_t threshold;          // keep iff bits >= threshold
    float drop_scale;            // 1 / (1 - p)
    uint64_t mixed_key;          // mix64(dropout key)
    const uint8_t* key_mask;     // (B, Tk) or null
    const float *q, *k, *v;
    AttentionStrides qs, ks, vs;
    int vq, vk, vv;              // operand can be read with float4
    // forward outputs / backward inputs
    float* out;
    const float* o;
    AttentionStrides os;
    int vo;
    float* lse;
    const float* lse_in;
    // backward
    const float* dout;
    AttentionStrides dos;
    int vdo;
    float *dq, *dk, *dv;
    AttentionStrides dqs, dks, dvs;
    int vdq, vdk, vdv;
    float* Dbuf;                 // (B·H·Tq) workspace: rowsum(dout ∘ out)
};

// ------------------------------------------------------------------------------ small helpers
__device__ __forceinline__ float4 f4(const float* p) { return *reinterpret_cast<const float4*>(p); }

/// n consecutive floats from shared memory (n = 4, 2 or 1; p aligned to n floats).
template <int N>
__device__ __forceinline__ void load_n(const float* p, float* a) {
    if constexpr (N == 4) {
        const float4 t = *reinterpret_cast<const float4*>(p);
        a[0] = t.x, a[1] = t.y, a[2] = t.z, a[3] = t.w;
    } else if constexpr (N == 2) {
        const float2 t = *reinterpret_cast<const float2*>(p);
        a[0] = t.x, a[1] = t.y;
    } else {
#pragma unroll
        for (int i = 0; i < N; ++i) a[i] = p[i];
    }
}
template <int N>
__device__ __forceinline__ void store_n(float* p, const float* a) {
    if constexpr (N == 4) {
        *reinterpret_cast<float4*>(p) = make_float4(a[0], a[1], a[2], a[3]);
    } else if constexpr (N == 2) {
        *reinterpret_cast<float2*>(p) = make_float2(a[0], a[1]);
    } else {
#pragma unroll
        for (int i = 0; i < N; ++i) p[i] = a[i];
    }
}

/// dst[r][c] (row stride LD) = src row (r0 + r), column c, times mul, for r < NR, c < D; zero for
/// rows >= nrows and columns >= d. vec: float4 global loads (d % 4 == 0, rows 16-byte aligned).
template <int NR, int D, int LD>
__device__ __forceinline__ void load_tile(float* dst, const float* src, int64_t ld, int64_t r0, int64_t nrows, int d,
                                          int vec, float mul) {
    if (vec) {
        constexpr int C4 = D / 4;
        for (int idx = threadIdx.x; idx < NR * C4; idx += kThreads) {
            const int r = idx / C4, c = (idx % C4) * 4;
            float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
            if (r0 + r < nrows && c < d) {
                t = *reinterpret_cast<const float4*>(src + (r0 + r) * ld + c);
                t.x *= mul, t.y *= mul, t.z *= mul, t.w *= mul;
            }
            *reinterpret_cast<float4*>(dst + r * LD + c) = t;
        }
    } else {
        for (int idx = threadIdx.x; idx < NR * D; idx += kThreads) {
            const int r = idx / D, c = idx % D;
            float t = 0.f;
            if (r0 + r < nrows && c < d) t = src[(r0 + r) * ld + c] * mul;
            dst[r * LD + c] = t;
        }
    }
}

/// acc[i][j] += Σ_{k<K} A[i·LD + k] · B[j·8·LD + k]   (A: the thread's TM rows; B: its TN rows, 8 apart)
template <int TM, int TN, int K, int LD>
__device__ __forceinline__ void mm_nt(float (&acc)[TM][TN], const float* A, const float* B) {
#pragma unroll 2
    for (int k = 0; k < K; k += 4) {
        float4 a[TM];
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = f4(A + i * LD + k);
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const float4 b = f4(B + j * 8 * LD + k);
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                float c = acc[i][j];
                c = fmaf(a[i].x, b.x, c);
                c = fmaf(a[i].y, b.y, c);
                c = fmaf(a[i].z, b.z, c);
                c = fmaf(a[i].w, b.w, c);
                acc[i][j] = c;
            }
        }
    }
}

/// acc[i][4c + e] += Σ_{k<K} At[k·LDA + i] · B[k·LDB + 32c + e]   (At at the thread's first row,
/// B at column tx·4)
template <int TM, int DC, int K, int LDA, int LDB>
__device__ __forceinline__ void mm_kn(float (&acc)[TM][4 * DC], const float* At, const float* B) {
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
        float a[TM];
        load_n<TM>(At + k * LDA, a);
#pragma unroll
        for (int c = 0; c < DC; ++c) {
            const float4 b = f4(B + k * LDB + 32 * c);
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                acc[i][4 * c + 0] = fmaf(a[i], b.x, acc[i][4 * c + 0]);
                acc[i][4 * c + 1] = fmaf(a[i], b.y, acc[i][4 * c + 1]);
                acc[i][4 * c + 2] = fmaf(a[i], b.z, acc[i][4 * c + 2]);
                acc[i][4 * c + 3] = fmaf(a[i], b.w, acc[i][4 * c + 3]);
            }
        }
    }
}

/// Writes the thread's accumulator rows (row0 + i, real rows < nrows) times mul to a strided operand.
template <int TM, int DC>
__device__ __forceinline__ void store_acc(const float (&acc)[TM][4 * DC], float* dst, int64_t ld, int64_t row0,
                                          int64_t nrows, int d, int vec, int tx, float mul) {
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        if (row0 + i >= nrows) continue;
        float* rowp = dst + (row0 + i) * ld;
#pragma unroll
        for (int c = 0; c < DC; ++c) {
            const int col = tx * 4 + 32 * c;
            if (col >= d) continue;
            if (vec) {
                *reinterpret_cast<float4*>(rowp + col) =
                    make_float4(acc[i][4 * c] * mul, acc[i][4 * c + 1] * mul, acc[i][4 * c + 2] * mul,
                                acc[i][4 * c + 3] * mul);
            } else {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (col + e < d) rowp[col + e] = acc[i][4 * c + e] * mul;
            }
        }
    }
}

__device__ __forceinline__ bool keep_bit(const Params& p, int64_t bh, int64_t i, int64_t j) {
    const uint64_t e = (uint64_t(bh * p.Tq + i)) * uint64_t(p.Tk) + uint64_t(j);
    return (detail::mix64(p.mixed_key + (e + 1) * detail::kGolden) >> 32) >= p.threshold;
}

__device__ __forceinline__ float row_max8(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
}
__device__ __forceinline__ float row_sum8(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v + __shfl_xor_sync(0xffffffffu, v, 4);
}

/// key_ok[c] = key j0 + c exists and is not masked out.
template <int BK>
__device__ __forceinline__ void load_key_ok(int* key_ok, const Params& p, int64_t b, int64_t j0) {
    for (int c = threadIdx.x; c < BK; c += kThreads) {
        const int64_t j = j0 + c;
        key_ok[c] = j < p.Tk && (p.key_mask == nullptr || p.key_mask[b * p.Tk + j] != 0);
    }
}

// ------------------------------------------------------------------------------ tile shapes
// rows of a tile per thread: TM = rows / 16; columns per thread: TN = cols / 8 (128 threads).
template <int D>
struct Cfg;
template <>
struct Cfg<32> {
    static constexpr int FQ = 64, FK = 64;   // forward: queries, keys per tile
    static constexpr int QQ = 64, QK = 32;   // dQ kernel (64 keys: S, dP and dQ spill registers)
    static constexpr int KK = 64, KQ = 32;   // dK/dV kernel: keys, queries per tile
};
template <>
struct Cfg<64> {
    static constexpr int FQ = 64, FK = 64;
    static constexpr int QQ = 64, QK = 32;
    static constexpr int KK = 64, KQ = 32;
};
template <>
struct Cfg<128> {
    static constexpr int FQ = 64, FK = 32;
    static constexpr int QQ = 32, QK = 32;
    static constexpr int KK = 32, KQ = 32;
};
template <>
struct Cfg<256> {
    static constexpr int FQ = 32, FK = 32;
    static constexpr int QQ = 16, QK = 16;
    static constexpr int KK = 16, KQ = 16;
};

constexpr size_t fwd_smem(int D, int BQ, int BK) {
    return size_t(BQ * (D + 4) + BK * (D + 4) + BK * (BQ + 4)) * 4 + size_t(BK) * 4;
}
constexpr size_t dq_smem(int D, int BQ, int BK) {
    return size_t(2 * BQ * (D + 4) + 2 * BK * (D + 4) + BK * (BQ + 4)) * 4 + size_t(BK) * 4 + size_t(2 * BQ) * 4;
}
constexpr size_t dkv_smem(int D, int BK, int BQ) {
    return size_t(2 * BK * (D + 4) + 2 * BQ * (D + 4) + 2 * BQ * (BK + 4)) * 4 + size_t(BK) * 4 +
           size_t(2 * BQ) * 4;
}

#if defined(PYGPT_CUDA_EMULATE)
#define PYGPT_SMEM(name) unsigned char* name = ::pygpt_emu::dynamic_smem()
#else
#define PYGPT_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// ------------------------------------------------------------------------------ forward
template <int D, int BQ, int BK>
__global__ void __launch_bounds__(kThreads) attn_fwd_kernel(const Params p) {
    constexpr int TM = BQ / 16, TN = BK / 8, DC = D / 32, LD = D + 4, LP = BQ + 4;
    PYGPT_SMEM(smem);
    float* Qs = reinterpret_cast<float*>(smem);  // [BQ][LD]
    float* KV = Qs + BQ * LD;                     // [BK][LD]: K, then V
    float* Pt = KV + BK * LD;                     // [BK][LP]: P transposed
    int* key_ok = reinterpret_cast<int*>(Pt + BK * LP);

    const int tx = threadIdx.x % 8, ty = threadIdx.x / 8;
    const int64_t BH = p.B * p.H, n_qt = (p.Tq + BQ - 1) / BQ;
    const int64_t bh = int64_t(blockIdx.x) % BH, qt = n_qt - 1 - int64_t(blockIdx.x) / BH;  // biggest first
    const int64_t b = bh / p.H, h = bh % p.H, i0 = qt * BQ;
    const float* qb = p.q + b * p.qs.batch + h * p.qs.head;
    const float* kb = p.k + b * p.ks.batch + h * p.ks.head;
    const float* vb = p.v + b * p.vs.batch + h * p.vs.head;

    load_tile<BQ, D, LD>(Qs, qb, p.qs.seq, i0, p.Tq, p.d, p.vq, p.scale);

    float m[TM], l[TM], o[TM][4 * DC];
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        m[i] = -INFINITY;
        l[i] = 0.f;
#pragma unroll
        for (int c = 0; c < 4 * DC; ++c) o[i][c] = 0.f;
    }
    const int64_t n_kt = (p.Tk + BK - 1) / BK;
    int64_t kt_end = n_kt;
    if (p.causal) {
        const int64_t last = (i0 + BQ < p.Tq ? i0 + BQ : p.Tq) - 1 + p.off;  // last key the tile's last row sees
        kt_end = last / BK + 1 < n_kt ? last / BK + 1 : n_kt;
    }
    for (int64_t kt = 0; kt < kt_end; ++kt) {
        const int64_t j0 = kt * BK;
        __syncthreads();  // previous tile's V and P are no longer read
        load_tile<BK, D, LD>(KV, kb, p.ks.seq, j0, p.Tk, p.d, p.vk, 1.f);
        load_key_ok<BK>(key_ok, p, b, j0);
        __syncthreads();
        float s[TM][TN];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) s[i][j] = 0.f;
        mm_nt<TM, TN, D, LD>(s, Qs + ty * TM * LD, KV + tx * LD);

#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int64_t gi = i0 + ty * TM + i;
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const int c = tx + 8 * j;
                const int64_t gj = j0 + c;
                const bool ok = key_ok[c] && gi < p.Tq && (!p.causal || gj <= gi + p.off);
                s[i][j] = ok ? s[i][j] : -INFINITY;
                mx = fmaxf(mx, s[i][j]);
            }
            mx = row_max8(mx);
            const float mn = fmaxf(m[i], mx);
            const float ms = mn == -INFINITY ? 0.f : mn;  // no allowed key yet: exp(-inf - 0) = 0
            const float alpha = expf(m[i] - ms);
            m[i] = mn;
            float ps = 0.f;
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const float pv = expf(s[i][j] - ms);
                ps += pv;
                s[i][j] = (p.dropout && !keep_bit(p, bh, gi, j0 + tx + 8 * j)) ? 0.f : pv;
            }
            l[i] = l[i] * alpha + ps;
#pragma unroll
            for (int c = 0; c < 4 * DC; ++c) o[i][c] *= alpha;
        }
        __syncthreads();  // every thread is done with K
        load_tile<BK, D, LD>(KV, vb, p.vs.seq, j0, p.Tk, p.d, p.vv, 1.f);
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            float col[TM];
#pragma unroll
            for (int i = 0; i < TM; ++i) col[i] = s[i][j];
            store_n<TM>(Pt + (tx + 8 * j) * LP + ty * TM, col);
        }
        __syncthreads();
        mm_kn<TM, DC, BK, LP, LD>(o, Pt + ty * TM, KV + tx * 4);
    }

    float* ob = p.out + b * p.os.batch + h * p.os.head;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const float lt = row_sum8(l[i]);
        const int64_t gi = i0 + ty * TM + i;
        const float inv = lt > 0.f ? p.drop_scale / lt : 0.f;
#pragma unroll
        for (int c = 0; c < 4 * DC; ++c) o[i][c] *= inv;
        if (tx == 0 && gi < p.Tq) p.lse[bh * p.Tq + gi] = lt > 0.f ? m[i] + logf(lt) : INFINITY;
    }
    store_acc<TM, DC>(o, ob, p.os.seq, i0 + ty * TM, p.Tq, p.d, p.vo, tx, 1.f);
}

// ------------------------------------------------------------------------------ backward: dQ (and D)
template <int D, int BQ, int BK>
__global__ void __launch_bounds__(kThreads) attn_bwd_dq_kernel(const Params p) {
    constexpr int TM = BQ / 16, TN = BK / 8, DC = D / 32, LD = D + 4, LP = BQ + 4;
    PYGPT_SMEM(smem);
    float* Qs = reinterpret_cast<float*>(smem);  // [BQ][LD]  q / sqrt d
    float* dOs = Qs + BQ * LD;                    // [BQ][LD]
    float* Ks = dOs + BQ * LD;                    // [BK][LD]
    float* Vs = Ks + BK * LD;                     // [BK][LD]
    float* dSt = Vs + BK * LD;                    // [BK][LP]: dS transposed
    float* Ls = dSt + BK * LP;                    // [BQ] lse
    float* Ds = Ls + BQ;                          // [BQ] D
    int* key_ok = reinterpret_cast<int*>(Ds + BQ);

    const int tx = threadIdx.x % 8, ty = threadIdx.x / 8, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t BH = p.B * p.H, n_qt = (p.Tq + BQ - 1) / BQ;
    const int64_t bh = int64_t(blockIdx.x) % BH, qt = n_qt - 1 - int64_t(blockIdx.x) / BH;
    const int64_t b = bh / p.H, h = bh % p.H, i0 = qt * BQ;
    const float* kb = p.k + b * p.ks.batch + h * p.ks.head;
    const float* vb = p.v + b * p.vs.batch + h * p.vs.head;
    const float* gb = p.dout + b * p.dos.batch + h * p.dos.head;
    const float* ob = p.o + b * p.os.batch + h * p.os.head;

    load_tile<BQ, D, LD>(Qs, p.q + b * p.qs.batch + h * p.qs.head, p.qs.seq, i0, p.Tq, p.d, p.vq, p.scale);
    load_tile<BQ, D, LD>(dOs, gb, p.dos.seq, i0, p.Tq, p.d, p.vdo, 1.f);
    for (int r = warp; r < BQ; r += kThreads / 32) {  // D = rowsum(dout ∘ out), one warp per row
        const int64_t gi = i0 + r;
        float acc = 0.f;
        if (gi < p.Tq)
            for (int c = lane; c < p.d; c += 32) acc = fmaf(gb[gi * p.dos.seq + c], ob[gi * p.os.seq + c], acc);
        acc = detail::warp_sum(acc);
        if (lane == 0) {
            Ds[r] = gi < p.Tq ? acc : 0.f;
            Ls[r] = gi < p.Tq ? p.lse_in[bh * p.Tq + gi] : INFINITY;  // padded rows: P = 0
            if (gi < p.Tq) p.Dbuf[bh * p.Tq + gi] = acc;
        }
    }

    float dq[TM][4 * DC];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int c = 0; c < 4 * DC; ++c) dq[i][c] = 0.f;
    const int64_t n_kt = (p.Tk + BK - 1) / BK;
    int64_t kt_end = n_kt;
    if (p.causal) {
        const int64_t last = (i0 + BQ < p.Tq ? i0 + BQ : p.Tq) - 1 + p.off;
        kt_end = last / BK + 1 < n_kt ? last / BK + 1 : n_kt;
    }
    for (int64_t kt = 0; kt < kt_end; ++kt) {
        const int64_t j0 = kt * BK;
        __syncthreads();
        load_tile<BK, D, LD>(Ks, kb, p.ks.seq, j0, p.Tk, p.d, p.vk, 1.f);
        load_tile<BK, D, LD>(Vs, vb, p.vs.seq, j0, p.Tk, p.d, p.vv, 1.f);
        load_key_ok<BK>(key_ok, p, b, j0);
        __syncthreads();
        float s[TM][TN], dp[TM][TN];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) s[i][j] = dp[i][j] = 0.f;
        mm_nt<TM, TN, D, LD>(s, Qs + ty * TM * LD, Ks + tx * LD);
        mm_nt<TM, TN, D, LD>(dp, dOs + ty * TM * LD, Vs + tx * LD);
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int c = tx + 8 * j;
            const int64_t gj = j0 + c;
            float col[TM];
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const int r = ty * TM + i;
                const int64_t gi = i0 + r;
                const bool ok = key_ok[c] && gi < p.Tq && (!p.causal || gj <= gi + p.off);
                const float pv = ok ? expf(s[i][j] - Ls[r]) : 0.f;
                float g = dp[i][j];
                if (p.dropout) g = keep_bit(p, bh, gi, gj) ? g * p.drop_scale : 0.f;
                col[i] = pv * (g - Ds[r]);
            }
            store_n<TM>(dSt + c * LP + ty * TM, col);
        }
        __syncthreads();
        mm_kn<TM, DC, BK, LP, LD>(dq, dSt + ty * TM, Ks + tx * 4);
    }
    store_acc<TM, DC>(dq, p.dq + b * p.dqs.batch + h * p.dqs.head, p.dqs.seq, i0 + ty * TM, p.Tq, p.d, p.vdq, tx,
                      p.scale);
}

// ------------------------------------------------------------------------------ backward: dK, dV
template <int D, int BK, int BQ>
__global__ void __launch_bounds__(kThreads) attn_bwd_dkdv_kernel(const Params p) {
    constexpr int TM = BK / 16, TN = BQ / 8, DC = D / 32, LD = D + 4, LPK = BK + 4;
    PYGPT_SMEM(smem);
    float* Ks = reinterpret_cast<float*>(smem);  // [BK][LD]
    float* Vs = Ks + BK * LD;                     // [BK][LD]
    float* Qs = Vs + BK * LD;                     // [BQ][LD]  q / sqrt d
    float* dOs = Qs + BQ * LD;                    // [BQ][LD]
    float* Pq = dOs + BQ * LD;                    // [BQ][LPK]: P' (dropped) with queries as rows
    float* dSq = Pq + BQ * LPK;                   // [BQ][LPK]: dS
    float* Ls = dSq + BQ * LPK;                   // [BQ]
    float* Ds = Ls + BQ;                          // [BQ]
    int* key_ok = reinterpret_cast<int*>(Ds + BQ);

    const int tx = threadIdx.x % 8, ty = threadIdx.x / 8;
    const int64_t BH = p.B * p.H;
    const int64_t bh = int64_t(blockIdx.x) % BH, kt = int64_t(blockIdx.x) / BH;  // first key tiles: most work
    const int64_t b = bh / p.H, h = bh % p.H, j0 = kt * BK;
    const float* qb = p.q + b * p.qs.batch + h * p.qs.head;
    const float* gb = p.dout + b * p.dos.batch + h * p.dos.head;

    load_tile<BK, D, LD>(Ks, p.k + b * p.ks.batch + h * p.ks.head, p.ks.seq, j0, p.Tk, p.d, p.vk, 1.f);
    load_tile<BK, D, LD>(Vs, p.v + b * p.vs.batch + h * p.vs.head, p.vs.seq, j0, p.Tk, p.d, p.vv, 1.f);
    load_key_ok<BK>(key_ok, p, b, j0);
    __syncthreads();
    bool any_key = false;  // the same in every thread: a fully masked key tile gets zero gradients
    for (int c = 0; c < BK; ++c) any_key = any_key || key_ok[c] != 0;

    float dk[TM][4 * DC], dv[TM][4 * DC];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int c = 0; c < 4 * DC; ++c) dk[i][c] = dv[i][c] = 0.f;
    const int64_t n_qt = (p.Tq + BQ - 1) / BQ;
    int64_t qt0 = 0;
    if (p.causal) qt0 = (j0 - p.off > 0 ? j0 - p.off : 0) / BQ;  // queries i >= j0 - off see key j0
    if (!any_key) qt0 = n_qt;
    for (int64_t qt = qt0; qt < n_qt; ++qt) {
        const int64_t i0 = qt * BQ;
        __syncthreads();
        load_tile<BQ, D, LD>(Qs, qb, p.qs.seq, i0, p.Tq, p.d, p.vq, p.scale);
        load_tile<BQ, D, LD>(dOs, gb, p.dos.seq, i0, p.Tq, p.d, p.vdo, 1.f);
        for (int r = threadIdx.x; r < BQ; r += kThreads) {
            const int64_t gi = i0 + r;
            Ls[r] = gi < p.Tq ? p.lse_in[bh * p.Tq + gi] : INFINITY;
            Ds[r] = gi < p.Tq ? p.Dbuf[bh * p.Tq + gi] : 0.f;
        }
        __syncthreads();
        float s[TM][TN], dp[TM][TN];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) s[i][j] = dp[i][j] = 0.f;
        mm_nt<TM, TN, D, LD>(s, Ks + ty * TM * LD, Qs + tx * LD);   // Sᵀ: keys × queries
        mm_nt<TM, TN, D, LD>(dp, Vs + ty * TM * LD, dOs + tx * LD); // dPᵀ
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int c = tx + 8 * j;  // query row of the tile
            const int64_t gi = i0 + c;
            float pcol[TM], dcol[TM];
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const int r = ty * TM + i;  // key row of the tile
                const int64_t gj = j0 + r;
                const bool ok = key_ok[r] && gi < p.Tq && (!p.causal || gj <= gi + p.off);
                const float pv = ok ? expf(s[i][j] - Ls[c]) : 0.f;
                float pd = pv, g = dp[i][j];
                if (p.dropout) {
                    const bool keep = keep_bit(p, bh, gi, gj);
                    pd = keep ? pv * p.drop_scale : 0.f;
                    g = keep ? g * p.drop_scale : 0.f;
                }
                pcol[i] = pd;
                dcol[i] = pv * (g - Ds[c]);
            }
            store_n<TM>(Pq + c * LPK + ty * TM, pcol);
            store_n<TM>(dSq + c * LPK + ty * TM, dcol);
        }
        __syncthreads();
        mm_kn<TM, DC, BQ, LPK, LD>(dv, Pq + ty * TM, dOs + tx * 4);
        mm_kn<TM, DC, BQ, LPK, LD>(dk, dSq + ty * TM, Qs + tx * 4);
    }
    store_acc<TM, DC>(dk, p.dk + b * p.dks.batch + h * p.dks.head, p.dks.seq, j0 + ty * TM, p.Tk, p.d, p.vdk, tx,
                      1.f);
    store_acc<TM, DC>(dv, p.dv + b * p.dvs.batch + h * p.dvs.head, p.dvs.seq, j0 + ty * TM, p.Tk, p.d, p.vdv, tx,
                      1.f);
}

// ------------------------------------------------------------------------------ host side
constexpr int kMaxHeadDim = 256;

int64_t checked_mul(const char* fn, int64_t a, int64_t b) {
    if (a != 0 && b > INT64_MAX / a) fail_arg(fn, "sizes overflow int64");
    return a * b;
}

void check_strides(const char* fn, const char* name, const AttentionStrides& s) {
    if (s.batch < 0 || s.head < 0 || s.seq < 0)
        fail_arg(fn, std::string(name) + " strides must be >= 0, got (" + std::to_string(s.batch) + ", " +
                         std::to_string(s.head) + ", " + std::to_string(s.seq) + ")");
}

void need(const char* fn, const char* name, const void* ptr, bool nonempty) {
    if (nonempty && ptr == nullptr) fail_arg(fn, std::string(name) + " is null with a nonzero size");
}

/// float4 access is possible: d and every stride a multiple of 4 elements, base 16-byte aligned.
int vec_ok(const void* ptr, const AttentionStrides& s, int64_t d) {
    return d % 4 == 0 && s.batch % 4 == 0 && s.head % 4 == 0 && s.seq % 4 == 0 && detail::aligned16(ptr);
}

Params make_params(const char* fn, const AttentionShape& s, const AttentionOptions& opt) {
    if (s.batch < 0 || s.heads < 0 || s.q_len < 0 || s.k_len < 0)
        fail_arg(fn, "sizes must be >= 0, got B=" + std::to_string(s.batch) + " H=" + std::to_string(s.heads) +
                         " Tq=" + std::to_string(s.q_len) + " Tk=" + std::to_string(s.k_len));
    if (s.head_dim < 1 || s.head_dim > kMaxHeadDim)
        fail_arg(fn, "head_dim must be in [1, " + std::to_string(kMaxHeadDim) + "], got " +
                         std::to_string(s.head_dim));
    if (opt.causal && s.k_len < s.q_len)
        fail_arg(fn, "causal attention needs Tk >= Tq, got Tq=" + std::to_string(s.q_len) +
                         " Tk=" + std::to_string(s.k_len));
    if (!(opt.dropout_p >= 0.0 && opt.dropout_p < 1.0))
        fail_arg(fn, "dropout_p must be in [0, 1), got " + std::to_string(opt.dropout_p));
    const int64_t bh = checked_mul(fn, s.batch, s.heads);
    checked_mul(fn, checked_mul(fn, bh, std::max(s.q_len, s.k_len) + 64), s.head_dim + 64);
    checked_mul(fn, checked_mul(fn, bh, s.q_len), s.k_len);
    Params p{};
    p.B = s.batch;
    p.H = s.heads;
    p.Tq = s.q_len;
    p.Tk = s.k_len;
    p.off = s.k_len - s.q_len;
    p.d = int(s.head_dim);
    p.causal = opt.causal ? 1 : 0;
    p.scale = float(1.0 / std::sqrt(double(s.head_dim)));
    p.key_mask = opt.key_mask;
    p.drop_scale = 1.f;
    if (opt.dropout_p > 0.0) {
        p.dropout = 1;
        p.threshold = uint64_t(std::nearbyint(opt.dropout_p * 4294967296.0));  // round half even, as Python
        p.drop_scale = float(1.0 / (1.0 - opt.dropout_p));
        p.mixed_key = detail::host_mix64(opt.dropout_key);
    }
    return p;
}

int bucket(int d) { return d <= 32 ? 32 : d <= 64 ? 64 : d <= 128 ? 128 : 256; }

unsigned blocks_for(const char* fn, int64_t tiles, int64_t bh) {
    const int64_t n = checked_mul(fn, tiles, bh);
    if (n > int64_t(INT32_MAX)) fail_arg(fn, "too many (batch, head, tile) blocks for one launch");
    return unsigned(n);
}

template <int D>
void forward_d(const char* fn, const Params& p, Stream stream) {
    constexpr int BQ = Cfg<D>::FQ, BK = Cfg<D>::FK;
    auto kernel = attn_fwd_kernel<D, BQ, BK>;
    constexpr size_t smem = fwd_smem(D, BQ, BK);
    detail::allow_smem(kernel, smem, fn);
    detail::launch(kernel, dim3(blocks_for(fn, (p.Tq + BQ - 1) / BQ, p.B * p.H)), dim3(kThreads), smem, stream, fn, p);
}

template <int D>
void backward_d(const char* fn, const Params& p, Stream stream) {
    constexpr int QQ = Cfg<D>::QQ, QK = Cfg<D>::QK, KK = Cfg<D>::KK, KQ = Cfg<D>::KQ;
    const int64_t BH = p.B * p.H;
    if (p.Tq > 0) {  // dq and D (the dK/dV kernel reads D: it runs second, on the same stream)
        auto kernel = attn_bwd_dq_kernel<D, QQ, QK>;
        constexpr size_t smem = dq_smem(D, QQ, QK);
        detail::allow_smem(kernel, smem, fn);
        detail::launch(kernel, dim3(blocks_for(fn, (p.Tq + QQ - 1) / QQ, BH)), dim3(kThreads), smem, stream, fn, p);
    }
    if (p.Tk > 0) {
        auto kernel = attn_bwd_dkdv_kernel<D, KK, KQ>;
        constexpr size_t smem = dkv_smem(D, KK, KQ);
        detail::allow_smem(kernel, smem, fn);
        detail::launch(kernel, dim3(blocks_for(fn, (p.Tk + KK - 1) / KK, BH)), dim3(kThreads), smem, stream, fn, p);
    }
}

}  // namespace

size_t attention_backward_workspace_size(const AttentionShape& s) {
    if (s.batch <= 0 || s.heads <= 0 || s.q_len <= 0) return 0;
    return size_t(s.batch) * size_t(s.heads) * size_t(s.q_len) * sizeof(float);
}

void attention_forward(const AttentionShape& shape, const float* q, AttentionStrides qs, const float* k,
                       AttentionStrides ks, const float* v, AttentionStrides vs, float* out, AttentionStrides os,
                       float* lse, const AttentionOptions& options, Stream stream) {
    const char* fn = "pygpt::cuda::attention_forward";
    Params p = make_params(fn, shape, options);
    check_strides(fn, "q", qs);
    check_strides(fn, "k", ks);
    check_strides(fn, "v", vs);
    check_strides(fn, "out", os);
    const bool nq = p.B * p.H * p.Tq > 0, nk = p.B * p.H * p.Tk > 0;
    need(fn, "q", q, nq);
    need(fn, "k", k, nk);
    need(fn, "v", v, nk);
    need(fn, "out", out, nq);
    need(fn, "lse", lse, nq);
    if (!nq) return;
    p.q = q, p.k = k, p.v = v, p.qs = qs, p.ks = ks, p.vs = vs;
    p.out = out, p.os = os, p.lse = lse;
    p.vq = vec_ok(q, qs, p.d), p.vk = vec_ok(k, ks, p.d), p.vv = vec_ok(v, vs, p.d), p.vo = vec_ok(out, os, p.d);
    switch (bucket(p.d)) {
        case 32: return forward_d<32>(fn, p, stream);
        case 64: return forward_d<64>(fn, p, stream);
        case 128: return forward_d<128>(fn, p, stream);
        default: return forward_d<256>(fn, p, stream);
    }
}

void attention_backward(const AttentionShape& shape, const float* q, AttentionStrides qs, const float* k,
                        AttentionStrides ks, const float* v, AttentionStrides vs, const float* out,
                        AttentionStrides os, const float* lse, const float* dout, AttentionStrides dos, float* dq,
                        AttentionStrides dqs, float* dk, AttentionStrides dks, float* dv, AttentionStrides dvs,
                        const AttentionOptions& options, void* workspace, size_t workspace_bytes, Stream stream) {
    const char* fn = "pygpt::cuda::attention_backward";
    Params p = make_params(fn, shape, options);
    const std::pair<const char*, const AttentionStrides*> strides[] = {
        {"q", &qs}, {"k", &ks}, {"v", &vs}, {"out", &os}, {"dout", &dos}, {"dq", &dqs}, {"dk", &dks}, {"dv", &dvs}};
    for (const auto& [name, st] : strides) check_strides(fn, name, *st);
    const bool nq = p.B * p.H * p.Tq > 0, nk = p.B * p.H * p.Tk > 0;
    need(fn, "q", q, nq);
    need(fn, "out", out, nq);
    need(fn, "lse", lse, nq);
    need(fn, "dout", dout, nq);
    need(fn, "dq", dq, nq);
    need(fn, "k", k, nk);
    need(fn, "v", v, nk);
    need(fn, "dk", dk, nk);
    need(fn, "dv", dv, nk);
    const size_t ws = attention_backward_workspace_size(shape);
    if (workspace_bytes < ws)
        fail_arg(fn, "workspace has " + std::to_string(workspace_bytes) + " bytes, needs " + std::to_string(ws) +
                         " (attention_backward_workspace_size)");
    need(fn, "workspace", workspace, ws > 0);
    if (ws > 0 && (reinterpret_cast<uintptr_t>(workspace) & 3u) != 0) fail_arg(fn, "workspace must be 4-byte aligned");
    if (!nq && !nk) return;
    p.q = q, p.k = k, p.v = v, p.qs = qs, p.ks = ks, p.vs = vs;
    p.o = out, p.os = os, p.lse_in = lse, p.dout = dout, p.dos = dos;
    p.dq = dq, p.dqs = dqs, p.dk = dk, p.dks = dks, p.dv = dv, p.dvs = dvs;
    p.Dbuf = static_cast<float*>(workspace);
    p.vq = vec_ok(q, qs, p.d), p.vk = vec_ok(k, ks, p.d), p.vv = vec_ok(v, vs, p.d), p.vo = vec_ok(out, os, p.d);
    p.vdo = vec_ok(dout, dos, p.d), p.vdq = vec_ok(dq, dqs, p.d), p.vdk = vec_ok(dk, dks, p.d),
    p.vdv = vec_ok(dv, dvs, p.d);
    switch (bucket(p.d)) {
        case 32: return backward_d<32>(fn, p, stream);
        case 64: return backward_d<64>(fn, p, stream);
        case 128: return backward_d<128>(fn, p, stream);
        default: return backward_d<256>(fn, p, stream);
    }
}

}  // namespace PYGPT_CUDA_NAMESPACE
}  // namespace pygpt
