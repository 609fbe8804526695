// Byte-level BPE (the GPT-2 scheme): pre-tokenizer, encoder, decoder and trainer.
// No Python types: a host program links pygpt::kernels and calls these directly
// (cpp/examples/bpe_host.cpp).
//
// Text is UTF-8. Encoding = pre-tokenize with GPT-2's pattern
//     '(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (a hand-written scanner; classes from tables generated from Unicode 14.0.0, see
// tools/gen_unicode_tables.py), then merge the bytes of each piece by lowest rank, leftmost on
// ties (tiktoken's rule); a token's rank is its id. Invalid UTF-8 (possible only from C++; Python
// strings are converted first) is scanned byte by byte, each invalid byte a character of class
// OTHER, so any byte string encodes and decode(encode(b)) == b.
//
// Special tokens follow tiktoken: a disallowed special token's text anywhere in the input throws
// DisallowedSpecialError (the leftmost, then longest, is named); allowed ones are emitted as their
// id and cut the text into segments that are pre-tokenized separately (a segment end acts as a
// text end); among allowed matches the leftmost wins, then the longest.
//
// Errors: std::invalid_argument for bad input (ranks, ids, names), std::runtime_error for I/O.
// An Encoder is immutable after construction; all const methods may run concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pygpt::bpe {

using Rank = uint32_t;
/// (token bytes, rank) or (special token text, id).
using TokenList = std::vector<std::pair<std::string, Rank>>;

// ---- pre-tokenizer ---------------------------------------------------------------------------

enum class CharClass : uint8_t { Letter = 0, Number = 1, Space = 2, Other = 3 };

/// Class of a code point (> 0x10FFFF and surrogates: Other).
CharClass char_class(uint32_t code_point);
/// Unicode version of the class tables ("14.0.0").
const char* unicode_version();

struct Piece {
    size_t begin, end;  // byte offsets, end exclusive
};

/// Append the GPT-2 pieces of `text` to `out` (their concatenation is `text`).
void pretokenize(std::string_view text, std::vector<Piece>& out);

/// Byte offsets (ascending, excluding 0 and text.size()) where `text` may be cut into parts that
/// pre-tokenize to exactly the pieces of the whole: each cut is just before a '\n' that follows an
/// ASCII non-whitespace byte, the first such point at or after every multiple of `chunk_bytes`.
std::vector<size_t> safe_split_points(std::string_view text, size_t chunk_bytes);

// ---- encoder ---------------------------------------------------------------------------------

/// Thrown by Encoder::encode when the text contains a disallowed special token.
class DisallowedSpecialError : public std::invalid_argument {
   public:
    DisallowedSpecialError(const std::string& token, size_t byte_offset);
    const std::string& token() const { return token_; }
    size_t byte_offset() const { return offset_; }

   private:
    std::string token_;
    size_t offset_;
};

/// Which special tokens encode() emits (`allowed`) and which make it throw (`disallowed`).
/// tiktoken's defaults are allowed = {}, disallowed = every special token (Encoder::all_specials()).
struct SpecialPolicy {
    std::vector<std::string> allowed;
    std::vector<std::string> disallowed;
};

class Encoder {
   public:
    /// `ranks`: every ordinary token (non-empty bytes, unique) with its rank = id (unique); all 256
    /// single bytes must be present. `specials`: text (non-empty, valid UTF-8, unique) -> id, ids
    /// distinct from every rank. Ids must be < 2^31 and not too sparse (max id < 4 * count + 2^20).
    explicit Encoder(const TokenList& ranks, const TokenList& specials = {});
    ~Encoder();
    Encoder(Encoder&&) noexcept;
    Encoder& operator=(Encoder&&) noexcept;
    Encoder(const Encoder&) = delete;
    Encoder& operator=(const Encoder&) = delete;

    /// Parse a .tiktoken file: one "base64(token bytes) rank" per line, blank lines skipped.
    /// Errors name the file and line (std::invalid_argument), std::runtime_error if unreadable.
    static TokenList read_tiktoken_file(const std::string& path);
    static TokenList parse_tiktoken(std::string_view data, const std::string& source);
    static Encoder from_tiktoken_file(const std::string& path, const TokenList& specials = {});

    /// One more than the largest id (ordinary or special).
    Rank n_vocab() const;
    size_t n_ranks() const;
    const TokenList& special_tokens() const;
    /// Every ordinary token, sorted by rank.
    TokenList ranks() const;
    /// The rank of a whole token's bytes, or -1.
    int64_t token_rank(std::string_view bytes) const;
    /// Whether `id` names a token (ordinary or special).
    bool valid_id(uint64_t id) const;
    /// The special tokens' texts (the `disallowed` of tiktoken's default policy).
    std::vector<std::string> all_specials() const;

    /// Encode ignoring special tokens; appends to `out`.
    void encode_ordinary(std::string_view text, std::vector<Rank>& out) const;
    std::vector<Rank> encode_ordinary(std::string_view text) const;
    /// Encode with special tokens (see the top of this file); appends to `out`.
    void encode(std::string_view text, const SpecialPolicy& policy, std::vector<Rank>& out) const;
    std::vector<Rank> encode(std::string_view text, const SpecialPolicy& policy) const;
    /// Encode many texts on `num_threads` std::threads (0: pygpt::num_threads()); result i is text i.
    /// `policy == nullptr` means encode_ordinary. The first failing text's exception is rethrown.
    std::vector<std::vector<Rank>> encode_batch(const std::vector<std::string_view>& texts,
                                                const SpecialPolicy* policy = nullptr, int num_threads = 0) const;
    /// The same, streaming: on_done(i, ids) runs on the calling thread for i = 0, 1, ... in order as
    /// results become ready (it may take the ids); the calling thread also encodes while it waits.
    /// Texts over 128 KiB are encoded in ~64 KiB parts cut at safe points (unless a special token
    /// contains '\n'), so even one long text uses every thread.
    void encode_batch_ordered(const std::vector<std::string_view>& texts, const SpecialPolicy* policy, int num_threads,
                              const std::function<void(size_t, std::vector<Rank>&)>& on_done) const;

    /// The bytes of one token (ordinary or special); std::invalid_argument for an unknown id.
    std::string_view token_bytes(Rank id) const;
    /// Concatenated bytes of `ids` (may end inside a UTF-8 character); throws for an unknown id.
    std::string decode(const Rank* ids, size_t n) const;
    std::string decode(const std::vector<Rank>& ids) const { return decode(ids.data(), ids.size()); }

    /// Merge the bytes of one piece (no pre-tokenization): appends the ids.
    void encode_piece(std::string_view piece, std::vector<Rank>& out) const;

    struct Impl;

   private:
    std::unique_ptr<Impl> impl_;
};

// ---- trainer ---------------------------------------------------------------------------------

/// One training merge: tokens `left` and `right` were joined into token `id`.
struct Merge {
    Rank left, right, id;
};

class WordCounts;
std::vector<Merge> train_merges(const WordCounts& counts, size_t n_merges, uint64_t min_frequency);

/// Pre-tokenized word counts (64-bit), the input of training. Not thread-safe itself; add_texts
/// and add_file count on several threads internally.
class WordCounts {
   public:
    WordCounts();
    ~WordCounts();
    WordCounts(WordCounts&&) noexcept;
    WordCounts& operator=(WordCounts&&) noexcept;

    /// Count the pieces of one text (valid UTF-8 expected; see the top of this file otherwise).
    void add_text(std::string_view text, int num_threads = 1);
    /// Count the pieces of each text (each one pre-tokenized on its own) on num_threads threads.
    void add_texts(const std::vector<std::string_view>& texts, int num_threads = 0);
    /// Count a UTF-8 file as one text; std::invalid_argument (with the byte offset) if not UTF-8.
    /// Returns the file's size in bytes.
    size_t add_file(const std::string& path, int num_threads = 0);
    /// Add `count` occurrences of one word.
    void add(std::string_view word, uint64_t count);

    size_t size() const;           // distinct words
    uint64_t total() const;        // pieces counted
    std::vector<std::pair<std::string, uint64_t>> items() const;  // sorted by bytes

    struct Impl;

   private:
    friend std::vector<Merge> train_merges(const WordCounts&, size_t, uint64_t);
    std::unique_ptr<Impl> impl_;
};

/// Learn up to `n_merges` new tokens from word counts (ids 0..255 = the bytes in byte order, then
/// 256, 257, ... in creation order). Tie-break: the most frequent pair; among equals the smallest
/// (left id, right id). A merge whose bytes already are a token reuses that id and adds no token.
/// Stops when no pair occurs min_frequency (>= 1) times. Equal to pygpt.tokenizer.bpe.train_merges.
std::vector<Merge> train_merges(const WordCounts& counts, size_t n_merges, uint64_t min_frequency = 2);

/// Ranks of a trained vocabulary: 256 bytes then the new tokens of `merges` (an id == size).
TokenList ranks_from_merges(const std::vector<Merge>& merges);

/// Train a vocabulary of `vocab_size` ids in all (256 bytes + merges + specials, specials last).
Encoder train(const WordCounts& counts, size_t vocab_size, const std::vector<std::string>& special_tokens = {},
              uint64_t min_frequency = 2);

}  // namespace pygpt::bpe
