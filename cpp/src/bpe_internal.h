// Private helpers of the BPE code (cpp/src/bpe_*.cpp): character classes, the GPT-2 scanner,
// hashing of short byte strings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pygpt/bpe.h"

namespace pygpt::bpe::detail {

// Generated tables (cpp/src/unicode_tables.inc, defined in bpe_unicode.cpp).
extern const unsigned char kClassStage1[];
extern const unsigned char kClassStage2[];

enum : uint8_t { kL = 0, kN = 1, kS = 2, kO = 3 };

// Class of an ASCII byte (index < 128).
struct AsciiClasses {
    uint8_t c[128];
    constexpr AsciiClasses() : c() {
        for (int b = 0; b < 128; ++b) {
            uint8_t k = kO;
            if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) k = kL;
            else if (b >= '0' && b <= '9') k = kN;
            else if ((b >= 0x09 && b <= 0x0D) || b == ' ') k = kS;
            c[b] = k;
        }
    }
};
inline constexpr AsciiClasses kAscii{};

inline uint8_t class_of_cp(uint32_t cp) {
    if (cp > 0x10FFFF) return kO;
    return kClassStage2[unsigned(kClassStage1[cp >> 8]) * 256u + (cp & 255u)];
}

/// Decode the (non-ASCII) character at s[0] (s < end): its class and byte length. Invalid UTF-8
/// (bad lead, missing/bad continuation, overlong, surrogate, > U+10FFFF) is one byte of class OTHER.
inline uint8_t class_multibyte(const uint8_t* s, const uint8_t* end, size_t* len) {
    const uint32_t b0 = s[0];
    const ptrdiff_t avail = end - s;
    uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        if (avail < 2 || (s[1] & 0xC0) != 0x80) goto invalid;
        cp = ((b0 & 0x1F) << 6) | (s[1] & 0x3F);
        *len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (avail < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) goto invalid;
        cp = ((b0 & 0x0F) << 12) | (uint32_t(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) goto invalid;
        *len = 3;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (avail < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) goto invalid;
        cp = ((b0 & 0x07) << 18) | (uint32_t(s[1] & 0x3F) << 12) | (uint32_t(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if (cp < 0x10000 || cp > 0x10FFFF) goto invalid;
        *len = 4;
    } else {
        goto invalid;
    }
    return class_of_cp(cp);
invalid:
    *len = 1;
    return kO;
}

inline uint8_t class_at(const uint8_t* s, const uint8_t* end, size_t* len) {
    const uint8_t b = *s;
    if (b < 0x80) {
        *len = 1;
        return kAscii.c[b];
    }
    return class_multibyte(s, end, len);
}

/// The GPT-2 scanner (see pygpt/tokenizer/pretokenize.py for the rules, which it mirrors line by
/// line): calls emit(begin, end) for each piece of s[0, n), in order.
template <class Emit>
inline void scan(const uint8_t* s, size_t n, Emit&& emit) {
    const uint8_t* const end = s + n;
    size_t i = 0;
    while (i < n) {
        const uint8_t c = s[i];
        // ASCII letters: the common case, a run of them with no space prefix.
        if (c < 0x80 && kAscii.c[c] == kL) {
            size_t j = i + 1;
            for (;;) {
                while (j < n && s[j] < 0x80 && kAscii.c[s[j]] == kL) ++j;
                if (j < n && s[j] >= 0x80) {
                    size_t l;
                    if (class_multibyte(s + j, end, &l) == kL) {
                        j += l;
                        continue;
                    }
                }
                break;
            }
            emit(i, j);
            i = j;
            continue;
        }
        // 1. contractions 's 'd 'm 't 'll 've 're (ASCII apostrophe, lower case)
        if (c == '\'' && i + 1 < n) {
            const uint8_t d = s[i + 1];
            if (d == 's' || d == 'd' || d == 'm' || d == 't') {
                emit(i, i + 2);
                i += 2;
                continue;
            }
            if (i + 2 < n) {
                const uint8_t e = s[i + 2];
                if ((d == 'l' && e == 'l') || (d == 'v' && e == 'e') || (d == 'r' && e == 'e')) {
                    emit(i, i + 3);
                    i += 3;
                    continue;
                }
            }
        }
        // 2.-4. optional U+0020, then a run of letters, numbers or "other"
        size_t len;
        uint8_t k = class_at(s + i, end, &len);
        size_t j = i;
        if (c == ' ' && i + 1 < n) {
            size_t l2;
            const uint8_t k2 = class_at(s + i + 1, end, &l2);
            if (k2 != kS) {
                j = i + 1;
                k = k2;
                len = l2;
            }
        }
        if (k != kS) {
            j += len;
            while (j < n) {
                const uint8_t b = s[j];
                if (b < 0x80) {
                    if (kAscii.c[b] != k) break;
                    ++j;
                } else {
                    size_t l;
                    if (class_multibyte(s + j, end, &l) != k) break;
                    j += l;
                }
            }
            emit(i, j);
            i = j;
            continue;
        }
        // 5.-6. whitespace run; before a non-space it leaves its last character behind
        j = i + len;
        size_t last = i, count = 1;
        while (j < n) {
            size_t l;
            if (class_at(s + j, end, &l) != kS) break;
            last = j;
            j += l;
            ++count;
        }
        if (j < n && count >= 2) j = last;
        emit(i, j);
        i = j;
    }
}

// ---- hashing of byte strings ----

inline uint64_t load_u64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

/// The first min(len, 8) bytes of p as an integer, zero-padded (same value however it is loaded).
/// `end` bounds the readable memory: a full 8-byte load is used when p + 8 <= end.
inline uint64_t load_prefix(const uint8_t* p, size_t len, const uint8_t* end) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (end - p >= 8) {
        const uint64_t w = load_u64(p);
        return len >= 8 ? w : (w & ((uint64_t(1) << (8 * len)) - 1));
    }
#else
    (void)end;
#endif
    uint64_t v = 0;
    std::memcpy(&v, p, len < 8 ? len : 8);
    return v;
}

inline uint64_t mix64(uint64_t x) {
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    return x;
}

/// Hash of a byte string whose first bytes (load_prefix) are `w0`.
inline uint64_t hash_bytes(const uint8_t* p, size_t len, uint64_t w0) {
    uint64_t h = mix64(w0 ^ (uint64_t(len) * 0x9E3779B97F4A7C15ULL));
    if (len > 8) {
        size_t i = 8;
        for (; i + 8 <= len; i += 8) h = mix64(h ^ load_u64(p + i)) + i;
        if (i < len) {
            uint64_t t = 0;
            std::memcpy(&t, p + i, len - i);
            h = mix64(h ^ t ^ 0x5bd1e9955bd1e995ULL);
        }
    }
    return h;
}

inline uint64_t hash_pair(uint64_t key) {
    return mix64(key * 0x9E3779B97F4A7C15ULL);
}

/// Smallest power of two >= n (n >= 1).
inline size_t pow2_at_least(size_t n) {
    size_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

}  // namespace pygpt::bpe::detail
