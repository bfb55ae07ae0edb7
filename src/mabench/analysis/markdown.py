"""Markdown escaping and number formatting for the technical report.

Everything that comes from data (config ids, scenario names, options, agent names, host names,
error messages, model output) is *untrusted text*: :func:`md_escape` neutralises Markdown and
HTML in it. Everything this module formats itself (numbers, CIs, tables) is returned as
:class:`markupsafe.Markup`, which the report's Jinja environment passes through unchanged;
any other string printed by a template is escaped automatically (see ``mabench.analysis.report``).

Missing values (``None``, NaN, pandas ``NA``) always render as ``n/a``, never ``nan``/``None``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup

NA = "n/a"

# Markdown punctuation that can start emphasis, code, links, headings, tables or lists.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA/NaT."""
    if value is None:
        return True
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, float):
        return math.isnan(value)
    try:
        return bool(value != value)  # numpy NaN scalars
    except (TypeError, ValueError):
        return False


def md_escape(value: Any) -> Markup:
    """Escape untrusted text for Markdown (inline or inside a table cell).

    HTML metacharacters become entities (so ``<script>`` cannot survive), Markdown
    punctuation is backslash-escaped, and newlines/tabs collapse to one space (a newline
    would end a table row).
    """
    if isinstance(value, Markup):
        return value
    if is_missing(value):
        return Markup(NA)
    text = str(value)
    text = "".join(_HTML.get(ch, ch) for ch in text)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = re.sub(r"[\r\n\t\f\v]+", " ", text)
    # A leading "-", "=" or "1." could start a list/heading underline on a line of its own.
    text = re.sub(r"^([-=])", r"\\\1", text)
    return Markup(text)


def _finite(value: Any) -> float | None:
    if is_missing(value):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt_num(value: Any, digits: int = 2) -> Markup:
    x = _finite(value)
    if x is None:
        return Markup(NA)
    text = f"{x:.{digits}f}"
    if text.startswith("-") and float(text) == 0:
        text = text[1:]
    return Markup(text)


def fmt_count_or_num(value: Any, digits: int = 2) -> Markup:
    """A whole number as an integer (a count: 27, not 27.000), any other as ``fmt_num``."""
    x = _finite(value)
    if x is not None and float(x).is_integer():
        return fmt_int(x)
    return fmt_num(value, digits)


def fmt_signed(value: Any, digits: int = 2) -> Markup:
    x = _finite(value)
    if x is None:
        return Markup(NA)
    text = f"{x:+.{digits}f}"
    if float(text) == 0:
        text = f"{0:.{digits}f}"
    return Markup(text)


def fmt_pct(value: Any, digits: int = 2) -> Markup:
    x = _finite(value)
    return Markup(NA) if x is None else Markup(f"{fmt_num(x, digits)} %")


def fmt_int(value: Any) -> Markup:
    x = _finite(value)
    return Markup(NA) if x is None else Markup(str(round(x)))


def fmt_p(value: Any) -> Markup:
    x = _finite(value)
    if x is None:
        return Markup(NA)
    return Markup("< 0.001" if x < 0.001 else f"{x:.3f}")


def fmt_ci(low: Any, high: Any, digits: int = 2) -> Markup:
    lo, hi = _finite(low), _finite(high)
    if lo is None or hi is None:
        return Markup(NA)
    return Markup(f"[{fmt_num(lo, digits)}, {fmt_num(hi, digits)}]")


def fmt_bool(value: Any, yes: str = "yes", no: str = "no") -> Markup:
    if is_missing(value):
        return Markup(NA)
    return Markup(yes if bool(value) else no)


def fmt_code(value: Any) -> Markup:
    """Untrusted text shown as inline code: backticks removed, HTML and pipes escaped."""
    if is_missing(value):
        return Markup(NA)
    text = str(value).replace("`", "'")
    text = "".join(_HTML.get(ch, ch) for ch in text)
    text = re.sub(r"[\r\n\t\f\v]+", " ", text).replace("|", "\\|")
    return Markup(f"`{text}`") if text else Markup(NA)


def fmt_money(value: Any, digits: int = 2) -> Markup:
    x = _finite(value)
    return Markup(NA) if x is None else Markup(f"${x:,.{digits}f}")


def fmt_value(value: Any, spec: str = "text") -> Markup:
    """Format one value by a short spec.

    ``text`` (escaped), ``code``, ``int``, ``num<d>``, ``count<d>`` (whole numbers as integers,
    others as ``num<d>``: for columns that mix counts and measures), ``pct<d>``, ``signed<d>``,
    ``money<d>``, ``p`` (p-value), ``bool``.
    """
    if spec == "text":
        return md_escape(value)
    if spec == "code":
        return fmt_code(value)
    if spec == "int":
        return fmt_int(value)
    if spec == "p":
        return fmt_p(value)
    if spec == "bool":
        return fmt_bool(value)
    match = re.fullmatch(r"(num|count|pct|signed|money)(\d)", spec)
    if not match:
        raise ValueError(f"unknown format spec {spec!r}")
    kind, digits = match.group(1), int(match.group(2))
    func: Callable[[Any, int], Markup] = {
        "num": fmt_num,
        "count": fmt_count_or_num,
        "pct": fmt_pct,
        "signed": fmt_signed,
        "money": fmt_money,
    }[kind]
    return func(value, digits)


Column = Sequence[str]  # (header, key, spec)


def md_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> Markup:
    """A Markdown table. ``columns``: (header, key, spec); ``key`` may be ``"lo..hi"`` for a CI.

    A row value that is already :class:`Markup` is trusted as is (used for pre-formatted
    cells); any other value is formatted by its spec, which escapes text.
    """
    headers = [md_escape(c[0]) for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    n = 0
    for row in rows:
        cells = []
        for col in columns:
            _, key, spec = col[0], col[1], col[2] if len(col) > 2 else "text"
            if ".." in key:
                lo, hi = key.split("..", 1)
                digits = int(spec[-1]) if spec[-1].isdigit() else 2
                cells.append(fmt_ci(row.get(lo), row.get(hi), digits))
                continue
            value = row.get(key)
            cells.append(value if isinstance(value, Markup) else fmt_value(value, spec))
        lines.append("| " + " | ".join(cells) + " |")
        n += 1
    if n == 0:
        return Markup("_No rows._")
    return Markup("\n".join(lines))


def column_keys(columns: Sequence[Column]) -> list[str]:
    """The source columns a table's cells come from (CI columns expand to both ends)."""
    keys: list[str] = []
    for col in columns:
        for key in col[1].split(".."):
            if key not in keys:
                keys.append(key)
    return keys


FILTERS: dict[str, Callable[..., Markup]] = {
    "md": md_escape,
    "num": fmt_num,
    "pct": fmt_pct,
    "signed": fmt_signed,
    "int": fmt_int,
    "p": fmt_p,
    "yesno": fmt_bool,
    "code": fmt_code,
    "money": fmt_money,
    "fmt": fmt_value,
}

__all__ = [
    "FILTERS",
    "NA",
    "column_keys",
    "fmt_bool",
    "fmt_ci",
    "fmt_code",
    "fmt_count_or_num",
    "fmt_int",
    "fmt_money",
    "fmt_num",
    "fmt_p",
    "fmt_pct",
    "fmt_signed",
    "fmt_value",
    "is_missing",
    "md_escape",
    "md_table",
]
