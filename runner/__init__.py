"""The plumbing shared by every step: configs, registries, jobs, the result store and executors.

Flow: suite file -> :mod:`runner.suite` expands it into :class:`runner.jobs.Job` objects -> an executor
(:mod:`runner.executors`) runs :func:`runner.run_job.run_job` for each -> one JSON record per job in
:mod:`runner.store` -> :mod:`analysis` turns the records into tables and figures.
"""
