"""The measurement harness: what one run of a config does, and the record it leaves.

Owns the timed transport and the clients (``transport``; the bases every client shares:
``client_base``; a call's shapes and results: ``call``; ``client`` for Ollama's API, with
``arrivals``: when each piece of text arrived; ``openai_client``; ``apis`` picks a server's
client), agents as workloads (``agents``, ``corpus``), how agents run together
(``coordinators``, with the garbage collector paused inside a measured phase: ``collector``),
the run protocol (``protocol``, ``isolation``; what its speedup is measured against:
``baseline``; the same prompt-cache state before every phase: ``cache_state``), what a run
proves about its own conditions after its phases (``validity``: same work, the same cache
state, reloads, what the servers held), the metrics of one
run (``metrics``), the run record, typed once (``records``: msgspec Structs that validate
while decoding; ``schema_file``: the JSON schema generated from them), the machine a run ran on
(``environment``; its Slurm job: ``slurm``) and the typed errors (``errors``).

May import: :mod:`mabench.config` (the typed study), :mod:`mabench.api` (the wire contracts) and
the standard and third-party libraries. Never imports ``servers``, ``analysis`` or
``datasets``: servers are started by the caller, which passes their URLs in.
"""
