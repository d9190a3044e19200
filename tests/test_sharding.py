"""--saebench-shard K/N and `merge`: N shard runs plus a merge give the unsharded run's numbers,
as the example matrix workflow runs them."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pytest_saebench.cli import main as cli
from pytest_saebench.errors import SaebenchError
from pytest_saebench.sharding import in_shard, merge, parse_shard
from tests.conftest import SMALL_PYPROJECT

ROOT = Path(__file__).parents[1]
WORKFLOW = ROOT / "example_tests" / ".github" / "workflows" / "sae-quality-matrix.yml"
SWEEP = ROOT / "example_tests" / "checkpoints" / "sweep"
EV = "core.reconstruction_quality.explained_variance"


@given(st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=40),
       st.integers(1, 7), st.randoms())
def test_shards_cover_every_checkpoint_once_and_balance(ids, n, rnd):
    shards = [in_shard(ids, (k, n)) for k in range(1, n + 1)]
    assert sorted(x for s in shards for x in s) == sorted(ids)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    shuffled = list(ids)
    rnd.shuffle(shuffled)  # every job of a matrix computes the same partition
    assert [sorted(in_shard(shuffled, (k, n))) for k in range(1, n + 1)] == \
        [sorted(s) for s in shards]


@pytest.mark.parametrize("raw", ["0/3", "4/3", "3", "a/b", "1/0", ""])
def test_bad_shard_is_one_line(raw):
    with pytest.raises(SaebenchError, match=r"--saebench-shard: expected K/N"):
        parse_shard(raw, "--saebench-shard")


def _workflow_commands() -> tuple[str, list[str], int]:
    """The shard job's command (its shell variables unexpanded) and the merge job's, as
    written."""
    flow = yaml.safe_load(WORKFLOW.read_text())
    n = int(flow["env"]["SHARDS"])
    assert flow["jobs"]["shard"]["strategy"]["matrix"]["shard"] == list(range(1, n + 1))
    assert flow["jobs"]["merge"]["needs"] == "shard"
    steps = {s.get("name"): s for s in flow["jobs"]["shard"]["steps"]}
    assert steps["Gate this shard"]["env"]["SHARD"] == "${{ matrix.shard }}"
    merge_steps = {s.get("name"): s for s in flow["jobs"]["merge"]["steps"]}
    merged = shlex.split(merge_steps["Merge the shards"]["run"])
    assert merged[:3] == ["python", "-m", "pytest_saebench"]
    return steps["Gate this shard"]["run"], merged[3:], n


def _shard_args(command: str, shard: int, n: int) -> list[str]:
    """The shard job's pytest arguments for matrix value ``shard``: the workflow's and the
    step's variables as the runner's shell expands them."""
    values = {"SHARD": str(shard), "SHARDS": str(n), "SWEEP": str(SWEEP),
              "TESTS": "example_tests/"}
    expanded = re.sub(r"\$(\w+)", lambda m: values[m.group(1)], command)
    assert "$" not in expanded and "${{" not in expanded, expanded
    args = shlex.split(expanded)
    assert args[:2] == ["pytest", "example_tests/"]
    return [a for a in args[2:] if not a.startswith("--junitxml")]


def test_matrix_workflow_shards_plus_merge_equal_one_run(pytester, tmp_path, monkeypatch):
    pytester.makefile(".toml", pyproject=f"[tool.pytest-saebench.thresholds]\n"
                                         f'"{EV}" = {{ min = 0.85 }}\n{SMALL_PYPROJECT}')
    cache = f"--saebench-cache-dir={tmp_path / 'cache'}"
    gate, merge_args, n = _workflow_commands()
    for shard in range(1, n + 1):
        result = pytester.runpytest(*_shard_args(gate, shard, n), cache, "-p", "no:cacheprovider")
        result.stdout.fnmatch_lines([f"saebench: shard {shard}/{n}: 1 of 3 checkpoint(s); "
                                     "deselected (other shards): *"])
        assert result.ret in (0, 1), result.stdout.str()[-2000:]
    shard_files = sorted(str(p) for p in pytester.path.glob("shard-*.json"))
    assert len(shard_files) == n
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    argv = [a for a in merge_args if a != "shard-*.json"]
    argv = [str(pytester.path / a) if a.endswith((".json", ".html")) else a for a in argv]
    assert cli([argv[0], *shard_files[:-1], *argv[1:]]) == 2  # a shard job died: no merge
    assert not (pytester.path / "saebench-results.json").exists()
    assert cli([argv[0], *shard_files, *argv[1:]]) == 1  # complete, and k8 fails a gate
    whole = pytester.runpytest(f"--sae-path={SWEEP}", cache, "--saebench-json=all.json",
                               "-p", "no:cacheprovider")
    assert whole.ret == 1  # k8 is below the 0.85 explained-variance floor
    merged = json.loads((pytester.path / "saebench-results.json").read_text())
    single = json.loads((pytester.path / "all.json").read_text())
    assert set(merged["saes"]) == set(single["saes"]) == {"sweep/k8", "sweep/k16", "sweep/k64"}
    for sae_id, entry in single["saes"].items():
        assert merged["saes"][sae_id]["evals"]["core"]["eval_result_metrics"] == \
            entry["evals"]["core"]["eval_result_metrics"], sae_id
    assert sorted((c["nodeid"], c["status"]) for c in merged["checks"]) == \
        sorted((c["nodeid"], c["status"]) for c in single["checks"])
    assert "sweep/k8" in summary.read_text()
    assert (pytester.path / "saebench-report.html").stat().st_size > 1000
    assert cli(["show", str(pytester.path / "saebench-results.json")]) == 1  # k8 fails


def _shard_file(tmp_path: Path, name: str, **changes) -> str:
    data = {"schema_version": 3, "tool": "pytest-saebench", "version": "x", "suite": "fast",
            "eval_id": "e", "saes": {}, "checks": [],
            "run": {"eval_configs": {"core": {"a": 1}}, "model": "auto", "dataset": "auto",
                    "seed": 42, "dtype": "float32", "shard": "1/2"}}
    for key, value in changes.items():
        if key in data["run"]:
            data["run"][key] = value
        else:
            data[key] = value
    from pytest_saebench.results import digest

    data["digest"] = digest(data)  # as the run writes it (merge checks it)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_merge_refuses_shards_of_different_runs(tmp_path):
    from pytest_saebench.results import SCHEMA_VERSION

    def f(name, **kw):
        return _shard_file(tmp_path, name, schema_version=SCHEMA_VERSION, **kw)

    entry = {"evals": {}, "error": None}
    a = f("a.json", saes={"s1": entry})
    for other, why in ((f("b.json", suite="standard"), "suite"),
                       (f("c.json", eval_configs={"core": {"a": 2}}), "eval_configs"),
                       (f("d.json", model="gpt2"), "model"),
                       (f("e.json", version="y"), "version")):
        with pytest.raises(SaebenchError, match=re.escape(why)):
            merge([a, other])
    with pytest.raises(SaebenchError, match="'s1' is in both"):
        merge([a, f("g.json", saes={"s1": entry})])
    merged = merge([a, f("h.json", saes={"s2": entry}, shard="2/2")])
    assert set(merged["saes"]) == {"s1", "s2"} and merged["run"]["shard"] is None


def test_merge_refuses_an_incomplete_or_doubled_set_of_shards(tmp_path):
    from pytest_saebench.results import SCHEMA_VERSION

    def f(name, shard, sae):
        return _shard_file(tmp_path, name, schema_version=SCHEMA_VERSION, shard=shard,
                           saes={sae: {"evals": {}, "error": None}})

    one, three = f("1.json", "1/3", "a"), f("3.json", "3/3", "c")
    with pytest.raises(SaebenchError, match=r"incomplete run: shard\(s\) 2/3 missing \(have "
                                            r"1/3, 3/3\)"):
        merge([one, three])
    with pytest.raises(SaebenchError, match="are both shard 1/3"):
        merge([one, f("1b.json", "1/3", "b"), three])
    with pytest.raises(SaebenchError, match=r"split \[2, 3\] ways"):
        merge([one, f("2.json", "2/2", "b"), three])
    with pytest.raises(SaebenchError, match="not a shard's results"):
        merge([one, f("x.json", None, "b")])
    assert set(merge([one, f("2.json", "2/3", "b"), three])["saes"]) == {"a", "b", "c"}


def test_update_baseline_with_a_shard_is_refused(pytester):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    result = pytester.runpytest(f"--sae-path={SWEEP}", "--saebench-shard=1/3",
                                "--saebench-update-baseline=base.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*write it from the merged results: python -m "
                                 "pytest_saebench merge SHARD.json... -o */base.json"])


def test_shard_from_the_environment(pytester, monkeypatch):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    monkeypatch.setenv("SAEBENCH_SHARD", "2/3")
    result = pytester.runpytest(f"--sae-path={SWEEP}", "--collect-only")
    result.stdout.fnmatch_lines(["saebench: shard 2/3: 1 of 3 checkpoint(s); deselected "
                                 "(other shards): sweep/k16, sweep/k8"])
    monkeypatch.setenv("SAEBENCH_SHARD", "5/3")
    result = pytester.runpytest(f"--sae-path={SWEEP}", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*SAEBENCH_SHARD: expected K/N*got '5/3'"])
