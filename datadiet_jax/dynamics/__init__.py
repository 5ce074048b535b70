"""Analyses of training dynamics, on the K-seed loop and the per-layer machinery of GraNd.

  ntk              the exact empirical NTK Gram matrix of a few examples (K seeds) and the
                   kernel distance of two Gram matrices
  kernel_velocity  the kernel velocity of windows of examples ranked by EL2N (Figure 3)
  barriers         error barriers between two networks on a set of examples (linear mode
                   connectivity, Frankle et al., ICML 2020): interpolation, BatchNorm statistics
                   at interpolated weights, masked subset errors
  connectivity     the spawning protocol: a parent network stopped at step t*, two children
                   trained on from its weights with their own data orders, and their barriers
                   on subsets (Figure 4)

Each study takes its settings as one frozen spec (`kernel_velocity.VelocitySpec`,
`connectivity.SpawningSpec`; the BatchNorm rule of a barrier is `barriers.BatchNormRule`) and the
trainer's settings as `config.train` and the run seed; only the figure scripts see the whole config.

Their figures are `report.dynamics_plots`; the seed-count analysis is `report.seed_count`.
"""
