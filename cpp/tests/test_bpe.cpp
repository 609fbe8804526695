// Standalone checks of the BPE code (cpp/include/pygpt/bpe.h), registered with ctest:
//   pygpt_test_bpe path/to/gpt2.tiktoken
//   * pre-tokenizer: the edge cases of pygpt/tokenizer/pretokenize.py, class spot checks
//   * encoder vs a naive merge (lowest rank of the concatenated bytes, leftmost on ties, O(n^2)):
//     GPT-2 ranks (monotone: the rank-by-rank long path) and a small hand-made vocabulary whose
//     pair ranks go down (the general long path), short and long pieces, random text
//   * specials (allowed / disallowed), decode, batch == single, invalid UTF-8 round trip
//   * trainer: the hand-worked example of tests/test_bpe_reference.py, ranks_from_merges
//   * bad input throws std::invalid_argument (tiktoken parse errors, duplicate ranks, bad ids)
#include <pygpt/pygpt.h>

#include <cstdio>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"

using namespace pygpt::bpe;

template <class F>
static bool throws_invalid(F&& f) {
    try {
        f();
    } catch (const std::invalid_argument&) {
        return true;
    } catch (...) {
        return false;
    }
    return false;
}

static std::vector<std::string> pieces(const std::string& text) {
    std::vector<Piece> ps;
    pretokenize(text, ps);
    std::vector<std::string> out;
    for (const auto& p : ps) out.push_back(text.substr(p.begin, p.end - p.begin));
    return out;
}

static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += "[" + x + "]";
    return s;
}

// tiktoken's rule, naively: parts start as single bytes; merge the adjacent pair whose
// concatenation has the lowest rank (leftmost on ties) until none is a token.
static std::vector<Rank> naive_merge(const Encoder& enc, const std::string& piece) {
    std::vector<std::string> parts;
    for (char c : piece) parts.emplace_back(1, c);
    for (;;) {
        int64_t best = -1;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < parts.size(); ++i) {
            const int64_t r = enc.token_rank(parts[i] + parts[i + 1]);
            if (r >= 0 && (best < 0 || r < best)) best = r, bi = i;
        }
        if (best < 0) break;
        parts[bi] += parts[bi + 1];
        parts.erase(parts.begin() + long(bi) + 1);
    }
    std::vector<Rank> ids;
    for (const auto& p : parts) ids.push_back(Rank(enc.token_rank(p)));
    return ids;
}

static std::vector<Rank> naive_encode(const Encoder& enc, const std::string& text) {
    std::vector<Rank> out;
    for (const auto& p : pieces(text)) {
        const auto ids = naive_merge(enc, p);
        out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
}

static void test_pretokenizer() {
    const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
        {"a\n\n b", {"a", "\n\n", " b"}},
        {"a\n\nb", {"a", "\n", "\n", "b"}},
        {"a  b", {"a", " ", " b"}},
        {"a \n b", {"a", " \n", " b"}},
        {"a\t b", {"a", "\t", " b"}},
        {"a \tb", {"a", " ", "\t", "b"}},
        {"end  ", {"end", "  "}},
        {"x\x1cy", {"x", "\x1c", "y"}},
        {"x \x1c", {"x", " \x1c"}},
        {"x\u00a0y", {"x", "\u00a0", "y"}},
        {"don't", {"don", "'t"}},
        {"DON'T", {"DON", "'", "T"}},
        {"we'll've", {"we", "'ll", "'ve"}},
        {"!'s", {"!'", "s"}},
        {" 's", {" '", "s"}},
        {"e\u0301", {"e", "\u0301"}},
        {"\u216b\u00b2\u0663" "7", {"\u216b\u00b2\u0663" "7"}},
        {" 12ab", {" 12", "ab"}},
        {"", {}},
        {"x\u3000\u3000y", {"x", "\u3000", "\u3000", "y"}},
        {"naïve café", {"naïve", " café"}},
    };
    for (const auto& [text, want] : cases) {
        const auto got = pieces(text);
        CHECK(got == want, "pretokenize(%s): got %s want %s", text.c_str(), join(got).c_str(), join(want).c_str());
    }
    CHECK(char_class(0x20) == CharClass::Space && char_class(0xA0) == CharClass::Space, "spaces");
    CHECK(char_class(0x1C) == CharClass::Other && char_class(0x200B) == CharClass::Other, "not White_Space");
    CHECK(char_class(0xE9) == CharClass::Letter && char_class(0x4E2D) == CharClass::Letter, "letters");
    CHECK(char_class(0x301) == CharClass::Other, "a combining mark is not a letter");
    CHECK(char_class(0xB2) == CharClass::Number && char_class(0x216B) == CharClass::Number, "No and Nl are numbers");
    CHECK(char_class(0xD800) == CharClass::Other && char_class(0x110000) == CharClass::Other, "out of range");
    CHECK(std::string(unicode_version()) == "14.0.0", "unicode version %s", unicode_version());
    // safe split points give the same pieces
    std::string text;
    for (int i = 0; i < 2000; ++i) text += (i % 7 ? "word, " : "x\n\n  y\n") + std::to_string(i) + "'s ";
    const auto cuts = safe_split_points(text, 1000);
    CHECK(cuts.size() > 5, "cuts %zu", cuts.size());
    std::vector<std::string> joined;
    size_t start = 0;
    for (size_t k = 0; k <= cuts.size(); ++k) {
        const size_t end = k < cuts.size() ? cuts[k] : text.size();
        const auto p = pieces(text.substr(start, end - start));
        joined.insert(joined.end(), p.begin(), p.end());
        start = end;
    }
    CHECK(joined == pieces(text), "safe_split_points changes the pieces");
}

static void test_gpt2(const std::string& path) {
    const Encoder enc = Encoder::from_tiktoken_file(path, {{"<|endoftext|>", 50256}});
    CHECK(enc.n_vocab() == 50257 && enc.n_ranks() == 50256, "n_vocab %u", enc.n_vocab());
    CHECK(enc.encode_ordinary("hello world") == std::vector<Rank>({31373, 995}), "hello world");
    CHECK(enc.token_bytes(220) == " " && enc.token_bytes(50256) == "<|endoftext|>", "token_bytes");

    // specials
    SpecialPolicy deflt{{}, enc.all_specials()};
    CHECK(throws_invalid([&] { enc.encode("a<|endoftext|>b", deflt); }), "disallowed special must throw");
    try {
        enc.encode("xx <|endoftext|>", deflt);
    } catch (const DisallowedSpecialError& e) {
        CHECK(e.token() == "<|endoftext|>" && e.byte_offset() == 3, "error names the token and offset");
    }
    SpecialPolicy allow{{"<|endoftext|>"}, {}};
    const auto ids = enc.encode("a\n\n<|endoftext|>b", allow);
    auto want = enc.encode_ordinary("a\n\n");
    want.push_back(50256);
    for (Rank r : enc.encode_ordinary("b")) want.push_back(r);
    CHECK(ids == want, "a segment end acts as a text end");
    CHECK(enc.encode("a<|endoftext|>b", SpecialPolicy{}) == enc.encode_ordinary("a<|endoftext|>b"), "no policy");
    CHECK(throws_invalid([&] { enc.encode("x", SpecialPolicy{{"<|nope|>"}, {}}); }), "unknown special name");

    // the encoder against the naive merge: short and long pieces, random text
    std::mt19937_64 rng(1234);
    const std::vector<std::string> alphabet = {"a", "b", "e", "t", "h", " ", "  ", "\n", "'s", "1", "7", "_", "-",
                                               "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "!", "x", "q"};
    for (int round = 0; round < 300; ++round) {
        std::string text;
        const int n = int(rng() % (round < 200 ? 40 : 400));
        for (int i = 0; i < n; ++i) text += alphabet[rng() % alphabet.size()];
        const auto got = enc.encode_ordinary(text);
        CHECK(got == naive_encode(enc, text), "random text %d differs from the naive merge", round);
        CHECK(enc.decode(got) == text, "round trip %d", round);
    }
    for (const std::string unit : {"a", "ab", "abc", "1", "12", "_", "-=", "\xf0\x9f\x98\x80", "xyzzy"}) {
        std::string text;
        while (text.size() < 700) text += unit;
        CHECK(enc.encode_ordinary(text) == naive_encode(enc, text), "long run of '%s'", unit.c_str());
    }
    std::string letters;
    for (int i = 0; i < 3000; ++i) letters += char('a' + rng() % 26);
    CHECK(enc.encode_ordinary(letters) == naive_merge(enc, letters), "3000 random letters (one piece)");
    std::string big(1 << 20, 'a');
    const auto big_ids = enc.encode_ordinary(big);
    CHECK(enc.decode(big_ids) == big, "1 MiB of 'a'");

    // batch == single, in order
    std::vector<std::string> texts;
    for (int i = 0; i < 50; ++i) texts.push_back(std::string(size_t(i * 37 % 500), 'z') + " text " + std::to_string(i));
    std::vector<std::string_view> views(texts.begin(), texts.end());
    const auto batch = enc.encode_batch(views, nullptr, 2);
    bool same = batch.size() == texts.size();
    for (size_t i = 0; same && i < texts.size(); ++i) same = batch[i] == enc.encode_ordinary(texts[i]);
    CHECK(same, "encode_batch == encode_ordinary, in order");
    // long texts are encoded in parts cut at safe points: the same ids
    std::string long_text;
    for (int i = 0; i < 20000; ++i) long_text += "Line " + std::to_string(i) + (i % 5 ? ": some words.\n" : "!\n\n  <|endoftext|>");
    const std::vector<std::string_view> one = {long_text, "short"};
    CHECK(enc.encode_batch(one, &allow, 2)[0] == enc.encode(long_text, allow), "a long text in parts, with specials");
    CHECK(enc.encode_batch(one, nullptr, 2)[0] == enc.encode_ordinary(long_text), "a long text in parts");
    views[7] = "boom <|endoftext|>";
    CHECK(throws_invalid([&] { enc.encode_batch(views, &deflt, 2); }), "a batch rethrows a text's error");

    // any bytes round-trip, invalid UTF-8 included
    std::string junk;
    for (int i = 0; i < 5000; ++i) junk += char(rng() % 256);
    CHECK(enc.decode(enc.encode_ordinary(junk)) == junk, "invalid UTF-8 round trip");

    // bad ids
    const Rank bad[] = {1, 50257, 2};
    CHECK(throws_invalid([&] { enc.decode(bad, 3); }), "decode of an unknown id throws");
    CHECK(throws_invalid([&] { enc.token_bytes(99999); }), "token_bytes of an unknown id throws");
}

static void test_small_vocab() {
    // Pair ranks that go down: "abc" = 257 is made from (a, bc) with "bc" = 300, "cab" = 259 from
    // (ca, b) with "ca" = 301, so merging is not monotone and the general long path runs.
    TokenList ranks;
    for (int b = 0; b < 256; ++b) ranks.emplace_back(std::string(1, char(b)), Rank(b));
    ranks.emplace_back("ab", 302);
    ranks.emplace_back("abc", 257);
    ranks.emplace_back("bc", 300);
    ranks.emplace_back("cab", 259);
    ranks.emplace_back("ca", 301);
    ranks.emplace_back("aa", 260);
    ranks.emplace_back("aaa", 261);
    ranks.emplace_back("abcab", 262);
    const Encoder enc(ranks);
    std::mt19937_64 rng(7);
    for (int round = 0; round < 400; ++round) {
        std::string text;
        const int n = 1 + int(rng() % (round < 200 ? 30 : 600));
        for (int i = 0; i < n; ++i) text += "abc"[rng() % 3];
        CHECK(enc.encode_ordinary(text) == naive_merge(enc, text), "small vocab, round %d, %zu bytes", round,
              text.size());
    }
    // bad vocabularies
    TokenList dup = ranks;
    dup.emplace_back("zz", 257);
    CHECK(throws_invalid([&] { Encoder e(dup); }), "duplicate rank");
    TokenList dup2 = ranks;
    dup2.emplace_back("ab", 400);
    CHECK(throws_invalid([&] { Encoder e(dup2); }), "duplicate token");
    TokenList missing(ranks.begin() + 1, ranks.end());
    CHECK(throws_invalid([&] { Encoder e(missing); }), "missing byte");
    CHECK(throws_invalid([&] { Encoder e(ranks, {{"<s>", 257}}); }), "special id collides with a rank");
    CHECK(throws_invalid([&] { Encoder e(ranks, {{"\xff", 500}}); }), "special not UTF-8");
    CHECK(throws_invalid([&] { Encoder::parse_tiktoken("YWI= 1 2\n", "x"); }), "3 fields");
    CHECK(throws_invalid([&] { Encoder::parse_tiktoken("YWI 1\n", "x"); }), "bad padding");
    CHECK(throws_invalid([&] { Encoder::parse_tiktoken("YQ== 1\nYQ== 2\n", "x"); }), "duplicate token line");
    CHECK(throws_invalid([&] { Encoder::parse_tiktoken("YQ== 1\nYg== 1\n", "x"); }), "duplicate rank line");
    CHECK(throws_invalid([&] { Encoder::parse_tiktoken("YQ== -1\n", "x"); }), "negative rank");
    const auto ok = Encoder::parse_tiktoken("YQ== 0\r\n\nYWJj 5", "x");
    CHECK(ok.size() == 2 && ok[1].first == "abc" && ok[1].second == 5, "parse_tiktoken");
}

static void test_trainer() {
    // tests/test_bpe_reference.py::test_train_by_hand
    WordCounts wc;
    wc.add("hug", 10);
    wc.add("pug", 5);
    wc.add("pun", 12);
    wc.add("bun", 4);
    wc.add("hugs", 5);
    const auto merges = train_merges(wc, 1000, 2);
    const Rank u = 'u', g = 'g', n = 'n', h = 'h', p = 'p', s = 's', b = 'b';
    const std::vector<std::vector<Rank>> want = {{u, g, 256},   {u, n, 257},   {h, 256, 258}, {p, 257, 259},
                                                 {p, 256, 260}, {258, s, 261}, {b, 257, 262}};
    bool same = merges.size() == want.size();
    for (size_t i = 0; same && i < want.size(); ++i)
        same = merges[i].left == want[i][0] && merges[i].right == want[i][1] && merges[i].id == want[i][2];
    CHECK(same, "hand-worked training merges (%zu merges)", merges.size());
    const Encoder enc = train(wc, 1000, {"<|endoftext|>"});
    CHECK(enc.n_vocab() == 264 && enc.encode_ordinary("hugs bun") == std::vector<Rank>({261, 32, 262}), "trained");

    WordCounts text_counts;
    text_counts.add_text("aaab aab ab");
    const auto m2 = train_merges(text_counts, 1000, 2);
    CHECK(m2.size() == 2 && m2[0].left == 'a' && m2[0].right == 'a' && m2[1].left == 'a' && m2[1].right == 'b',
          "tie-break: smallest pair");
    CHECK(text_counts.total() == 3 && text_counts.size() == 3, "word counts");
    std::string many;
    for (int i = 0; i < 200000; ++i) many += (i % 3 ? "lorem ipsum dolor " : "sit amet\n");
    WordCounts threaded, serial;
    threaded.add_text(many, 2);
    serial.add_text(many, 1);
    CHECK(threaded.items() == serial.items(), "threaded counting == serial counting");
    CHECK(throws_invalid([&] { train_merges(wc, 10, 0); }), "min_frequency 0");
}

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s path/to/gpt2.tiktoken\n", argv[0]);
        return 2;
    }
    try {
        test_pretokenizer();
        test_gpt2(argv[1]);
        test_small_vocab();
        test_trainer();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        return 1;
    }
    return check_summary();
}
