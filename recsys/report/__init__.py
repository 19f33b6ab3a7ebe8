"""Reports built from benchmark result files: the leaderboard, dataset cards, plots.

Sits above ``recsys.training`` and below ``recsys.cli`` (see setup.cfg). It reads the
files that ``benchmarks/runner.py`` writes (``<results>/<dataset>/<config>/seed<N>/``)
and never imports ``benchmarks``, ``experiments`` or ``notebooks``.

- ``results``: load result files into ``BenchRun`` records (and a DataFrame);
- ``published``: published full-ranking numbers, each with its source;
- ``cards``: one-line dataset cards computed from the data;
- ``leaderboard``: aggregate runs into rows, render Markdown and the PNG plot.
"""
