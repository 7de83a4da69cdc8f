from .hire_mlp import HireMLP, switch_to_deploy

__all__ = ['HireMLP', 'switch_to_deploy']
