"""Benchmark suites: request builders (dataset -> GenerationRequests) and scorers (ScoreContext -> ScoreOutput).

``dreambench`` (Table 4, 5, 7), ``editing`` (Table 2, 5), ``control`` (Table 3, 6), ``shapes5`` (procedural world),
``gedit`` (Table 8, needs a judge model). Protocols name their scorer in :mod:`benchmarks.protocols`.
"""
