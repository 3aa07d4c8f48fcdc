"""bench/report.py's median over repeated runs (pure, no I/O)."""
from bench.report import median_of_runs


def test_every_number_is_the_median_over_the_runs():
    runs = [
        {"W1": [{"connect_p99_ms": 120, "kb_per_connection": 9.5}], "label": "a", "cpu": [10.0, 20.0]},
        {"W1": [{"connect_p99_ms": 180, "kb_per_connection": 9.7}], "label": "b", "cpu": [30.0, 10.0]},
        {"W1": [{"connect_p99_ms": 130, "kb_per_connection": 9.6}], "label": "c", "cpu": [20.0, 40.0]},
    ]
    assert median_of_runs(runs) == {"W1": [{"connect_p99_ms": 130, "kb_per_connection": 9.6}],
                                    "label": "a", "cpu": [20.0, 20.0]}


def test_an_even_count_takes_the_mean_of_the_middle_two():
    assert median_of_runs([{"p50": 10}, {"p50": 30}, {"p50": 20}, {"p50": 50}]) == {"p50": 25}


def test_a_figure_missing_or_failed_in_one_run_is_the_median_of_the_others():
    runs = [{"W4": {"p99": 2.0}}, {"W4": {"error": "boom"}}, {"W4": {"p99": 4.0}}]
    assert median_of_runs(runs) == {"W4": {"p99": 3.0, "error": "boom"}}


def test_flags_and_text_are_not_averaged():
    assert median_of_runs([{"ok": True, "n": None}, {"ok": False, "n": 3}]) == {"ok": True, "n": 3}


def test_the_generators_load_is_shown_but_never_ranked():
    from bench.report import CONTEXT, advantage, markdown
    assert advantage(90, 60, CONTEXT) is None
    results = {"servers": {"edge": {"W1": [{"clients": 1000, "connect_generator_cpu_pct": 90,
                                            "backing_cpu_us_per_connect": 120}]},
                           "node": {"W1": [{"clients": 1000, "connect_generator_cpu_pct": 60,
                                            "backing_cpu_us_per_connect": 0}]}}}
    table = markdown(results)
    assert "| W1 1,000 idle connections | generator CPU % during the connects (not ranked) | 90 | 60 | 1.50 | — |" in table
    assert "| W1 1,000 idle connections | Redis + database CPU per connect µs (lower is better) | 120 | 0 | — | 0.00× |" in table


def test_repeated_runs_show_each_servers_lowest_and_highest():
    from bench.report import markdown, median_of_runs, spreads

    def run(p99, kb):
        return {"W1": [{"clients": 1000, "connect_p99_ms": p99, "kb_per_connection": kb}]}
    runs = {"edge": [run(120, 7.5), run(95, 7.5), run(180, 7.6)], "node": [run(130, 12.0), run(110, 11.8), run(140, 12.0)]}
    results = {"repeat": 3, "runs": runs, "servers": {k: median_of_runs(v) for k, v in runs.items()}}
    assert spreads(results)[("W1 1,000 idle connections", "connect p99 ms")] == ("95–180", "110–140")
    assert spreads(results)[("W1 1,000 idle connections", "KB per connection")] == ("7.50–7.60", "11.80–12.00")
    table = markdown(results)
    assert "| edge runs | node runs |" in table
    assert "| W1 1,000 idle connections | connect p99 ms (lower is better) | 120 | 130 | 0.92 | 1.08× | — | 95–180 | 110–140 |" in table
    # one run: no spread, no extra columns
    single = {"servers": {"edge": run(120, 7.5), "node": run(130, 12.0)}}
    assert spreads(single) == {} and "edge runs" not in markdown(single)
