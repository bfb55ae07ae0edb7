"""The wire contracts of the two APIs a study's servers speak, typed once.

Owns Ollama's API (``ollama``: requests, options, the final metrics, and every response object
a server sends: the streamed chunks and the final one, ``/api/tags``, ``/api/ps``,
``/api/show``, ``/api/version``, errors) and the OpenAI API (``openai``: chat completions, their
SSE chunks, usage and timings, ``/v1/models``, the error object, the mapping from Ollama's
options). Requests are parsed and responses built here and nowhere else: the harness's clients,
the servers (embedded and simulated) and the study config all depend on these definitions;
nothing here depends on them.

May import: the standard library only (and ``ollama`` from ``openai``: the OpenAI mapping is
defined from Ollama's options). Never imports another ``mabench`` package.
"""
