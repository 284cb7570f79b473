"""npgpt: a pure-NumPy GPT (GPT-2 architecture) with hand-written, finite-difference-checked backpropagation."""

from . import gradcheck, layers

__version__ = "0.1.0"
