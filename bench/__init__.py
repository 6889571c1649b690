"""The project's benchmarks: speed and accuracy figures, each beside its baseline, written to bench/results/.

Every script is a module of this package, run from the repository root with the project's venv:

    python -m bench.suite --quick          # what `assistant bench` runs
    python -m bench.speech --help

`common` holds what they share (timing, machine details, Markdown tables); none is part of the test suite.
"""
