"""Repository-wide test setup: offline switches. (pytester is loaded by ``addopts`` in
pyproject.toml: ``pytest_plugins`` here would break the pytest of a repository that holds
this one as a submodule, where this conftest is not top-level.)"""

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
