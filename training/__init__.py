"""Margin-softmax training: configuration, data sources, the loop, validation and export.

``train.py`` parses flags and calls ``training.config.resolve_config`` and ``training.trainer.run_training``.
Import from the module that defines a name; ``training.config`` (what ``train.py --help`` needs)
loads no TensorFlow.
"""

from fileio.quiet_tensorflow import quiet_tensorflow_for_api

quiet_tensorflow_for_api()   # API users: TensorFlow's C++ start-up lines stay out of the terminal, as for the commands
