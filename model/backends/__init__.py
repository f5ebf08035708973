"""Other places an answer can come from, with the worker clients' interface: an
OpenAI-compatible server."""
