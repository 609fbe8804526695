// Fused scaled-dot-product attention on the CPU, forward and backward, on raw host pointers.
//
//   q (B, H, Tq, d), k and v (B, H, Tk, d), out (B, H, Tq, d), lse (B, H, Tq)
//   S = q kᵀ / √d,  masked entries -inf,  P = softmax(S) along keys,  out = (P ∘ drop) v
//   lse[b, h, i] = log Σ_j exp(S_ij)   (the only thing the forward saves besides out;
//                                        +inf for a row with no allowed key)
//
// Masks: causal allows key j for query i iff j <= i + (Tk - Tq) (the last query sees the last key,
// as a KV cache needs; needs Tk >= Tq); key_mask (B, Tk) bytes, nonzero = attend (nullptr: all).
// A row with no allowed key gives out = 0 and zero gradients.
//
// Dropout on the probabilities (probability p, kept values scaled by 1/(1-p) rounded to T):
// element e = ((b H + h) Tq + i) Tk + j is kept iff  attention_dropout_bits(key, e) >= round(p 2^32),
// the SplitMix64 scheme of pygpt/random.py, so any host can rebuild the mask.
//
// Layout: q, k, v, out, dout, dq, dk, dv are read/written through element strides for the batch,
// head and sequence dimensions; the last (head) dimension is contiguous. So the packed projection
// viewed as (B, T, 3, H, d) gives q = view[:, :, 0] with strides (T·3Hd, d, 3Hd) and needs no copy.
// lse and key_mask are contiguous. Outputs must not overlap inputs or each other.
//
// Results are deterministic and do not depend on the thread count (see attention.cpp). Extra
// memory is O(threads · T · d) (+ O(32 · T · d) for dq when B·H < 32), never O(T²).
// Every function throws std::invalid_argument for bad sizes before touching memory: negative
// sizes, head_dim outside [1, 256], null pointers with nonzero size, causal with Tk < Tq,
// dropout_p outside [0, 1) or NaN, strides < 0.
#pragma once

#include <cstdint>

namespace pygpt {

struct AttentionShape {
    int64_t batch = 0;     // B
    int64_t heads = 0;     // H
    int64_t q_len = 0;     // Tq
    int64_t k_len = 0;     // Tk (also the length of v)
    int64_t head_dim = 0;  // d, 1..256
};

/// Element strides of a (B, H, T, d) operand; the d dimension has stride 1.
struct AttentionStrides {
    int64_t batch = 0;
    int64_t head = 0;
    int64_t seq = 0;
};

/// Contiguous (B, H, T, d) strides for a sequence length t.
inline AttentionStrides attention_contiguous(const AttentionShape& s, int64_t t) {
    return {s.heads * t * s.head_dim, t * s.head_dim, s.head_dim};
}

struct AttentionOptions {
    bool causal = true;
    const uint8_t* key_mask = nullptr;  // (B, Tk) contiguous, nonzero = attend; nullptr = all keys
    double dropout_p = 0.0;             // in [0, 1)
    uint64_t dropout_key = 0;           // from pygpt.random.Generator.next_key()
};

/// The top 32 random bits of element e for dropout key `key` (pygpt/random.py):
/// mix64(mix64(key) + (e + 1) · 0x9E3779B97F4A7C15) >> 32.
uint32_t attention_dropout_bits(uint64_t key, uint64_t e);

/// out and lse (both overwritten) from q, k, v.
void attention_forward(const AttentionShape& shape, const float* q, AttentionStrides q_strides, const float* k,
                       AttentionStrides k_strides, const float* v, AttentionStrides v_strides, float* out,
                       AttentionStrides out_strides, float* lse, const AttentionOptions& options);
void attention_forward(const AttentionShape& shape, const double* q, AttentionStrides q_strides, const double* k,
                       AttentionStrides k_strides, const double* v, AttentionStrides v_strides, double* out,
                       AttentionStrides out_strides, double* lse, const AttentionOptions& options);

/// dq, dk, dv (overwritten) from the forward's inputs, its out and lse, and dout = ∂L/∂out.
/// Recomputes P from lse; D = rowsum(dout ∘ out); dS = P ∘ (dP - D) with dP = (dout vᵀ) ∘ drop.
void attention_backward(const AttentionShape& shape, const float* q, AttentionStrides q_strides, const float* k,
                        AttentionStrides k_strides, const float* v, AttentionStrides v_strides, const float* out,
                        AttentionStrides out_strides, const float* lse, const float* dout,
                        AttentionStrides dout_strides, float* dq, AttentionStrides dq_strides, float* dk,
                        AttentionStrides dk_strides, float* dv, AttentionStrides dv_strides,
                        const AttentionOptions& options);
void attention_backward(const AttentionShape& shape, const double* q, AttentionStrides q_strides, const double* k,
                        AttentionStrides k_strides, const double* v, AttentionStrides v_strides, const double* out,
                        AttentionStrides out_strides, const double* lse, const double* dout,
                        AttentionStrides dout_strides, double* dq, AttentionStrides dq_strides, double* dk,
                        AttentionStrides dk_strides, double* dv, AttentionStrides dv_strides,
                        const AttentionOptions& options);

}  // namespace pygpt
