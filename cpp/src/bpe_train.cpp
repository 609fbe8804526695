// Byte-level BPE training (cpp/include/pygpt/bpe.h): word counting on std::threads, then merges with
// incremental pair counts and a lazy max-heap -- the algorithm of pygpt.tokenizer.bpe.train_merges,
// with the same tie-break, so the merges are identical.
//
//   words      every distinct pre-tokenized piece (>= 2 bytes) once, with its 64-bit count, as a run
//              of token ids in one flat array (rewritten in place as merges shorten it);
//   pairs      pair -> (count, list of words that may contain it); the list of the merged pair is
//              dropped (it occurs nowhere afterwards), other lists only grow (stale entries are
//              skipped: a word without the pair is left alone);
//   per merge  each occurrence (a, b) in a word, left to right, non-overlapping, changes only its
//              neighbour pairs: (x, a) -> (x, ab) with x the already-rewritten left symbol, and
//              (b, y) -> (ab, y) with y the original right symbol; the changes of one merge are
//              summed first (a pair can go down and up again), then applied;
//   heap       entries (count, a, b), max count first, then the smallest (a, b); an entry's count
//              is >= the pair's true count (every increase pushes a fresh entry), so a popped entry
//              whose count is stale is pushed again with the true count.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <queue>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>

#include "bpe_internal.h"
#include "parallel_for.h"


namespace pygpt::bpe {

namespace {

using detail::hash_bytes;
using detail::hash_pair;
using detail::load_prefix;

constexpr size_t kChunkBytes = size_t(1) << 20;  // a big text is counted in ~1 MiB parts

// byte string -> 64-bit count, open addressing, growing
struct WordMap {
    struct Slot {
        uint64_t hash;
        uint64_t off;
        uint64_t count;
        uint32_t len;  // 0 = empty
        uint32_t pad;
    };
    std::string arena;
    std::vector<Slot> slots = std::vector<Slot>(1024, Slot{0, 0, 0, 0, 0});
    size_t used = 0;
    uint64_t total = 0;

    void grow() {
        std::vector<Slot> old(slots.size() * 2, Slot{0, 0, 0, 0, 0});
        old.swap(slots);
        const size_t mask = slots.size() - 1;
        for (const Slot& s : old) {
            if (!s.len) continue;
            size_t i = size_t(s.hash) & mask;
            while (slots[i].len) i = (i + 1) & mask;
            slots[i] = s;
        }
    }
    void add(const uint8_t* p, size_t n, uint64_t count, const uint8_t* end) {
        if (n == 0 || count == 0) return;
        if (n > 0xFFFFFFFFu) throw std::invalid_argument("word too long to count (4 GiB or more)");
        total += count;
        const uint64_t h = hash_bytes(p, n, load_prefix(p, n, end));
        const size_t mask = slots.size() - 1;
        size_t i = size_t(h) & mask;
        for (;;) {
            Slot& s = slots[i];
            if (!s.len) break;
            if (s.hash == h && s.len == n && std::memcmp(arena.data() + s.off, p, n) == 0) {
                s.count += count;
                return;
            }
            i = (i + 1) & mask;
        }
        slots[i] = Slot{h, arena.size(), count, uint32_t(n), 0};
        arena.append(reinterpret_cast<const char*>(p), n);
        if (++used * 2 > slots.size()) grow();
    }
    void merge_from(const WordMap& other) {
        for (const Slot& s : other.slots) {
            if (!s.len) continue;
            const auto* p = reinterpret_cast<const uint8_t*>(other.arena.data() + s.off);
            add(p, s.len, s.count, p + s.len);
        }
        // add() counted other's totals again via count; nothing else to do
    }
    void count_text(std::string_view text) {
        const auto* s = reinterpret_cast<const uint8_t*>(text.data());
        const uint8_t* end = s + text.size();
        detail::scan(s, text.size(), [&](size_t b, size_t e) { add(s + b, e - b, 1, end); });
    }
};

// Split texts into work units: big texts at safe points, so counts equal the whole text's.
std::vector<std::string_view> work_units(const std::vector<std::string_view>& texts) {
    std::vector<std::string_view> units;
    for (std::string_view t : texts) {
        if (t.size() <= 2 * kChunkBytes) {
            units.push_back(t);
            continue;
        }
        size_t start = 0;
        for (size_t cut : safe_split_points(t, kChunkBytes)) {
            units.push_back(t.substr(start, cut - start));
            start = cut;
        }
        units.push_back(t.substr(start));
    }
    return units;
}

}  // namespace

struct WordCounts::Impl {
    WordMap map;

    void count_units(const std::vector<std::string_view>& units, int num_threads) {
        const int64_t n = int64_t(units.size());
        int threads = num_threads > 0 ? num_threads : pygpt::detail::parallel_threads();
        threads = int(std::min<int64_t>(threads, n));
        if (threads <= 1) {
            for (auto u : units) map.count_text(u);
            return;
        }
        // std::threads taking units through an atomic counter, one map each, merged at the end
        std::vector<WordMap> local(static_cast<size_t>(threads));
        std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
        std::atomic<int64_t> next{0};
        auto work = [&](int t) {
            try {
                for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) local[size_t(t)].count_text(units[size_t(i)]);
            } catch (...) {
                errors[size_t(t)] = std::current_exception();
                next.store(n);
            }
        };
        std::vector<std::thread> pool;
        for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
        work(0);
        for (auto& th : pool) th.join();
        for (auto& e : errors)
            if (e) std::rethrow_exception(e);
        for (const auto& m : local) map.merge_from(m);
    }
};

WordCounts::WordCounts() : impl_(std::make_unique<Impl>()) {}
WordCounts::~WordCounts() = default;
WordCounts::WordCounts(WordCounts&&) noexcept = default;
WordCounts& WordCounts::operator=(WordCounts&&) noexcept = default;

void WordCounts::add_text(std::string_view text, int num_threads) {
    impl_->count_units(work_units({text}), num_threads);
}

void WordCounts::add_texts(const std::vector<std::string_view>& texts, int num_threads) {
    impl_->count_units(work_units(texts), num_threads);
}

size_t WordCounts::add_file(const std::string& path, int num_threads) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) throw std::runtime_error("cannot read " + path);
    const std::string data = ss.str();
    // strict UTF-8 check, reporting the first bad byte
    const auto* s = reinterpret_cast<const uint8_t*>(data.data());
    const uint8_t* end = s + data.size();
    for (const uint8_t* p = s; p < end;) {
        if (*p < 0x80) {
            ++p;
            continue;
        }
        size_t len;
        detail::class_multibyte(p, end, &len);
        const uint8_t b0 = *p;
        const size_t want = (b0 >= 0xC2 && b0 <= 0xDF) ? 2 : (b0 >= 0xE0 && b0 <= 0xEF) ? 3 : (b0 >= 0xF0 && b0 <= 0xF4) ? 4 : 0;
        if (want == 0 || len != want)
            throw std::invalid_argument(path + ": not valid UTF-8 at byte offset " + std::to_string(p - s));
        p += len;
    }
    add_text(data, num_threads);
    return data.size();
}

void WordCounts::add(std::string_view word, uint64_t count) {
    const auto* p = reinterpret_cast<const uint8_t*>(word.data());
    impl_->map.add(p, word.size(), count, p + word.size());
}

size_t WordCounts::size() const { return impl_->map.used; }
uint64_t WordCounts::total() const { return impl_->map.total; }

std::vector<std::pair<std::string, uint64_t>> WordCounts::items() const {
    std::vector<std::pair<std::string, uint64_t>> out;
    out.reserve(impl_->map.used);
    for (const auto& s : impl_->map.slots)
        if (s.len) out.emplace_back(impl_->map.arena.substr(s.off, s.len), s.count);
    std::sort(out.begin(), out.end());
    return out;
}

// ------------------------------------------------------------------------------------------------

namespace {

// pair -> (count, index of its word list); open addressing, growing; entries are never removed.
struct PairCounts {
    struct Slot {
        uint64_t key;  // ~0 = empty
        int64_t count;
        uint32_t list;  // index into lists, ~0 = none yet
        uint32_t pad;
    };
    std::vector<Slot> slots = std::vector<Slot>(1 << 12, Slot{~uint64_t(0), 0, ~0u, 0});
    size_t used = 0;
    int shift = 64 - 12;

    static uint64_t key_of(Rank a, Rank b) { return (uint64_t(a) << 32) | b; }

    Slot& get(uint64_t key) {
        size_t mask = slots.size() - 1;
        size_t i = size_t(hash_pair(key) >> shift);
        for (;;) {
            Slot& s = slots[i];
            if (s.key == key) return s;
            if (s.key == ~uint64_t(0)) break;
            i = (i + 1) & mask;
        }
        if ((used + 1) * 2 > slots.size()) {
            grow();
            return get(key);
        }
        ++used;
        slots[i] = Slot{key, 0, ~0u, 0};
        return slots[i];
    }
    Slot* find(uint64_t key) {
        const size_t mask = slots.size() - 1;
        size_t i = size_t(hash_pair(key) >> shift);
        for (;;) {
            Slot& s = slots[i];
            if (s.key == key) return &s;
            if (s.key == ~uint64_t(0)) return nullptr;
            i = (i + 1) & mask;
        }
    }
    void grow() {
        std::vector<Slot> old(slots.size() * 2, Slot{~uint64_t(0), 0, ~0u, 0});
        old.swap(slots);
        --shift;
        const size_t mask = slots.size() - 1;
        for (const Slot& s : old) {
            if (s.key == ~uint64_t(0)) continue;
            size_t i = size_t(hash_pair(s.key) >> shift);
            while (slots[i].key != ~uint64_t(0)) i = (i + 1) & mask;
            slots[i] = s;
        }
    }
};

// pair -> summed change of one merge (cleared after each merge)
struct DeltaMap {
    struct Slot {
        uint64_t key;
        int64_t d;
    };
    std::vector<Slot> slots = std::vector<Slot>(1 << 10, Slot{~uint64_t(0), 0});
    std::vector<uint32_t> touched;
    int shift = 64 - 10;

    void add(uint64_t key, int64_t d) {
        if ((touched.size() + 1) * 2 > slots.size()) grow();
        const size_t mask = slots.size() - 1;
        size_t i = size_t(hash_pair(key) >> shift);
        for (;;) {
            Slot& s = slots[i];
            if (s.key == key) {
                s.d += d;
                return;
            }
            if (s.key == ~uint64_t(0)) {
                s.key = key;
                s.d = d;
                touched.push_back(uint32_t(i));
                return;
            }
            i = (i + 1) & mask;
        }
    }
    void grow() {
        std::vector<Slot> old;
        old.reserve(touched.size());
        for (uint32_t i : touched) old.push_back(slots[i]);
        slots.assign(slots.size() * 2, Slot{~uint64_t(0), 0});
        --shift;
        touched.clear();
        for (const Slot& s : old) add(s.key, s.d);
    }
    void clear() {
        for (uint32_t i : touched) slots[i] = Slot{~uint64_t(0), 0};
        touched.clear();
    }
};

struct HeapEntry {
    uint64_t count;
    Rank a, b;
};
// std::priority_queue pops the "largest": the highest count, then the smallest (a, b).
struct HeapLess {
    bool operator()(const HeapEntry& x, const HeapEntry& y) const {
        if (x.count != y.count) return x.count < y.count;
        if (x.a != y.a) return x.a > y.a;
        return x.b > y.b;
    }
};

}  // namespace

std::vector<Merge> train_merges(const WordCounts& counts, size_t n_merges, uint64_t min_frequency) {
    if (min_frequency < 1) throw std::invalid_argument("min_frequency must be >= 1, got 0");
    const WordMap& wm = counts.impl_->map;
    // words (>= 2 bytes) as runs of ids in one flat array
    std::vector<Rank> syms;
    std::vector<uint64_t> wbegin;
    std::vector<uint32_t> wlen;
    std::vector<uint64_t> freq;
    // Every pair count, and every change of one in a merge, is at most the sum of count * (length - 1)
    // over the words. Pair counts are int64_t: refuse counts that could overflow them (signed
    // overflow is undefined behaviour; only WordCounts::add can make counts this large).
    uint64_t mass = 0;
    for (const auto& s : wm.slots) {
        if (s.len < 2 || s.count == 0) continue;
        uint64_t m = 0;
        if (__builtin_mul_overflow(s.count, uint64_t(s.len - 1), &m) || __builtin_add_overflow(mass, m, &mass) ||
            mass > (uint64_t(1) << 62))
            throw std::invalid_argument("word counts too large to train on: the sum of count * (length - 1) "
                                        "over the words exceeds 2^62");
        wbegin.push_back(syms.size());
        wlen.push_back(s.len);
        freq.push_back(s.count);
        for (uint32_t k = 0; k < s.len; ++k) syms.push_back(Rank(static_cast<uint8_t>(wm.arena[s.off + k])));
    }
    if (wbegin.size() >= 0xFFFFFFFFu) throw std::invalid_argument("too many distinct words (2^32 or more)");
    PairCounts pc;
    std::vector<std::vector<uint32_t>> lists;
    auto note_word = [&](PairCounts::Slot& s, uint32_t wi) {
        if (s.list == ~0u) {
            s.list = uint32_t(lists.size());
            lists.emplace_back();
        }
        auto& l = lists[s.list];
        if (l.empty() || l.back() != wi) l.push_back(wi);
    };
    for (size_t wi = 0; wi < wbegin.size(); ++wi) {
        const Rank* w = syms.data() + wbegin[wi];
        for (uint32_t i = 0; i + 1 < wlen[wi]; ++i) {
            PairCounts::Slot& s = pc.get(PairCounts::key_of(w[i], w[i + 1]));
            s.count += int64_t(freq[wi]);
            note_word(s, uint32_t(wi));
        }
    }
    std::vector<HeapEntry> init;
    init.reserve(pc.used);
    for (const auto& s : pc.slots)
        if (s.key != ~uint64_t(0) && s.count > 0) init.push_back({uint64_t(s.count), Rank(s.key >> 32), Rank(s.key)});
    std::priority_queue<HeapEntry, std::vector<HeapEntry>, HeapLess> heap(HeapLess(), std::move(init));

    std::vector<std::string> vocab(256);
    for (int b = 0; b < 256; ++b) vocab[size_t(b)] = std::string(1, char(b));
    std::unordered_map<std::string, Rank> token_id;
    for (int b = 0; b < 256; ++b) token_id.emplace(vocab[size_t(b)], Rank(b));
    std::vector<Merge> merges;
    DeltaMap delta;
    std::vector<uint32_t> work;

    while (vocab.size() < 256 + n_merges && !heap.empty()) {
        const HeapEntry top = heap.top();
        heap.pop();
        const uint64_t key = PairCounts::key_of(top.a, top.b);
        PairCounts::Slot* slot = pc.find(key);
        const int64_t count = slot ? slot->count : 0;
        if (uint64_t(count) != top.count || count <= 0) {
            if (count > 0) heap.push({uint64_t(count), top.a, top.b});
            continue;
        }
        if (uint64_t(count) < min_frequency) break;
        const Rank a = top.a, b = top.b;
        std::string merged = vocab[a] + vocab[b];
        Rank nt;
        const auto it = token_id.find(merged);
        if (it != token_id.end()) {
            nt = it->second;
        } else {
            nt = Rank(vocab.size());
            token_id.emplace(merged, nt);
            vocab.push_back(std::move(merged));
        }
        merges.push_back(Merge{a, b, nt});

        // the merged pair occurs nowhere afterwards: drop its word list
        work.clear();
        if (slot->list != ~0u) work.swap(lists[slot->list]);
        for (uint32_t wi : work) {
            Rank* w = syms.data() + wbegin[wi];
            const uint32_t n = wlen[wi];
            const int64_t f = int64_t(freq[wi]);
            uint32_t k = 0, i = 0;
            bool changed = false;
            while (i < n) {
                if (i + 1 < n && w[i] == a && w[i + 1] == b) {
                    changed = true;
                    if (k > 0) {
                        delta.add(PairCounts::key_of(w[k - 1], a), -f);
                        delta.add(PairCounts::key_of(w[k - 1], nt), f);
                    }
                    if (i + 2 < n) {
                        delta.add(PairCounts::key_of(b, w[i + 2]), -f);
                        delta.add(PairCounts::key_of(nt, w[i + 2]), f);
                    }
                    delta.add(key, -f);
                    w[k++] = nt;
                    i += 2;
                } else {
                    w[k++] = w[i++];
                }
            }
            if (!changed) continue;  // stale list entry
            wlen[wi] = k;
            for (uint32_t j = 0; j + 1 < k; ++j) {
                if (w[j] == nt || w[j + 1] == nt) note_word(pc.get(PairCounts::key_of(w[j], w[j + 1])), wi);
            }
        }
        for (uint32_t idx : delta.touched) {
            const auto& e = delta.slots[idx];
            if (e.d == 0) continue;
            PairCounts::Slot& s = pc.get(e.key);
            s.count += e.d;
            if (s.count < 0) s.count = 0;  // cannot happen with consistent counts; keep the heap sane
            if (e.d > 0) heap.push({uint64_t(s.count), Rank(e.key >> 32), Rank(e.key)});
        }
        delta.clear();
    }
    return merges;
}

TokenList ranks_from_merges(const std::vector<Merge>& merges) {
    TokenList out;
    out.reserve(256 + merges.size());
    for (int b = 0; b < 256; ++b) out.emplace_back(std::string(1, char(b)), Rank(b));
    for (const Merge& m : merges) {
        if (m.left >= out.size() || m.right >= out.size() || m.id > out.size())
            throw std::invalid_argument("ranks_from_merges: merge refers to an unknown token");
        if (m.id == out.size()) out.emplace_back(out[m.left].first + out[m.right].first, m.id);
    }
    return out;
}

Encoder train(const WordCounts& counts, size_t vocab_size, const std::vector<std::string>& special_tokens,
              uint64_t min_frequency) {
    std::vector<std::string> specials;
    for (const auto& s : special_tokens)
        if (std::find(specials.begin(), specials.end(), s) == specials.end()) specials.push_back(s);
    if (vocab_size < 256 + specials.size())
        throw std::invalid_argument("vocab_size " + std::to_string(vocab_size) + " < 256 bytes + " +
                                    std::to_string(specials.size()) + " specials");
    const auto merges = train_merges(counts, vocab_size - 256 - specials.size(), min_frequency);
    TokenList ranks = ranks_from_merges(merges);
    TokenList sp;
    for (size_t k = 0; k < specials.size(); ++k) sp.emplace_back(specials[k], Rank(ranks.size() + k));
    return Encoder(ranks, sp);
}

}  // namespace pygpt::bpe
