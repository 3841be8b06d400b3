"""The error every checkpoint reader raises, whatever the format."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is: the message names the file and key at fault."""
