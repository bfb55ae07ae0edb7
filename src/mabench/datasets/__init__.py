"""Legacy datasets: the original study's data, bundled, and what we compare against.

Owns the TR110 importer and reanalysis (``tr110``), the checks of a TR110 folder's files
before they are imported (``tr110_files``), the TR114 v2 reference statistics (``reference``)
and the bundled data files (``data/``, MIT-licensed copies; see its README).

May import: ``analysis.tables`` (it writes the same tables the pipeline aggregates) and
``analysis.integrity`` (its JSON file reader, which names what is wrong with a file).
"""
