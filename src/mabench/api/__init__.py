"""The wire contracts of the two APIs a study's servers speak, typed once.

Owns Ollama's API (``ollama``: requests, options, the streamed chunks and the final metrics,
``/api/ps``) and the OpenAI API (``openai``: chat completions, their SSE chunks and usage, the
mapping from Ollama's options). The harness's clients, the servers (embedded and simulated) and
the study config all depend on these definitions; nothing here depends on them.

May import: the standard library only (and ``ollama`` from ``openai``: the OpenAI mapping is
defined from Ollama's options). Never imports another ``mabench`` package.
"""
