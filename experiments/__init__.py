"""Scripts that reproduce the paper's figures: sweeps of `datadiet_jax.run` runs, then plots.

  python -m experiments.fig2 --scale=cpu     # Figure 2: offset windows, clean and noisy labels
  python -m experiments.fig1 --scale=cpu     # Figure 1: score epoch and pruned fraction

`common` holds the scales and the sweep runner, `reports` the numbers and images written next to
the figures (from saved runs only).
"""
