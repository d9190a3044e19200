"""Settings precedence, threshold rules (hypothesis), metric aliases and token windows."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pytest_saebench.config import Settings, build_settings, read_file_config
from pytest_saebench.errors import SaebenchError
from pytest_saebench.evals import metric_registry
from pytest_saebench.evals.base import grouped_jackknife
from pytest_saebench.gates.thresholds import Threshold, check, make_threshold

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@given(value=finite, lo=st.none() | finite, hi=st.none() | finite)
def test_check_passes_exactly_inside_inclusive_bounds(value, lo, hi):
    if lo is None and hi is None or (lo is not None and hi is not None and lo > hi):
        return
    outcome = check(Threshold("m.c.k", lo, hi), value, None, "(ctx)")
    inside = (lo is None or value >= lo) and (hi is None or value <= hi)
    assert (outcome.status == "pass") == inside
    if not inside:
        assert outcome.message.startswith("m.c.k = ") and outcome.message.endswith("(ctx)")


@given(st.sampled_from([float("nan"), float("inf"), -float("inf"), None]))
def test_non_finite_values_always_fail(value):
    outcome = check(Threshold("m.c.k", min=-math.inf), value, "because", "(ctx)")
    assert outcome.status == "fail"


@given(lo=finite, hi=finite)
def test_make_threshold_rejects_inverted_bounds(lo, hi):
    if lo > hi:
        with pytest.raises(SaebenchError, match="min .* > max"):
            make_threshold("m", lo, hi, "error", "here")
    else:
        assert make_threshold("m", lo, hi, "error", "here").min == lo


def test_aliases_resolve_and_unknown_ids_suggest():
    reg = metric_registry()
    assert reg.resolve("l0") == "core.sparsity.l0"
    assert reg.resolve("core.ce_loss_score") == "core.model_performance_preservation.ce_loss_score"
    with pytest.raises(SaebenchError, match="did you mean 'core.sparsity.l0'"):
        reg.resolve("core.sparsity.l00")


def _fc(tmp_path, text):
    (tmp_path / "pyproject.toml").write_text(text)
    return read_file_config(tmp_path)


def test_precedence_cli_over_env_over_file(tmp_path):
    fc = _fc(tmp_path, '[tool.pytest-saebench]\nsuite = "full"\nseed = 1\nmodel = "file"\n')
    opts = {"sae_path": ["x"], "saebench_suite": "standard"}
    s = build_settings(opts, fc, {"SAEBENCH_SEED": "7", "SAEBENCH_SUITE": "fast"})
    assert (s.suite, s.seed, s.model, s.dataset) == ("standard", 7, "file", "auto")


def test_alias_table_and_relative_sae_path(tmp_path):
    fc = _fc(tmp_path, '[tool.saebench]\nsae-path = "ckpts/latest"\n')
    s = build_settings({"saebench": True}, fc, {})
    assert s.sae_paths == (str(tmp_path / "ckpts" / "latest"),)
    assert build_settings({}, fc, {}).active is False  # needs --saebench or --sae-path


def test_saebench_flag_without_any_path_is_an_error(tmp_path):
    with pytest.raises(SaebenchError, match="no checkpoint"):
        build_settings({"saebench": True}, _fc(tmp_path, ""), {})


def test_thresholds_record_their_pyproject_line(tmp_path):
    fc = _fc(tmp_path, '[tool.pytest-saebench.thresholds]\n\n"l0" = { min = 1, max = 9 }\n')
    s = build_settings({"sae_path": ["x"]}, fc, {}, metric_registry().resolve)
    (t,) = s.thresholds
    assert (t.metric, t.min, t.max) == ("core.sparsity.l0", 1, 9)
    assert t.source == f"{tmp_path / 'pyproject.toml'}:3"


def test_rule_lines_are_found_under_headers_that_carry_a_comment(tmp_path):
    # README's own table header carries a comment; the annotation must keep file and line.
    fc = _fc(tmp_path, '[tool.pytest-saebench]\nsuite = "fast"\n'
             '[tool.pytest-saebench.thresholds]      # one gate item each\n'
             '"l0" = { min = 1 }\n'
             '[ tool.pytest-saebench.regression ]  # against the baseline\n'
             'default = { max_drop = 0.01 }\n')
    s = build_settings({"sae_path": ["x"]}, fc, {}, metric_registry().resolve)
    assert s.thresholds[0].source.endswith("pyproject.toml:4")
    assert s.regressions[0].source.endswith("pyproject.toml:6")


@pytest.mark.parametrize("bad, message", [
    ('"l0" = 3', "expected a table like"),
    ('"l0" = { mn = 3 }', "did you mean 'min'"),
    ('"l0" = { min = "3" }', "min must be a number"),
    ('"l0" = { min = 3, severity = "fatal" }', "severity must be"),
])
def test_threshold_table_errors(tmp_path, bad, message):
    fc = _fc(tmp_path, f"[tool.pytest-saebench.thresholds]\n{bad}\n")
    with pytest.raises(SaebenchError, match=message):
        build_settings({"sae_path": ["x"]}, fc, {}, metric_registry().resolve)


@given(st.lists(st.floats(min_value=-100, max_value=100), min_size=4, max_size=60))
def test_jackknife_of_a_mean_is_the_classical_standard_error(values):
    per_unit = {"s": torch.tensor(values, dtype=torch.float64),
                "n": torch.ones(len(values), dtype=torch.float64)}
    value, se = grouped_jackknife(per_unit, lambda s: float(s["s"] / s["n"]),
                                  n_groups=len(values))
    t = torch.tensor(values, dtype=torch.float64)
    assert value == pytest.approx(float(t.mean()), abs=1e-9)
    expected = float(t.std() / math.sqrt(len(values)))
    assert se == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_token_windows_follow_activations_store_semantics():
    import datasets

    from pytest_saebench.loading.data import token_windows

    class Tok:
        bos_token_id, eos_token_id = 0, 0

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[int(w) for w in t.split()] for t in texts]}

    ds = datasets.Dataset.from_dict({"text": ["1 2 3", "4 5", "6 7 8 9"]})
    out = token_windows(Tok(), ds, 3, 4, True, seed=0)
    assert out.shape == (3, 4) and (out[:, 0] == 0).all()
    # Documents in shuffled order, joined by a BOS separator; each window is BOS plus the next
    # three stream tokens, and a separator that would open a window is dropped (that window
    # already starts with BOS), as SAELens's concat_and_batch_sequences does.
    stream: list[int] = []
    for i, doc in enumerate(ds.shuffle(seed=0)["text"]):
        stream += ([-1] if i else []) + [int(t) for t in doc.split()]
    expected = []
    while len(expected) < 3:
        if stream and stream[0] == -1:
            stream.pop(0)
        body, stream = stream[:3], stream[3:]
        expected.append([0] + [0 if t == -1 else t for t in body])
    assert out.tolist() == expected
    again = token_windows(Tok(), ds, 3, 4, True, seed=0)
    assert torch.equal(out, again)
    with pytest.raises(SaebenchError, match="only 12 tokens in windows of 4"):
        token_windows(Tok(), ds, 5, 4, True, seed=0)


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet", "saved", "folder"])
def test_local_dataset_formats(tmp_path, kind):
    import datasets

    from pytest_saebench.loading.data import load_text_dataset

    texts = ["first document here", "second one", "third and last"]
    ds = datasets.Dataset.from_dict({"body": texts, "n": [1, 2, 3]})
    if kind == "txt":
        (tmp_path / "c.txt").write_text("\n".join(texts) + "\n")
        spec = tmp_path / "c.txt"
    elif kind == "jsonl":
        ds.to_json(str(tmp_path / "c.jsonl"))
        spec = tmp_path / "c.jsonl"
    elif kind == "parquet":
        ds.to_parquet(str(tmp_path / "c.parquet"))
        spec = tmp_path / "c.parquet"
    elif kind == "saved":
        ds.save_to_disk(str(tmp_path / "saved"))
        spec = tmp_path / "saved"
    else:
        (tmp_path / "folder").mkdir()
        for i, t in enumerate(texts):
            (tmp_path / "folder" / f"{i}.txt").write_text(t + "\n")
        spec = tmp_path / "folder"
    loaded = load_text_dataset(str(spec))
    assert loaded.streamed and not loaded.pretokenized
    assert sorted(loaded.rows(seed=0)) == sorted(texts)


def test_dataset_errors(tmp_path):
    from pytest_saebench.loading.data import load_text_dataset

    (tmp_path / "x.xyz").write_text("hi")
    with pytest.raises(SaebenchError, match="unknown file type '.xyz'"):
        load_text_dataset(str(tmp_path / "x.xyz"))
    (tmp_path / "n.jsonl").write_text('{"n": 1}\n')
    with pytest.raises(SaebenchError, match="no text column"):
        load_text_dataset(str(tmp_path / "n.jsonl"))
    with pytest.raises(SaebenchError, match="is not in the local Hugging Face cache .* "
                       "hf download no-such-org/no-such-dataset-xyz --repo-type dataset"):
        load_text_dataset("no-such-org/no-such-dataset-xyz")


@pytest.mark.parametrize("name, content, message", [
    ("numbers.jsonl", b'{"text": 1}\n{"text": 2}\n', "column 'text' holds int values"),
    ("empty.jsonl", b"", "the file is empty"),
    ("binary.jsonl", bytes(range(256)) * 4, "cannot be read (UnicodeDecodeError"),
    ("binary.parquet", bytes(range(256)) * 4, "cannot be read (ArrowInvalid"),
])
def test_unreadable_datasets_say_what_is_wrong(tmp_path, capfd, name, content, message):
    from pytest_saebench.loading.data import load_text_dataset

    (tmp_path / name).write_bytes(content)
    with pytest.raises(SaebenchError) as info:
        load_text_dataset(str(tmp_path / name))
    assert message in str(info.value) and str(tmp_path / name) in str(info.value)
    assert "\n" not in str(info.value)
    assert capfd.readouterr().err == ""  # datasets' own log lines are not shown


def test_scr_and_tpp_gates_warn_by_default(tmp_path):
    fc = _fc(tmp_path, '[tool.pytest-saebench.thresholds]\n'
                       '"tpp.tpp_metrics.tpp_threshold_10_total_metric" = { min = 0.1 }\n'
                       '"l0" = { max = 100 }\n'
                       '"scr.scr_metrics.scr_metric_threshold_10" = '
                       '{ min = 0, severity = "error" }\n')
    reg = metric_registry()
    s = build_settings({"sae_path": ["x"]}, fc, {}, reg.resolve,
                       lambda m: reg[m].default_severity)
    severity = {t.metric: t.severity for t in s.thresholds}
    assert severity == {"tpp.tpp_metrics.tpp_threshold_10_total_metric": "warn",
                        "core.sparsity.l0": "error",
                        "scr.scr_metrics.scr_metric_threshold_10": "error"}


def test_one_gpu_per_xdist_worker(monkeypatch):
    import torch

    from pytest_saebench.runner import Runner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    devices = []
    for worker in ("main", "gw0", "gw1", "gw2"):
        runner = Runner(Settings(sae_paths=("x",), device="auto"), [], {}, None)
        runner.worker_id = worker
        devices.append(runner.device)
    assert devices == ["cuda", "cuda:0", "cuda:1", "cuda:0"]
    assert Runner(Settings(device="cpu"), [], {}, None).device == "cpu"
