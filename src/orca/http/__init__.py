"""The REST API: routes, request and response structs, auth, errors."""
