"""Render the technical report (Markdown) from the statistics files with Jinja2.

The templates live in ``report/`` at the project root (``technical_report.md.j2`` and the
section files it includes); ``report/captions/<figure>.rst`` caption the figures. The report
reads *only* the statistics (``results/<study>/stats/``), the figures manifest and the table
files' row counts: editing a template re-renders the report and nothing else.

Safety: autoescape is off (this is Markdown, not HTML) but the environment's ``finalize``
escapes every printed string that is not :class:`~markupsafe.Markup`, so text from the data
(config ids, options, host names, model output, error messages) cannot inject Markdown or
HTML; numbers go through formatting filters that return Markup. Missing values print as
``n/a``.

Traceability: every table is rendered by the ``table()`` template function, which takes the
statistics file it reads and the columns it shows; the appendix lists them all, so each cell
traces to a column of a Parquet file under ``stats/``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import pyarrow.parquet as pq
from markupsafe import Markup

from mabench.analysis import markdown as md
from mabench.analysis.figures import read_manifest
from mabench.analysis.hosts import HOSTS_FILE, MIXED_FILE, HostStrata, read_host_strata
from mabench.analysis.stats import Statistics, headline, load_statistics, resolve_settings
from mabench.analysis.templates import TEMPLATE, default_template_dir, template_files

#: Section headings the report always contains (level-2 headings, in order).
SECTIONS: tuple[str, ...] = (
    "Executive summary",
    "Methodology",
    "Overall results",
    "Scenario breakdown",
    "Top configurations and runs",
    "Worst outliers",
    "Measurement validity",
    "Statistical deep dive",
    "Seed formula vs true efficiency",
    "Per-agent throughput and TTFT",
    "Latency distributions",
    "Contention",
    "Topology and coordinator comparison",
    "API comparison",
    "Configuration recommendations",
    "Cost model",
    "SLO check",
    "Reference comparison",
    "TR110 reanalysis",
    "Reliability",
    "Limitations",
    "Appendix A: full configuration table",
    "Appendix B: formulas",
    "Appendix C: glossary",
    "Appendix D: where every table comes from",
)

LABELS: dict[str, str] = {
    "seed_efficiency": "seed efficiency (%)",
    "true_efficiency": "true efficiency, against one after another (%)",
    "interference_efficiency": "interference efficiency, against the solo phase (%)",
    "seed_speedup": "seed speedup (x)",
    "true_speedup": "true speedup (x)",
    "interference_speedup": "interference speedup (x)",
    "true_efficiency_excl_load": "interference efficiency without model loads (%)",
    "concurrent_wall_s": "concurrent wall time (s)",
    "solo_sum_s": "sum of solo agent times (s)",
    "coordination_overhead_ms": "coordination overhead (ms)",
    "throughput_delta": "throughput delta, collector - insight (tok/s)",
    "ttft_delta_ms": "TTFT delta, collector - insight (ms)",
    "concurrent_tps": "server tok/s, concurrent",
    "solo_tps": "server tok/s, solo",
    "concurrent_client_tps": "client decode tok/s, concurrent",
    "solo_client_tps": "client decode tok/s, solo",
    "concurrent_ttft_ms": "mean TTFT, concurrent (ms)",
    "solo_ttft_ms": "mean TTFT, solo (ms)",
    "slowdown": "slowdown (x)",
    "client_ttft_ms": "client TTFT (ms)",
    "load_ms": "server load (ms)",
    "prompt_eval_ms": "server prompt eval (ms)",
    "ttft_rest_ms": "TTFT rest (ms)",
    "client_wall_ms": "call wall time (ms)",
    "server_tps": "server tok/s",
    "client_decode_tps": "client decode tok/s",
}


# ---------------------------------------------------------------------------------------------
# Template helpers
# ---------------------------------------------------------------------------------------------


def _finalize(value: Any) -> Any:
    """What ``{{ ... }}`` prints: Markup as is, missing as n/a, strings escaped."""
    if isinstance(value, Markup):
        return value
    if md.is_missing(value):
        return Markup(md.NA)
    if isinstance(value, bool):
        return Markup("yes" if value else "no")
    if isinstance(value, float):
        return md.fmt_num(value, 3) if math.isfinite(value) else Markup(md.NA)
    if isinstance(value, int):
        return Markup(str(value))
    return md.md_escape(value)


def _clean(value: Any) -> Any:
    if md.is_missing(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


class _Context:
    """The statistics as template functions, and the registry of rendered tables."""

    def __init__(
        self, stats: Statistics, extra: Mapping[str, tuple[pd.DataFrame, str]] | None = None
    ) -> None:
        self.stats = stats
        self.frames = stats.frames()
        #: tables from other files than stats/<name>.parquet: name -> (frame, file shown)
        self.files: dict[str, str] = {}
        for name, (frame, file) in (extra or {}).items():
            self.frames[name] = frame
            self.files[name] = file
        self.registry: list[dict[str, Any]] = []

    def _frame(self, name: str) -> pd.DataFrame:
        if name not in self.frames:
            return pd.DataFrame()
        return self.frames[name]

    def rows(
        self,
        name: str,
        where: Mapping[str, Any] | None = None,
        sort: Sequence[str] | str | None = None,
        descending: bool = False,
        limit: int | None = None,
        min_n: int | None = None,
    ) -> list[dict[str, Any]]:
        df = self._frame(name)
        if min_n is not None and "n" in df:
            df = df[pd.to_numeric(df["n"], errors="coerce").fillna(0) >= min_n]
        for col, val in (where or {}).items():
            if col not in df:
                return []
            if isinstance(val, list | tuple):
                df = df[df[col].isin(val)]
            elif val is None:
                df = df[df[col].isna()]
            else:
                df = df[df[col] == val]
        if sort and not df.empty:
            df = df.sort_values(
                list([sort] if isinstance(sort, str) else sort),
                ascending=not descending,
                kind="stable",
            )
        if limit is not None:
            df = df.head(limit)
        return [{k: _clean(v) for k, v in r.items()} for r in df.to_dict("records")]

    def one(self, name: str, **where: Any) -> dict[str, Any] | None:
        found = self.rows(name, where)
        return found[0] if found else None

    def value(self, name: str, column: str, **where: Any) -> Any:
        row = self.one(name, **where)
        return None if row is None else row.get(column)

    def table(
        self,
        title: str,
        name: str,
        columns: Sequence[Sequence[str]],
        where: Mapping[str, Any] | None = None,
        sort: Sequence[str] | str | None = None,
        descending: bool = False,
        limit: int | None = None,
        min_n: int | None = None,
    ) -> Markup:
        """Render rows of stats file ``name`` as a Markdown table and record its sources."""
        rows = self.rows(name, where, sort, descending, limit, min_n)
        filt = ", ".join(f"{k} = {v}" for k, v in (where or {}).items())
        if min_n is not None:
            filt = ", ".join(x for x in (filt, f"n at least {min_n}") if x)
        self.registry.append(
            {
                "table": title,
                "file": self.files.get(name, f"stats/{name}.parquet"),
                "filter": filt,
                "columns": ", ".join(md.column_keys(columns)),
                "rows": len(rows),
            }
        )
        return md.md_table(rows, columns)


def _environment(template_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(md.FILTERS)
    env.filters["label"] = lambda m: Markup(md.md_escape(LABELS.get(m, m)))
    return env


def _caption(template_dir: Path, name: str) -> str:
    path = template_dir / "captions" / f"{name}.rst"
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8").strip()
    return " ".join(text.split("\n\n")[0].split())


def _figure_markdown(entry: Mapping[str, Any] | None) -> Markup:
    if entry is None:
        return Markup("")
    title = md.md_escape(entry.get("title"))
    note = md.md_escape(entry.get("note")) if entry.get("note") else Markup("")
    if entry.get("status") == "made" and entry.get("path"):
        caption = md.md_escape(entry.get("caption") or "")
        path = str(entry["path"]).replace(" ", "%20").replace(")", "%29")
        lines = [f"![{title}]({path})", "", f"*Figure: {title}.* {caption}"]
        if note:
            lines[-1] += f" ({note})"
        return Markup("\n".join(lines))
    return Markup(f'*Figure "{title}" not drawn: {note or "no data"}.*')


def _table_rows(tables: Any) -> list[dict[str, Any]]:
    if tables is None:
        return []
    if isinstance(tables, Mapping):
        items = [(k, Path(v)) for k, v in tables.items()]
    else:
        items = [(k, Path(tables) / f"{k}.parquet") for k in ("runs", "agents", "calls")]
    out = []
    for name, path in items:
        rows = pq.ParquetFile(path).metadata.num_rows if path.exists() else None
        out.append({"table": name, "path": str(path), "rows": rows})
    return out


def _shown_settings(stats: Statistics, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Presentation settings from the caller; the numeric ones as the statistics used them."""
    computed = resolve_settings(stats.meta.get("settings"))
    shown = resolve_settings({**computed, **dict(settings or {})})
    for key in ("contention", "slo", "cost", "reference"):
        shown[key] = computed[key]
    return shown


def _figures(
    figures_dir: str | Path | None, template_dir: Path, out_path: Path
) -> list[dict[str, Any]]:
    """The figures manifest with captions and paths relative to the report's folder."""
    figures = []
    if figures_dir is not None:
        for entry in read_manifest(figures_dir):
            e = dict(entry)
            e["caption"] = _caption(template_dir, e["name"])
            if e.get("file"):
                e["path"] = os.path.relpath(Path(figures_dir) / e["file"], out_path.parent)
            figures.append(e)
    return figures


def _write_markdown(text: str, out_path: Path) -> None:
    """Trailing spaces and repeated blank lines removed, written atomically."""
    text = "\n".join(line.rstrip() for line in text.splitlines())
    text = _collapse_blank_lines(text) + "\n"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out_path)


def render_report(
    stats: Statistics | str | Path,
    tables: Mapping[str, str | Path] | str | Path | None,
    figures_dir: str | Path | None,
    settings: Mapping[str, Any] | None,
    out_path: str | Path,
    template_dir: str | Path | None = None,
    hosts_dir: str | Path | None = None,
) -> Path:
    """Render ``report/technical_report.md.j2`` to ``out_path``.

    ``stats``: a :class:`Statistics` or the folder :func:`~mabench.analysis.stats.write_statistics`
    wrote. ``tables``: the runs/agents/calls Parquet files (name -> path, or their folder), for
    the provenance section. ``figures_dir``: where :func:`~mabench.analysis.plots.make_figures` wrote the
    PNGs and ``figures.json``. ``settings``: presentation settings (title, methodology text);
    the numeric settings (thresholds, SLO targets, prices) are the ones the statistics were
    computed with. ``hosts_dir``: what :func:`~mabench.analysis.hosts.write_host_strata` wrote
    (the runs by host and hardware), if any.
    """
    out_path = Path(out_path)
    from_files = not isinstance(stats, Statistics)
    if from_files:
        stats = load_statistics(Path(stats))
    tdir = Path(template_dir) if template_dir else default_template_dir()
    shown = _shown_settings(stats, settings)
    figures = _figures(figures_dir, tdir, out_path)
    fig_by_name = {f["name"]: f for f in figures}
    strata = read_host_strata(hosts_dir) if hosts_dir is not None else None
    ctx = _Context(stats, _host_tables(strata, hosts_dir))
    stats_files = (
        [{"file": f"stats/{name}.parquet", "rows": len(df)} for name, df in stats.frames().items()]
        if from_files
        else []
    )
    meta = stats.meta
    text = (
        _environment(tdir)
        .get_template(TEMPLATE)
        .render(
            meta=meta,
            settings=shown,
            h=headline(stats),
            rows=ctx.rows,
            one=ctx.one,
            value=ctx.value,
            table=ctx.table,
            registry=ctx.registry,
            figures=figures,
            figure=lambda name: _figure_markdown(fig_by_name.get(name)),
            ci=md.fmt_ci,
            mdtable=md.md_table,
            methodology_items=_items(shown.get("methodology") or {}),
            inputs=_table_rows(tables) or ctx.rows("inputs"),
            stats_files=stats_files,
            sections=SECTIONS,
            labels=LABELS,
            primary=meta["primary_metric"],
            legacy_methodology=dict(meta.get("legacy_methodology") or {}),
            is_tr110="tr110" in meta.get("sources", []),
            has_reference=bool(stats.reference),
            references=shown["reference"],
            hosts_shown=strata is not None and strata.shown,
        )
    )
    _write_markdown(text, out_path)
    return out_path


def _host_tables(
    strata: HostStrata | None, hosts_dir: str | Path | None
) -> dict[str, tuple[pd.DataFrame, str]]:
    """The runs by host and hardware as report tables, named by the files they come from."""
    if strata is None or hosts_dir is None:
        return {}
    folder = Path(hosts_dir).name
    return {
        "hosts": (strata.hosts, f"{folder}/{HOSTS_FILE}"),
        "mixed_hardware": (strata.mixed_hardware, f"{folder}/{MIXED_FILE}"),
    }


def _items(mapping: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Free-form methodology settings as (key, text) pairs (text escaped when printed)."""
    out = []
    for key, value in mapping.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        out.append((str(key), text))
    return out


def _collapse_blank_lines(text: str) -> str:
    out: list[str] = []
    for line in text.split("\n"):
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    return "\n".join(out).strip("\n")


def build(
    study_dir: str | Path,
    settings: Mapping[str, Any] | None = None,
    template_dir: str | Path | None = None,
) -> Path:
    """Render ``<study_dir>/technical_report.md`` from ``stats/``, ``figures/``, ``tables/``
    and (if there) ``hosts/`` under ``study_dir`` (the layout the pipeline writes)."""
    d = Path(study_dir)
    return render_report(
        d / "stats",
        d / "tables",
        d / "figures",
        settings,
        d / "technical_report.md",
        template_dir,
        hosts_dir=d / "hosts" if (d / "hosts").is_dir() else None,
    )


__all__ = [
    "LABELS",
    "SECTIONS",
    "TEMPLATE",
    "build",
    "default_template_dir",
    "render_report",
    "template_files",
]
