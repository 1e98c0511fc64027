"""The result laid out from set_stats: one host as it always was, many hosts each under its own key."""

from driver.results import from_stats


def host(namespace, replicas):
    return {
        "namespace": namespace,
        "shutdown": {"services": [{"name": "api", "previous_replicas": replicas, "replicas": 0}]},
        "prior_state": {"replicas": {"api": replicas}},
    }


def test_one_host_keeps_the_single_host_shape():
    outputs, prior = from_stats({"hosts": {"sandbox": host("matchbook", 2)}})
    assert outputs["shutdown"]["services"] == [{"name": "api", "previous_replicas": 2, "replicas": 0}]
    assert prior["replicas"] == {"api": 2}
    assert outputs["hosts"]["sandbox"]["namespace"] == "matchbook"
    assert prior["hosts"] == {"sandbox": {"replicas": {"api": 2}}}


def test_many_hosts_keep_every_service_and_prior_state():
    stats = {"hosts": {"b": host("ns-b", 3), "a": host("ns-a", 1), "c": host("ns-c", 2)}}
    outputs, prior = from_stats(stats)
    assert prior == {
        "hosts": {"a": {"replicas": {"api": 1}}, "b": {"replicas": {"api": 3}}, "c": {"replicas": {"api": 2}}}
    }
    assert [(s["host"], s["namespace"], s["previous_replicas"]) for s in outputs["shutdown"]["services"]] == [
        ("a", "ns-a", 1),
        ("b", "ns-b", 3),
        ("c", "ns-c", 2),
    ]
    assert sorted(outputs["hosts"]) == ["a", "b", "c"] and "prior_state" not in outputs["hosts"]["a"]


def test_stats_without_hosts_pass_through():
    outputs, prior = from_stats({"restore": {"outcome": "restored"}, "prior_state": {"writers": {"api": 2}}})
    assert outputs == {"restore": {"outcome": "restored"}} and prior == {"writers": {"api": 2}}
