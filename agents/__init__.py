"""Controllers for throttleable networks: SB3 training, baseline policies, evaluation, Pareto curves.

``tnn train-controller``, ``tnn evaluate-controller``, ``tnn pareto`` and ``tnn demo`` live in
:mod:`agents.cli`; this package imports stable-baselines3, gymnasium and matplotlib lazily.
"""
