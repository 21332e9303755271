"""The project's benchmarks: how close the advisor's (B, LR) comes to the best of a dense grid of full runs,
and at what compute, against the usual alternatives (framework defaults, the LR range test, random search,
Optuna's TPE with and without a pruner), on a tiny pretrained model and on a real small LLM, and how fast
and how robust the proxy runs, the probes and the service are. Each benchmark is a module of this package,
run from the repository root as `python -m bench.NAME` (for instance `python -m bench.quality --quick`)
after `pip install -e .[bench]`; the helpers several of them share are in `bench.common`, and their results,
with the machine and date they were measured on, are described in bench/RESULTS.md.
"""
