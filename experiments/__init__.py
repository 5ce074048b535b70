"""Scripts that reproduce the paper's figures: sweeps of `datadiet_jax.run` runs, then plots.

  python -m experiments.fig2 --scale=cpu     # Figure 2: offset windows, clean and noisy labels
  python -m experiments.fig1 --scale=cpu     # Figure 1: score epoch and pruned fraction
  python -m experiments.fig4 --scale=cpu     # Figure 4: error barriers on EL2N-ranked subsets
  python -m experiments.seedcount --scale=cpu  # rankings and subsets from 1, 2, 4, ... seeds
  python -m experiments.transfer --scale=cpu   # one model's scores prune for another model

`common` holds the scales and the sweep runner, `reports` the numbers and images written next to
the figures (from saved runs only).
"""
