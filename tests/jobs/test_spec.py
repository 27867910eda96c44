"""Pure rules of job specs: parameters in commands and env, metrics lines, best-of goals."""

from __future__ import annotations

import io

from jobs import spec


def test_parameters_fill_placeholders_and_leave_other_braces_alone():
    assert spec.argv(["train", "--lr", "{lr}", "--x={unknown}"], shell=False, parameters={"lr": 0.1}) == [
        "train", "--lr", "0.1", "--x={unknown}"
    ]  # fmt: skip
    assert spec.argv(["awk '{print $1}' f; echo {n}"], shell=True, parameters={"n": True}) == [  # noqa: S604
        "sh", "-c", "awk '{print $1}' f; echo true"
    ]  # fmt: skip
    assert spec.parameter_env({"lr": 0.5, "name": "x", "flag": False}) == {
        "PARAM_LR": "0.5", "PARAM_NAME": "x", "PARAM_FLAG": "false"
    }  # fmt: skip


def test_metrics_lines_become_series_by_step():
    text = '{"step": 1, "loss": 0.9}\nnot json\n{"loss": 0.5, "acc": 0.7, "note": "x", "ok": true}\n[1]\n'
    limits = spec.MetricsLimits(max_bytes=1024, max_line=1024, max_series=10, max_points=10)
    read = spec.metrics_parse(io.BytesIO(text.encode()), limits=limits)
    assert read.series == {"loss": [[1, 0.9], [2, 0.5]], "acc": [[2, 0.7]]}


def test_metric_goals_default_by_name():
    assert spec.metric_goal("val_loss", {}) == "min" and spec.metric_goal("accuracy", {}) == "max"
    assert spec.metric_goal("accuracy", {"accuracy": "min"}) == "min"
