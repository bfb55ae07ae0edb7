"""The ollama backend's opt-in pull rule, through real Snakemake and the `ollama` stand-in."""

from __future__ import annotations

import json

import pytest
import yaml
from snake import snakemake

pytestmark = pytest.mark.slow


def study(path, backend, model="smollm2:135m"):
    path.write_text(
        yaml.safe_dump(
            {
                "study": "pull",
                "model": model,
                "backend": backend,
                "configs": [{"id": "c1", "scenario": "chimera_homo"}],
            }
        )
    )
    return path


def test_pull_models_pulls_through_a_started_ollama_server(tmp_path, fake_ollama):
    cfg = study(tmp_path / "s.yaml", {"kind": "ollama", "ollama_binary": str(fake_ollama)})
    proc = snakemake(tmp_path, "pull_models", configfile=cfg, check=True)
    pulled = json.loads((tmp_path / "results" / "pull" / "pulled.json").read_text())
    assert pulled["models"] == ["smollm2:135m"]
    log = (tmp_path / "results" / "pull" / "logs" / "pull_models.log").read_text()
    assert '"status": "success"' in log
    assert not (tmp_path / "results" / "pull" / "runs").exists()  # nothing measured
    assert proc.returncode == 0


def test_pull_of_an_unknown_model_fails_with_the_servers_message(tmp_path, fake_ollama):
    cfg = study(
        tmp_path / "s.yaml", {"kind": "ollama", "ollama_binary": str(fake_ollama)}, model="nope:1b"
    )
    proc = snakemake(tmp_path, "pull_models", configfile=cfg)
    assert proc.returncode != 0
    log = (tmp_path / "results" / "pull" / "logs" / "pull_models.log").read_text()
    assert "pulling nope:1b failed" in log and "file does not exist" in log


def test_pull_models_is_for_the_ollama_backend(tmp_path):
    cfg = study(tmp_path / "s.yaml", {"kind": "embedded"})
    proc = snakemake(tmp_path, "pull_models", configfile=cfg)
    assert proc.returncode != 0
    log = (tmp_path / "results" / "pull" / "logs" / "pull_models.log").read_text()
    assert "pull_models is for the ollama backend" in log
