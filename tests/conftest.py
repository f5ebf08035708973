"""Suite-wide settings: nothing reaches a hub, and workers started by tests exit soon."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Workers outlive the client that started them (that is their job); in tests they must not
# outlive the suite by long.
os.environ.setdefault("STARCHAT_WORKER_IDLE_TIMEOUT", "20")
# llama.cpp's worker threads meet at spin barriers many times per token: on a machine whose
# cores are oversubscribed (a test suite next to other work) two threads can be far slower
# than one (measured here under load: 5 answers in 82 s on one thread, none in 8 min on
# two). One thread keeps the suite's timing sane; users get all their cores.
os.environ.setdefault("STARCHAT_THREADS", "1")
