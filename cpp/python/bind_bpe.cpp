// Bindings for byte-level BPE (cpp/include/pygpt/bpe.h); the Python API is pygpt.Tokenizer
// (pygpt/tokenizer/fast.py), which wraps _C.BPE.
//
// Text: a str is read as UTF-8 in place (PyUnicode_AsUTF8AndSize; no copy for ASCII). A str with
// lone surrogates cannot be UTF-8; it is repaired like tiktoken does (a high+low pair becomes its
// character, any other surrogate U+FFFD) into a private copy.
// Output: lists are built from cached int objects (one per id, made once), so a list costs one
// pointer store per token; as_numpy=True returns a uint32 array that owns the C++ buffer.
// The GIL is released around every encode/decode/count/train; encode_batch runs on C++ threads.
#include <pygpt/bpe.h>
#include <pygpt/parallel.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "checks.h"

namespace pygpt_py {
namespace {

namespace bpe = pygpt::bpe;
using bpe::Rank;

// A Python str as UTF-8: a view of the str's own UTF-8 buffer, or a repaired private copy.
class Utf8Text {
   public:
    /// `name` (and `index` >= 0: name[index]) is the argument a TypeError names.
    Utf8Text(const py::handle& obj, const char* name, Py_ssize_t index = -1) {
        if (!PyUnicode_Check(obj.ptr()))
            throw py::type_error(std::string(name) + (index >= 0 ? "[" + std::to_string(index) + "]" : "") +
                                 " must be a str, got " + type_name(obj));
        Py_ssize_t size = 0;
        const char* data = PyUnicode_AsUTF8AndSize(obj.ptr(), &size);
        if (data) {
            view_ = std::string_view(data, size_t(size));
            return;
        }
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) throw py::error_already_set();
        PyErr_Clear();
        repair(obj.ptr());
        owned_ = true;
    }
    std::string_view view() const { return owned_ ? std::string_view(copy_) : view_; }

   private:
    void repair(PyObject* s) {
        const Py_ssize_t n = PyUnicode_GET_LENGTH(s);
        const int kind = PyUnicode_KIND(s);
        const void* d = PyUnicode_DATA(s);
        copy_.reserve(size_t(n) * 3);
        for (Py_ssize_t i = 0; i < n; ++i) {
            Py_UCS4 c = PyUnicode_READ(kind, d, i);
            if (c >= 0xD800 && c <= 0xDBFF && i + 1 < n) {
                const Py_UCS4 c2 = PyUnicode_READ(kind, d, i + 1);
                if (c2 >= 0xDC00 && c2 <= 0xDFFF) {
                    c = 0x10000 + ((c - 0xD800) << 10) + (c2 - 0xDC00);
                    ++i;
                }
            }
            if (c >= 0xD800 && c <= 0xDFFF) c = 0xFFFD;
            if (c < 0x80) {
                copy_ += char(c);
            } else if (c < 0x800) {
                copy_ += char(0xC0 | (c >> 6));
                copy_ += char(0x80 | (c & 0x3F));
            } else if (c < 0x10000) {
                copy_ += char(0xE0 | (c >> 12));
                copy_ += char(0x80 | ((c >> 6) & 0x3F));
                copy_ += char(0x80 | (c & 0x3F));
            } else {
                copy_ += char(0xF0 | (c >> 18));
                copy_ += char(0x80 | ((c >> 12) & 0x3F));
                copy_ += char(0x80 | ((c >> 6) & 0x3F));
                copy_ += char(0x80 | (c & 0x3F));
            }
        }
    }
    std::string_view view_;
    std::string copy_;
    bool owned_ = false;
};

py::array ids_to_numpy(std::vector<Rank>&& ids) {
    if (ids.empty()) return py::array_t<uint32_t>(0);
    auto* heap = new std::vector<Rank>(std::move(ids));
    py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<Rank>*>(p); });
    return py::array_t<uint32_t>({static_cast<py::ssize_t>(heap->size())}, {static_cast<py::ssize_t>(sizeof(Rank))},
                                 heap->data(), owner);
}

std::string py_repr(const std::string& utf8) {
    return py::repr(py::str(utf8));
}

[[noreturn]] void raise_disallowed(const bpe::DisallowedSpecialError& e) {
    throw py::value_error("encountered disallowed special token " + py_repr(e.token()) +
                          " in the text; pass it in allowed_special to encode it as a special token, or "
                          "disallowed_special=() to encode it as ordinary text");
}

/// `obj` as an iterable, else a TypeError naming the argument.
py::iterable iterable_arg(const py::handle& obj, const char* name, const char* want) {
    if (!py::isinstance<py::iterable>(obj))
        throw py::type_error(std::string(name) + " must be " + want + ", got " + type_name(obj));
    return py::reinterpret_borrow<py::iterable>(obj);
}

/// A str's UTF-8 bytes; a str with lone surrogates (not UTF-8) is a ValueError naming `what`.
std::string utf8_arg(const py::handle& s, const std::string& what) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(s.ptr(), &size);
    if (!data) {
        PyErr_Clear();
        throw py::value_error(what + " " + std::string(py::repr(s)) + " is not valid UTF-8 text");
    }
    return std::string(data, size_t(size));
}

std::vector<std::string> str_list(const py::handle& obj, const char* what) {
    std::vector<std::string> out;
    for (py::handle item : iterable_arg(obj, what, "an iterable of str")) {
        if (!py::isinstance<py::str>(item))
            throw py::type_error(std::string(what) + " must hold str, got " + type_name(item));
        out.push_back(utf8_arg(item, std::string(what) + ":"));
    }
    return out;
}

/// num_threads of the batch calls: 0 = pygpt._C.num_threads(), else 1..1024 (as set_num_threads).
int checked_threads(int n) {
    if (n < 0 || n > 1024)
        throw py::value_error("num_threads must be in [0, 1024] (0: pygpt._C.num_threads()), got " + std::to_string(n));
    return n;
}

/// A file path for the C++ readers: no NUL byte (it would silently name another file), not a
/// directory (an ifstream reads a directory as an empty file). Missing files: RuntimeError there.
const std::string& checked_path(const std::string& path) {
    if (path.find('\0') != std::string::npos)
        throw py::value_error("path must not contain a NUL byte");
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) throw std::runtime_error("cannot read " + path + ": is a directory");
    return path;
}

bpe::TokenList token_list(const py::handle& obj, bool special) {
    // an iterable of (bytes | str, int) pairs, or a dict
    const char* arg = special ? "specials" : "ranks";
    bpe::TokenList out;
    py::object items = py::isinstance<py::dict>(obj) ? py::reinterpret_borrow<py::dict>(obj).attr("items")()
                                                     : py::reinterpret_borrow<py::object>(obj);
    const char* want = special ? "a dict str -> int or an iterable of (str, int) pairs"
                               : "a dict bytes -> int or an iterable of (bytes, int) pairs";
    for (py::handle pair : iterable_arg(items, arg, want)) {
        if (!PySequence_Check(pair.ptr()) || py::isinstance<py::str>(pair) || py::isinstance<py::bytes>(pair))
            throw py::type_error(std::string(arg) + " must hold (token, id) pairs, got " + type_name(pair));
        auto t = py::reinterpret_borrow<py::sequence>(pair);
        if (t.size() != 2)
            throw py::value_error(std::string(arg) + ": expected (token, id) pairs, got one of length " +
                                  std::to_string(t.size()));
        py::object tok = t[0], id = t[1];
        std::string bytes;
        if (special) {
            if (!py::isinstance<py::str>(tok))
                throw py::type_error("specials: special token must be str, got " + type_name(tok));
            bytes = utf8_arg(tok, "specials: special token");
        } else {
            if (!py::isinstance<py::bytes>(tok)) throw py::type_error("ranks: token must be bytes, got " + type_name(tok));
            bytes = tok.cast<std::string>();
        }
        if (PyBool_Check(id.ptr()) || !PyLong_Check(id.ptr()))
            throw py::type_error(std::string(arg) + ": token id must be an int, got " + type_name(id));
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(id.ptr(), &overflow);
        if (overflow || v < 0 || v > 0x7FFFFFFELL)
            throw py::value_error(std::string(arg) + ": token " + std::string(py::repr(tok)) + " has invalid " +
                                  (special ? "id " : "rank ") + std::string(py::repr(id)) + " (ids must be in [0, 2**31 - 1))");
        out.emplace_back(std::move(bytes), Rank(v));
    }
    return out;
}

// pybind11 (3.1 and earlier, pybind11 issue #6153) lets Python make an instance whose C++ object
// was never constructed (BPE.__new__(BPE), pybind11_object.__new__(BPE)); the first method call
// then allocates raw storage with the class's operator new and runs on it (a crash). Our objects
// are only ever created with the global ::new (the py::init factories, from_tiktoken_file,
// bpe_train), so this class operator new is reached only on that path: it refuses with a
// TypeError instead. Never create these classes with plain `new` or std::make_unique.
struct RefuseUnconstructed {
    static void* operator new(size_t) {
        throw py::type_error("this pygpt._C object was never initialized (created by __new__ without __init__)");
    }
    static void operator delete(void* p) { ::operator delete(p); }
};

class PyBPE : public RefuseUnconstructed {
   public:
    explicit PyBPE(bpe::Encoder&& enc) : enc_(std::move(enc)) { make_ints(); }
    PyBPE(const py::object& ranks, const py::object& specials)
        : enc_(make_encoder(token_list(ranks, false), specials.is_none() ? bpe::TokenList{} : token_list(specials, true))) {
        make_ints();
    }
    ~PyBPE() {
        for (PyObject* o : ints_) Py_XDECREF(o);
    }
    PyBPE(const PyBPE&) = delete;
    PyBPE& operator=(const PyBPE&) = delete;

    static bpe::Encoder make_encoder(const bpe::TokenList& ranks, const bpe::TokenList& specials) {
        return bpe::Encoder(ranks, specials);
    }

    const bpe::Encoder& enc() const { return enc_; }

    py::list to_list(const std::vector<Rank>& ids) const {
        PyObject* l = PyList_New(static_cast<Py_ssize_t>(ids.size()));
        if (!l) throw py::error_already_set();
        // Py_INCREF writes the refcount of one of n_vocab int objects (GPT-2: 50k x 32 bytes,
        // 1.6 MB): the rarer ids miss the caches. Prefetch the object kAhead ids ahead so those
        // misses overlap (this loop's share of a 2-thread list batch: 8.4% -> 6.9% of samples).
        constexpr size_t kAhead = 16;
        const size_t n = ids.size();
        for (size_t i = 0; i < n; ++i) {
            if (i + kAhead < n) __builtin_prefetch(ints_[ids[i + kAhead]], 1);
            PyObject* o = ints_[ids[i]];
            Py_INCREF(o);
            PyList_SET_ITEM(l, static_cast<Py_ssize_t>(i), o);
        }
        return py::reinterpret_steal<py::list>(l);
    }
    py::object out(std::vector<Rank>&& ids, bool as_numpy) const {
        if (as_numpy) return ids_to_numpy(std::move(ids));
        return to_list(ids);
    }

    py::object encode_ordinary(const py::object& text, bool as_numpy) const {
        Utf8Text t(text, "text");
        std::vector<Rank> ids;
        {
            py::gil_scoped_release nogil;
            ids.reserve(t.view().size() / 4 + 16);
            enc_.encode_ordinary(t.view(), ids);
        }
        return out(std::move(ids), as_numpy);
    }

    py::object encode(const py::object& text, const py::object& allowed, const py::object& disallowed,
                      bool as_numpy) const {
        Utf8Text t(text, "text");
        // None, None: tiktoken's default (nothing allowed, every special token disallowed)
        const bool deflt = allowed.is_none() && disallowed.is_none();
        bpe::SpecialPolicy given;
        if (!deflt) {
            if (!allowed.is_none()) given.allowed = str_list(allowed, "allowed_special");
            if (!disallowed.is_none()) given.disallowed = str_list(disallowed, "disallowed_special");
        }
        const bpe::SpecialPolicy& policy = deflt ? default_policy_ : given;
        std::vector<Rank> ids;
        try {
            py::gil_scoped_release nogil;
            ids.reserve(t.view().size() / 4 + 16);
            enc_.encode(t.view(), policy, ids);
        } catch (const bpe::DisallowedSpecialError& e) {
            raise_disallowed(e);
        }
        return out(std::move(ids), as_numpy);
    }

    py::list encode_batch(const py::object& texts, const py::object& allowed, const py::object& disallowed,
                          int num_threads, bool as_numpy) const {
        if (py::isinstance<py::str>(texts)) throw py::type_error("texts must be a list of str, got a str");
        checked_threads(num_threads);
        std::vector<py::object> keep;  // the strs stay alive while the GIL is released
        std::vector<Utf8Text> utf8;
        for (py::handle item : iterable_arg(texts, "texts", "a list of str")) {
            keep.push_back(py::reinterpret_borrow<py::object>(item));
            utf8.emplace_back(item, "texts", Py_ssize_t(utf8.size()));
        }
        std::vector<std::string_view> views;
        views.reserve(utf8.size());
        for (const auto& u : utf8) views.push_back(u.view());
        const bool with_policy = !allowed.is_none() || !disallowed.is_none();
        bpe::SpecialPolicy policy;
        if (with_policy) {
            if (!allowed.is_none()) policy.allowed = str_list(allowed, "allowed_special");
            if (!disallowed.is_none()) policy.disallowed = str_list(disallowed, "disallowed_special");
        }
        py::list outl(views.size());
        try {
            // Results are converted on this thread, in order, as they become ready (taking the
            // GIL for each), while the other threads keep encoding: list building overlaps.
            py::gil_scoped_release nogil;
            enc_.encode_batch_ordered(views, with_policy ? &policy : nullptr, num_threads,
                                      [&](size_t i, std::vector<Rank>& ids) {
                                          py::gil_scoped_acquire gil;
                                          outl[i] = out(std::move(ids), as_numpy);
                                      });
        } catch (const bpe::DisallowedSpecialError& e) {
            raise_disallowed(e);
        }
        return outl;
    }

    // ids: an iterable of ints or an integer numpy array
    std::vector<Rank> ids_of(const py::handle& obj) const {
        const Rank n_vocab = enc_.n_vocab();
        auto bad = [&](const std::string& v) {
            return py::value_error("invalid token id " + v + " (n_vocab=" + std::to_string(n_vocab) + ")");
        };
        std::vector<Rank> ids;
        if (py::isinstance<py::array>(obj)) {
            auto a = py::reinterpret_borrow<py::array>(obj);
            const char kind = a.dtype().kind();
            if (kind != 'i' && kind != 'u')
                throw py::type_error("token ids must be integers, got an array of dtype " + std::string(py::str(a.dtype())));
            auto a64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a.attr("ravel")());
            if (!a64) throw py::error_already_set();
            const int64_t* p = a64.data();
            ids.resize(size_t(a64.size()));
            const bool unsigned64 = kind == 'u' && a.dtype().itemsize() == 8;
            for (size_t i = 0; i < ids.size(); ++i) {
                const int64_t v = p[i];
                if (v < 0 || !enc_.valid_id(uint64_t(v)))
                    throw bad(unsigned64 && v < 0 ? std::to_string(uint64_t(v)) : std::to_string(v));
                ids[i] = Rank(v);
            }
            return ids;
        }
        if (py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj))
            throw py::type_error("ids must be an iterable of ints or an integer array, got " + type_name(obj));
        const py::iterable items = iterable_arg(obj, "ids", "an iterable of ints or an integer array");
        if (PyList_Check(obj.ptr()) || PyTuple_Check(obj.ptr())) ids.reserve(size_t(py::len(obj)));
        for (py::handle item : items) ids.push_back(id_of(item, bad));
        return ids;
    }

    template <class Bad>
    Rank id_of(const py::handle& item, Bad&& bad) const {
        PyObject* v = item.ptr();
        py::object owned;
        if (!PyLong_Check(v)) {
            PyObject* idx = PyNumber_Index(v);
            if (!idx) {
                PyErr_Clear();
                throw py::type_error("token id must be an integer, got " + type_name(item));
            }
            owned = py::reinterpret_steal<py::object>(idx);
            v = idx;
        }
        int overflow = 0;
        const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || x < 0 || !enc_.valid_id(uint64_t(x))) throw bad(std::string(py::str(v)));
        return Rank(x);
    }

    py::bytes decode_bytes(const py::object& ids_obj) const {
        const std::vector<Rank> ids = ids_of(ids_obj);
        std::string s;
        {
            py::gil_scoped_release nogil;
            s = enc_.decode(ids.data(), ids.size());
        }
        return py::bytes(s);
    }

    py::str decode(const py::object& ids_obj, const std::string& errors) const {
        // an unknown handler would surface only when the bytes need it, and as a LookupError
        if (errors.find('\0') != std::string::npos) throw py::value_error("errors must not contain a NUL byte");
        PyObject* handler = PyCodec_LookupError(errors.c_str());
        if (!handler) {
            PyErr_Clear();
            throw py::value_error("errors: unknown error handler name " + std::string(py::repr(py::str(errors))));
        }
        Py_DECREF(handler);
        const std::vector<Rank> ids = ids_of(ids_obj);
        std::string s;
        {
            py::gil_scoped_release nogil;
            s = enc_.decode(ids.data(), ids.size());
        }
        PyObject* u = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), errors.c_str());
        if (!u) throw py::error_already_set();
        return py::reinterpret_steal<py::str>(u);
    }

    py::bytes single_token_bytes(const py::object& token) const {
        auto bad = [&](const std::string& v) {
            return py::value_error("invalid token id " + v + " (n_vocab=" + std::to_string(enc_.n_vocab()) + ")");
        };
        const Rank id = id_of(token, bad);
        const std::string_view b = enc_.token_bytes(id);
        return py::bytes(b.data(), b.size());
    }

    py::dict special_tokens() const {
        py::dict d;
        for (const auto& [text, id] : enc_.special_tokens()) d[py::str(text)] = id;
        return d;
    }

    py::dict ranks() const {
        py::dict d;
        for (const auto& [tok, r] : enc_.ranks()) d[py::bytes(tok)] = ints_[r] ? py::reinterpret_borrow<py::object>(ints_[r]) : py::int_(r);
        return d;
    }

   private:
    void make_ints() {
        default_policy_.disallowed = enc_.all_specials();
        ints_.assign(enc_.n_vocab(), nullptr);
        for (Rank i = 0; i < enc_.n_vocab(); ++i) {
            ints_[i] = PyLong_FromUnsignedLong(i);
            if (!ints_[i]) throw py::error_already_set();
        }
    }
    bpe::Encoder enc_;
    std::vector<PyObject*> ints_;
    bpe::SpecialPolicy default_policy_;
};

class PyWordCounts : public RefuseUnconstructed {
   public:
    void add_texts(const py::object& texts, int num_threads) {
        if (py::isinstance<py::str>(texts)) throw py::type_error("texts must be a list of str, got a str");
        checked_threads(num_threads);
        std::vector<py::object> keep;
        std::vector<Utf8Text> utf8;
        for (py::handle item : iterable_arg(texts, "texts", "a list of str")) {
            keep.push_back(py::reinterpret_borrow<py::object>(item));
            utf8.emplace_back(item, "texts", Py_ssize_t(utf8.size()));
        }
        std::vector<std::string_view> views;
        for (const auto& u : utf8) views.push_back(u.view());
        py::gil_scoped_release nogil;
        wc.add_texts(views, num_threads);
    }
    size_t add_file(const std::string& path, int num_threads) {
        checked_path(path);
        checked_threads(num_threads);
        py::gil_scoped_release nogil;
        return wc.add_file(path, num_threads);
    }
    bpe::WordCounts wc;
};

}  // namespace

void bind_bpe(py::module_& m) {
    py::class_<PyBPE>(m, "BPE", R"doc(Byte-level BPE encoder/decoder (C++). Use pygpt.Tokenizer, which wraps it.

BPE(ranks, specials=None): ranks is a dict bytes -> rank (or (bytes, rank) pairs), specials a dict
str -> id. ValueError for invalid vocabularies (missing single bytes, duplicate ranks, ...).)doc")
        .def(py::init([](const py::object& ranks, const py::object& specials) {
                 return std::unique_ptr<PyBPE>(::new PyBPE(ranks, specials));  // global new: see RefuseUnconstructed
             }),
             py::arg("ranks"), py::arg("specials") = py::none())
        .def_static(
            "from_tiktoken_file",
            [](const std::string& path, const py::object& specials) {
                const bpe::TokenList sp = specials.is_none() ? bpe::TokenList{} : token_list(specials, true);
                checked_path(path);
                bpe::TokenList ranks;
                {
                    py::gil_scoped_release nogil;
                    ranks = bpe::Encoder::read_tiktoken_file(path);
                }
                return std::unique_ptr<PyBPE>(::new PyBPE(bpe::Encoder(ranks, sp)));
            },
            py::arg("path"), py::arg("specials") = py::none(),
            "Load a .tiktoken file (base64 token, rank per line); errors name the file and line.")
        .def_property_readonly("n_vocab", [](const PyBPE& b) { return b.enc().n_vocab(); })
        .def_property_readonly("n_ranks", [](const PyBPE& b) { return b.enc().n_ranks(); })
        .def("special_tokens", &PyBPE::special_tokens, "dict: special token text -> id")
        .def("ranks", &PyBPE::ranks, "dict: token bytes -> rank (every ordinary token)")
        .def(
            "token_rank", [](const PyBPE& b, const py::bytes& tok) {
                const int64_t r = b.enc().token_rank(std::string(tok));
                return r < 0 ? py::object(py::none()) : py::object(py::int_(r));
            },
            py::arg("token"), "The rank of a whole token's bytes, or None.")
        .def("encode_ordinary", &PyBPE::encode_ordinary, py::arg("text"), py::arg("as_numpy") = false)
        .def("encode", &PyBPE::encode, py::arg("text"), py::arg("allowed") = py::none(),
             py::arg("disallowed") = py::none(), py::arg("as_numpy") = false,
             "allowed/disallowed: lists of special token texts (tiktoken semantics); both None: the default "
             "(none allowed, all disallowed)")
        .def("encode_batch", &PyBPE::encode_batch, py::arg("texts"), py::arg("allowed") = py::none(),
             py::arg("disallowed") = py::none(), py::arg("num_threads") = 0, py::arg("as_numpy") = false,
             "Encode a list of str on C++ threads (GIL released); allowed = disallowed = None: encode_ordinary.")
        .def(
            "encode_piece",
            [](const PyBPE& b, const py::bytes& piece) {
                std::vector<Rank> ids;
                b.enc().encode_piece(std::string(piece), ids);
                return b.to_list(ids);
            },
            py::arg("piece"), "Merge the bytes of one piece (no pre-tokenization).")
        .def("decode_bytes", &PyBPE::decode_bytes, py::arg("ids"))
        .def("decode", &PyBPE::decode, py::arg("ids"), py::arg("errors") = "replace")
        .def("decode_single_token_bytes", &PyBPE::single_token_bytes, py::arg("token"));

    py::class_<PyWordCounts>(m, "BPEWordCounts", "Pre-tokenized word counts for BPE training (C++).")
        .def(py::init([]() { return std::unique_ptr<PyWordCounts>(::new PyWordCounts()); }))
        .def("add_texts", &PyWordCounts::add_texts, py::arg("texts"), py::arg("num_threads") = 0,
             "Count the pieces of each str (each pre-tokenized on its own) on C++ threads.")
        .def("add_file", &PyWordCounts::add_file, py::arg("path"), py::arg("num_threads") = 0,
             "Count a UTF-8 file as one text; returns its size in bytes.")
        .def(
            "add",
            [](PyWordCounts& w, const py::bytes& word, uint64_t count) {
                // total() bounds every word's count: keeping it <= 2**62 keeps the 64-bit counts
                // from wrapping around (train_merges checks its own pair counts)
                constexpr uint64_t kMax = uint64_t(1) << 62;
                if (count > kMax || w.wc.total() > kMax - count)
                    throw py::value_error("count " + std::to_string(count) + " too large: the counts of all words "
                                          "together must stay <= 2**62 (now " + std::to_string(w.wc.total()) + ")");
                w.wc.add(std::string(word), count);
            },
            py::arg("word"), py::arg("count"), "Add `count` occurrences of one word (bytes).")
        .def("__len__", [](const PyWordCounts& w) { return w.wc.size(); })
        .def_property_readonly("total", [](const PyWordCounts& w) { return w.wc.total(); })
        .def("items", [](const PyWordCounts& w) {
            py::list out;
            for (const auto& [word, c] : w.wc.items()) out.append(py::make_tuple(py::bytes(word), c));
            return out;
        });

    m.def(
        "bpe_train_merges",
        [](const PyWordCounts& w, size_t n_merges, uint64_t min_frequency) {
            // ids are < 2**31, so no vocabulary has more merges; the cap also keeps 256 + n_merges
            // from wrapping around in train_merges (n_merges = 2**64 - 1 used to give no merges)
            n_merges = std::min<size_t>(n_merges, size_t(1) << 31);
            std::vector<bpe::Merge> merges;
            {
                py::gil_scoped_release nogil;
                merges = bpe::train_merges(w.wc, n_merges, min_frequency);
            }
            py::list out;
            for (const auto& mg : merges) out.append(py::make_tuple(mg.left, mg.right, mg.id));
            return out;
        },
        py::arg("counts"), py::arg("n_merges"), py::arg("min_frequency") = 2,
        "Training merges (left id, right id, new id); the reference trainer's algorithm and tie-break.");
    m.def(
        "bpe_train",
        [](const PyWordCounts& w, size_t vocab_size, const py::object& specials, uint64_t min_frequency) {
            const std::vector<std::string> sp = str_list(specials, "special_tokens");
            std::unique_ptr<bpe::Encoder> enc;
            {
                py::gil_scoped_release nogil;
                enc = std::make_unique<bpe::Encoder>(bpe::train(w.wc, vocab_size, sp, min_frequency));
            }
            return std::unique_ptr<PyBPE>(::new PyBPE(std::move(*enc)));
        },
        py::arg("counts"), py::arg("vocab_size"), py::arg("special_tokens") = py::list(),
        py::arg("min_frequency") = 2, "Train a BPE of vocab_size ids (256 bytes + merges + specials).");
    m.def(
        "bpe_pretokenize",
        [](const py::object& text) {
            Utf8Text t(text, "text");
            std::vector<bpe::Piece> pieces;
            bpe::pretokenize(t.view(), pieces);
            py::list out;
            const std::string_view v = t.view();
            for (const auto& p : pieces) out.append(py::str(v.data() + p.begin, p.end - p.begin));
            return out;
        },
        py::arg("text"), "GPT-2 pre-tokenization by the C++ scanner (list of str pieces).");
    m.def(
        "bpe_piece_lengths",
        [](const py::object& text) {
            Utf8Text t(text, "text");
            const std::string_view v = t.view();
            std::vector<bpe::Piece> pieces;
            {
                py::gil_scoped_release nogil;
                bpe::pretokenize(v, pieces);
            }
            py::array_t<int32_t> out(static_cast<py::ssize_t>(pieces.size()));
            int32_t* w = out.mutable_data();
            for (size_t i = 0; i < pieces.size(); ++i) {
                int32_t n = 0;  // code points = bytes that are not UTF-8 continuation bytes
                for (size_t k = pieces[i].begin; k < pieces[i].end; ++k) n += (static_cast<uint8_t>(v[k]) & 0xC0) != 0x80;
                w[i] = n;
            }
            return out;
        },
        py::arg("text"), "Lengths in code points of the C++ scanner's pieces (int32 array).");
    m.def(
        "bpe_split_text",
        [](const py::object& text, size_t chunk_bytes) {
            Utf8Text t(text, "text");
            const std::string_view v = t.view();
            const auto cuts = bpe::safe_split_points(v, chunk_bytes);
            py::list out;
            size_t start = 0;
            for (size_t c : cuts) {
                out.append(py::str(v.data() + start, c - start));
                start = c;
            }
            out.append(py::str(v.data() + start, v.size() - start));
            return out;
        },
        py::arg("text"), py::arg("chunk_bytes"),
        "Cut text into parts of about chunk_bytes UTF-8 bytes that pre-tokenize exactly like the whole.");
    m.def(
        "bpe_char_classes",
        []() {
            std::string out(0x110000, '\0');
            for (uint32_t c = 0; c < 0x110000; ++c) out[c] = char(bpe::char_class(c));
            return py::bytes(out);
        },
        "The C++ class (0 letter, 1 number, 2 space, 3 other) of every code point, as bytes.");
    m.def("bpe_unicode_version", []() { return std::string(bpe::unicode_version()); });
}

}  // namespace pygpt_py
