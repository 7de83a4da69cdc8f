"""Errors that the tools report as one clear line instead of a stack trace."""


class MMHireError(Exception):
    """Base of the errors whose message says what is wrong and how to fix it."""


class ArchError(MMHireError, ValueError):
    """A backbone argument that does not describe a valid network."""


class CheckpointError(MMHireError, ValueError):
    """A checkpoint that cannot or must not be loaded into the model."""


class DatasetNotFoundError(MMHireError, FileNotFoundError):
    """A dataset that a config names is not where it says."""


class InputError(MMHireError, ValueError):
    """A batch the backbone cannot process (channels, size)."""


class DeployError(MMHireError, RuntimeError):
    """Training a network whose BatchNorms were folded for inference."""


class ExportError(MMHireError, RuntimeError):
    """A model that cannot be exported, or whose exported file computes
    otherwise than PyTorch."""
