"""Errors raised when a command breaks a domain rule."""


class DomainError(Exception):
    """A command was refused because it would break a rule of the domain."""


class NotFound(DomainError):
    """The aggregate a command names does not exist."""


class Conflict(DomainError):
    """The command conflicts with the current state (a taken name, a finished job...)."""


class Invalid(DomainError):
    """The command's values break a rule; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
