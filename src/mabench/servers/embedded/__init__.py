"""The embedded Ollama-compatible server: real llama.cpp inference on a GGUF model.

Modules: ``registry`` (names -> GGUF files), ``gguf`` (header metadata), ``runner`` (llama.cpp:
load, prompt, stream, metrics), ``scheduler`` (per-model queue, reload rule, keep-alive),
``shapes`` (its models in Ollama's response objects, which :mod:`mabench.api.ollama` builds),
``http`` (bounded JSON bodies in, compact JSON out), ``streaming`` (a generation's answer,
streamed or not), ``wire`` (that answer as Ollama's NDJSON or OpenAI's SSE), ``request_log``
(one line per request), ``ollama_routes`` (Ollama's routes over the scheduler),
``openai_routes`` (OpenAI's ``/v1`` routes on the same scheduler), ``app`` (the Starlette app:
both route sets, the error answers), ``cli`` (``mabench serve``), ``launch`` (start a server as
a subprocess, for tests and the benchmark).

May import: :mod:`mabench.api` (the contracts it serves), :mod:`mabench.servers.net` and
:mod:`mabench.servers.process` (``cli``, ``launch``: loopback addresses, the start and the wait)
and its own modules.
"""
