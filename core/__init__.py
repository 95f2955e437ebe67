"""MNIST Lab's engine: data, models, training, metrics and the run store, without streamlit.

Usable from a notebook, the command line (`python -m core`), tests and the app alike.
Submodules are imported where needed so that `import core` stays instant.
"""

__version__ = "0.1.0"
