// GPT-2 pre-tokenizer: the generated class tables and the public scanner entry points.
#include "bpe_internal.h"

namespace pygpt::bpe {

namespace detail {
#include "unicode_tables.inc"
static_assert(sizeof(kClassStage1) == 0x110000 / 256, "one stage-1 entry per 256 code points");
static_assert(sizeof(kClassStage2) % 256 == 0, "stage-2 holds whole blocks");
}  // namespace detail

CharClass char_class(uint32_t code_point) {
    if (code_point >= 0xD800 && code_point <= 0xDFFF) return CharClass::Other;
    return static_cast<CharClass>(detail::class_of_cp(code_point));
}

const char* unicode_version() {
    return PYGPT_UNICODE_VERSION;
}

void pretokenize(std::string_view text, std::vector<Piece>& out) {
    detail::scan(reinterpret_cast<const uint8_t*>(text.data()), text.size(),
                 [&](size_t b, size_t e) { out.push_back(Piece{b, e}); });
}

std::vector<size_t> safe_split_points(std::string_view text, size_t chunk_bytes) {
    // A cut at p with text[p] == '\n' and text[p-1] an ASCII byte that is not whitespace is safe:
    // the whole-text scan ends a piece at p (a run of letters/numbers/other, or a contraction,
    // stops at the newline), no rule deciding a piece before p looks past p-1 except the
    // contraction test, which fails on '\n' and at a text end alike, and the scanner keeps no
    // state from one piece to the next.
    std::vector<size_t> cuts;
    if (chunk_bytes == 0) return cuts;
    const size_t n = text.size();
    size_t target = chunk_bytes;
    while (target < n) {
        size_t p = target;
        bool found = false;
        while (p < n) {
            const void* hit = std::memchr(text.data() + p, '\n', n - p);
            if (!hit) break;
            p = static_cast<size_t>(static_cast<const char*>(hit) - text.data());
            if (p > 0) {
                const auto prev = static_cast<uint8_t>(text[p - 1]);
                if (prev < 0x80 && detail::kAscii.c[prev] != detail::kS) {
                    found = true;
                    break;
                }
            }
            ++p;
        }
        if (!found) break;
        cuts.push_back(p);
        target = p + chunk_bytes;
    }
    return cuts;
}

}  // namespace pygpt::bpe
