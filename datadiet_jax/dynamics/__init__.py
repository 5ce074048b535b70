"""Analyses of training dynamics, on the K-seed loop and the per-layer machinery of GraNd.

  ntk              the exact empirical NTK Gram matrix of a few examples (K seeds) and the
                   kernel distance of two Gram matrices
  kernel_velocity  the kernel velocity of windows of examples ranked by EL2N (Figure 3)
  barriers         error barriers between two networks on a set of examples (linear mode
                   connectivity, Frankle et al., ICML 2020)
  connectivity     the spawning protocol: two children trained on from a parent stopped at
                   step t*, and their barriers on subsets (Figure 4)

Each study takes its settings as one frozen spec (`kernel_velocity.VelocitySpec`,
`connectivity.SpawningSpec`, `barriers.BatchNormRule`) and the trainer's settings as
`config.train` and the run seed; only the figure scripts see the whole config. Their figures are
`report.dynamics_plots`; the seed-count analysis is `report.seed_count`.

Usage:

    from datadiet_jax.dynamics import kernel_velocity, ntk
    gram = ntk.ntk_gram(model, variables, images[:100])         # [K, 100, 100] float32
    velocity = ntk.kernel_distance(gram, later_gram)             # [K], in [0, 2]
    rows = kernel_velocity.velocity_run(config.train, 0, workdir, model, split, spec)
"""
