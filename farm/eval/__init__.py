"""Evaluation: AlpacaEval-compatible leaderboards with intervals, length control, rank correlations, judge
meta-evaluation and paired method comparisons. Every result is a pandas DataFrame; see docs/evaluation.md.

    from farm.eval import leaderboard
    lb = leaderboard(["results/a/annotations.json.gz", "results/b/annotations.json.gz"], lc=True)
"""

from farm.eval.agreement import agreement_table, evaluate_judges, read_humans, read_judge
from farm.eval.correlation import correlate_annotations, correlate_tables, correlations
from farm.eval.lc import length_controlled_winrates
from farm.eval.lc_reference import LCReference, fit_reference
from farm.eval.stats import bootstrap_counts, paired_comparison
from farm.eval.winrate import (
    PreferenceMatrix,
    compare_models,
    leaderboard,
    read_leaderboard_csv,
    to_frame,
    winrate_stats,
)

__all__ = [
    "PreferenceMatrix", "agreement_table", "bootstrap_counts", "compare_models", "correlate_annotations",
    "correlate_tables", "correlations", "evaluate_judges", "fit_reference", "leaderboard", "LCReference",
    "length_controlled_winrates", "paired_comparison", "read_humans", "read_judge", "read_leaderboard_csv",
    "to_frame", "winrate_stats",
]
