"""Evaluation: AlpacaEval-compatible leaderboards with intervals, length control, Bradley–Terry ratings, rank
correlations, judge meta-evaluation (human sheets, both orders, a pool fitted to human labels) and paired method
comparisons. Every result is a pandas DataFrame; see docs/evaluation.md.

    from farm.eval import leaderboard
    lb = leaderboard(["results/a/annotations.json.gz", "results/b/annotations.json.gz"], lc=True)
"""

from farm.eval.agreement import agreement_table, evaluate_judges, read_humans, read_judge
from farm.eval.bt import bradley_terry
from farm.eval.consistency import consistency_table, fold_orders, with_both_orders
from farm.eval.correlation import correlate_annotations, correlate_tables, correlations
from farm.eval.frames import PreferenceMatrix, to_frame
from farm.eval.humans import read_human_table
from farm.eval.lc import length_controlled_winrates
from farm.eval.lc_reference import LCReference, fit_reference
from farm.eval.stats import bca_interval, bootstrap_counts, paired_comparison
from farm.eval.winrate import compare_models, leaderboard, read_leaderboard_csv, winrate_stats

__all__ = [
    "LCReference", "PreferenceMatrix", "agreement_table", "bca_interval", "bootstrap_counts", "bradley_terry",
    "compare_models", "consistency_table", "correlate_annotations", "correlate_tables", "correlations",
    "evaluate_judges", "fit_reference", "fold_orders", "leaderboard", "length_controlled_winrates",
    "paired_comparison", "read_human_table", "read_humans", "read_judge", "read_leaderboard_csv", "to_frame",
    "winrate_stats", "with_both_orders",
]
