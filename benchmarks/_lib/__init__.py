"""The benchmarks' shared library; the ``bench_*.py`` scripts are thin on top of it and never import each other.

* :mod:`_lib.machine`: what a run records about the machine and the software (a dict in every JSON document).
* :mod:`_lib.data`: the generated file sets and spectra the benchmarks measure on, created once and reused.
* :mod:`_lib.readers`: the ways of reading those files (bare uproot, the tutorial's loop, the processor with and
  without Dask, coffea's Runner) and the uproot settings they read with.
* :mod:`_lib.timing`: clocks (wall, CPU of a cluster or a process tree), memory samplers, GC timers.
* :mod:`_lib.output`: the command line every script shares (``--json FILE``) and the JSON document it writes.
* :mod:`_lib.sections`: JSON document -> BENCHMARKS.md section (``benchmarks/render.py`` is its command line).

Importable on Dask workers and in spawned processes (functions here are pickled by reference; both get the
client's ``sys.path``), so nothing here depends on ``__main__``. Nothing imports the project at package import.
"""
