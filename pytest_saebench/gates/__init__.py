"""How a gate decides (torch-free): the statistics of STATISTICS.md in ``stats``."""
