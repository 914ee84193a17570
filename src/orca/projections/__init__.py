"""Read models built from the event log, and the queries that serve the API from them."""
