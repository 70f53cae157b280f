"""End-to-end recipes: one command from the original data to the result table.

``python -m recipes.lfw_view1`` aligns LFW, packs View 1 DevTrain, trains and evaluates (the README's
headline result); ``python -m recipes.lfw_levers`` puts several of its runs side by side. Run them
from the repository root as modules. Speed and memory measurements live in ``benchmarks/``.
"""
