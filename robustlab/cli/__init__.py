"""The command-line apps: ``robustlab-train`` (:mod:`.train`), ``robustlab-eval`` (:mod:`.evaluate`)
and ``robustlab-report`` (:mod:`.report`), on the Hydra app machinery of :mod:`.app`.

Each app is a thin layer over the library; apps never import one another.
"""
