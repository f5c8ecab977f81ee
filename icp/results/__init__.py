"""The results side: from run records (:mod:`icp.records`) to the paper's tables, the DVC outputs and the verdict.
Everything here reads ``record.json`` files, or ``summary.csv`` made from them, and nothing else; ``icp
summarize``, ``icp tables``, ``icp report``, ``icp grid --power``, the Snakefile's aggregation rules and the DVC
laptop pipeline call it. One job per module, each importing only those above it in this list:

* :mod:`icp.results.frames`: records -> frames. One row per run (:func:`~icp.results.frames.runs_frame`, written
  as ``summary.csv``), one per epoch (``epochs.csv``); what a condition, a variant, a model kind and its baseline
  are (``CONDITION``, ``variant_of``, ``kind_of``, ``BASELINE``).
* :mod:`icp.results.cells`: per condition, variant and config the statistics over seeds, the paired comparison
  with the baseline and Holm's correction over a family (``cells``, ``paired``, ``with_holm``, ``family_rows``,
  ``with_family``, ``significant``).
* :mod:`icp.results.text`: the one place where a number is written: a metric's scale and digits, a cell, a
  difference with its interval and test, a p-value, a row or column label.
* :mod:`icp.results.render`: a table of text as markdown, LaTeX (booktabs) and HTML; ``icp report``'s flat
  markdown.
* :mod:`icp.results.tuning`: the ``Equal tuning`` section of a tuned study (default beside tuned, tuning luck and
  cost) and which rows are tuning trials (``is_trial``).
* :mod:`icp.results.tables`: a study's sections and the writing of its ``<study>.{csv,md,tex,html}``.
* :mod:`icp.results.summary`: what ``icp summarize`` writes for DVC: ``summary.csv``, ``epochs.csv``,
  ``metrics.json``, ``dvc/<variant>.json`` (DVC's metric) and the learning curves.
* :mod:`icp.results.verdict`: which method wins, one verdict per study over its independent units
  (``verdict.{csv,md}``).
* :mod:`icp.results.report`: ``icp report PATH...``, the cells of records that come from no grid.
* :mod:`icp.results.power_plan`: ``icp grid --power``, the detectable difference of each study's primary family
  (the statistics are :mod:`icp.power`'s).

Nothing is imported here: ``import icp.results.verdict`` (the Snakefile's) loads that module and what it needs.
"""
