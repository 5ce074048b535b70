"""Scripts that reproduce the paper's figures: sweeps of pipeline runs, then plots.

  python -m experiments.fig2 --scale=cpu     # Figure 2: offset windows, clean and noisy labels
  python -m experiments.fig1 --scale=cpu     # Figure 1: score epoch and pruned fraction
  python -m experiments.fig3 --scale=cpu     # Figure 3: kernel velocity of EL2N-ranked windows
  python -m experiments.fig4 --scale=cpu     # Figure 4: error barriers on EL2N-ranked subsets
  python -m experiments.seedcount --scale=cpu  # rankings and subsets from 1, 2, 4, ... seeds
  python -m experiments.transfer --scale=cpu   # one model's scores prune for another model

The settings of every scale are `configs/studies/`; `sweeps` holds the sweep items and runner,
`cli` the command line; the numbers and images written next to the figures are
`datadiet_jax.report`.
"""
