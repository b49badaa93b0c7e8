"""Annotators: LLM judges as folders (annotator_prompts/<name>/), replay of recorded verdicts, pools, noise,
a persistent cache and concurrent, retried, cost-accounted requests.

    from farm.annotators import load_annotator, annotate_pairs, AnnotationRun
    judge = load_annotator("gpt4o_mini_basic")            # or a folder path, or a pool
    run = AnnotationRun()
    annotations = annotate_pairs(pairs, judge, seed=0, cache_path="cache.sqlite", run=run)
    print(run.summary())

Each annotation's `preference` is P(output_2 better) in [0, 1], or None when the judge's answer could not be
parsed (its raw text is kept). See docs/annotators.md.
"""

from farm.annotators.cache import Verdict, VerdictCache
from farm.annotators.engine import AnnotationRun, annotate_frame, annotate_pairs, last_run
from farm.annotators.loader import available, load_annotator

__all__ = ["AnnotationRun", "Verdict", "VerdictCache", "annotate_frame", "annotate_pairs", "available",
           "last_run", "load_annotator"]
