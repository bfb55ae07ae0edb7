"""The embedded Ollama-compatible server: real llama.cpp inference on a GGUF model.

Modules: ``registry`` (names -> GGUF files), ``gguf`` (header metadata), ``runner`` (llama.cpp:
load, prompt, stream, metrics), ``scheduler`` (per-model queue, reload rule, keep-alive),
``shapes`` (Ollama's JSON), ``app`` (Starlette routes), ``cli`` (``mabench serve``),
``launch`` (start a server as a subprocess, for tests and the benchmark).
"""
