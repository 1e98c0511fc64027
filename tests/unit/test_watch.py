"""watch's counting rules and measurements, with a stand-in for Prometheus's answers."""

from __future__ import annotations

import pytest

from driver.validate import InputError
from driver.watch import BREACH, IDLE, INCONCLUSIVE, OK, Counter, Prometheus, Trigger, measure, triggers_from


class Answers:
    """Prometheus as a table: query substring -> value (None: no data)."""

    def __init__(self, **values):
        self.values = values

    def value(self, query):
        for key, value in self.values.items():
            if key in query:
                return (None, "no data") if value is None else (value, "")
        return None, "no data"


def trigger(**overrides):
    spec = {
        "name": "error-rate",
        "query": 'sum(rate(errors{service="{service}"}[{period}]))',
        "period": "5m",
        "consecutive": 3,
        "above": 0.05,
        "min_traffic_query": "sum(rate(traffic[{period}]))",
        "min_traffic": 0.5,
    }
    return Trigger(**{**spec, **overrides})


def test_only_breaches_in_a_row_fire():
    counter = Counter(needed=3, inconclusive_after=3)
    assert [counter.add(v) for v in (BREACH, BREACH, OK, BREACH, BREACH)] == [False] * 5
    assert counter.add(BREACH) is True  # the third in a row


def test_idle_resets_and_no_data_neither_counts_nor_fires():
    counter = Counter(needed=2, inconclusive_after=3)
    counter.add(BREACH)
    counter.add(IDLE)
    assert counter.breaches == 0
    counter.add(BREACH)
    assert [counter.add(INCONCLUSIVE) for _ in range(2)] == [False, False]
    assert counter.breaches == 1  # paused, not reset
    assert counter.add(INCONCLUSIVE) is False and counter.breaches == 0  # blind for 3: reset
    assert counter.add(BREACH) is False


def test_a_measurement_is_a_breach_ok_idle_or_inconclusive():
    assert measure(Answers(errors=0.2, traffic=5.0), trigger(), "api", "ns")[0] == BREACH
    assert measure(Answers(errors=0.01, traffic=5.0), trigger(), "api", "ns")[0] == OK
    assert measure(Answers(errors=0.9, traffic=0.1), trigger(), "api", "ns")[0] == IDLE
    assert measure(Answers(errors=None, traffic=5.0), trigger(), "api", "ns")[0] == INCONCLUSIVE
    assert measure(Answers(errors=0.9, traffic=None), trigger(), "api", "ns")[0] == INCONCLUSIVE


def test_baseline_as_a_number_or_a_query():
    rows = trigger(
        name="throughput",
        query="rows",
        above=None,
        below_baseline=0.75,
        baseline=37303.0,
        min_traffic_query=None,
        min_traffic=None,
    )
    assert measure(Answers(rows=20000.0), rows, "api", "ns")[0] == BREACH  # more than 25 % below
    assert measure(Answers(rows=30000.0), rows, "api", "ns")[0] == OK
    earlier = trigger(
        name="throughput",
        query="rows[",
        above=None,
        below_baseline=0.75,
        baseline_query="offset 1d",
        min_traffic_query=None,
        min_traffic=None,
    )
    assert measure(Answers(**{"rows[": 10.0, "offset 1d": 100.0}), earlier, "api", "ns")[0] == BREACH
    assert measure(Answers(**{"rows[": 10.0}), earlier, "api", "ns")[0] == INCONCLUSIVE  # no baseline


def test_prometheus_down_is_inconclusive():
    value, why = Prometheus("http://127.0.0.1:9", timeout=1).value("up")
    assert value is None and "unreachable" in why
    verdict = measure(
        Prometheus("http://127.0.0.1:9", timeout=1), trigger(min_traffic_query=None), "api", "ns"
    )[0]
    assert verdict == INCONCLUSIVE


def test_queries_are_filled_without_touching_promql_braces():
    t = trigger()
    assert t.fill('sum(rate(x{service="{service}",ns="{namespace}"}[{period}]))', "api", "prod") == (
        'sum(rate(x{service="api",ns="prod"}[5m]))'
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"above": None},
        {"below": 1.0},
        {"above": None, "below_baseline": 0.75},
        {"consecutive": 0},
    ],
)
def test_triggers_must_say_when_they_breach(bad):
    spec = {"name": "t", "query": "q", "period": "1m", "consecutive": 1, "above": 1.0, **bad}
    with pytest.raises(InputError):
        triggers_from([spec])


def test_alerting_rules_pass_promtool_and_the_rulebook_runs_the_rollback(tmp_path):
    import shutil
    import subprocess

    import yaml

    from driver import watch_rules

    triggers = [
        trigger(),
        trigger(
            name="throughput",
            query="sum(rate(rows[{period}]))",
            above=None,
            below_baseline=0.75,
            baseline=37303.0,
            period="10m",
            min_traffic_query=None,
            min_traffic=None,
        ),
        trigger(
            name="db",
            query="sum(increase(db_failures[{period}]))",
            above=2.5,
            period="1m",
            consecutive=1,
            min_traffic_query=None,
            min_traffic=None,
        ),
    ]
    document = watch_rules.rules("api", "matchbook", triggers, "P1")
    alerts = document["groups"][0]["rules"]
    assert [a["for"] for a in alerts] == ["15m", "30m", "1m"]  # period x consecutive
    assert alerts[0]["alert"] == "EmergencyWatchApiErrorRate"
    assert alerts[1]["expr"] == "(sum(rate(rows[10m]))) < 0.75 * 37303"
    path = tmp_path / "rules.yml"
    path.write_text(watch_rules.dump(document))
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    book = yaml.safe_load(
        watch_rules.dump(watch_rules.rulebook("api", triggers, "Emergency | rollback", "Default"))
    )
    rule = book[0]["rules"][0]
    assert "ansible.eda.alertmanager" in book[0]["sources"][0]
    assert 'event.alert.labels.alertname == "EmergencyWatchApiDb"' in rule["condition"]
    assert rule["action"]["run_job_template"]["name"] == "Emergency | rollback"
    assert rule["action"]["run_job_template"]["job_args"]["extra_vars"]["rollback_services"] == ["api"]


def test_prometheus_durations():
    from driver.watch_rules import prometheus_duration, seconds

    assert seconds("5m") == 300 and seconds("1h30m") == 5400
    assert prometheus_duration(5400) == "1h30m"
    for bad in ("5", "5 m", "m", "1x"):
        with pytest.raises(ValueError):
            seconds(bad)
