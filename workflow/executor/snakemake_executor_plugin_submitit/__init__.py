"""Snakemake's ``--executor submitit``: this project's training jobs through submitit, one batched status query per
poll. The executor lives in the project (:mod:`icp.executor`); this package only makes Snakemake find it (it looks
for installed ``snakemake_executor_plugin_*`` packages and does not see editable installs). Snakemake imports it
while building its command line, which is where a target swallowed by ``--config`` is named in one line
(:func:`icp.preflight.name_swallowed_targets`)."""
from icp.executor import Executor, ExecutorSettings, common_settings  # noqa: F401
from icp.preflight import name_swallowed_targets

name_swallowed_targets()
