"""PromQL helpers: the metric names an expression selects, and parsing expressions with promtool.

promtool has no standalone expression parser, but `promtool check rules` parses every rule's `expr`
with the real Prometheus parser. So expressions are parsed by writing them as recording rules into a
scratch rule file.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from checks import tools

# Lexer: strings first (they may contain anything), then numbers/durations (so "5m" is not the name
# "m"), then identifiers; everything else is one character of punctuation.
_TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)"""
    r"|(?P<number>\d[\w.]*)"
    r"|(?P<ident>[A-Za-z_:][\w:]*)"
    r"|(?P<space>\s+)"
    r"|(?P<punct>.)",
    re.DOTALL,
)
# Keywords that introduce a parenthesised list of label names, not an expression.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
)
# Aggregation operators may be followed by `by (...)` instead of their argument list.
_AGGREGATIONS = frozenset(
    {
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "limitk",
        "limit_ratio",
    }
)

# Grafana's built-in interval variables stand for durations; any other variable stands inside a
# label matcher (the only place the dashboard uses them).
_GRAFANA_INTERVALS = re.compile(
    r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}"
)
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def grafana_variables(expr: str) -> set[str]:
    """Names of the dashboard variables an expression references (built-in intervals excluded)."""
    without_intervals = _GRAFANA_INTERVALS.sub("", expr)
    return {a or b for a, b in _GRAFANA_VARIABLE.findall(without_intervals)}


def substitute_grafana_variables(expr: str) -> str:
    """Replace Grafana variables with values Prometheus accepts, so the expression can be parsed."""
    expr = _GRAFANA_INTERVALS.sub("5m", expr)
    return _GRAFANA_VARIABLE.sub("grafana_variable", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects, e.g. {"inference_requests_total"} for a rate() of
    it."""
    tokens = [
        (m.lastgroup, m.group())
        for m in _TOKEN.finditer(expr)
        if m.lastgroup not in ("space", "string")
    ]
    names: set[str] = set()
    depth_braces = depth_brackets = 0
    skip_label_list = False
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "punct":
            depth_braces += {"{": 1, "}": -1}.get(text, 0)
            depth_brackets += {"[": 1, "]": -1}.get(text, 0)
            if skip_label_list and text == "(":
                # Jump over `by (a, b)` and friends: label names, never metric names.
                while i < len(tokens) and tokens[i][1] != ")":
                    i += 1
                skip_label_list = False
        elif kind == "ident" and depth_braces == 0 and depth_brackets == 0:
            following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
            lowered = text.lower()
            if lowered in _LABEL_LIST_KEYWORDS:
                skip_label_list = following == "("
            elif lowered not in _KEYWORDS | _AGGREGATIONS and following != "(":
                names.add(text)
        i += 1
    return names


def uses_name_matcher(expr: str) -> bool:
    """True when a selector picks metrics by `__name__`, which hides the name from
    `metric_names`."""
    return bool(re.search(r"\b__name__\s*(=|!=|=~|!~)", expr))


@dataclass(frozen=True)
class ParseError:
    key: str
    message: str


def parse_expressions(exprs: dict[str, str]) -> list[ParseError] | str | None:
    """Parse expressions (key -> PromQL) with promtool; returns the errors by key, why it could
    not run, or None without promtool (`tools.PROMTOOL.report_missing` says what to do).

    Keys become recording rule names, so they must be valid metric names ([a-zA-Z_:][a-zA-Z0-9_:]*).
    """
    promtool = tools.PROMTOOL.locate()
    if promtool is None:
        return None
    errors: list[ParseError] = []
    # One file per expression: promtool stops at the first bad rule of a file and would hide the
    # others.
    with tempfile.TemporaryDirectory(prefix="promql-") as scratch:
        files: dict[str, Path] = {}
        for key, expr in exprs.items():
            path = Path(scratch) / f"{key}.yaml"
            rule_file = {"groups": [{"name": "parse", "rules": [{"record": key, "expr": expr}]}]}
            path.write_text(yaml.safe_dump(rule_file))
            files[key] = path
        result = tools.run([promtool, "check", "rules", *files.values()])
        if result.returncode == 0:
            return []
        for key, path in files.items():
            message = _promtool_error_for(result.stderr, path)
            if message:
                errors.append(ParseError(key, message))
        if not errors:
            output = (result.stdout + result.stderr).strip()
            return f"promtool check rules failed without a per-rule error: {output}"
    return errors


def _promtool_error_for(stderr: str, path: Path) -> str | None:
    """promtool prints `<file>: <line>:<col>: group ..., rule 1, "<name>": <parser message>` per
    failure."""
    prefix = f"{path}:"
    messages = [
        line.removeprefix(prefix).strip() for line in stderr.splitlines() if line.startswith(prefix)
    ]
    if not messages:
        return None
    # Keep the parser's own words ("1:16: parse error: unclosed left parenthesis"), not the scratch
    # location.
    return "; ".join(m.split("could not parse expression: ", 1)[-1] for m in messages)
