"""Main's history inside the baseline file (history.py) and its charts and trends
(reporting/trends.py): bounded, old baselines still load, a malformed one is one line."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from pytest_saebench import history
from pytest_saebench.errors import SaebenchError
from pytest_saebench.evals.base import EvalResult
from pytest_saebench.reporting import github, html
from pytest_saebench.results import SaeResults
from tests.test_html import _png_pixels, browser

EV = "core.reconstruction_quality.explained_variance"


def _res(sae_id: str, ev: float, se: float = 0.002) -> SaeResults:
    core = EvalResult("core", {}, {EV: ev}, {EV: se})
    return SaeResults(sae_id, f"/ckpt/{sae_id}", "ab" * 32, "fast", {"core": core})


def _entries(n: int, sae_id: str = "final") -> list[dict]:
    return [history.run_entry([_res(sae_id, 0.90 + 0.001 * i)], [EV], "fast",
                              f"{i:07x}" + "0" * 33,
                              when=1_700_000_000 + 86400 * i) for i in range(n)]


def test_an_entry_holds_each_gated_metric_with_its_stderr_and_the_commit():
    (entry,) = _entries(1)
    assert entry["values"] == {"final": {EV: [0.9, 0.002]}}
    assert entry["commit"] == "0" * 40 and entry["date"] == "2023-11-14T22:13:20Z"
    assert history.commit_id({"GITHUB_SHA": "abc"}) == "abc"


def test_the_history_keeps_the_last_100_runs():
    runs = _entries(1)
    for entry in _entries(130):
        runs = history.appended(runs, entry)
    assert len(runs) == history.LIMIT and runs[-1] == _entries(130)[-1]


def test_a_baseline_without_history_loads_and_a_malformed_one_is_one_line(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"tool": "pytest-saebench", "saes": {}}))
    assert history.read(old) == [] and history.read(tmp_path / "missing.json") == []
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tool": "pytest-saebench", "history": [{"values": {"a": 1}}]}))
    with pytest.raises(SaebenchError, match=r"bad.json: history\[0\] .* delete the key"):
        history.read(bad)


def test_series_follows_a_checkpoint_across_retrained_run_ids():
    runs = [history.run_entry([_res(f"checkpoints/{rid}/4096", ev)], [EV], "fast", c)
            for rid, ev, c in (("aaaa1111", 0.91, "c1"), ("bbbb2222", 0.92, "c2"))]
    found = history.series(runs, "checkpoints/cccc3333/4096", EV)
    assert [(i, v, c) for i, v, _, c in found] == [(1, 0.91, "c1"), (2, 0.92, "c2")]
    assert history.sparkline([1.0, 2.0, 3.0]) == "▁▅█"


def test_a_sparkline_within_the_noise_is_nearly_flat():
    # runs 0.0001 apart with standard errors of 0.002: not a full-height swing
    flat = history.sparkline([0.9200, 0.9201, 0.9199], noise=0.002)
    assert set(flat) <= set(history.SPARKS[3:5]), flat
    # a move of many standard errors still spans the height
    swing = history.sparkline([0.90, 0.95, 1.00], noise=0.002)
    assert swing[0] == "▁" and swing[-1] == "█", swing
    assert history.sparkline([1.0, 1.0]) == history.SPARKS[3] * 2


def _checks(status: str = "fail") -> list[dict]:
    return [{"status": status, "kind": "regression", "sae": "final", "metric": EV,
             "value": 0.85, "stderr": 0.002, "limit": "drop <= 0.01", "message": "worse"}]


def test_html_draws_mains_history_and_this_run_beside_it():
    page = html.render([_res("final", 0.85)], _checks(), "fast", {},
                       history=(_entries(30), False, None))
    section = page[page.index('id="history"'):]
    assert "30 run(s) kept in the baseline file" in section
    chart = section[:section.index("</svg>")]
    assert chart.count('class="pt"') == 31 and chart.count('class="err"') == 31
    assert "final: this run" in chart and "main: final" in chart
    # the x axis names main's runs by commit and date (the newest always), then this run
    ticks = re.findall(r'text-anchor="middle">([^<]*)</text>', chart)
    assert f"{29:07x}" in ticks and f"{24:07x}" in ticks and "11-14" not in ticks, ticks
    assert "12-13" in ticks  # run 29's date: 2023-11-14 plus 29 days
    # one colour per checkpoint: its line on main and its ring this run
    (ring,) = re.findall(r'<circle class="pt"[^>]*fill="white"[^>]*>', chart)
    assert 'stroke="#1f77b4"' in ring and 'stroke="#1f77b4"' in chart.split("<circle")[0]


def test_a_retrained_checkpoints_main_line_names_mains_own_checkpoint():
    entries = _entries(3, sae_id="checkpoints/7fa0ce03/6144")
    mine = _res("checkpoints/e3d4cbd2/6144", 0.85)
    checks = [{**_checks()[0], "sae": mine.sae_id}]
    page = html.render([mine], checks, "fast", {}, history=(entries, False, None))
    chart = page[page.index('id="history"'):]
    assert "main: checkpoints/7fa0ce03/6144" in chart
    assert "main: checkpoints/e3d4cbd2" not in chart  # not this run's run id


def test_colours_stay_with_their_checkpoint_across_charts():
    l0 = "core.sparsity.l0"

    def res(sae_id: str) -> SaeResults:
        core = EvalResult("core", {}, {EV: 0.9, l0: 30.0}, {EV: 0.002, l0: 1.0})
        return SaeResults(sae_id, f"/ckpt/{sae_id}", "ab" * 32, "fast", {"core": core})

    entries = [history.run_entry([res("a"), res("b")], [EV, l0], "fast", f"{i:040x}")
               for i in range(3)]
    # "b" is worse on EV, "a" on L0: each chart orders them differently
    checks = [{**_checks()[0], "sae": "b"}, {**_checks("pass")[0], "sae": "a"},
              {**_checks()[0], "sae": "a", "metric": l0},
              {**_checks("pass")[0], "sae": "b", "metric": l0}]
    page = html.render([res("a"), res("b")], checks, "fast", {},
                       history=(entries, False, None))
    section = page[page.index('id="history"'):]
    charts = section.split("<svg")[1:3]
    for chart in charts:
        for sae_id, colour in (("a", "#1f77b4"), ("b", "#d62728")):
            title = re.search(rf'<circle class="pt"[^>]*(?:fill|stroke)="([^"]+)"[^>]*>'
                              rf"<title>main: {sae_id} ", chart)
            assert title and title.group(1) == colour, (sae_id, chart[:300])


def test_step_summary_gives_a_trend_per_failed_gate_and_points_to_the_chart():
    text = github.summary_markdown(_checks(), [_res("final", 0.85)], "fast",
                                   html="out/saebench-report.html",
                                   history=(_entries(30), False, None))
    (line,) = [x for x in text.splitlines() if x.startswith("- fail")]
    assert re.fullmatch(r"- fail `\S+` on final: main [▁-█]{12} 0\.918 … 0\.929 \(last 12 of "
                        r"30 runs\), now 0\.85 ± 0\.002", line), line
    assert "saebench-report.html" in text
    quiet = github.summary_markdown(_checks("pass"), [], "fast",
                                    history=(_entries(30), False, None))
    assert "Main's history" not in quiet


@pytest.mark.slow
@browser
def test_history_of_30_runs_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html.render([_res("final", 0.85)], _checks(), "fast", {},
                                history=(_entries(30), False, None)))
    shot = tmp_path / "shot.png"
    # the history is the section after the gates: a window tall enough to hold both
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,900",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    width, height, rgb = _png_pixels(shot)
    pixels = [rgb[i:i + 3] for i in range(0, len(rgb), 3)]
    blue = sum(1 for p in pixels if p == bytes.fromhex("1f77b4"))  # main's line, this run
    red = sum(1 for p in pixels if p == bytes.fromhex("d62728"))  # no other checkpoint
    assert (width, height) == (1200, 900) and blue > 1000 and red == 0, (blue, red)


def test_each_baseline_update_appends_a_run_and_the_report_draws_them(pytester, tiny_world,
                                                                      monkeypatch):
    from tests.conftest import SMALL_PYPROJECT

    pytester.makefile(".toml", pyproject=f'[tool.pytest-saebench.thresholds]\n"{EV}" = '
                                         f'{{ min = 0.5 }}\n{SMALL_PYPROJECT}')
    args = (f"--sae-path={tiny_world.trained}", "--saebench-update-baseline=base.json",
            "--saebench-html=r.html")
    for sha in ("a" * 40, "b" * 40):
        monkeypatch.setenv("GITHUB_SHA", sha)
        assert pytester.runpytest(*args).ret == 0
    data = json.loads((pytester.path / "base.json").read_text())
    assert [e["commit"][0] for e in data["history"]] == ["a", "b"]
    (value, stderr), = [row[EV] for row in data["history"][-1]["values"].values()]
    assert value == data["saes"]["trained"]["evals"]["core"]["eval_result_metrics"][
        "reconstruction_quality"]["explained_variance"] and stderr > 0
    page = (pytester.path / "r.html").read_text()
    assert "2 run(s) kept in the baseline file" in page and 'id="history-' in page
    # a history that is not one: the baseline is not written, in one line naming the key
    data["history"] = {"not": "a list"}
    (pytester.path / "base.json").write_text(json.dumps(data))
    before = (pytester.path / "base.json").read_bytes()
    result = pytester.runpytest(*args)
    result.stdout.fnmatch_lines(["*baseline: not written (*base.json: 'history' must be a "
                                 "list of runs; delete the key*"])
    assert (pytester.path / "base.json").read_bytes() == before
