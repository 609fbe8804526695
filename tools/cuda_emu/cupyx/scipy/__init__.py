"""Stand-in for cupyx.scipy (tools/cuda_emu)."""
