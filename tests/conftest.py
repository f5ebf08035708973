"""Suite-wide settings: nothing reaches a hub, and workers started by tests exit soon."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Workers outlive the client that started them (that is their job); in tests they must not
# outlive the suite by long.
os.environ.setdefault("STARCHAT_WORKER_IDLE_TIMEOUT", "20")
