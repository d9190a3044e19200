"""``python -m pytest_saebench``: command-line entry point."""

from pytest_saebench.cli import main

raise SystemExit(main())
