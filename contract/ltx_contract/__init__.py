"""ltx-extend's contract: what the resource, the operator and the trainer agree on.

The spec and its rules, the resource's identity and status, outcomes and exit codes,
billing, suffix carving, the CRD generator, and the typed documents that pass between
the Jobs and the operator (dataset manifest, job result, progress report). It imports
nothing heavy (pydantic and PyYAML only): the operator depends on this package alone.
"""
