"""Datasets: the original study's data, bundled, what we compare against, and synthetic run
records.

Owns the TR110 importer and reanalysis (``tr110``), the checks of a TR110 folder's files
before they are imported (``tr110_files``), the TR114 v2 reference statistics (``reference``),
the bundled data files (``data/``, MIT-licensed copies; see its README) and ``synthetic``:
seeded, schema-valid run records of any number of runs, cached in a folder the caller names
(the analysis-scale benchmark and the tests of everything that reads records use them).

May import: ``analysis.tables`` (it writes the same tables the pipeline aggregates),
``analysis.integrity`` (its JSON file reader, which names what is wrong with a file),
``measure.records`` (the run record ``synthetic`` builds) and ``measure.metrics`` (which
derives a synthetic run's metrics from its calls, as a real run's are).
"""
