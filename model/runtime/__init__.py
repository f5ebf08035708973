"""Running a model in this process: loading specs, our own Llama runner and the transformers
one (both ``runner.Runner``), the torch ``Engine``, llama.cpp for GGUF files. Imports only
``model.prompt`` from the layers around it."""
