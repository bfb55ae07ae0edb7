"""The inference servers a study measures: starting, sharing and stopping them.

Owns the server pool of a study (``pool``: lazy start, stale and foreign servers; which
process owns them: ``ownership``),
the watchdog that never lets a server outlive its owner (``supervise``), starting a server
process with its log and waiting until it answers (``process``), loopback networking helpers
(``net``), the simulated Ollama server with exact, known timing (``simulated``),
the embedded Ollama-compatible llama.cpp server (``embedded``) and llama.cpp's own server,
``llama-server``, as one the pool starts (``llama_server``: its executable, model file and
command line).

May import: :mod:`mabench.config`, :mod:`mabench.api` (the contracts they serve), and from
``measure`` only the typed errors (``measure.errors``), the atomic JSON writer
(``measure.records``) and the CPUs this process may use (``measure.environment``). Never imports
``analysis`` or ``datasets``.
"""
