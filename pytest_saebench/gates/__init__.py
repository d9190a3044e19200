"""How a gate decides, in one torch-free package that reads no files (the baseline's values
and the frontier's points come in as data; STATISTICS.md is the method):

- ``registry``: metric ids, directions, aliases;
- ``stats``: units, fingerprints, paired and unpaired standard errors, critical values,
  looks at growing prefixes;
- ``thresholds``: ``min`` / ``max`` rules, with ``z`` three-way;
- ``regression``: rules against a baseline, paired where the runs share units;
- ``lineage``: which baseline entry a checkpoint is compared with (its place in training);
- ``frontier``: matched-sparsity gates against a sweep's frontier.
"""

from __future__ import annotations

from typing import Literal

# A gate's verdict: pass, fail, or inconclusive (its interval holds its bound); warn for a
# warn-severity gate beyond its bound, improved for a move the good way beyond the noise,
# skip when there is nothing to compare, error when the evaluation failed.
Verdict = Literal["pass", "fail", "inconclusive", "warn", "improved", "skip", "error"]
VERDICTS: tuple[str, ...] = ("pass", "fail", "inconclusive", "warn", "improved", "skip", "error")
