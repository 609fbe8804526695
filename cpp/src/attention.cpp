// Fused scaled-dot-product attention on the CPU (FlashAttention-2 style). API: pygpt/attention.h.
//
// Tiles. A query tile is up to BQ = 64 rows, a key tile up to BK = 64 keys. Score tiles are kept
// *transposed*, S[j][i] (key j, query i): every row operation of the softmax (running max, sum,
// the rescale factor, lse, D) is then an element-wise operation on vectors over i, with no
// horizontal reductions, and each product is one small "broadcast" GEMM
//     C[r][0:N] (+)= Σ_s A(r, s) · B[s][0:N]        (A any strides, B rows contiguous, N % W == 0)
// computed by one register-blocked micro-kernel (8 accumulator vectors of W lanes):
//     forward   S  = K · (q·scale)ᵀ              (Bk × Bq)     O += Pᵀ · V          (Bq × d)
//     backward  S  = K · (q·scale)ᵀ,  dP = V · dOᵀ  (Bk × Bq)
//               dV += P' · dO,  dK += dS · (q·scale)  (Bk × d)    dQ += dSᵀ · K   (Bq × d)
// q is folded with the scale once when packed, so forward and backward compute bit-identical S
// and the recomputed P = exp(S - lse) is the forward's. Operands are packed into contiguous
// scratch, the head dim zero-padded to dp (a multiple of W), so strided inputs (views of a packed
// qkv projection) cost one copy per task at most; the only vector loads from user memory are
// whole rows of V when d is a multiple of W.
//
// Causal mask: key tiles above the diagonal are skipped; in a tile crossing it the products run
// on 8-row blocks over the part each block can reach (gemm_*_tri), and only those tiles are
// masked element-wise. Dropout: the keep bits of a score tile are computed inside the score
// GEMM's loop (DropoutMaskSide), on the scalar integer units the vector loop leaves idle.
//
// Forward, per task = (b, h, a range of query tiles): K and V packed once (when several query
// tiles share them), then for each query tile an online softmax over the key tiles up to the
// diagonal, running max m and sum l per row, O rescaled by exp(m_old - m_new) when a max grows;
// out = O / l, lse = m + log l (+inf for a row with no allowed key, so that exp(S - lse) = 0 in
// backward). Tasks run biggest first, dynamic schedule.
//
// Backward, per task = (b, h, key chunk): the key tiles of the chunk in order; for each, dK and dV
// are accumulated over the query tiles in tile-sized scratch and written once; dQ is accumulated
// in a (Tq × dp) buffer per task. The number of key chunks per (b, h) depends only on the shape
// (so that B·H·chunks >= 16 tasks), never on the thread count; with one chunk dQ is written by the
// task itself, with several each task fills its own partial buffer and a second pass sums them in
// chunk order. Every output element is therefore produced by one fixed sequence of operations:
// results are bit-identical run to run and for any thread count (the forward's task split may
// follow the thread count: it never changes how a query tile is computed). The ISA variants
// (baseline, AVX2, AVX-512; cpu_dispatch.h) perform the same IEEE operations in the same order
// (no FMA contraction), so they agree bit for bit too.
//
// Accuracy: products accumulate in T (float32 for float32); the row sums l (across tiles) and D
// in double.
#include "pygpt/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu_dispatch.h"
#include "parallel_for.h"
#include "simd_math.h"


namespace pygpt {
namespace {

constexpr int64_t kBQ = 64;                // queries per tile (32 and 128 measured no better)
constexpr int64_t kBK = 64;                // keys per tile (32 and 128 measured no better)
constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kMinBackwardTasks = 16;  // split keys of a (b, h) until B·H·chunks >= this
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// ------------------------------------------------------------------ vectors (GCC/Clang extension)
typedef float v8f __attribute__((vector_size(32)));
typedef double v4d __attribute__((vector_size(32)));

template <class T>
struct Vec;
template <>
struct Vec<float> {
    using type = v8f;
    static constexpr int64_t W = 8;
};
template <>
struct Vec<double> {
    using type = v4d;
    static constexpr int64_t W = 4;
};

// Unaligned, aliasing vector views of scratch rows. Loads and stores are plain dereferences (not
// memcpy) so that GCC keeps whole accumulator blocks in registers; arguments are references so no
// vector crosses a call boundary (the baseline variant has no 32-byte registers).
typedef float v8f_u __attribute__((vector_size(32), aligned(4), may_alias));
typedef double v4d_u __attribute__((vector_size(32), aligned(8), may_alias));
template <class T>
struct VecU;
template <>
struct VecU<float> {
    using type = v8f_u;
};
template <>
struct VecU<double> {
    using type = v4d_u;
};

template <class V, class T>
PYGPT_ALWAYS_INLINE void vload(V& v, const T* p) {
    v = *reinterpret_cast<const typename VecU<T>::type*>(p);
}
template <class V, class T>
PYGPT_ALWAYS_INLINE void vstore(T* p, const V& v) {
    *reinterpret_cast<typename VecU<T>::type*>(p) = v;
}

constexpr int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// ------------------------------------------------------------------ dropout bits (pygpt/random.py)
PYGPT_ALWAYS_INLINE uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/// mix64(z) >> 32 (the last xorshift only moves bit 63 into the top half).
PYGPT_ALWAYS_INLINE uint64_t mix64_hi32(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (z >> 32) ^ (z >> 63);
}

// ------------------------------------------------------------------ the micro-kernel
// C[r][0:NV·W] (+)= Σ_{s<K} A[r·ars + s·acs] · B[s·ldb + 0:NV·W]  for r < MR.
// One multiply and one add per term (no FMA): identical bits in every ISA variant. Every shape
// keeps MR·NV = 8 accumulators in registers; wide rows (NV = 8: one broadcast per 8 vector loads)
// measured fastest on Zen (AVX2, 256-bit ops split in two), narrower column blocks use more rows.
//
// Side job: `side(r, c)` is called once for each of the MR·NV·W elements of the micro-tile
// (row r, column c relative to the tile), one per iteration of the s loop (the rest after it).
// The dropout mask is computed there: its 64-bit integer multiplies run on the scalar integer
// units, which the vector loop leaves idle, so on an out-of-order core they cost almost nothing.
struct NoSide {
    PYGPT_ALWAYS_INLINE void operator()(int64_t, int64_t) const {}
    PYGPT_ALWAYS_INLINE NoSide shifted(int64_t, int64_t) const { return {}; }
};

template <class T, int MR, int NV, bool ACC, class Side>
PYGPT_ALWAYS_INLINE void micro(int64_t K, const T* __restrict A, int64_t ars, int64_t acs, const T* __restrict B,
                               int64_t ldb, T* __restrict C, int64_t ldc, const Side& side, int64_t r0, int64_t c0) {
    using V = typename Vec<T>::type;
    constexpr int64_t W = Vec<T>::W;
    constexpr int64_t E = MR * NV * W;  // elements of the micro-tile (side job)
    constexpr bool has_side = !std::is_same_v<Side, NoSide>;
    V acc[MR][NV];
    for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) {
            if (ACC) vload(acc[r][v], C + r * ldc + v * W);
            else acc[r][v] = V{};
        }
    for (int64_t s = 0; s < K; ++s) {
        V b[NV];
        for (int v = 0; v < NV; ++v) vload(b[v], B + s * ldb + v * W);
        for (int r = 0; r < MR; ++r) {
            const T a = A[r * ars + s * acs];
            for (int v = 0; v < NV; ++v) acc[r][v] += b[v] * a;
        }
        if constexpr (has_side)
            if (s < E) side(r0 + s / (NV * W), c0 + s % (NV * W));
    }
    if constexpr (has_side)
        for (int64_t e = K; e < E; ++e) side(r0 + e / (NV * W), c0 + e % (NV * W));
    for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) vstore(C + r * ldc + v * W, acc[r][v]);
}

template <class T, int R, int NV, bool ACC, class Side>
PYGPT_ALWAYS_INLINE void micro_tail_rows(int64_t rem, int64_t K, const T* A, int64_t ars, int64_t acs, const T* B,
                                         int64_t ldb, T* C, int64_t ldc, const Side& side, int64_t r0, int64_t c0) {
    if constexpr (R > 0) {
        if (rem == R) micro<T, R, NV, ACC>(K, A, ars, acs, B, ldb, C, ldc, side, r0, c0);
        else micro_tail_rows<T, R - 1, NV, ACC>(rem, K, A, ars, acs, B, ldb, C, ldc, side, r0, c0);
    }
}

/// One column block of NV vectors (starting at column c0), all M rows, MR at a time.
template <class T, int MR, int NV, bool ACC, class Side>
PYGPT_ALWAYS_INLINE void gemm_cols(int64_t M, int64_t K, const T* A, int64_t ars, int64_t acs, const T* B,
                                   int64_t ldb, T* C, int64_t ldc, const Side& side, int64_t c0) {
    int64_t r = 0;
    for (; r + MR <= M; r += MR)
        micro<T, MR, NV, ACC>(K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, side, r, c0);
    micro_tail_rows<T, MR - 1, NV, ACC>(M - r, K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, side, r, c0);
}

/// C (M × N, leading dim ldc) (+)= A (M × K, strides ars, acs) · B (K × N, leading dim ldb);
/// N a multiple of W. ACC = false overwrites C. The sum over s runs in order s = 0, 1, ..., K-1.
/// side(r, c) runs once for every element (r < M, c < N) of C (see micro).
template <class T, bool ACC, class Side = NoSide>
PYGPT_ALWAYS_INLINE void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t ars, int64_t acs, const T* B,
                              int64_t ldb, T* C, int64_t ldc, const Side& side = Side{}) {
    constexpr int64_t W = Vec<T>::W;
    int64_t n = 0;
    for (; n + 8 * W <= N; n += 8 * W)
        gemm_cols<T, 1, 8, ACC>(M, K, A, ars, acs, B + n, ldb, C + n, ldc, side, n);
    if (n + 4 * W <= N) {
        gemm_cols<T, 2, 4, ACC>(M, K, A, ars, acs, B + n, ldb, C + n, ldc, side, n);
        n += 4 * W;
    }
    if (n + 2 * W <= N) {
        gemm_cols<T, 4, 2, ACC>(M, K, A, ars, acs, B + n, ldb, C + n, ldc, side, n);
        n += 2 * W;
    }
    if (n < N) gemm_cols<T, 8, 1, ACC>(M, K, A, ars, acs, B + n, ldb, C + n, ldc, side, n);
}

/// Side job of the score GEMM: keep[r][c] = 1 iff the dropout bits of (query c, key j0 + r)
/// reach the threshold; zrow[c] = mix64(key) + (e(c, 0) + 1)·φ, jrow[r] = (j0 + r)·φ.
struct DropoutMaskSide {
    uint8_t* keep;
    int64_t ld;
    const uint64_t* zrow;
    const uint64_t* jrow;
    uint64_t threshold;
    PYGPT_ALWAYS_INLINE void operator()(int64_t r, int64_t c) const {
        keep[r * ld + c] = uint8_t(mix64_hi32(zrow[c] + jrow[r]) >= threshold);
    }
    PYGPT_ALWAYS_INLINE DropoutMaskSide shifted(int64_t r, int64_t c) const {
        return {keep + r * ld + c, ld, zrow + c, jrow + r, threshold};
    }
};

// ------------------------------------------------------------------ tiles on the causal diagonal
// In a tile that crosses the diagonal, key jl (rows of the transposed score tile) is seen only by
// the queries il >= jl + delta, delta = j0 - i0 - (Tk - Tq). The products then run on blocks of
// kTriRows rows, each over the columns / terms its rows can reach; what they skip is masked (the
// scores are set to -inf, the probabilities and dS to 0 by the callers), so only zeros are left out.
constexpr int64_t kTriRows = 8;

/// Scores: C[jl][c] = Σ_s A[jl][s] B[s][c] for the columns c >= first(jl block), rounded down to W;
/// columns left of that are not written.
template <class T, class Side>
PYGPT_ALWAYS_INLINE void gemm_keys_tri(int64_t nk, int64_t nqp, int64_t K, const T* A, int64_t lda, const T* B,
                                       T* C, int64_t delta, const Side& side) {
    constexpr int64_t W = Vec<T>::W;
    for (int64_t jb = 0; jb < nk; jb += kTriRows) {
        const int64_t rows = std::min(kTriRows, nk - jb);
        const int64_t c0 = std::min(nqp, std::max<int64_t>(0, jb + delta)) / W * W;
        if (c0 >= nqp) break;  // these keys (and all later ones) see no query of the tile
        gemm<T, false>(rows, nqp - c0, K, A + jb * lda, lda, 1, B + c0, nqp, C + jb * nqp + c0, nqp,
                       side.shifted(jb, c0));
    }
}

/// dV, dK: C[jl] += Σ_{s >= jl + delta} A[jl][s] B[s]  (rows keys, terms queries; A leading dim lda).
template <class T>
PYGPT_ALWAYS_INLINE void gemm_keys_acc_tri(int64_t nk, int64_t N, int64_t nq, const T* A, int64_t lda, const T* B,
                                           int64_t ldb, T* C, int64_t ldc, int64_t delta) {
    for (int64_t jb = 0; jb < nk; jb += kTriRows) {
        const int64_t rows = std::min(kTriRows, nk - jb);
        const int64_t s0 = std::min(nq, std::max<int64_t>(0, jb + delta));
        if (s0 >= nq) break;
        gemm<T, true>(rows, N, nq - s0, A + jb * lda + s0, lda, 1, B + s0 * ldb, ldb, C + jb * ldc, ldc);
    }
}

/// Forward P v, dQ: C[il] += Σ_{s <= il - delta} A[s][il] B[s]  (rows queries, terms keys; A[s][il] at s·lda + il).
template <class T>
PYGPT_ALWAYS_INLINE void gemm_queries_acc_tri(int64_t nq, int64_t N, int64_t nk, const T* A, int64_t lda, const T* B,
                                              int64_t ldb, T* C, int64_t ldc, int64_t delta) {
    for (int64_t ib = 0; ib < nq; ib += kTriRows) {
        const int64_t rows = std::min(kTriRows, nq - ib);
        const int64_t kend = std::min(nk, ib + rows - delta);
        if (kend <= 0) continue;
        gemm<T, true>(rows, N, kend, A + ib, 1, lda, B, ldb, C + ib * ldc, ldc);
    }
}

// ------------------------------------------------------------------ problem description
template <class T>
struct Problem {
    int64_t B = 0, H = 0, Tq = 0, Tk = 0, d = 0;
    int64_t dp = 0;   // d rounded up to W
    int64_t off = 0;  // Tk - Tq: key j allowed for query i iff j <= i + off (causal)
    int64_t n_qt = 0, n_kt = 0;
    bool causal = false;
    const uint8_t* key_mask = nullptr;
    T scale = 0;
    bool dropout = false;
    uint64_t threshold = 0;  // keep iff bits >= threshold (2^32: drop everything)
    T drop_scale = 1;
    uint64_t mixed_key = 0;  // mix64(dropout key)

    const T *q = nullptr, *k = nullptr, *v = nullptr;
    AttentionStrides qs, ks, vs;
    // forward outputs / backward inputs
    T* out = nullptr;
    const T* o = nullptr;
    AttentionStrides os;
    T* lse = nullptr;
    const T* lse_in = nullptr;
    // backward
    const T* dout = nullptr;
    AttentionStrides dos;
    T *dq = nullptr, *dk = nullptr, *dv = nullptr;
    AttentionStrides dqs, dks, dvs;
    int64_t chunks = 1, kt_per_chunk = 1;
    T* dq_partial = nullptr;  // (B·H·chunks, Tq, dp) when chunks > 1

    int64_t first_key_tile_end(int64_t i0, int64_t nq) const {  // key tiles [0, end) touch query rows i0..
        if (!causal) return n_kt;
        return std::min(n_kt, (i0 + nq - 1 + off) / kBK + 1);
    }
    int64_t first_query_tile(int64_t j0) const {  // first query tile that sees key j0
        if (!causal) return 0;
        return std::max<int64_t>(0, j0 - off) / kBQ;
    }
    double flops() const {  // forward multiply-adds × 2, about (the causal mask halves it)
        return 4.0 * double(B * H) * double(Tq) * double(Tk) * double(d) * (causal ? 0.5 : 1.0);
    }
    bool key_tile_masked(int64_t b, int64_t j0, int64_t nk) const {  // every key of the tile masked out
        if (!key_mask) return false;
        const uint8_t* km = key_mask + b * Tk + j0;
        for (int64_t j = 0; j < nk; ++j)
            if (km[j]) return false;
        return true;
    }
};

/// The backward's use of the mask: pd = keep ? p·scale : 0 and gp = keep ? gp·scale : 0.
template <class T>
PYGPT_ALWAYS_INLINE void dropout_pair(const T* __restrict p, T* __restrict pd, T* __restrict gp,
                                      const uint8_t* __restrict keep, int64_t n, T scale) {
    for (int64_t i = 0; i < n; ++i) {
        pd[i] = keep[i] ? p[i] * scale : T(0);
        gp[i] = keep[i] ? gp[i] * scale : T(0);
    }
}

/// zrow[i] = mix64(key) + (e(i, 0) + 1)·φ, e the element index of (query i0 + i, key 0).
template <class T>
PYGPT_ALWAYS_INLINE void dropout_zrow(const Problem<T>& pr, int64_t bh, int64_t i0, int64_t nqp, uint64_t* zrow) {
    for (int64_t i = 0; i < nqp; ++i)
        zrow[i] = pr.mixed_key + (uint64_t((bh * pr.Tq + i0 + i)) * uint64_t(pr.Tk) + 1) * kGolden;
}

// ------------------------------------------------------------------ workspace layouts
// Each thread owns one slot of ws_elems() elements; sub-buffers start on 64-byte boundaries.
constexpr int64_t kAlign = 16;  // elements (64 bytes of float)

template <class T>
int64_t fwd_ws_elems(const Problem<T>& pr) {
    const int64_t d = pr.d, dp = pr.dp, tkp = pr.n_kt * kBK;
    return 2 * round_up(tkp * dp, kAlign)   // K, V rows of the (b, h), packed once per task
           + round_up(d * kBQ, kAlign)      // QT
           + round_up(kBK * kBQ, kAlign)    // S / P
           + round_up(kBQ * dp, kAlign)     // O
           + 5 * round_up(kBQ, kAlign)      // m, msafe, alpha, lsum
           + 4 * round_up(kBQ, kAlign) + 2 * round_up(kBK, kAlign)  // l (double), zrow, jrow (u64)
           + round_up(kBK * kBQ, kAlign);   // dropout keep bytes
}

template <class T>
int64_t bwd_ws_elems(const Problem<T>& pr) {
    const int64_t d = pr.d, dp = pr.dp, tqp = pr.n_qt * kBQ;
    return 2 * round_up(d * tqp, kAlign)     // QT, dOT: per query tile, d × BQ
           + 2 * round_up(tqp * dp, kAlign)  // Qs, dO rows (dp)
           + 2 * round_up(tqp, kAlign)       // lse (padded +inf), D
           + round_up(tqp * dp, kAlign)      // dQ accumulator (chunks == 1)
           + 4 * round_up(kBK * dp, kAlign)  // K, V, dK, dV tiles
           + 3 * round_up(kBK * kBQ, kAlign) // S/P, dP/dS, P'
           + round_up(kBK * kBQ, kAlign)     // dropout keep bytes
           + 2 * round_up(kBQ, kAlign) + 4 * round_up(kBK, kAlign);  // zrow, jrow (u64), lims (i64)
}

template <class T>
struct Carver {
    T* p;
    T* take(int64_t n) {
        T* r = p;
        p += round_up(n, kAlign);
        return r;
    }
};

// ------------------------------------------------------------------ forward: (b, h, query tiles [qa, qb))
/// Copy rows [0, n) of a (T, d) operand (row stride ld) into dst (n, dp), zero-padding d..dp.
template <class T>
PYGPT_ALWAYS_INLINE void pack_rows(const T* src, int64_t ld, int64_t n, int64_t d, int64_t dp, T* dst) {
    for (int64_t j = 0; j < n; ++j) {
        std::memcpy(dst + j * dp, src + j * ld, size_t(d) * sizeof(T));
        std::fill(dst + j * dp + d, dst + (j + 1) * dp, T(0));
    }
}

template <class T>
PYGPT_ALWAYS_INLINE void forward_tiles(const Problem<T>& pr, int64_t bh, int64_t qa, int64_t qb, T* ws) {
    constexpr int64_t W = Vec<T>::W;
    const T ninf = -std::numeric_limits<T>::infinity();
    const int64_t b = bh / pr.H, h = bh % pr.H, d = pr.d, dp = pr.dp;
    const int64_t tkp = pr.n_kt * kBK;

    Carver<T> c{ws};
    T* Kall = c.take(tkp * dp);  // key j at j·dp
    T* Vall = c.take(tkp * dp);
    T* QT = c.take(d * kBQ);   // (d, nqp): q·scale transposed
    T* S = c.take(kBK * kBQ);  // (nk, nqp): scores, then probabilities
    T* O = c.take(kBQ * dp);   // (nq, dp)
    T* m = c.take(kBQ);        // running max
    T* msafe = c.take(kBQ);    // new max, 0 while no key was allowed
    T* alpha = c.take(kBQ);    // exp(m_old - m_new)
    T* lsum = c.take(kBQ);     // row sums of this key tile
    double* l = reinterpret_cast<double*>(c.take(2 * kBQ));
    uint64_t* zrow = reinterpret_cast<uint64_t*>(c.take(2 * kBQ));
    uint64_t* jrow = reinterpret_cast<uint64_t*>(c.take(2 * kBK));
    uint8_t* keep = reinterpret_cast<uint8_t*>(c.take(kBK * kBQ));  // (nk, nqp) bytes
    std::memset(keep, 0, size_t(kBK * kBQ));  // the diagonal tiles leave parts unwritten: never garbage

    // Keys and values: packed (contiguous, zero-padded to dp) when several query tiles reuse them
    // or d is not a multiple of W; else read in place (one query tile, e.g. a decoding step).
    const T* kb = pr.k + b * pr.ks.batch + h * pr.ks.head;
    const T* vb = pr.v + b * pr.vs.batch + h * pr.vs.head;
    int64_t ldk = pr.ks.seq, ldv = pr.vs.seq;
    if (qb - qa > 1 || d != dp) {
        // keys needed by the last query tile of the range (the largest under the causal mask)
        const int64_t kt_all = pr.first_key_tile_end((qb - 1) * kBQ, std::min(kBQ, pr.Tq - (qb - 1) * kBQ));
        const int64_t nkeys = std::min(pr.Tk, kt_all * kBK);
        pack_rows(kb, ldk, nkeys, d, dp, Kall);
        pack_rows(vb, ldv, nkeys, d, dp, Vall);
        kb = Kall, vb = Vall, ldk = ldv = dp;
    }
    const uint8_t* kmask = pr.key_mask ? pr.key_mask + b * pr.Tk : nullptr;

    for (int64_t qt = qb - 1; qt >= qa; --qt) {
        const int64_t i0 = qt * kBQ, nq = std::min(kBQ, pr.Tq - i0), nqp = round_up(nq, W);
        const T* q = pr.q + b * pr.qs.batch + h * pr.qs.head + i0 * pr.qs.seq;
        for (int64_t i = 0; i < nq; ++i)
            for (int64_t cc = 0; cc < d; ++cc) QT[cc * nqp + i] = q[i * pr.qs.seq + cc] * pr.scale;
        for (int64_t cc = 0; cc < d; ++cc)
            for (int64_t i = nq; i < nqp; ++i) QT[cc * nqp + i] = T(0);
        std::fill(O, O + nq * dp, T(0));
        for (int64_t i = 0; i < nqp; ++i) {
            m[i] = ninf;
            l[i] = 0.0;
        }
        if (pr.dropout) dropout_zrow(pr, bh, i0, nqp, zrow);

        const int64_t kt_end = pr.first_key_tile_end(i0, nq);
        for (int64_t kt = 0; kt < kt_end; ++kt) {
            const int64_t j0 = kt * kBK, nk = std::min(kBK, pr.Tk - j0);
            if (pr.key_tile_masked(b, j0, nk)) continue;
            // S[j][i] = k_j · q_i · scale (and, with dropout, keep[j][i] on the side)
            const bool diag = pr.causal && j0 + nk - 1 > i0 + pr.off;
            const int64_t delta = j0 - i0 - pr.off;
            const T* Kj = kb + j0 * ldk;
            if (pr.dropout) {
                for (int64_t j = 0; j < nk; ++j) jrow[j] = uint64_t(j0 + j) * kGolden;
                const DropoutMaskSide side{keep, nqp, zrow, jrow, pr.threshold};
                if (diag) gemm_keys_tri(nk, nqp, d, Kj, ldk, QT, S, delta, side);
                else gemm<T, false>(nk, nqp, d, Kj, ldk, 1, QT, nqp, S, nqp, side);
            } else {
                if (diag) gemm_keys_tri(nk, nqp, d, Kj, ldk, QT, S, delta, NoSide{});
                else gemm<T, false>(nk, nqp, d, Kj, ldk, 1, QT, nqp, S, nqp);
            }

            // masks (they also cover the columns gemm_keys_tri skipped), and the new running max
            for (int64_t i = 0; i < nqp; ++i) msafe[i] = m[i];
            for (int64_t j = 0; j < nk; ++j) {
                T* row = S + j * nqp;
                if (kmask && !kmask[j0 + j]) {
                    for (int64_t i = 0; i < nqp; ++i) row[i] = ninf;
                    continue;
                }
                if (diag) {  // query i sees key j0 + j iff i0 + i + off >= j0 + j
                    const int64_t lim = std::min(nqp, std::max<int64_t>(0, j0 + j - pr.off - i0));
                    for (int64_t i = 0; i < lim; ++i) row[i] = ninf;
                }
                for (int64_t i = 0; i < nqp; ++i) msafe[i] = row[i] > msafe[i] ? row[i] : msafe[i];
            }
            bool rescale = false;  // some row's max grew: O and l must be scaled by alpha
            for (int64_t i = 0; i < nqp; ++i) {
                const T mn = msafe[i];
                const T ms = mn == ninf ? T(0) : mn;
                alpha[i] = detail::exp_nonpositive(m[i] - ms);
                rescale |= mn != m[i];
                m[i] = mn;
                msafe[i] = ms;
                lsum[i] = T(0);
            }
            // P = exp(S - m) and its row sums (per tile in T, 64 terms; across tiles in double);
            // dropout zeroes P after the sums (kept values are scaled by 1/(1-p) at the end)
            for (int64_t j = 0; j < nk; ++j) {
                T* row = S + j * nqp;
                if (pr.dropout) {
                    const uint8_t* kr = keep + j * nqp;
                    for (int64_t i = 0; i < nqp; ++i) {
                        const T p = detail::exp_nonpositive(row[i] - msafe[i]);
                        lsum[i] += p;
                        row[i] = kr[i] ? p : T(0);
                    }
                } else {
                    for (int64_t i = 0; i < nqp; ++i) {
                        const T p = detail::exp_nonpositive(row[i] - msafe[i]);
                        lsum[i] += p;
                        row[i] = p;
                    }
                }
            }
            if (rescale) {
                for (int64_t i = 0; i < nqp; ++i) l[i] = l[i] * double(alpha[i]) + double(lsum[i]);
                for (int64_t i = 0; i < nq; ++i) {
                    const T a = alpha[i];
                    T* orow = O + i * dp;
                    for (int64_t cc = 0; cc < dp; ++cc) orow[cc] *= a;
                }
            } else {
                for (int64_t i = 0; i < nqp; ++i) l[i] += double(lsum[i]);
            }
            // O[i] += Σ_j P[j][i] v_j
            if (diag) gemm_queries_acc_tri(nq, dp, nk, S, nqp, vb + j0 * ldv, ldv, O, dp, delta);
            else gemm<T, true>(nq, dp, nk, S, 1, nqp, vb + j0 * ldv, ldv, O, dp);
        }

        T* ob = pr.out + b * pr.os.batch + h * pr.os.head + i0 * pr.os.seq;
        T* lb = pr.lse + bh * pr.Tq + i0;
        for (int64_t i = 0; i < nq; ++i) {
            const bool any = l[i] > 0.0;
            const T inv = any ? T(double(pr.drop_scale) / l[i]) : T(0);
            const T* orow = O + i * dp;
            T* dst = ob + i * pr.os.seq;
            for (int64_t cc = 0; cc < d; ++cc) dst[cc] = orow[cc] * inv;
            lb[i] = any ? T(double(m[i]) + std::log(l[i])) : std::numeric_limits<T>::infinity();
        }
    }
}

// ------------------------------------------------------------------ backward: one (b, h, key chunk)
template <class T>
PYGPT_ALWAYS_INLINE void backward_task(const Problem<T>& pr, int64_t bh, int64_t chunk, T* ws) {
    constexpr int64_t W = Vec<T>::W;
    const int64_t b = bh / pr.H, h = bh % pr.H, d = pr.d, dp = pr.dp, Tq = pr.Tq;
    const int64_t tqp = pr.n_qt * kBQ;
    const int64_t kt0 = chunk * pr.kt_per_chunk, kt1 = std::min(pr.n_kt, kt0 + pr.kt_per_chunk);
    const T* qb = pr.q + b * pr.qs.batch + h * pr.qs.head;
    const T* kb = pr.k + b * pr.ks.batch + h * pr.ks.head;
    const T* vb = pr.v + b * pr.vs.batch + h * pr.vs.head;
    const T* ob = pr.o + b * pr.os.batch + h * pr.os.head;
    const T* gb = pr.dout + b * pr.dos.batch + h * pr.dos.head;

    Carver<T> c{ws};
    T* QTall = c.take(d * tqp);   // tile qt at qt·BQ·d: (d, nqp)
    T* dOTall = c.take(d * tqp);
    T* Qsall = c.take(tqp * dp);  // row i at i·dp
    T* dOall = c.take(tqp * dp);
    T* Lall = c.take(tqp);
    T* Dall = c.take(tqp);
    T* dQown = c.take(tqp * dp);
    T* Kt = c.take(kBK * dp);
    T* Vt = c.take(kBK * dp);
    T* dKa = c.take(kBK * dp);
    T* dVa = c.take(kBK * dp);
    T* S = c.take(kBK * kBQ);
    T* dP = c.take(kBK * kBQ);
    T* Pd = c.take(kBK * kBQ);
    uint64_t* zrow = reinterpret_cast<uint64_t*>(c.take(kBQ * 2));
    uint64_t* jrow = reinterpret_cast<uint64_t*>(c.take(kBK * 2));
    uint8_t* keep = reinterpret_cast<uint8_t*>(c.take(kBK * kBQ));
    int64_t* lims = reinterpret_cast<int64_t*>(c.take(kBK * 2));
    // the diagonal tiles leave parts of S, dP, keep unwritten (then masked): never garbage
    std::fill(S, S + kBK * kBQ, T(0));
    std::fill(dP, dP + kBK * kBQ, T(0));
    std::memset(keep, 0, size_t(kBK * kBQ));
    T* dQa = pr.chunks == 1 ? dQown : pr.dq_partial + (bh * pr.chunks + chunk) * Tq * dp;

    // pack the query side once for the rows this chunk can reach
    const int64_t qt_first = kt0 < kt1 ? pr.first_query_tile(kt0 * kBK) : pr.n_qt;
    const T* lse = pr.lse_in + bh * Tq;
    for (int64_t qt = qt_first; qt < pr.n_qt; ++qt) {
        const int64_t i0 = qt * kBQ, nq = std::min(kBQ, Tq - i0), nqp = round_up(nq, W);
        T* QT = QTall + qt * kBQ * d;
        T* dOT = dOTall + qt * kBQ * d;
        for (int64_t i = 0; i < nq; ++i) {  // rows: q·scale and dO padded to dp; D = dO · out
            const T* qr = qb + (i0 + i) * pr.qs.seq;
            const T* gr = gb + (i0 + i) * pr.dos.seq;
            const T* orow = ob + (i0 + i) * pr.os.seq;
            T* qs = Qsall + (i0 + i) * dp;
            T* go = dOall + (i0 + i) * dp;
            double D = 0.0;
            for (int64_t cc = 0; cc < d; ++cc) {
                qs[cc] = qr[cc] * pr.scale;
                go[cc] = gr[cc];
                D += double(gr[cc]) * double(orow[cc]);
            }
            for (int64_t cc = d; cc < dp; ++cc) {
                qs[cc] = T(0);
                go[cc] = T(0);
            }
            Dall[i0 + i] = T(D);
            Lall[i0 + i] = lse[i0 + i];
        }
        for (int64_t i = nq; i < nqp; ++i) {
            Dall[i0 + i] = T(0);
            Lall[i0 + i] = std::numeric_limits<T>::infinity();  // padded rows: P = 0
        }
        for (int64_t cc = 0; cc < d; ++cc) {  // transposed copies (d, nqp), zero columns past nq
            T* qt_row = QT + cc * nqp;
            T* gt_row = dOT + cc * nqp;
            for (int64_t i = 0; i < nq; ++i) {
                qt_row[i] = Qsall[(i0 + i) * dp + cc];
                gt_row[i] = dOall[(i0 + i) * dp + cc];
            }
            for (int64_t i = nq; i < nqp; ++i) {
                qt_row[i] = T(0);
                gt_row[i] = T(0);
            }
        }
    }
    std::fill(dQa, dQa + Tq * dp, T(0));

    for (int64_t kt = kt0; kt < kt1; ++kt) {
        const int64_t j0 = kt * kBK, nk = std::min(kBK, pr.Tk - j0);
        T* dkb = pr.dk + b * pr.dks.batch + h * pr.dks.head + j0 * pr.dks.seq;
        T* dvb = pr.dv + b * pr.dvs.batch + h * pr.dvs.head + j0 * pr.dvs.seq;
        std::fill(dKa, dKa + nk * dp, T(0));
        std::fill(dVa, dVa + nk * dp, T(0));
        if (!pr.key_tile_masked(b, j0, nk)) {
            for (int64_t j = 0; j < nk; ++j) {
                const T* kr = kb + (j0 + j) * pr.ks.seq;
                const T* vr = vb + (j0 + j) * pr.vs.seq;
                T* kd = Kt + j * dp;
                T* vd = Vt + j * dp;
                for (int64_t cc = 0; cc < d; ++cc) {
                    kd[cc] = kr[cc];
                    vd[cc] = vr[cc];
                }
                for (int64_t cc = d; cc < dp; ++cc) {
                    kd[cc] = T(0);
                    vd[cc] = T(0);
                }
            }
            const uint8_t* km = pr.key_mask ? pr.key_mask + b * pr.Tk + j0 : nullptr;
            for (int64_t j = 0; j < nk; ++j) jrow[j] = uint64_t(j0 + j) * kGolden;
            for (int64_t qt = pr.first_query_tile(j0); qt < pr.n_qt; ++qt) {
                const int64_t i0 = qt * kBQ, nq = std::min(kBQ, Tq - i0), nqp = round_up(nq, W);
                const T* QT = QTall + qt * kBQ * d;
                const T* dOT = dOTall + qt * kBQ * d;
                const T* L = Lall + i0;
                const T* Dv = Dall + i0;
                const bool diag = pr.causal && j0 + nk - 1 > i0 + pr.off;
                const int64_t delta = j0 - i0 - pr.off;
                if (pr.dropout) {  // S[j][i], and keep[j][i] on the side
                    dropout_zrow(pr, bh, i0, nqp, zrow);
                    const DropoutMaskSide side{keep, nqp, zrow, jrow, pr.threshold};
                    if (diag) gemm_keys_tri(nk, nqp, d, Kt, dp, QT, S, delta, side);
                    else gemm<T, false>(nk, nqp, d, Kt, dp, 1, QT, nqp, S, nqp, side);
                } else {
                    if (diag) gemm_keys_tri(nk, nqp, d, Kt, dp, QT, S, delta, NoSide{});
                    else gemm<T, false>(nk, nqp, d, Kt, dp, 1, QT, nqp, S, nqp);
                }
                // dP[j][i] = v_j · dO_i
                if (diag) gemm_keys_tri(nk, nqp, d, Vt, dp, dOT, dP, delta, NoSide{});
                else gemm<T, false>(nk, nqp, d, Vt, dp, 1, dOT, nqp, dP, nqp);
                for (int64_t j = 0; j < nk; ++j) {
                    T* row = S + j * nqp;
                    int64_t lim = 0;  // queries i < lim do not see this key (their S, dP may be unwritten)
                    if (km && !km[j]) lim = nqp;
                    else if (diag) lim = std::min(nqp, std::max<int64_t>(0, j + delta));
                    lims[j] = lim;
                    for (int64_t i = 0; i < lim; ++i) row[i] = T(0);
                    for (int64_t i = lim; i < nqp; ++i) row[i] = detail::exp_nonpositive(row[i] - L[i]);
                }
                const T* Pv = S;  // probabilities that multiplied V in the forward
                if (pr.dropout) {  // P' = P ∘ drop, dP ∘= drop (drop = keep / (1 - p))
                    for (int64_t j = 0; j < nk; ++j)
                        dropout_pair(S + j * nqp, Pd + j * nqp, dP + j * nqp, keep + j * nqp, nqp, pr.drop_scale);
                    Pv = Pd;
                }
                for (int64_t j = 0; j < nk; ++j) {  // dS = P (dP - D), in place of dP
                    const T* prow = S + j * nqp;
                    T* gp = dP + j * nqp;
                    const int64_t lim = lims[j];
                    for (int64_t i = 0; i < lim; ++i) gp[i] = T(0);
                    for (int64_t i = lim; i < nqp; ++i) gp[i] = prow[i] * (gp[i] - Dv[i]);
                }
                const T* dOi = dOall + i0 * dp;
                const T* Qi = Qsall + i0 * dp;
                T* dQi = dQa + i0 * dp;
                if (diag) {
                    gemm_keys_acc_tri(nk, dp, nq, Pv, nqp, dOi, dp, dVa, dp, delta);
                    gemm_keys_acc_tri(nk, dp, nq, dP, nqp, Qi, dp, dKa, dp, delta);
                    gemm_queries_acc_tri(nq, dp, nk, dP, nqp, Kt, dp, dQi, dp, delta);
                } else {
                    gemm<T, true>(nk, dp, nq, Pv, nqp, 1, dOi, dp, dVa, dp);  // dV[j] += Σ_i P'[j][i] dO_i
                    gemm<T, true>(nk, dp, nq, dP, nqp, 1, Qi, dp, dKa, dp);   // dK[j] += Σ_i dS[j][i] q_i s
                    gemm<T, true>(nq, dp, nk, dP, 1, nqp, Kt, dp, dQi, dp);   // dQ[i] += Σ_j dS[j][i] k_j
                }
            }
        }
        for (int64_t j = 0; j < nk; ++j) {
            std::memcpy(dkb + j * pr.dks.seq, dKa + j * dp, size_t(d) * sizeof(T));
            std::memcpy(dvb + j * pr.dvs.seq, dVa + j * dp, size_t(d) * sizeof(T));
        }
    }

    if (pr.chunks == 1) {
        T* dqb = pr.dq + b * pr.dqs.batch + h * pr.dqs.head;
        for (int64_t i = 0; i < Tq; ++i) {
            const T* src = dQa + i * dp;
            T* dst = dqb + i * pr.dqs.seq;
            for (int64_t cc = 0; cc < d; ++cc) dst[cc] = src[cc] * pr.scale;
        }
    }
}

/// dq rows of one (b, h, query tile) = scale · Σ_chunk partial (in chunk order).
template <class T>
PYGPT_ALWAYS_INLINE void reduce_dq(const Problem<T>& pr, int64_t bh, int64_t qt) {
    const int64_t b = bh / pr.H, h = bh % pr.H, d = pr.d, dp = pr.dp;
    const int64_t i0 = qt * kBQ, nq = std::min(kBQ, pr.Tq - i0);
    T* dqb = pr.dq + b * pr.dqs.batch + h * pr.dqs.head;
    for (int64_t i = i0; i < i0 + nq; ++i) {
        T* dst = dqb + i * pr.dqs.seq;
        const T* src = pr.dq_partial + (bh * pr.chunks) * pr.Tq * dp + i * dp;
        for (int64_t cc = 0; cc < d; ++cc) dst[cc] = src[cc];
        for (int64_t ch = 1; ch < pr.chunks; ++ch) {
            const T* s2 = src + ch * pr.Tq * dp;
            for (int64_t cc = 0; cc < d; ++cc) dst[cc] += s2[cc];
        }
        for (int64_t cc = 0; cc < d; ++cc) dst[cc] *= pr.scale;
    }
}

// ------------------------------------------------------------------ ISA variants
#define PYGPT_ATTENTION_VARIANT(ISA, ATTR)                                                  \
    template <class T>                                                                      \
    ATTR void forward_tiles_##ISA(const Problem<T>& pr, int64_t bh, int64_t qa, int64_t qb, \
                                  T* ws) {                                                  \
        forward_tiles<T>(pr, bh, qa, qb, ws);                                               \
    }                                                                                       \
    template <class T>                                                                      \
    ATTR void backward_task_##ISA(const Problem<T>& pr, int64_t bh, int64_t chunk, T* ws) { \
        backward_task<T>(pr, bh, chunk, ws);                                                \
    }                                                                                       \
    template <class T>                                                                      \
    ATTR void reduce_dq_##ISA(const Problem<T>& pr, int64_t bh, int64_t qt, T*) {           \
        reduce_dq<T>(pr, bh, qt);                                                           \
    }

PYGPT_ATTENTION_VARIANT(baseline, )
#if PYGPT_HAVE_X86_VARIANTS
PYGPT_ATTENTION_VARIANT(avx2, PYGPT_TARGET_AVX2)
PYGPT_ATTENTION_VARIANT(avx512, PYGPT_TARGET_AVX512)
#endif

template <class T>
using TaskFn = void (*)(const Problem<T>&, int64_t, int64_t, T*);
template <class T>
using RangeFn = void (*)(const Problem<T>&, int64_t, int64_t, int64_t, T*);

template <class T>
struct Variants {
    RangeFn<T> forward;
    TaskFn<T> backward, reduce;
};

template <class T>
Variants<T> variants() {
#if PYGPT_HAVE_X86_VARIANTS
    const detail::Isa isa = detail::active_isa();
    if (isa == detail::Isa::Avx512) return {forward_tiles_avx512<T>, backward_task_avx512<T>, reduce_dq_avx512<T>};
    if (isa == detail::Isa::Avx2) return {forward_tiles_avx2<T>, backward_task_avx2<T>, reduce_dq_avx2<T>};
#endif
    return {forward_tiles_baseline<T>, backward_task_baseline<T>, reduce_dq_baseline<T>};
}

// ------------------------------------------------------------------ task runner
struct AlignedFree {
    void operator()(void* p) const { ::operator delete[](p, std::align_val_t(64)); }
};

/// Runs fn(task, workspace) for task in [0, n) on the library's threads (dynamic schedule, so
/// tasks should be ordered biggest first); ws_elems elements of scratch per thread. Below
/// kParallelMinFlops of estimated work it stays on the calling thread: waking the pool costs more.
constexpr double kParallelMinFlops = 4e6;

template <class T, class F>
void run_tasks(int64_t n, int64_t ws_elems, double flops, F&& fn) {
    if (n <= 0) return;
    const int threads =
        flops < kParallelMinFlops ? 1 : static_cast<int>(std::min<int64_t>(detail::parallel_threads(), n));
    const int64_t slot = round_up(std::max<int64_t>(ws_elems, 1), kAlign);
    std::unique_ptr<T[], AlignedFree> ws(
        static_cast<T*>(::operator new[](size_t(slot) * size_t(threads) * sizeof(T), std::align_val_t(64))));
    if (threads <= 1) {
        for (int64_t t = 0; t < n; ++t) fn(t, ws.get());
        return;
    }
    T* base = ws.get();
    detail::parallel_tasks(n, threads, [&](int64_t t, int worker) { fn(t, base + slot * worker); });
}

// ------------------------------------------------------------------ argument checks
[[noreturn]] void fail(const char* fn, const std::string& msg) {
    throw std::invalid_argument(std::string(fn) + ": " + msg);
}

int64_t checked_mul(const char* fn, int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) fail(fn, "sizes overflow int64");
    return r;
}

void check_strides(const char* fn, const char* name, const AttentionStrides& s) {
    if (s.batch < 0 || s.head < 0 || s.seq < 0)
        fail(fn, std::string(name) + " strides must be >= 0, got (" + std::to_string(s.batch) + ", " +
                     std::to_string(s.head) + ", " + std::to_string(s.seq) + ")");
}

template <class T>
Problem<T> make_problem(const char* fn, const AttentionShape& s, const AttentionOptions& opt) {
    if (s.batch < 0 || s.heads < 0 || s.q_len < 0 || s.k_len < 0)
        fail(fn, "sizes must be >= 0, got B=" + std::to_string(s.batch) + " H=" + std::to_string(s.heads) +
                     " Tq=" + std::to_string(s.q_len) + " Tk=" + std::to_string(s.k_len));
    if (s.head_dim < 1 || s.head_dim > kMaxHeadDim)
        fail(fn, "head_dim must be in [1, " + std::to_string(kMaxHeadDim) + "], got " + std::to_string(s.head_dim));
    if (opt.causal && s.k_len < s.q_len)
        fail(fn, "causal attention needs Tk >= Tq, got Tq=" + std::to_string(s.q_len) +
                     " Tk=" + std::to_string(s.k_len));
    if (!(opt.dropout_p >= 0.0 && opt.dropout_p < 1.0))
        fail(fn, "dropout_p must be in [0, 1), got " + std::to_string(opt.dropout_p));
    const int64_t bh = checked_mul(fn, s.batch, s.heads);
    checked_mul(fn, checked_mul(fn, bh, std::max(s.q_len, s.k_len) + kBQ), s.head_dim + kBQ);
    checked_mul(fn, checked_mul(fn, bh, s.q_len), s.k_len);

    Problem<T> pr;
    pr.B = s.batch;
    pr.H = s.heads;
    pr.Tq = s.q_len;
    pr.Tk = s.k_len;
    pr.d = s.head_dim;
    pr.dp = round_up(s.head_dim, Vec<T>::W);
    pr.off = s.k_len - s.q_len;
    pr.n_qt = (s.q_len + kBQ - 1) / kBQ;
    pr.n_kt = (s.k_len + kBK - 1) / kBK;
    pr.causal = opt.causal;
    pr.key_mask = opt.key_mask;
    pr.scale = T(1.0 / std::sqrt(double(s.head_dim)));
    if (opt.dropout_p > 0.0) {
        pr.dropout = true;
        pr.threshold = uint64_t(std::nearbyint(opt.dropout_p * 4294967296.0));  // round half even, as Python
        pr.drop_scale = T(1.0 / (1.0 - opt.dropout_p));
        pr.mixed_key = mix64(opt.dropout_key);
    }
    return pr;
}

void need(const char* fn, const char* name, const void* p, bool nonempty) {
    if (nonempty && p == nullptr) fail(fn, std::string(name) + " is null with a nonzero size");
}

template <class T>
void forward_impl(const AttentionShape& s, const T* q, AttentionStrides qs, const T* k, AttentionStrides ks,
                  const T* v, AttentionStrides vs, T* out, AttentionStrides os, T* lse,
                  const AttentionOptions& opt) {
    const char* fn = "attention_forward";
    Problem<T> pr = make_problem<T>(fn, s, opt);
    for (auto [name, st] : {std::pair{"q", qs}, std::pair{"k", ks}, std::pair{"v", vs}, std::pair{"out", os}})
        check_strides(fn, name, st);
    const bool nq = pr.B * pr.H * pr.Tq > 0, nk = pr.B * pr.H * pr.Tk > 0;
    need(fn, "q", q, nq);
    need(fn, "k", k, nk);
    need(fn, "v", v, nk);
    need(fn, "out", out, nq);
    need(fn, "lse", lse, nq);
    if (!nq) return;
    pr.q = q, pr.k = k, pr.v = v, pr.qs = qs, pr.ks = ks, pr.vs = vs;
    pr.out = out, pr.os = os, pr.lse = lse;
    const int64_t BH = pr.B * pr.H;
    const RangeFn<T> tiles = variants<T>().forward;
    // Tasks: (b, h, a range of query tiles); each packs its keys and values once. Ranges split a
    // (b, h) only when B·H is small next to the thread count, into pieces of about equal work
    // (under the causal mask query tile t sees t + 1 key tiles), and run biggest first. The
    // split does not change any result: every query tile is computed the same way in any task.
    const int threads = detail::parallel_threads();
    const int64_t pieces = std::min(pr.n_qt, (4 * int64_t(threads) + BH - 1) / BH);
    struct Task {
        int64_t bh, qa, qb, work;
    };
    std::vector<Task> tasks;
    tasks.reserve(size_t(BH * pieces));
    {
        std::vector<int64_t> cum(size_t(pr.n_qt + 1), 0);  // cumulative key tiles
        for (int64_t t = 0; t < pr.n_qt; ++t)
            cum[size_t(t + 1)] = cum[size_t(t)] + pr.first_key_tile_end(t * kBQ, std::min(kBQ, pr.Tq - t * kBQ));
        int64_t qa = 0;
        for (int64_t p = 1; p <= pieces && qa < pr.n_qt; ++p) {
            int64_t qb = qa + 1;  // smallest end with cum >= p/pieces of the total
            while (qb < pr.n_qt && cum[size_t(qb)] * pieces < cum[size_t(pr.n_qt)] * p) ++qb;
            if (p == pieces) qb = pr.n_qt;
            for (int64_t bh = 0; bh < BH; ++bh) tasks.push_back({bh, qa, qb, cum[size_t(qb)] - cum[size_t(qa)]});
            qa = qb;
        }
    }
    std::stable_sort(tasks.begin(), tasks.end(), [](const Task& x, const Task& y) { return x.work > y.work; });
    run_tasks<T>(int64_t(tasks.size()), fwd_ws_elems(pr), pr.flops(), [&](int64_t t, T* ws) {
        const Task& tk = tasks[size_t(t)];
        tiles(pr, tk.bh, tk.qa, tk.qb, ws);
    });
}

template <class T>
void backward_impl(const AttentionShape& s, const T* q, AttentionStrides qs, const T* k, AttentionStrides ks,
                   const T* v, AttentionStrides vs, const T* o, AttentionStrides os, const T* lse, const T* dout,
                   AttentionStrides dos, T* dq, AttentionStrides dqs, T* dk, AttentionStrides dks, T* dv,
                   AttentionStrides dvs, const AttentionOptions& opt) {
    const char* fn = "attention_backward";
    Problem<T> pr = make_problem<T>(fn, s, opt);
    for (auto [name, st] : {std::pair{"q", qs}, std::pair{"k", ks}, std::pair{"v", vs}, std::pair{"out", os},
                            std::pair{"dout", dos}, std::pair{"dq", dqs}, std::pair{"dk", dks},
                            std::pair{"dv", dvs}})
        check_strides(fn, name, st);
    const bool nq = pr.B * pr.H * pr.Tq > 0, nk = pr.B * pr.H * pr.Tk > 0;
    need(fn, "q", q, nq);
    need(fn, "out", o, nq);
    need(fn, "lse", lse, nq);
    need(fn, "dout", dout, nq);
    need(fn, "dq", dq, nq);
    need(fn, "k", k, nk);
    need(fn, "v", v, nk);
    need(fn, "dk", dk, nk);
    need(fn, "dv", dv, nk);
    if (!nq && !nk) return;
    pr.q = q, pr.k = k, pr.v = v, pr.qs = qs, pr.ks = ks, pr.vs = vs;
    pr.o = o, pr.os = os, pr.lse_in = lse, pr.dout = dout, pr.dos = dos;
    pr.dq = dq, pr.dqs = dqs, pr.dk = dk, pr.dks = dks, pr.dv = dv, pr.dvs = dvs;
    const int64_t BH = pr.B * pr.H;
    if (pr.n_kt == 0) {  // no keys: dq = 0
        for (int64_t bh = 0; bh < BH; ++bh)
            for (int64_t i = 0; i < pr.Tq; ++i)
                std::fill_n(dq + (bh / pr.H) * dqs.batch + (bh % pr.H) * dqs.head + i * dqs.seq, pr.d, T(0));
        return;
    }
    // key chunks per (b, h): a function of the shape only (thread-count independent results)
    int64_t chunks = std::min(pr.n_kt, (kMinBackwardTasks + BH - 1) / BH);
    pr.kt_per_chunk = (pr.n_kt + chunks - 1) / chunks;
    pr.chunks = chunks = (pr.n_kt + pr.kt_per_chunk - 1) / pr.kt_per_chunk;
    std::unique_ptr<T[], AlignedFree> partial;
    if (chunks > 1) {
        const int64_t n = checked_mul(fn, checked_mul(fn, BH * chunks, pr.Tq), pr.dp);
        partial.reset(static_cast<T*>(::operator new[](size_t(std::max<int64_t>(n, 1)) * sizeof(T),
                                                       std::align_val_t(64))));
        pr.dq_partial = partial.get();
    }
    const Variants<T> fns = variants<T>();
    // biggest first: under the causal mask the first key chunks are seen by the most queries
    run_tasks<T>(BH * chunks, bwd_ws_elems(pr), 2.5 * pr.flops(), [&](int64_t t, T* ws) {
        fns.backward(pr, t % BH, t / BH, ws);
    });
    if (chunks > 1)
        run_tasks<T>(BH * pr.n_qt, 0, double(BH * chunks * pr.Tq * pr.d),
                     [&](int64_t t, T* ws) { fns.reduce(pr, t / pr.n_qt, t % pr.n_qt, ws); });
}

}  // namespace

uint32_t attention_dropout_bits(uint64_t key, uint64_t e) {
    return uint32_t(mix64(mix64(key) + (e + 1) * kGolden) >> 32);
}

void attention_forward(const AttentionShape& shape, const float* q, AttentionStrides q_strides, const float* k,
                       AttentionStrides k_strides, const float* v, AttentionStrides v_strides, float* out,
                       AttentionStrides out_strides, float* lse, const AttentionOptions& options) {
    forward_impl(shape, q, q_strides, k, k_strides, v, v_strides, out, out_strides, lse, options);
}
void attention_forward(const AttentionShape& shape, const double* q, AttentionStrides q_strides, const double* k,
                       AttentionStrides k_strides, const double* v, AttentionStrides v_strides, double* out,
                       AttentionStrides out_strides, double* lse, const AttentionOptions& options) {
    forward_impl(shape, q, q_strides, k, k_strides, v, v_strides, out, out_strides, lse, options);
}
void attention_backward(const AttentionShape& shape, const float* q, AttentionStrides q_strides, const float* k,
                        AttentionStrides k_strides, const float* v, AttentionStrides v_strides, const float* out,
                        AttentionStrides out_strides, const float* lse, const float* dout,
                        AttentionStrides dout_strides, float* dq, AttentionStrides dq_strides, float* dk,
                        AttentionStrides dk_strides, float* dv, AttentionStrides dv_strides,
                        const AttentionOptions& options) {
    backward_impl(shape, q, q_strides, k, k_strides, v, v_strides, out, out_strides, lse, dout, dout_strides, dq,
                  dq_strides, dk, dk_strides, dv, dv_strides, options);
}
void attention_backward(const AttentionShape& shape, const double* q, AttentionStrides q_strides, const double* k,
                        AttentionStrides k_strides, const double* v, AttentionStrides v_strides, const double* out,
                        AttentionStrides out_strides, const double* lse, const double* dout,
                        AttentionStrides dout_strides, double* dq, AttentionStrides dq_strides, double* dk,
                        AttentionStrides dk_strides, double* dv, AttentionStrides dv_strides,
                        const AttentionOptions& options) {
    backward_impl(shape, q, q_strides, k, k_strides, v, v_strides, out, out_strides, lse, dout, dout_strides, dq,
                  dq_strides, dk, dk_strides, dv, dv_strides, options);
}

}  // namespace pygpt
