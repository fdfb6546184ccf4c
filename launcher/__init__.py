"""launcher: private semantic search over your files with Qwen3-VL on the CPU."""

__version__ = "0.1.0"
