"""Result records -> pandas -> LaTeX tables and figures (``python -m analysis --results-dir DIR``).

``records`` reads the records into one tidy frame; ``tables`` and ``figures`` are functions of that frame;
``report.make_report`` writes all of them.
"""
