"""The plumbing shared by every step: configs, registries, jobs, the result store and executors.

Flow: suite file -> :mod:`harness.suite` expands it into :class:`harness.jobs.Job` objects -> an executor
(:mod:`harness.executors`) runs :func:`harness.run_job.run_job` for each -> one JSON record per job in
:mod:`harness.store` -> :mod:`analysis` turns the records into tables and figures.
"""
