from .hire_mlp import HireMLP

__all__ = ['HireMLP']
