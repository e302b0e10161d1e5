from __future__ import annotations

import pytest

from checks.promql import (
    grafana_variables,
    metric_names,
    parse_expressions,
    substitute_grafana_variables,
    uses_name_matcher,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('rate(inference_requests_total{status="429"}[5m])', {"inference_requests_total"}),
        (
            "histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))",
            {"x_bucket"},
        ),
        ("sum(rate(a[5m])) by (pod) / ignoring (x) group_left (y) b offset 5m", {"a", "b"}),
        ("count(a) > bool 1 and on () c unless d", {"a", "c", "d"}),
        # Label names and label values are never metric names.
        ('a{sum="rate(b)", le=~"x.*"}', {"a"}),
        ("vector(0) or time()", set()),
        ("1e3 * 2", set()),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grafana_variables_are_found_and_substituted() -> None:
    expr = 'rate(x{namespace="$namespace", pod=~"${pod:regex}"}[$__rate_interval])'
    assert grafana_variables(expr) == {"namespace", "pod"}
    assert substitute_grafana_variables(expr) == (
        'rate(x{namespace="grafana_variable", pod=~"grafana_variable"}[5m])'
    )


def test_name_matcher_is_detected() -> None:
    assert uses_name_matcher('{__name__=~"inference_.*"}')
    assert not uses_name_matcher('inference_ready{pod="a"}')


def test_parse_reports_each_bad_expression_with_the_parser_message(promtool: object) -> None:
    errors = parse_expressions(
        {"good": "sum(rate(x[5m]))", "unclosed": "sum(rate(x[5m])", "junk": "foo bar"}
    )
    assert isinstance(errors, list)
    by_key = {e.key: e.message for e in errors}
    assert set(by_key) == {"unclosed", "junk"}
    assert "unclosed left parenthesis" in by_key["unclosed"]
    assert 'unexpected identifier "bar"' in by_key["junk"]
