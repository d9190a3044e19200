"""The HTML report: structure by parsing, and pixels by rendering in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_saebench.evals.base import EvalResult
from pytest_saebench.reporting import html
from pytest_saebench.results import SaeResults
from tests.conftest import SMALL_PYPROJECT

EV = "core.reconstruction_quality.explained_variance"
ABSORPTION = "absorption_first_letter"
SCORE = f"{ABSORPTION}.mean.mean_absorption_fraction_score"
WHY_NO_ABSORPTION = "no letter could be scored (26 skipped; see eval_result_unstructured)"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, tag: str, cls: str | None = None) -> int:
        return sum(1 for t, a in self.tags if t == tag and (cls is None or a.get("class") == cls))


def _results(sae_id: str, l0: float, ev: float, arch: str = "topk", width: int = 512,
             absorbed: bool = True) -> SaeResults:
    core = EvalResult("core", {}, {"core.sparsity.l0": l0, EV: ev,
                                   "core.model_performance_preservation.ce_loss_score": ev})
    core.details = [{"index": i, "feature_density": d}
                    for i, d in enumerate([0.0, 0.0, 1e-4, 2e-3, 0.01, 0.02, 0.3])]
    sp = EvalResult("sparse_probing", {}, {
        **{f"sparse_probing.sae.sae_top_{k}_test_accuracy": 0.6 + 0.05 * i
           for i, k in enumerate((1, 2, 5))},
        **{f"sparse_probing.llm.llm_top_{k}_test_accuracy": 0.65 + 0.05 * i
           for i, k in enumerate((1, 2, 5))},
        "sparse_probing.sae.sae_top_10_test_accuracy": None})
    if absorbed:
        ab = EvalResult(ABSORPTION, {}, {},
                        unstructured={"ground_truth_f1": {"a": 0.9, "b": 0.2}})
        ab.details = [{"first_letter": "a", "mean_absorption_fraction": 0.25,
                       "full_absorption_rate": 0.1}]
    else:
        ab = EvalResult(ABSORPTION, {}, {})
        ab.set(SCORE, None, reason=WHY_NO_ABSORPTION)
    return SaeResults(sae_id, f"/ckpt/{sae_id}", "ab" * 32, "fast",
                      {"core": core, "sparse_probing": sp, ABSORPTION: ab},
                      sae_cfg={"architecture": arch, "d_sae": width})


def _report() -> str:
    checks = [{"status": "fail", "kind": "threshold", "sae": "k8", "metric": EV, "value": 0.7,
               "stderr": 0.01, "limit": ">= 0.8", "message": f"{EV} = 0.7 < min 0.8 <sae>"}]
    return html.render([_results("k8", 8, 0.7), _results("k16", 16, 0.8),
                        _results("k64", 64, 0.9)], checks, "fast", {"bad": "boom"})


NO_BASELINE = ("no baseline at baselines/saebench.json; create it with: pytest -c "
               "example_tests/pyproject.toml " + " ".join(
                   f"--sae-path example_tests/checkpoints/sweep/k{k}" for k in range(12))
               + " --saebench-update-baseline=baselines/saebench.json")


def _crowded_report() -> str:
    """What a sweep without a baseline yields: every regression gate skips with the same long
    reason; two architectures and widths; one checkpoint's absorption undefined."""
    results = [_results(f"sweep/k{k}", k, 0.7 + 0.02 * i) for i, k in enumerate((8, 16, 64))]
    results += [_results("wide", 40, 0.93, width=4096),
                _results("relu-with-a-long-name", 600, 0.99, arch="standard", width=4096,
                         absorbed=False)]
    checks = []
    for r in results:
        for metric in (EV, "core.sparsity.l0", SCORE):
            checks.append({"status": "pass", "kind": "threshold", "sae": r.sae_id,
                           "metric": metric, "value": 0.9, "stderr": 0.01, "limit": ">= 0.8",
                           "message": ""})
            checks.append({"status": "skip", "kind": "regression", "sae": r.sae_id,
                           "metric": metric, "value": 0.9, "stderr": None,
                           "limit": "drop <= 0.01", "message": NO_BASELINE})
            checks.append({"status": "skip", "kind": "threshold", "sae": r.sae_id,
                           "metric": metric, "value": None, "stderr": None, "limit": ">= 1",
                           "message": f"{metric} not computed (sae {r.sae_id}, suite fast): "
                                      "architecture 'topk' has no thresholds"})
    checks[-1] = {**checks[-1], "status": "fail", "message": "a reason of its own"}
    return html.render(results, checks, "fast", {})


def test_report_holds_every_plot_and_escapes_text():
    parsed = _Collect()
    parsed.feed(_report())
    text = "".join(parsed.text)
    # per checkpoint: density, probing, absorption; plus two sweep charts
    assert parsed.count("svg") == 3 * 3 + 2
    assert parsed.count("circle", "pt") == 3 * 6 + 2 * 3  # probing (2 series x 3 k), sweep
    assert "latent density" in text and "absorption by first letter" in text
    assert "explained variance against L0" in text and "bad: evaluation failed: boom" in text
    assert "1 fail" in text and "<sae>" in text  # the message is escaped, not markup
    # dead latents get their own bar; bars carry their values in tooltips
    assert "latents dead: 2" in text


def test_a_reason_many_gates_share_is_written_once():
    parsed = _Collect()
    page = _crowded_report()
    parsed.feed(page)
    assert page.count("no baseline at baselines/saebench.json") == 1
    assert page.count("architecture &#x27;topk&#x27; has no thresholds") == 1
    notes = [a for t, a in parsed.tags if t == "li" and (a.get("id") or "").startswith("note")]
    assert len(notes) == 2
    assert page.count('href="#note-1"') + page.count('href="#note-2"') == 5 * 3 * 2 - 1
    assert "a reason of its own" in page and "the metric not computed" in page
    # failures lead the table
    first_row = page.index('<tr class="fail">')
    assert first_row < page.index('<tr class="pass">')


def test_sweep_draws_one_line_per_architecture_and_width():
    parsed = _Collect()
    parsed.feed(_crowded_report())
    sweep = html._sweep([_results(f"k{k}", k, 0.8) for k in (8, 16, 64)]
                        + [_results("w1", 30, 0.9, width=4096),
                           _results("w2", 90, 0.95, width=4096),
                           _results("relu", 600, 0.99, arch="standard")])
    charts = sweep.split("</svg>")[:-1]
    assert len(charts) == 2
    for chart in charts:
        assert chart.count("<polyline") == 2  # topk 512 (3 points), topk 4096 (2); relu alone
        for name in ("topk, 512 latents", "topk, 4,096 latents", "standard, 512 latents"):
            assert f">{name}</text>" in chart


def test_a_training_run_is_drawn_step_by_step_not_as_a_frontier():
    # L0 falls, then rises over training: joined by L0 the line would zigzag back in time
    run = [_results(f"checkpoints/e3d4cbd2/{step}", l0, ev)
           for step, l0, ev in ((1000, 90, 0.6), (2000, 40, 0.8), (3000, 60, 0.9))]
    sweep = html._sweep([*run, _results("final", 55, 0.92)])
    chart = sweep.split("</svg>")[0]
    assert ">training run checkpoints/e3d4cbd2/# (in step order)</text>" in chart
    (line,) = re.findall(r'<polyline points="([^"]+)"', chart)  # "final" alone: a point
    xs = [float(p.split(",")[0]) for p in line.split()]
    assert xs[1] < xs[2] < xs[0]  # steps 1000, 2000, 3000 at L0 90, 40, 60
    # one checkpoint of a run is a point among the others, not a run
    assert "training run" not in html._sweep(run[:1] + [_results("final", 55, 0.92)])


def test_a_bug_compatible_metric_says_why_it_differs():
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.reporting import terminal

    res = _results("good", 40, 0.9)
    res.evals["core"].metrics.update({"core.reconstruction_quality.mse": 2.0,
                                      "core.reconstruction_quality.mse_saebench_v0_6": 0.002})
    registry = metric_registry()
    page = unescape(html.render([res], [], "fast", {}, registry))
    assert "divides by the tokens in each batch" in page
    lines = terminal.render(terminal.rows([res], [], registry, True), registry)
    assert any(line.startswith("note: core.reconstruction_quality.mse_saebench_v0_6: SAEBench "
                               "0.6.0's value") for line in lines), lines


def test_a_missing_plot_says_why_where_it_would_be():
    res = _results("relu", 600, 0.99, absorbed=False)
    del res.evals["sparse_probing"]
    parsed = _Collect()
    parsed.feed(html.render([res], [], "fast", {}))
    text = " ".join(parsed.text)
    assert parsed.count("div", "missing") == 1
    assert "absorption by first letter: no plot" in text and WHY_NO_ABSORPTION in text
    assert "Not plotted: probing accuracy (not part of this run)" in text


def test_histogram_counts_every_value():
    from pytest_saebench.reporting.svg import histogram

    parsed = _Collect()
    parsed.feed(histogram("h", [0.5, 1.5, 1.7, 2.0], [0, 1, 2], "x"))
    titles = [t for t in parsed.text if t.startswith("latents ")]
    assert titles == ["latents 0: 1", "latents 1: 3"]


def test_plugin_writes_the_report(pytester, tiny_world):
    pytester.makefile(".toml", pyproject=f'[tool.pytest-saebench.thresholds]\n"{EV}" = '
                                         f'{{ min = 0.5 }}\n{SMALL_PYPROJECT}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                f"--sae-path={tiny_world.random}", "--saebench-html=out/r.html")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["html report: *out/r.html"])
    parsed = _Collect()
    parsed.feed((pytester.path / "out" / "r.html").read_text())
    assert parsed.count("svg") == 2 + 2  # density per checkpoint, EV and CE score against L0
    assert parsed.count("tr", "fail") == 2  # the gate and its message's own row


def _png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Decode an 8-bit RGB(A) PNG with the standard library (enough for a screenshot)."""
    data = path.read_bytes()
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, out, prev = zlib.decompress(idat), width * bpp, bytearray(), bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += bytes(line[j] for i in range(0, stride, bpp) for j in range(i, i + 3))
        prev = line
    return width, height, bytes(out)


# .ci/run installs Debian's chromium and sets this, so there the browser tests cannot skip.
NEED_BROWSER = os.environ.get("SAEBENCH_REQUIRE_BROWSER") == "1"
browser = pytest.mark.skipif(shutil.which("chromium") is None and not NEED_BROWSER,
                             reason="needs Debian's chromium package")
MEASURE = """<script>
const clipped = [];
for (const svg of document.querySelectorAll('svg')) {
  const box = svg.getBoundingClientRect();
  for (const t of svg.querySelectorAll('text')) {
    const b = t.getBoundingClientRect();
    if (b.left < box.left - 0.5 || b.right > box.right + 0.5 || b.top < box.top - 0.5 ||
        b.bottom > box.bottom + 0.5) clipped.push(t.textContent);
  }
}
const right = [...document.querySelectorAll('table, svg, .missing')].map(
  e => e.getBoundingClientRect().right);
document.body.setAttribute('data-layout', JSON.stringify(
  {width: document.documentElement.scrollWidth, right: Math.max(...right), clipped}));
</script>"""


@pytest.mark.slow
@browser
def test_crowded_report_stays_within_1280_px_and_clips_no_label(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(_crowded_report().replace("</body>", MEASURE + "</body>"))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                          "--window-size=1280,900", "--dump-dom", page.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, dom[-2000:]
    layout = json.loads(unescape(found.group(1)))
    assert layout["width"] <= 1280 and layout["right"] <= 1280, layout
    assert layout["clipped"] == [], layout


@pytest.mark.slow
@browser
def test_report_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(_report())
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,1600",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    width, height, rgb = _png_pixels(shot)
    assert (width, height) == (1200, 1600)
    pixels = [rgb[i:i + 3] for i in range(0, len(rgb), 3)]
    blue = sum(1 for p in pixels if p == bytes.fromhex("1f77b4"))  # first series colour
    red = sum(1 for p in pixels if p == bytes.fromhex("d62728"))  # second series colour
    assert blue > 2000 and red > 200, (blue, red)


def test_each_checkpoint_says_what_was_evaluated_and_metrics_link_to_their_meaning():
    from pytest_saebench.evals import metric_registry

    res = _results("k8", 8, 0.7)
    res.sae_cfg = {"architecture": "topk", "d_in": 128, "d_sae": 512, "k": 8,
                   "metadata": {"hook_name": "blocks.1.hook_resid_post"}}
    res.inputs = {"model": {"name": "EleutherAI/pythia-70m-deduped", "loader":
                            "HookedTransformer.from_pretrained_no_processing", "fold_ln": False},
                  "dataset": {"name": "monology/pile-uncopyrighted", "streamed": True,
                              "pretokenized": False},
                  "sae": {"format": "SAELens training checkpoint", "architecture": "topk",
                          "activation_scaling_folded": {
                              "normalize_activations": "expected_average_only_in",
                              "scaling_factor": 0.5}}}
    res.evals["core"].config = {"batch_size_prompts": 8, "n_eval_reconstruction_batches": 8,
                                "exclude_special_tokens_from_reconstruction": True}
    res.evals["sparse_probing"].stderr = {"sparse_probing.sae.sae_top_1_test_accuracy": 0.06}
    res.evals[ABSORPTION].unstructured["letters_not_scored"] = {
        "b": "ground-truth probe F1 0.20 <= 0.6", "q": "no probe true positives among the "
        "test words"}
    checks = [{"status": "pass", "kind": "threshold", "sae": "k8", "metric": EV, "value": 0.7,
               "stderr": 0.01, "limit": ">= 0.5", "message": ""}]
    page = html.render([res], checks, "fast", {}, metric_registry(),
                       outcomes={"passed": 15, "skipped": 10})
    text = unescape(" ".join(_parse(page).text))
    assert "pytest: 15 passed, 10 skipped · gates: 1 passed" in text
    for fact in ("EleutherAI/pythia-70m-deduped (HookedTransformer.from_pretrained_no_processing)",
                 "blocks.1.hook_resid_post", "monology/pile-uncopyrighted (streamed)",
                 "topk, d_in 128, d_sae 512, k 8, SAELens training checkpoint",
                 "expected_average_only_in (scaling factor 0.5)",
                 "core: batch_size_prompts 8, n_eval_reconstruction_batches 8"):
        assert fact in text, fact
    assert f'href="#m-{EV}"' in page and f'id="m-{EV}"' in page
    assert "explained variance" in text and "higher" in text  # the glossary row
    assert page.count('class="err"') == 1  # the one accuracy with a standard error
    assert ("Letters without a score (2): b (ground-truth probe F1 0.20 <= 0.6), q (no probe "
            "true positives among the test words)") in text


def _parse(page: str) -> _Collect:
    parser = _Collect()
    parser.feed(page)
    return parser


def _compared_report() -> str:
    """A retrained run's report: three checkpoints of a SAELens run, six gated metrics each
    with a threshold and a regression gate against main's replicates (long limits, noise)."""
    metrics = [EV, "core.model_performance_preservation.ce_loss_score",
               "core.model_behavior_preservation.kl_div_score", "core.sparsity.l0", SCORE]
    results = [_results(s, 40, 0.9) for s in ("checkpoints/e3d4cbd2/6144",
                                               "checkpoints/e3d4cbd2/12288", "final")]
    checks = []
    for r in results:
        for m in metrics:
            checks.append({"status": "pass", "kind": "threshold", "sae": r.sae_id,
                           "metric": m, "value": 0.91234, "stderr": 0.00123,
                           "limit": ">= 0.85, z 3", "message": ""})
            checks.append({"status": "inconclusive", "kind": "regression", "sae": r.sae_id,
                           "metric": m, "value": 0.91234, "stderr": 0.00123,
                           "baseline": 0.92345, "delta": -0.011112, "noise": "between runs",
                           "replicates": 3, "limit": "drop <= 0.01 (z 2, max_change_pct 15)",
                           "message": f"{m} regressed? vs main's 3 runs at 6,144 tokens: "
                                      f"0.9204 ± 0.0061 between runs (sae {r.sae_id})"})
    return html.render(results, checks, "fast", {})


@pytest.mark.slow
@browser
@pytest.mark.parametrize("width", [1400, 1000])
def test_the_gates_table_fits_its_box(tmp_path, width):
    # It overflowed at 1400 px: Δ, noise and the notes sat behind a horizontal scrollbar.
    measure = ("<script>document.body.setAttribute('data-wide', JSON.stringify([...document."
               "querySelectorAll('.wide')].map(e => [e.scrollWidth, e.clientWidth])));"
               "</script>")
    page = tmp_path / "report.html"
    page.write_text(_compared_report().replace("</body>", measure + "</body>"))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                          f"--window-size={width},900", "--dump-dom", page.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-wide="([^"]*)"', dom)
    assert found, dom[-2000:]
    boxes = json.loads(unescape(found.group(1)))
    assert boxes and all(scroll <= client for scroll, client in boxes), boxes
