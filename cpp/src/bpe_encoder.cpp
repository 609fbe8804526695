// Byte-level BPE encoder/decoder (cpp/include/pygpt/bpe.h). Design notes: docs/bpe.md.
//
// Per piece (from the scanner in bpe_internal.h):
//   1. one byte -> its rank; two bytes -> the 256 x 256 byte-pair table (a 2-byte token is always
//      the pair of its bytes);
//   2. whole-piece lookup in an open-addressing table keyed by (first 8 bytes, length): one probe
//      sequence over 16-byte slots, an arena compare only for tokens longer than 8 bytes;
//   3. otherwise merge by pair of ids: a flat open-addressing table maps (left id, right id) to
//      the rank of the concatenated bytes -- tiktoken's rule -- holding each token's canonical
//      pair only (see the constructor for why that changes no result);
//        * pieces of <= kShortMax bytes: arrays of ids and pair ranks, scan for the lowest rank
//          (leftmost on ties), merge, update the two neighbouring pair ranks; memoized per call;
//        * longer pieces, monotone vocabularies (every pair makes a larger id than its halves, as
//          BPE training produces): one rank at a time, buckets of positions per rank
//          (merge_long_monotone);
//        * longer pieces, other vocabularies: a linked list of parts plus a bucket queue over
//          ranks (a 3-level bitmap finds the lowest non-empty rank; each bucket drains its
//          positions in ascending order, a side heap takes positions added while it drains),
//          stale entries skipped lazily (merge_long).
//      Both long paths are O(n log n) at worst and close to linear in practice.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>

#include "bpe_internal.h"
#include "parallel_for.h"

namespace pygpt::bpe {

using detail::hash_bytes;
using detail::hash_pair;
using detail::load_prefix;

namespace {

constexpr Rank kNone = 0xFFFFFFFFu;
constexpr Rank kMaxId = 0x7FFFFFFEu;
constexpr size_t kShortMax = 64;                // longer pieces take a long-piece path
constexpr size_t kCanonicalMax = 1024;          // longer tokens keep every split in the pair table
constexpr size_t kDeadLimit = size_t(1) << 31;  // merge_long_monotone stores offsets in 31 bits
constexpr size_t kBatchUnit = size_t(64) << 10;  // encode_batch cuts texts longer than 2x this

// Python-style repr of bytes (b'...') for error messages that match the reference's.
std::string bytes_repr(std::string_view b) {
    const bool has_sq = b.find('\'') != std::string_view::npos;
    const bool has_dq = b.find('"') != std::string_view::npos;
    const char quote = (has_sq && !has_dq) ? '"' : '\'';
    std::string out = "b";
    out += quote;
    static const char* hex = "0123456789abcdef";
    for (unsigned char c : b) {
        if (c == '\\' || c == static_cast<unsigned char>(quote)) {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\t') out += "\\t";
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c < 0x20 || c >= 0x7F) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else out += static_cast<char>(c);
    }
    out += quote;
    return out;
}

// repr of a str given as UTF-8, like Python's for printable text (quotes chosen as Python does).
std::string str_repr(std::string_view s) {
    const bool has_sq = s.find('\'') != std::string_view::npos;
    const bool has_dq = s.find('"') != std::string_view::npos;
    const char quote = (has_sq && !has_dq) ? '"' : '\'';
    static const char* hex = "0123456789abcdef";
    std::string out(1, quote);
    for (unsigned char c : s) {
        if (c == '\\' || c == static_cast<unsigned char>(quote)) {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\t') out += "\\t";
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c < 0x20 || c == 0x7F) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else out += static_cast<char>(c);
    }
    out += quote;
    return out;
}

bool valid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const uint8_t*>(s.data());
    const auto* end = p + s.size();
    while (p < end) {
        if (*p < 0x80) {
            ++p;
            continue;
        }
        size_t len;
        // class_multibyte reports invalid sequences as length 1 with class OTHER; tell them apart
        // from valid ones by re-checking the lead byte's expected length.
        detail::class_multibyte(p, end, &len);
        const uint8_t b0 = *p;
        const size_t want = (b0 >= 0xC2 && b0 <= 0xDF) ? 2 : (b0 >= 0xE0 && b0 <= 0xEF) ? 3 : (b0 >= 0xF0 && b0 <= 0xF4) ? 4 : 0;
        if (want == 0 || len != want) return false;
        p += len;
    }
    return true;
}

// ---- strict base64 (the alphabet of RFC 4648 section 4, '=' padding only at the end) ----
int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

bool b64_decode(std::string_view in, std::string& out) {
    out.clear();
    if (in.size() % 4 != 0) return false;
    size_t pad = 0;
    if (!in.empty() && in.back() == '=') pad = (in.size() >= 2 && in[in.size() - 2] == '=') ? 2 : 1;
    const size_t body = in.size() - pad;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < body; ++i) {
        const int v = b64_value(static_cast<unsigned char>(in[i]));
        if (v < 0) return false;
        acc = (acc << 6) | uint32_t(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xFF);
        }
    }
    // a quad with padding must hold 2 (==) or 3 (=) data characters
    if (pad && (body % 4) != 4 - pad) return false;
    return true;
}

// ---- 3-level bitmap over ranks: set / clear / find the lowest set bit ----
struct RankBitmap {
    std::vector<uint64_t> l0, l1, l2;
    void resize(size_t n_bits) {
        const size_t w0 = (n_bits + 63) / 64, w1 = (w0 + 63) / 64, w2 = (w1 + 63) / 64;
        if (l0.size() < w0) l0.resize(w0, 0);
        if (l1.size() < w1) l1.resize(w1, 0);
        if (l2.size() < w2) l2.resize(w2, 0);
    }
    void set(uint32_t r) {
        l0[r >> 6] |= uint64_t(1) << (r & 63);
        l1[r >> 12] |= uint64_t(1) << ((r >> 6) & 63);
        l2[r >> 18] |= uint64_t(1) << ((r >> 12) & 63);
    }
    void clear(uint32_t r) {
        uint64_t& w = l0[r >> 6];
        w &= ~(uint64_t(1) << (r & 63));
        if (w) return;
        uint64_t& v = l1[r >> 12];
        v &= ~(uint64_t(1) << ((r >> 6) & 63));
        if (v) return;
        l2[r >> 18] &= ~(uint64_t(1) << ((r >> 12) & 63));
    }
    uint32_t first() const {
        for (size_t i2 = 0; i2 < l2.size(); ++i2) {
            if (!l2[i2]) continue;
            const size_t i1 = i2 * 64 + size_t(__builtin_ctzll(l2[i2]));
            const size_t i0 = i1 * 64 + size_t(__builtin_ctzll(l1[i1]));
            return uint32_t(i0 * 64 + size_t(__builtin_ctzll(l0[i0])));
        }
        return kNone;
    }
};

// Scratch for the long-piece merge, one per thread, reused across calls (only touched entries
// are reset, so a call costs O(piece), not O(vocabulary)).
struct LongScratch {
    std::vector<Rank> tok, prank;
    std::vector<uint32_t> nxt, prv;
    std::vector<uint32_t> bucket_of;  // rank -> bucket index, kNone when empty
    struct Bucket {
        std::vector<uint32_t> items;  // positions; sorted once the bucket starts draining
        std::vector<uint32_t> late;   // min-heap of positions added while draining
        size_t cursor = 0;
        bool sorted = true, active = false;
    };
    std::vector<Bucket> pool;
    std::vector<uint32_t> free_buckets;
    RankBitmap bitmap;
    std::vector<std::pair<uint64_t, uint32_t>> cand;   // merge_long_monotone: (pair key, position) of the
                                                       // pairs made by one rank's merges, to look up
    std::vector<uint32_t> pair_count;                  // merge_long_monotone: 256 x 256 byte-pair counts (kept zero)
    std::vector<uint32_t*> pair_dst;                   // ... and each byte pair's write cursor in its bucket

    void prepare(size_t n_vocab) {
        if (bucket_of.size() < n_vocab) bucket_of.resize(n_vocab, kNone);
        bitmap.resize(n_vocab);
        if (pair_count.empty()) {
            pair_count.assign(256 * 256, 0);
            pair_dst.assign(256 * 256, nullptr);
        }
    }
    // The bucket of rank r, made (empty) if r has none.
    uint32_t bucket_for(Rank r) {
        uint32_t b = bucket_of[r];
        if (b == kNone) {
            if (free_buckets.empty()) {
                b = uint32_t(pool.size());
                pool.emplace_back();
            } else {
                b = free_buckets.back();
                free_buckets.pop_back();
            }
            bucket_of[r] = b;
            bitmap.set(r);
        }
        return b;
    }
    // After a piece of more than 4 Mi bytes, give the per-position memory back (this scratch lives
    // as long as its thread).
    void shrink_after(size_t n) {
        if (n <= (size_t(1) << 22)) return;
        std::vector<Rank>().swap(tok);
        std::vector<Rank>().swap(prank);
        std::vector<uint32_t>().swap(nxt);
        std::vector<uint32_t>().swap(prv);
        std::vector<Bucket>().swap(pool);
        std::vector<uint32_t>().swap(free_buckets);
        std::vector<std::pair<uint64_t, uint32_t>>().swap(cand);
    }
    void push(Rank r, uint32_t pos) {
        if (r == kNone) return;
        Bucket& B = pool[bucket_for(r)];
        if (B.active) {
            B.late.push_back(pos);
            std::push_heap(B.late.begin(), B.late.end(), std::greater<uint32_t>());
        } else {
            if (!B.items.empty() && B.items.back() > pos) B.sorted = false;
            B.items.push_back(pos);
        }
    }
    // Monotone path: r's bucket is never the one being drained.
    void push_above(Rank r, uint32_t pos) {
        if (r == kNone) return;
        Bucket& B = pool[bucket_for(r)];
        if (!B.items.empty() && B.items.back() > pos) B.sorted = false;
        B.items.push_back(pos);
    }
    void release(Rank r) {
        const uint32_t b = bucket_of[r];
        Bucket& B = pool[b];
        B.items.clear();
        B.late.clear();
        B.cursor = 0;
        B.sorted = true;
        B.active = false;
        free_buckets.push_back(b);
        bucket_of[r] = kNone;
        bitmap.clear(r);
    }
    // The leftmost pending position of rank r (r's bucket must be non-empty).
    uint32_t pop(Rank r) {
        const uint32_t b = bucket_of[r];
        Bucket& B = pool[b];
        if (!B.active) {
            if (!B.sorted) std::sort(B.items.begin(), B.items.end());
            B.active = true;
            B.cursor = 0;
        }
        uint32_t pos;
        const bool has_item = B.cursor < B.items.size();
        if (has_item && (B.late.empty() || B.items[B.cursor] < B.late.front())) {
            pos = B.items[B.cursor++];
        } else {
            std::pop_heap(B.late.begin(), B.late.end(), std::greater<uint32_t>());
            pos = B.late.back();
            B.late.pop_back();
        }
        if (B.cursor == B.items.size() && B.late.empty()) {
            B.items.clear();
            B.cursor = 0;
            B.sorted = true;
            B.active = false;
            free_buckets.push_back(b);
            bucket_of[r] = kNone;
            bitmap.clear(r);
        }
        return pos;
    }
};

LongScratch& long_scratch() {
    static thread_local LongScratch s;
    return s;
}

// Memo of merged pieces (those that are not whole tokens), per encode call or per thread of a batch:
// rare words repeat, and merging costs pair-table lookups that mostly miss the caches.
// alignas(64): encode_batch keeps one cache per thread side by side in a vector, and the counters
// below change on every lookup; without the padding two threads' caches share a cache line and the
// false sharing cost 1.5x the CPU time of a 2-thread batch (measured 2026-11-23).
struct alignas(64) PieceCache {
    struct Entry {
        uint64_t hash;
        uint32_t key_off, val_off;
        uint16_t key_len, val_len;  // key_len 0 = empty
    };
    static constexpr size_t kMaxEntries = size_t(1) << 16;
    std::vector<Entry> table;
    std::string keys;
    std::vector<Rank> vals;
    size_t used = 0;
    // Adaptive: text whose merged pieces rarely repeat (random characters) gains nothing and pays
    // for the misses, so after each 4096 lookups with fewer than 1/8 hits the memo switches off.
    size_t lookups = 0, hits = 0;
    bool enabled = true;

    void note(bool hit) {
        ++lookups;
        hits += hit;
        if (lookups == 4096) {
            if (hits * 8 < lookups) {
                enabled = false;
                std::vector<Entry>().swap(table);
                std::string().swap(keys);
                std::vector<Rank>().swap(vals);
                used = 0;
            }
            lookups = hits = 0;
        }
    }

    const Rank* find(const uint8_t* p, size_t n, uint64_t h, size_t* m) const {
        if (table.empty()) return nullptr;
        const size_t mask = table.size() - 1;
        for (size_t i = size_t(h) & mask;; i = (i + 1) & mask) {
            const Entry& e = table[i];
            if (e.key_len == 0) return nullptr;
            if (e.hash == h && e.key_len == n && std::memcmp(keys.data() + e.key_off, p, n) == 0) {
                *m = e.val_len;
                return vals.data() + e.val_off;
            }
        }
    }
    void insert(const uint8_t* p, size_t n, uint64_t h, const Rank* ids, size_t m) {
        if (table.empty() || used >= kMaxEntries) {
            table.assign(table.empty() ? 1024 : table.size(), Entry{0, 0, 0, 0, 0});
            keys.clear();
            vals.clear();
            used = 0;
        }
        if ((used + 1) * 2 > table.size()) {
            std::vector<Entry> old(table.size() * 2, Entry{0, 0, 0, 0, 0});
            old.swap(table);
            const size_t mask = table.size() - 1;
            for (const Entry& e : old) {
                if (!e.key_len) continue;
                size_t i = size_t(e.hash) & mask;
                while (table[i].key_len) i = (i + 1) & mask;
                table[i] = e;
            }
        }
        const size_t mask = table.size() - 1;
        size_t i = size_t(h) & mask;
        while (table[i].key_len) i = (i + 1) & mask;
        table[i] = Entry{h, uint32_t(keys.size()), uint32_t(vals.size()), uint16_t(n), uint16_t(m)};
        keys.append(reinterpret_cast<const char*>(p), n);
        vals.insert(vals.end(), ids, ids + m);
        ++used;
    }
};

}  // namespace

// ------------------------------------------------------------------------------------------------

DisallowedSpecialError::DisallowedSpecialError(const std::string& token, size_t byte_offset)
    : std::invalid_argument("encountered disallowed special token " + str_repr(token) + " at byte " +
                            std::to_string(byte_offset)),
      token_(token),
      offset_(byte_offset) {}

struct Encoder::Impl {
    std::string arena;          // the bytes of every token (ordinary and special)
    std::vector<uint32_t> off;  // per id: offset in arena
    std::vector<uint32_t> len;  // per id: byte length, 0 = no such id
    std::vector<uint8_t> kind;  // per id: 0 none, 1 ordinary, 2 special
    Rank byte_rank[256];
    Rank n_vocab = 0;
    size_t n_ranks = 0;
    size_t max_len = 0;  // longest ordinary token
    TokenList specials;  // sorted by id

    struct Slot {
        uint64_t w0;   // first min(len, 8) bytes, zero-padded
        uint32_t len;  // 0 = empty slot
        Rank rank;
    };
    std::vector<Slot> slots;
    size_t slot_mask = 0;
    int slot_shift = 64;

    struct PairSlot {
        uint64_t key;  // (left << 32) | right; ~0 = empty
        Rank rank;
        uint32_t pad;
    };
    std::vector<PairSlot> pairs;      // used when ids need more than 21 bits
    std::vector<uint64_t> packed;     // (left << 42) | (right << 21) | rank; ~0 = empty (ids < 2^21)
    bool use_packed = false;
    size_t pair_mask = 0;
    int pair_shift = 64;
    std::vector<Rank> byte_pairs;  // 256 x 256: rank of the pair of two single-byte tokens
    // Every pair in the table makes a token with a larger id than both halves (true for vocabularies
    // made by BPE training, GPT-2's included): merging never creates a pair below the rank just
    // merged, so a piece can be merged one rank at a time (merge_long_monotone).
    bool monotone = false;
    std::vector<Rank> pair_left, pair_right;  // per id: its pair in the table (kNone if none)
    // per id: a 64-bit signature of the ids that follow it in some pair (bit sig(b) set for each
    // pair (id, b)); most (left, right) lookups in long pieces find no pair, and this small array
    // answers them without touching the 1 MB pair table
    std::vector<uint64_t> right_sig;
    static unsigned sig(Rank b) { return unsigned((uint64_t(b) * 0x9E3779B97F4A7C15ULL) >> 58); }
    Rank pair_rank_filtered(Rank a, Rank b) const {
        if (!((right_sig[a] >> sig(b)) & 1)) return kNone;
        return pair_rank(a, b);
    }
    void prefetch_pair(uint64_t key32) const {  // key32 = (left << 32) | right
        if (use_packed) {
            const uint64_t key = ((key32 >> 32) << 21) | (key32 & 0xFFFFFFFFu);
            __builtin_prefetch(&packed[size_t(hash_pair(key) >> pair_shift)]);
        } else {
            __builtin_prefetch(&pairs[size_t(hash_pair(key32) >> pair_shift)]);
        }
    }

    // ---- lookups ----
    Rank find(const uint8_t* p, size_t n, const uint8_t* end) const {
        const uint64_t w0 = load_prefix(p, n, end);
        return find(p, n, w0, hash_bytes(p, n, w0));
    }
    Rank find(const uint8_t* p, size_t n, uint64_t w0, uint64_t h) const {
        size_t i = size_t(h >> slot_shift);
        for (;;) {
            const Slot& s = slots[i];
            if (s.len == 0) return kNone;
            if (s.w0 == w0 && s.len == n &&
                (n <= 8 || std::memcmp(arena.data() + off[s.rank] + 8, p + 8, n - 8) == 0))
                return s.rank;
            i = (i + 1) & slot_mask;
        }
    }
    Rank pair_rank(Rank a, Rank b) const {
        if (use_packed) {
            const uint64_t key = (uint64_t(a) << 21) | b;
            size_t i = size_t(hash_pair(key) >> pair_shift);
            for (;;) {
                const uint64_t s = packed[i];
                if ((s >> 21) == key) return Rank(s & 0x1FFFFF);
                if (s == ~uint64_t(0)) return kNone;
                i = (i + 1) & pair_mask;
            }
        }
        const uint64_t key = (uint64_t(a) << 32) | b;
        size_t i = size_t(hash_pair(key) >> pair_shift);
        for (;;) {
            const PairSlot& s = pairs[i];
            if (s.key == key) return s.rank;
            if (s.key == ~uint64_t(0)) return kNone;
            i = (i + 1) & pair_mask;
        }
    }

    // ---- construction ----
    void build_pairs(const std::vector<std::pair<uint64_t, Rank>>& list) {
        const size_t n = detail::pow2_at_least(std::max<size_t>(16, 2 * list.size()));
        use_packed = n_vocab <= (Rank(1) << 21);
        if (use_packed) {
            packed.assign(n, ~uint64_t(0));
            pairs.clear();
        } else {
            pairs.assign(n, PairSlot{~uint64_t(0), kNone, 0});
            packed.clear();
        }
        pair_mask = n - 1;
        pair_shift = 64 - __builtin_ctzll(n);
        monotone = true;
        pair_left.assign(n_vocab, kNone);
        pair_right.assign(n_vocab, kNone);
        right_sig.assign(n_vocab, 0);
        for (const auto& [key, r] : list) {
            const Rank a = Rank(key >> 32), b = Rank(key & 0xFFFFFFFFu);
            insert_pair(a, b, r);
            right_sig[a] |= uint64_t(1) << sig(b);
            if (!(r > a && r > b)) monotone = false;
            if (pair_left[r] != kNone && (pair_left[r] != a || pair_right[r] != b)) monotone = false;  // one pair per rank
            pair_left[r] = a;
            pair_right[r] = b;
        }
        byte_pairs.assign(256 * 256, kNone);
        for (int x = 0; x < 256; ++x)
            for (int y = 0; y < 256; ++y) byte_pairs[size_t(x) * 256 + size_t(y)] = pair_rank(byte_rank[x], byte_rank[y]);
    }
    void insert_token(const uint8_t* p, size_t n, Rank r) {
        const uint64_t w0 = load_prefix(p, n, p + n);
        size_t i = size_t(hash_bytes(p, n, w0) >> slot_shift);
        while (slots[i].len != 0) i = (i + 1) & slot_mask;
        slots[i] = Slot{w0, uint32_t(n), r};
    }
    void insert_pair(Rank a, Rank b, Rank r) {
        if (use_packed) {
            const uint64_t key = (uint64_t(a) << 21) | b;
            size_t i = size_t(hash_pair(key) >> pair_shift);
            while (packed[i] != ~uint64_t(0)) {
                if ((packed[i] >> 21) == key) return;
                i = (i + 1) & pair_mask;
            }
            packed[i] = (key << 21) | r;
            return;
        }
        const uint64_t key = (uint64_t(a) << 32) | b;
        size_t i = size_t(hash_pair(key) >> pair_shift);
        while (pairs[i].key != ~uint64_t(0)) {
            if (pairs[i].key == key) return;  // same pair, same concatenation: already there
            i = (i + 1) & pair_mask;
        }
        pairs[i] = PairSlot{key, r, 0};
    }

    // ---- merging ----
    void merge_short(const uint8_t* p, size_t n, std::vector<Rank>& out) const {
        Rank ids[kShortMax], pr[kShortMax];
        for (size_t i = 0; i < n; ++i) ids[i] = byte_rank[p[i]];
        for (size_t i = 0; i + 1 < n; ++i) pr[i] = byte_pairs[size_t(p[i]) * 256 + p[i + 1]];
        size_t m = n;
        while (m > 1) {
            Rank best = kNone;
            size_t bi = 0;
            for (size_t i = 0; i + 1 < m; ++i) {
                if (pr[i] < best) {
                    best = pr[i];
                    bi = i;
                }
            }
            if (best == kNone) break;
            ids[bi] = best;
            // drop part bi+1 and pair bi+1 (the pair (bi, bi+1) is recomputed)
            if (bi + 2 < m) {
                std::memmove(ids + bi + 1, ids + bi + 2, (m - bi - 2) * sizeof(Rank));
                std::memmove(pr + bi + 1, pr + bi + 2, (m - bi - 2 - 1) * sizeof(Rank));
            }
            --m;
            pr[bi] = bi + 1 < m ? pair_rank(ids[bi], ids[bi + 1]) : kNone;
            if (bi > 0) pr[bi - 1] = pair_rank(ids[bi - 1], ids[bi]);
        }
        out.insert(out.end(), ids, ids + m);
    }

    void merge_long(const uint8_t* p, size_t n, std::vector<Rank>& out) const {
        if (n >= kNone) throw std::invalid_argument("encode: a single piece of 4 GiB or more is not supported");
        LongScratch& S = long_scratch();
        S.prepare(n_vocab);
        S.tok.resize(n);
        S.prank.resize(n);
        S.nxt.resize(n);
        S.prv.resize(n);
        Rank* tok = S.tok.data();
        Rank* prank = S.prank.data();
        uint32_t* nxt = S.nxt.data();
        uint32_t* prv = S.prv.data();
        const uint32_t END = uint32_t(n);
        for (size_t i = 0; i < n; ++i) {
            tok[i] = byte_rank[p[i]];
            nxt[i] = uint32_t(i + 1);
            prv[i] = i == 0 ? kNone : uint32_t(i - 1);
        }
        for (size_t i = 0; i + 1 < n; ++i) {
            prank[i] = pair_rank(tok[i], tok[i + 1]);
            S.push(prank[i], uint32_t(i));
        }
        prank[n - 1] = kNone;
        for (;;) {
            const Rank r = S.bitmap.first();
            if (r == kNone) break;
            const uint32_t at = S.pop(r);
            if (tok[at] == kNone || prank[at] != r) continue;  // stale entry
            const uint32_t q = nxt[at];
            tok[at] = r;
            tok[q] = kNone;
            prank[q] = kNone;
            const uint32_t nq = nxt[q];
            nxt[at] = nq;
            if (nq != END) prv[nq] = at;
            prank[at] = nq != END ? pair_rank(r, tok[nq]) : kNone;
            S.push(prank[at], at);
            const uint32_t l = prv[at];
            if (l != kNone) {
                prank[l] = pair_rank(tok[l], r);
                S.push(prank[l], l);
            }
        }
        for (uint32_t i = 0; i != END; i = nxt[i]) out.push_back(tok[i]);
        S.shrink_after(n);
    }


    // Long pieces with a monotone pair table: one pass per rank, in increasing order. A bucket per
    // rank holds the positions where that pair was created; when rank r comes up, its positions are
    // taken left to right (leftmost first, as the rule wants for overlaps like "aaa") and each is
    // checked against r's only pair (left[r], right[r]) -- no stale-entry bookkeeping. A part is
    // one 4-byte word per byte position: the token at a part's first byte; kDead | distance to the
    // part's start at its last byte (and kDead elsewhere inside), so neighbours are found in O(1).
    void merge_long_monotone(const uint8_t* p, size_t n, std::vector<Rank>& out) const {
        constexpr uint32_t kDead = 0x80000000u;
        LongScratch& S = long_scratch();
        S.prepare(n_vocab);
        S.tok.resize(n);
        Rank* tok = S.tok.data();
        for (size_t i = 0; i < n; ++i) tok[i] = byte_rank[p[i]];
        // Initial byte pairs by counting sort on the pair's two bytes: count per byte pair, size
        // each rank's bucket once, then write the positions in ascending order (no push_back).
        uint32_t* count = S.pair_count.data();  // 256 x 256, all zero between calls
        for (size_t i = 0; i + 1 < n; ++i) ++count[size_t(p[i]) * 256 + p[i + 1]];
        uint32_t** dst = S.pair_dst.data();  // byte pair -> next free slot in its rank's bucket
        try {
            for (size_t code = 0; code < 256 * 256; ++code) {
                if (count[code] == 0) continue;
                const Rank r = byte_pairs[code];
                if (r != kNone) {
                    std::vector<uint32_t>& items = S.pool[S.bucket_for(r)].items;
                    items.resize(count[code]);  // a byte pair is the canonical pair of one rank only
                    dst[code] = items.data();
                } else {
                    dst[code] = nullptr;
                }
                count[code] = 0;
            }
        } catch (...) {
            std::fill(S.pair_count.begin(), S.pair_count.end(), 0u);
            throw;
        }
        for (size_t i = 0; i + 1 < n; ++i) {
            uint32_t*& d = dst[size_t(p[i]) * 256 + p[i + 1]];
            if (d) *d++ = uint32_t(i);
        }
        const uint32_t N = uint32_t(n);
        for (Rank r = S.bitmap.first(); r != kNone; r = S.bitmap.first()) {
            const Rank A = pair_left[r], B = pair_right[r];
            const uint32_t lenA = len[A], lenB = len[B];
            LongScratch::Bucket& bucket = S.pool[S.bucket_of[r]];
            if (!bucket.sorted) std::sort(bucket.items.begin(), bucket.items.end());
            // Pushes below go to ranks > r, never to this bucket, but may grow the pool (moving the
            // Bucket objects, not their item buffers): iterate through a raw pointer.
            const uint32_t* items = bucket.items.data();
            const size_t n_items = bucket.items.size();
            // Merge every valid occurrence, left to right (rank-r merges create no rank-r pair), and
            // gather the new pairs around each merged part in the final state (ranks > r, so no
            // merge of this rank could have used them) while its bytes are still in cache. A
            // part's left pair is final when it is merged (later merges lie to its right); its
            // right pair once the next merge is done (which may absorb the right neighbour), so
            // it is gathered one merge late. A left pair whose left part was merged too is that
            // part's right pair. Gathered in ascending position order, so the buckets they go to
            // stay sorted; looked up afterwards with prefetching.
            const uint32_t lenR = len[r];
            const uint64_t sigR = right_sig[r];
            // At most two candidates per merge, and a merge per item and per 2 bytes at most:
            // written through a raw pointer into a buffer sized once per rank (push_back's
            // out-of-line growth path cost ~5% of the merge).
            const size_t max_cand = std::min<size_t>(2 * n_items, size_t(N) + 2);
            if (S.cand.size() < max_cand) S.cand.resize(max_cand);
            std::pair<uint64_t, uint32_t>* const cand = S.cand.data();
            size_t n_cand = 0;
            auto gather_right = [&](uint32_t at) {
                const uint32_t c = at + lenR;
                if (c < N && ((sigR >> sig(tok[c])) & 1)) cand[n_cand++] = {(uint64_t(r) << 32) | tok[c], at};
            };
            uint32_t prev = kNone;  // the last merged position whose right pair is not gathered yet
            for (size_t k = 0; k < n_items; ++k) {
                const uint32_t at = items[k];
                if (k + 32 < n_items) __builtin_prefetch(tok + items[k + 32]);  // positions are scattered
                if (tok[at] != A) continue;
                const uint32_t q = at + lenA;
                if (q >= N || tok[q] != B) continue;
                const uint32_t last = q + lenB - 1;
                tok[at] = r;
                tok[q] = kDead;
                tok[last] = kDead | (last - at);
                if (prev != kNone) gather_right(prev);
                if (at > 0) {
                    const uint32_t x = tok[at - 1];
                    const uint32_t w = (x & kDead) ? at - 1 - (x & ~kDead) : at - 1;
                    const Rank tw = tok[w];
                    if (tw != r && ((right_sig[tw] >> sig(r)) & 1)) cand[n_cand++] = {(uint64_t(tw) << 32) | r, w};
                }
                prev = at;
            }
            if (prev != kNone) gather_right(prev);
            for (size_t k = 0; k < n_cand; ++k) {
                if (k + 8 < n_cand) prefetch_pair(cand[k + 8].first);
                const uint64_t key = cand[k].first;
                S.push_above(pair_rank(Rank(key >> 32), Rank(key & 0xFFFFFFFFu)), cand[k].second);
            }
            S.release(r);
        }
        // Every position but a part's first has the kDead bit (see above): collect the others,
        // branch-free, instead of walking part to part (i += len[tok[i]], a chain of dependent
        // loads). buf: one block of positions' worth of ids.
        Rank buf[1024];
        for (uint32_t base = 0; base < N; base += 1024) {
            const uint32_t stop = std::min<uint32_t>(N, base + 1024);
            size_t w = 0;
            for (uint32_t i = base; i < stop; ++i) {
                buf[w] = tok[i];
                w += (tok[i] >> 31) ^ 1u;
            }
            out.insert(out.end(), buf, buf + w);
        }
        S.shrink_after(n);
    }

    inline void encode_piece(const uint8_t* p, size_t n, const uint8_t* end, std::vector<Rank>& out,
                             PieceCache* cache) const {
        if (n == 1) {
            out.push_back(byte_rank[*p]);
            return;
        }
        if (n == 2) {  // a 2-byte token is always the pair of its bytes
            const Rank r = byte_pairs[size_t(p[0]) * 256 + p[1]];
            if (r != kNone) {
                out.push_back(r);
            } else {
                out.push_back(byte_rank[p[0]]);
                out.push_back(byte_rank[p[1]]);
            }
            return;
        }
        if (n > kShortMax) {
            if (n <= max_len) {
                const Rank r = find(p, n, end);
                if (r != kNone) {
                    out.push_back(r);
                    return;
                }
            }
            if (monotone && n < kDeadLimit) merge_long_monotone(p, n, out);
            else merge_long(p, n, out);
            return;
        }
        const uint64_t w0 = load_prefix(p, n, end);
        const uint64_t h = hash_bytes(p, n, w0);
        if (n <= max_len) {
            const Rank r = find(p, n, w0, h);
            if (r != kNone) {
                out.push_back(r);
                return;
            }
        }
        if (cache && cache->enabled && n > 3) {
            size_t m;
            const Rank* ids = cache->find(p, n, h, &m);
            cache->note(ids != nullptr);
            if (ids) {
                out.insert(out.end(), ids, ids + m);
                return;
            }
            const size_t before = out.size();
            merge_short(p, n, out);
            if (cache->enabled) cache->insert(p, n, h, out.data() + before, out.size() - before);
            return;
        }
        merge_short(p, n, out);
    }

    void encode_ordinary(std::string_view text, std::vector<Rank>& out, PieceCache* cache) const {
        const auto* s = reinterpret_cast<const uint8_t*>(text.data());
        const uint8_t* end = s + text.size();
        detail::scan(s, text.size(), [&](size_t b, size_t e) { encode_piece(s + b, e - b, end, out, cache); });
    }

    const std::pair<std::string, Rank>* special_named(std::string_view name) const {
        for (const auto& sp : specials)
            if (sp.first == name) return &sp;
        return nullptr;
    }

    std::vector<const std::pair<std::string, Rank>*> resolve(const std::vector<std::string>& names,
                                                              const char* what) const {
        std::vector<const std::pair<std::string, Rank>*> out;
        out.reserve(names.size());
        for (const auto& name : names) {
            const auto* sp = special_named(name);
            if (!sp)
                throw std::invalid_argument(std::string(what) + ": not a special token of this tokenizer: " +
                                            str_repr(name));
            if (std::find(out.begin(), out.end(), sp) == out.end()) out.push_back(sp);
        }
        return out;
    }

    void encode(std::string_view text, const SpecialPolicy& policy, std::vector<Rank>& out, PieceCache* cache) const {
        const auto allowed = resolve(policy.allowed, "allowed_special");
        const auto disallowed = resolve(policy.disallowed, "disallowed_special");
        if (!disallowed.empty()) {
            size_t best_pos = std::string_view::npos, best_len = 0;
            const std::string* best = nullptr;
            for (const auto* sp : disallowed) {
                const size_t pos = text.find(sp->first);
                if (pos == std::string_view::npos) continue;
                if (pos < best_pos || (pos == best_pos && sp->first.size() > best_len)) {
                    best_pos = pos;
                    best_len = sp->first.size();
                    best = &sp->first;
                }
            }
            if (best) throw DisallowedSpecialError(*best, best_pos);
        }
        if (allowed.empty()) {
            encode_ordinary(text, out, cache);
            return;
        }
        std::vector<size_t> next_at(allowed.size());
        for (size_t k = 0; k < allowed.size(); ++k) next_at[k] = text.find(allowed[k]->first);
        size_t start = 0;
        for (;;) {
            size_t pos = std::string_view::npos, plen = 0, pk = 0;
            for (size_t k = 0; k < allowed.size(); ++k) {
                if (next_at[k] != std::string_view::npos && next_at[k] < start)
                    next_at[k] = text.find(allowed[k]->first, start);
                const size_t at = next_at[k];
                if (at == std::string_view::npos) continue;
                const size_t len_k = allowed[k]->first.size();
                if (at < pos || (at == pos && len_k > plen)) {
                    pos = at;
                    plen = len_k;
                    pk = k;
                }
            }
            if (pos == std::string_view::npos) break;
            encode_ordinary(text.substr(start, pos - start), out, cache);
            out.push_back(allowed[pk]->second);
            start = pos + plen;
        }
        encode_ordinary(text.substr(start), out, cache);
    }
};

// ------------------------------------------------------------------------------------------------

Encoder::Encoder(const TokenList& ranks, const TokenList& specials) : impl_(std::make_unique<Impl>()) {
    Impl& I = *impl_;
    // ids: ordinary and special, unique, bounded, not too sparse
    Rank max_id = 0;
    const size_t count = ranks.size() + specials.size();
    for (const auto& [tok, r] : ranks) {
        if (tok.empty()) throw std::invalid_argument("token must be non-empty bytes, got b''");
        if (r > kMaxId)
            throw std::invalid_argument("token " + bytes_repr(tok) + " has invalid rank " + std::to_string(r) +
                                        " (ranks must be < 2^31 - 1)");
        max_id = std::max(max_id, r);
    }
    for (const auto& [text, id] : specials) {
        if (text.empty()) throw std::invalid_argument("special token must be a non-empty str, got ''");
        if (!valid_utf8(text)) throw std::invalid_argument("special token " + bytes_repr(text) + " is not valid UTF-8 text");
        if (id > kMaxId)
            throw std::invalid_argument("special token " + str_repr(text) + " has invalid id " + std::to_string(id));
        max_id = std::max(max_id, id);
    }
    if (count == 0) throw std::invalid_argument("byte-level BPE needs all 256 single bytes; missing 256, first 0x00");
    if (uint64_t(max_id) >= 4 * uint64_t(count) + (uint64_t(1) << 20))
        throw std::invalid_argument("ids are too sparse: largest id " + std::to_string(max_id) + " for " +
                                    std::to_string(count) + " tokens");
    I.n_vocab = max_id + 1;
    I.off.assign(I.n_vocab, 0);
    I.len.assign(I.n_vocab, 0);
    I.kind.assign(I.n_vocab, 0);
    size_t total = 0;
    for (const auto& t : ranks) total += t.first.size();
    for (const auto& t : specials) total += t.first.size();
    if (total >= (uint64_t(1) << 32)) throw std::invalid_argument("tokens hold 4 GiB or more of bytes");
    I.arena.reserve(total);
    for (const auto& [tok, r] : ranks) {
        if (I.kind[r] != 0)
            throw std::invalid_argument("tokens " + bytes_repr(I.arena.substr(I.off[r], I.len[r])) + " and " +
                                        bytes_repr(tok) + " share rank " + std::to_string(r));
        I.off[r] = uint32_t(I.arena.size());
        I.len[r] = uint32_t(tok.size());
        I.kind[r] = 1;
        I.arena += tok;
        I.max_len = std::max(I.max_len, tok.size());
    }
    I.n_ranks = ranks.size();
    // whole-token table (load factor <= 1/2)
    const size_t nslots = detail::pow2_at_least(std::max<size_t>(16, 2 * ranks.size()));
    I.slots.assign(nslots, Impl::Slot{0, 0, 0});
    I.slot_mask = nslots - 1;
    I.slot_shift = 64 - __builtin_ctzll(nslots);
    for (const auto& [tok, r] : ranks) {
        const auto* p = reinterpret_cast<const uint8_t*>(tok.data());
        if (I.find(p, tok.size(), p + tok.size()) != kNone) {
            const Rank other = I.find(p, tok.size(), p + tok.size());
            throw std::invalid_argument("duplicate token " + bytes_repr(tok) + " (ranks " + std::to_string(other) +
                                        " and " + std::to_string(r) + ")");
        }
        I.insert_token(p, tok.size(), r);
    }
    size_t missing = 0;
    int first_missing = -1;
    for (int b = 0; b < 256; ++b) {
        const uint8_t byte = uint8_t(b);
        const Rank r = I.find(&byte, 1, &byte + 1);
        I.byte_rank[b] = r;
        if (r == kNone) {
            if (first_missing < 0) first_missing = b;
            ++missing;
        }
    }
    if (missing) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", first_missing);
        throw std::invalid_argument("byte-level BPE needs all 256 single bytes; missing " + std::to_string(missing) +
                                    ", first " + hex);
    }
    // specials
    std::vector<std::pair<std::string, Rank>> sp(specials.begin(), specials.end());
    for (const auto& [text, id] : sp) {
        if (I.kind[id] == 1)
            throw std::invalid_argument("special token " + str_repr(text) + " id " + std::to_string(id) +
                                        " is also the rank of " + bytes_repr(I.arena.substr(I.off[id], I.len[id])));
        if (I.kind[id] == 2)
            throw std::invalid_argument("special tokens " + str_repr(I.arena.substr(I.off[id], I.len[id])) + " and " +
                                        str_repr(text) + " share id " + std::to_string(id));
        for (const auto& other : I.specials)
            if (other.first == text) throw std::invalid_argument("duplicate special token " + str_repr(text));
        I.off[id] = uint32_t(I.arena.size());
        I.len[id] = uint32_t(text.size());
        I.kind[id] = 2;
        I.arena += text;
        I.specials.emplace_back(text, id);
    }
    std::sort(I.specials.begin(), I.specials.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    // Pair table. Start from every split of every token into two tokens (exactly "the rank of
    // the concatenation", tiktoken's rule), then keep only each token's canonical pair: the last
    // merge when its own bytes are merged. Why that changes no result: when a token t shows up as
    // a part of a piece, the merges inside its byte range were exactly those of merging t alone
    // (the lowest pair overall that lies inside the range is also the lowest inside it, and no
    // merge crossed the range), so t is always made by its canonical pair, a token whose own
    // merge does not give itself never shows up, and the pairs dropped are never the lowest one.
    // Smaller table, fewer cache misses (GPT-2: about 3x fewer pairs).
    std::vector<std::pair<uint64_t, Rank>> found;
    found.reserve(ranks.size() * 2);
    for (const auto& [tok, r] : ranks) {
        const auto* p = reinterpret_cast<const uint8_t*>(tok.data());
        const size_t n = tok.size();
        for (size_t k = 1; k < n; ++k) {
            const Rank a = I.find(p, k, p + n);
            if (a == kNone) continue;
            const Rank b = I.find(p + k, n - k, p + n);
            if (b == kNone) continue;
            found.emplace_back((uint64_t(a) << 32) | b, r);
        }
    }
    I.build_pairs(found);
    std::vector<std::pair<uint64_t, Rank>> canonical;
    canonical.reserve(ranks.size());
    std::vector<Rank> ids, pr;
    for (const auto& [tok, r] : ranks) {
        const size_t n = tok.size();
        if (n < 2) continue;
        if (n > kCanonicalMax) {  // keep every split (always safe); avoids O(n^2) on huge tokens
            const auto* p = reinterpret_cast<const uint8_t*>(tok.data());
            for (size_t k = 1; k < n; ++k) {
                const Rank a = I.find(p, k, p + n), b = a == kNone ? kNone : I.find(p + k, n - k, p + n);
                if (b != kNone) canonical.emplace_back((uint64_t(a) << 32) | b, r);
            }
            continue;
        }
        ids.resize(n);
        pr.resize(n);
        for (size_t i = 0; i < n; ++i) ids[i] = I.byte_rank[static_cast<uint8_t>(tok[i])];
        for (size_t i = 0; i + 1 < n; ++i) pr[i] = I.pair_rank(ids[i], ids[i + 1]);
        size_t m = n;
        uint64_t last = 0;
        while (m > 1) {
            Rank best = kNone;
            size_t bi = 0;
            for (size_t i = 0; i + 1 < m; ++i)
                if (pr[i] < best) best = pr[i], bi = i;
            if (best == kNone) break;
            last = (uint64_t(ids[bi]) << 32) | ids[bi + 1];
            ids[bi] = best;
            ids.erase(ids.begin() + long(bi) + 1);
            pr.erase(pr.begin() + long(bi) + 1);
            --m;
            pr[bi] = bi + 1 < m ? I.pair_rank(ids[bi], ids[bi + 1]) : kNone;
            if (bi > 0) pr[bi - 1] = I.pair_rank(ids[bi - 1], ids[bi]);
        }
        if (m == 1 && ids[0] == r) canonical.emplace_back(last, r);
    }
    I.build_pairs(canonical);
}

Encoder::~Encoder() = default;
Encoder::Encoder(Encoder&&) noexcept = default;
Encoder& Encoder::operator=(Encoder&&) noexcept = default;

TokenList Encoder::parse_tiktoken(std::string_view data, const std::string& source) {
    TokenList out;
    std::unordered_map<Rank, size_t> line_of_rank;
    std::unordered_map<std::string, size_t> line_of_token;
    auto is_ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
    auto repr80 = [](std::string_view s) { return bytes_repr(s.substr(0, 80)); };
    size_t lineno = 0, pos = 0;
    const size_t n = data.size();
    std::string tok;
    while (pos < n) {
        // bytes.splitlines(): \n, \r\n and \r end a line
        size_t e = pos;
        while (e < n && data[e] != '\n' && data[e] != '\r') ++e;
        const std::string_view line = data.substr(pos, e - pos);
        if (e < n && data[e] == '\r' && e + 1 < n && data[e + 1] == '\n') pos = e + 2;
        else pos = e < n ? e + 1 : e;
        ++lineno;
        // split on ASCII whitespace
        std::vector<std::string_view> fields;
        size_t i = 0;
        while (i < line.size()) {
            while (i < line.size() && is_ws(line[i])) ++i;
            if (i >= line.size()) break;
            size_t j = i;
            while (j < line.size() && !is_ws(line[j])) ++j;
            fields.push_back(line.substr(i, j - i));
            i = j;
        }
        if (fields.empty()) continue;
        const std::string where = source + ":" + std::to_string(lineno) + ": ";
        if (fields.size() != 2) throw std::invalid_argument(where + "expected 'base64 rank', got " + repr80(line));
        if (!b64_decode(fields[0], tok)) throw std::invalid_argument(where + "invalid base64 " + repr80(fields[0]));
        if (tok.empty()) throw std::invalid_argument(where + "empty token");
        uint64_t rank = 0;
        bool digits = !fields[1].empty();
        for (char c : fields[1]) {
            if (c < '0' || c > '9') {
                digits = false;
                break;
            }
            rank = rank * 10 + uint64_t(c - '0');
            if (rank > kMaxId) break;
        }
        if (!digits)
            throw std::invalid_argument(where + "rank must be a non-negative integer, got " + repr80(fields[1]));
        if (rank > kMaxId) throw std::invalid_argument(where + "rank " + std::string(fields[1]) + " is too large");
        const auto [it_r, new_r] = line_of_rank.emplace(Rank(rank), lineno);
        if (!new_r)
            throw std::invalid_argument(where + "duplicate rank " + std::to_string(rank) + " (first on line " +
                                        std::to_string(it_r->second) + ")");
        const auto [it_t, new_t] = line_of_token.emplace(tok, lineno);
        if (!new_t)
            throw std::invalid_argument(where + "duplicate token " + bytes_repr(tok) + " (first on line " +
                                        std::to_string(it_t->second) + ")");
        out.emplace_back(tok, Rank(rank));
    }
    return out;
}

TokenList Encoder::read_tiktoken_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) throw std::runtime_error("cannot read " + path);
    return parse_tiktoken(ss.str(), path);
}

Encoder Encoder::from_tiktoken_file(const std::string& path, const TokenList& specials) {
    return Encoder(read_tiktoken_file(path), specials);
}

Rank Encoder::n_vocab() const { return impl_->n_vocab; }
size_t Encoder::n_ranks() const { return impl_->n_ranks; }
const TokenList& Encoder::special_tokens() const { return impl_->specials; }

std::vector<std::string> Encoder::all_specials() const {
    std::vector<std::string> out;
    for (const auto& sp : impl_->specials) out.push_back(sp.first);
    return out;
}

TokenList Encoder::ranks() const {
    const Impl& I = *impl_;
    TokenList out;
    out.reserve(I.n_ranks);
    for (Rank r = 0; r < I.n_vocab; ++r)
        if (I.kind[r] == 1) out.emplace_back(I.arena.substr(I.off[r], I.len[r]), r);
    return out;
}

int64_t Encoder::token_rank(std::string_view bytes) const {
    if (bytes.empty()) return -1;
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    const Rank r = impl_->find(p, bytes.size(), p + bytes.size());
    return r == kNone ? -1 : int64_t(r);
}

bool Encoder::valid_id(uint64_t id) const {
    return id < impl_->n_vocab && impl_->kind[id] != 0;
}

void Encoder::encode_ordinary(std::string_view text, std::vector<Rank>& out) const {
    PieceCache cache;
#ifdef PYGPT_BPE_NO_CACHE
    impl_->encode_ordinary(text, out, nullptr);
#else
    impl_->encode_ordinary(text, out, &cache);
#endif
}

std::vector<Rank> Encoder::encode_ordinary(std::string_view text) const {
    std::vector<Rank> out;
    out.reserve(text.size() / 4 + 16);
    PieceCache cache;
    impl_->encode_ordinary(text, out, &cache);
    return out;
}

void Encoder::encode(std::string_view text, const SpecialPolicy& policy, std::vector<Rank>& out) const {
    PieceCache cache;
    impl_->encode(text, policy, out, &cache);
}

std::vector<Rank> Encoder::encode(std::string_view text, const SpecialPolicy& policy) const {
    std::vector<Rank> out;
    out.reserve(text.size() / 4 + 16);
    PieceCache cache;
    impl_->encode(text, policy, out, &cache);
    return out;
}

void Encoder::encode_piece(std::string_view piece, std::vector<Rank>& out) const {
    if (piece.empty()) return;
    const auto* p = reinterpret_cast<const uint8_t*>(piece.data());
    impl_->encode_piece(p, piece.size(), p + piece.size(), out, nullptr);
}

void Encoder::encode_batch_ordered(const std::vector<std::string_view>& texts, const SpecialPolicy* policy,
                                   int num_threads,
                                   const std::function<void(size_t, std::vector<Rank>&)>& on_done) const {
    // Work units: each text, or for a long text its parts cut at safe points (the same pieces, and
    // with no special token containing '\n' no special token can straddle a cut either), so a
    // few long texts still keep every thread busy. Units are handed out in input order through an
    // atomic counter to num_threads - 1 std::threads and the calling thread. The calling thread
    // delivers texts in order: while a unit of text i is not finished it encodes the next
    // unclaimed unit itself, and waits only when none is left. So a consumer that needs the
    // caller's thread (building Python lists under the GIL) overlaps with the encoding.
    const size_t n = texts.size();
    if (n == 0) return;
    size_t threads = num_threads > 0 ? size_t(num_threads) : size_t(pygpt::detail::parallel_threads());
    bool can_split = threads > 1;
    for (const auto& sp : impl_->specials)
        if (sp.first.find('\n') != std::string::npos) can_split = false;
    std::vector<std::string_view> units;
    std::vector<size_t> first_unit(n + 1);
    for (size_t i = 0; i < n; ++i) {
        first_unit[i] = units.size();
        const std::string_view t = texts[i];
        size_t start = 0;
        if (can_split && t.size() > 2 * kBatchUnit)
            for (size_t cut : safe_split_points(t, kBatchUnit)) {
                units.push_back(t.substr(start, cut - start));
                start = cut;
            }
        units.push_back(t.substr(start));
    }
    first_unit[n] = units.size();
    const size_t n_units = units.size();
    threads = std::max<size_t>(1, std::min(threads, n_units));
    std::vector<std::vector<Rank>> ids(n_units);
    std::vector<std::exception_ptr> errors(n_units);
    std::unique_ptr<std::atomic<bool>[]> ready(new std::atomic<bool>[n_units]);
    for (size_t u = 0; u < n_units; ++u) ready[u].store(false, std::memory_order_relaxed);
    std::atomic<size_t> next{0};
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::condition_variable cv;
    std::vector<PieceCache> caches(threads);

    auto encode_one = [&](size_t u, PieceCache& cache) {
        try {
            // Encode into a vector on this thread's stack and move it in at the end: the ids[u]
            // headers sit side by side, and appending to them directly made two threads write
            // the same cache line on every token (false sharing).
            std::vector<Rank> local;
            local.reserve(units[u].size() / 4 + 16);
            if (policy) impl_->encode(units[u], *policy, local, &cache);
            else impl_->encode_ordinary(units[u], local, &cache);
            ids[u] = std::move(local);
        } catch (...) {
            errors[u] = std::current_exception();
        }
        {
            std::lock_guard<std::mutex> lock(mu);
            ready[u].store(true, std::memory_order_release);
        }
        cv.notify_all();
    };
    std::vector<std::thread> workers;
    auto join = [&] {
        stop.store(true);
        for (auto& t : workers) t.join();
        workers.clear();
    };
    try {
        for (size_t t = 1; t < threads; ++t) {
            workers.emplace_back([&, t] {
                for (;;) {
                    if (stop.load(std::memory_order_relaxed)) return;
                    const size_t u = next.fetch_add(1);
                    if (u >= n_units) return;
                    encode_one(u, caches[t]);
                }
            });
        }
        std::vector<Rank> joined;
        for (size_t i = 0; i < n; ++i) {
            for (size_t u = first_unit[i]; u < first_unit[i + 1]; ++u) {
                while (!ready[u].load(std::memory_order_acquire)) {
                    const size_t v = next.fetch_add(1);
                    if (v < n_units) {
                        encode_one(v, caches[0]);
                        continue;
                    }
                    std::unique_lock<std::mutex> lock(mu);
                    cv.wait(lock, [&] { return ready[u].load(std::memory_order_acquire); });
                }
                if (errors[u]) std::rethrow_exception(errors[u]);  // the first failing text in input order
            }
            const size_t u0 = first_unit[i], u1 = first_unit[i + 1];
            if (u1 - u0 == 1) {
                on_done(i, ids[u0]);
            } else {
                size_t total = 0;
                for (size_t u = u0; u < u1; ++u) total += ids[u].size();
                joined.clear();
                joined.reserve(total);
                for (size_t u = u0; u < u1; ++u) {
                    joined.insert(joined.end(), ids[u].begin(), ids[u].end());
                    std::vector<Rank>().swap(ids[u]);
                }
                on_done(i, joined);
                std::vector<Rank>().swap(joined);
            }
            for (size_t u = u0; u < u1; ++u) std::vector<Rank>().swap(ids[u]);
        }
    } catch (...) {
        join();
        throw;
    }
    join();
}

std::vector<std::vector<Rank>> Encoder::encode_batch(const std::vector<std::string_view>& texts,
                                                     const SpecialPolicy* policy, int num_threads) const {
    std::vector<std::vector<Rank>> out(texts.size());
    encode_batch_ordered(texts, policy, num_threads, [&](size_t i, std::vector<Rank>& ids) { out[i].swap(ids); });
    return out;
}

std::string_view Encoder::token_bytes(Rank id) const {
    const Impl& I = *impl_;
    if (id >= I.n_vocab || I.kind[id] == 0)
        throw std::invalid_argument("invalid token id " + std::to_string(id) + " (n_vocab=" +
                                    std::to_string(I.n_vocab) + ")");
    return std::string_view(I.arena.data() + I.off[id], I.len[id]);
}

std::string Encoder::decode(const Rank* ids, size_t n) const {
    const Impl& I = *impl_;
    size_t total = 0;
    for (size_t i = 0; i < n; ++i) {
        const Rank id = ids[i];
        if (id >= I.n_vocab || I.kind[id] == 0)
            throw std::invalid_argument("invalid token id " + std::to_string(id) + " (n_vocab=" +
                                        std::to_string(I.n_vocab) + ")");
        total += I.len[id];
    }
    std::string out;
    out.resize(total);
    char* w = out.data();
    for (size_t i = 0; i < n; ++i) {
        const Rank id = ids[i];
        std::memcpy(w, I.arena.data() + I.off[id], I.len[id]);
        w += I.len[id];
    }
    return out;
}

}  // namespace pygpt::bpe
