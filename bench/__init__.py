"""Warden's benchmarks: ``python -m bench.<name> [--quick]``, each writing ``bench/results/<name>.json``
and comparing Warden against a baseline measured in the same run (see docs/benchmarks.md)."""
