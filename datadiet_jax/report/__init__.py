"""Reports: numbers and figures built from saved results only (never from training).

  numbers         noise detection (precision at k, ROC AUC), Spearman matrices, histograms,
                  class counts, the extremes of each class, JSON-ready values
  seed_count      how the ranking of a score depends on the number of seeds it averages
  plots           the figures: accuracy curves with percentile bands, histograms, heat maps,
                  image grids (PNG and PDF, written atomically)
  dynamics_plots  the figures of the dynamics studies (Figures 3 and 4, seed count)
  run_reports     the reports of a figure's saved runs (histograms, Spearman, grids, counts)
  summary         tables of the plotted numbers over healthy runs, Markdown summaries
  run_summary     the summary of one finished or partial run (`python -m datadiet_jax.report`)
  score_export    the per-example scores of a run as one CSV

It uses the pipeline's files (`pipeline.artifacts`, `training.health`) and the library.
"""
