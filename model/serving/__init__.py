"""The shared model worker process, its wire protocol and the clients that talk to it."""
