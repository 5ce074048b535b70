"""Reports: numbers and figures built from saved results only (never from training).

  numbers         noise detection, Spearman matrices, histograms, class counts, extremes
  seed_count      how the ranking of a score depends on the number of seeds it averages
  plots           the figures: accuracy curves with percentile bands, histograms, heat maps,
                  image grids (PNG and PDF, written atomically)
  dynamics_plots  the figures of the dynamics studies (Figures 3 and 4, seed count)
  methods         the cross-method comparison: accuracy against random, scoring cost
  speedup         the speedup study's figure: accuracy against seconds and examples seen
  speedup_summary the speedup study's table: savings, accuracy lost, time to full accuracy
  run_reports     the reports of a figure's saved runs (histograms, Spearman, grids, counts)
  summary         tables of the plotted numbers over healthy runs, Markdown summaries
  protocol        the protocol section opening every study summary (budget, steps, batch size,
                  seeds, scoring cost)
  run_summary     the summary of one finished or partial run
  score_export    the per-example scores of a run as one CSV

It uses the pipeline's files (`pipeline.artifacts`, `training.health`) and the library. Its
command line is `python -m datadiet_jax.report --workdir=DIR` (`__main__`).

Usage:

    from datadiet_jax.report import numbers, plots, run_summary
    report = run_summary.write_report("runs/fashion_mnist")   # WORKDIR/report/
    auc = numbers.roc_auc(el2n.mean(0), noisy_mask)           # [N] scores, [N] bool
    plots.plot_pruning_curves(rows, "out/fig1")               # out/fig1.png, out/fig1.pdf
"""
