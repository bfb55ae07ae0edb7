"""The embedded Ollama-compatible server: real llama.cpp inference on a GGUF model.

Modules: ``registry`` (names -> GGUF files), ``gguf`` (header metadata), ``runner`` (llama.cpp:
load, prompt, stream, metrics), ``scheduler`` (per-model queue, reload rule, keep-alive),
``shapes`` (Ollama's JSON), ``http`` (bounded JSON bodies in, compact JSON out),
``streaming`` (a generation's answer, streamed or not), ``request_log`` (one line per request),
``app`` (the routes and the Starlette app), ``cli`` (``mabench serve``), ``launch`` (start a
server as a subprocess, for tests and the benchmark).

May import: ``measure.ollama_api`` (the contract it serves) and its own modules.
"""
