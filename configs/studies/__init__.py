"""The per-scale settings (paper, cpu, smoke) of every study the figure scripts reproduce.

scales      base configs of the three scales, and Figures 1 and 2
fig3        Figure 3: epochs, window sizes, noise levels
fig4        Figure 4: the ranking score, subset size, spawning epochs, interpolation grid
seedcount   the seed-count study: the score that prunes
transfer    score transfer: the score, source and target models, fractions
methods     the cross-method benchmark: the methods, fractions, score epoch
speedup     pruning during training: the arms, their levels, the score run
"""
