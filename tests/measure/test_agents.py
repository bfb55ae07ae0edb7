"""An agent's plan: the warm-up call it makes before the measured phases."""

from __future__ import annotations

from mabench.config import study_from_dict
from mabench.measure.agents import WARMUP_PROMPT, WARMUP_SYSTEM, build_plans, warmup_plan


def _plan():
    study = study_from_dict(
        {
            "study": "agents-test",
            "runs": 1,
            "backend": {"kind": "external"},
            "servers": [{"name": "a", "url": "http://127.0.0.1:9"}],
            "workloads": {
                "w": {
                    "system": "You analyse benchmark results.",
                    "calls": [
                        {"prompt": "collector_analyse.md.j2", "num_predict": 40},
                        {"prompt": "collector_report.md.j2", "num_predict": 40},
                    ],
                }
            },
            "agents": [{"name": "collector", "workload": "w", "server": "a"}],
            "configs": [{"id": "c1", "scenario": "chimera_homo", "options": {}}],
        }
    )
    return build_plans(study, study.config("c1"), {"a": "http://127.0.0.1:9"}, "corpus")[0]


def test_the_warm_up_is_one_short_call_on_the_agents_own_path() -> None:
    plan = _plan()
    warm = warmup_plan(plan)
    # the same server, endpoint, model and options as the measured calls
    assert (warm.url, warm.endpoint, warm.info, warm.server) == (
        plan.url,
        plan.endpoint,
        plan.info,
        plan.server,
    )
    assert warm.options(0) == {**plan.info.options, "num_predict": 1}
    # one call, with its own short system prompt: the template's default one (or the
    # workload's) would make the unmeasured prefill several times longer
    assert len(warm.calls) == 1
    assert warm.system == WARMUP_SYSTEM != plan.system
    assert warm.prompt(0, "") == WARMUP_PROMPT
    assert len(WARMUP_SYSTEM) + len(WARMUP_PROMPT) < len(plan.prompt(0, ""))
