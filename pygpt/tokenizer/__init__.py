"""Byte-level BPE tokenization (GPT-2 scheme): the pure-Python reference.

>>> from pygpt.tokenizer import BPETokenizer
>>> enc = BPETokenizer.gpt2()
>>> enc.decode(enc.encode("hello world"))
'hello world'
"""
from .bpe import BPETokenizer
from .pretokenize import pretokenize

__all__ = ["BPETokenizer", "pretokenize"]
