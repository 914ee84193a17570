"""The event-sourced application: persistence, and one module per use case."""
