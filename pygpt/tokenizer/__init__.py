"""Byte-level BPE tokenization (GPT-2 scheme): the fast C++-backed ``Tokenizer`` and the
pure-Python reference ``BPETokenizer`` (the oracle; ``Tokenizer`` falls back to it without _C).

>>> from pygpt.tokenizer import BPETokenizer, Tokenizer
>>> enc = BPETokenizer.gpt2()
>>> enc.decode(enc.encode("hello world"))
'hello world'
>>> Tokenizer.gpt2().encode("hello world") == enc.encode("hello world")
True
"""
from .bpe import BPETokenizer
from .fast import Tokenizer
from .pretokenize import pretokenize

__all__ = ["BPETokenizer", "Tokenizer", "pretokenize"]
