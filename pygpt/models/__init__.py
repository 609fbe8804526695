"""Model families. GPT-1/GPT-2 live in `gpt`."""
from .gpt import GPT, GPTConfig, PRESETS, preset

__all__ = ["GPT", "GPTConfig", "PRESETS", "preset"]
