"""Protocol adapters that run commands on remote systems."""
