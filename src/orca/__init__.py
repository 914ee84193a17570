"""Orca: run shell commands on fleets of Linux (SSH) and Windows (WinRM) machines."""

__version__ = "1.0.0"
