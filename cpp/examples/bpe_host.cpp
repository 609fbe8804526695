// A host program using the pygpt BPE encoder from C++ (find_package(pygpt CONFIG)).
//
//   bpe_host path/to/gpt2.tiktoken ["text to encode"]      (default text: a short sentence)
//
// Loads the ranks, adds <|endoftext|> after the last rank, encodes the text with the special
// token allowed, prints the ids and each token's bytes, and checks that decoding gives the text.
#include <pygpt/pygpt.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE.tiktoken [TEXT]\n", argv[0]);
        return 2;
    }
    const std::string text = argc > 2 ? argv[2] : "Hello world! Don't panic<|endoftext|>  42 naïve cafés";
    try {
        const auto ranks = pygpt::bpe::Encoder::read_tiktoken_file(argv[1]);
        const auto eot = static_cast<pygpt::bpe::Rank>(ranks.size());
        const pygpt::bpe::Encoder enc(ranks, {{"<|endoftext|>", eot}});
        std::printf("%s: %zu ranks, n_vocab %u, pre-tokenizer Unicode %s\n", argv[1], enc.n_ranks(), enc.n_vocab(),
                    pygpt::bpe::unicode_version());

        pygpt::bpe::SpecialPolicy policy;
        policy.allowed = {"<|endoftext|>"};
        const std::vector<pygpt::bpe::Rank> ids = enc.encode(text, policy);
        std::printf("%zu bytes -> %zu tokens\n", text.size(), ids.size());
        for (pygpt::bpe::Rank id : ids) {
            const std::string_view b = enc.token_bytes(id);
            std::printf("%7u  '%.*s'\n", id, static_cast<int>(b.size()), b.data());
        }
        const std::string back = enc.decode(ids);
        std::printf("decode(encode(text)) == text: %s\n", back == text ? "yes" : "NO");
        return back == text ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
