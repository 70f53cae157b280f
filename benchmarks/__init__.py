"""Speed, memory, accuracy and training-dynamics measurements: scripts that print figures.

Run each from the repository root as a module, e.g. ``python -m benchmarks.train_speed --help``
(so it imports the project's packages without touching ``sys.path``). See benchmarks/README.md.
"""
