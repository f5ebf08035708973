"""Starting llama.cpp's server (``xllamacpp.Server``) with no network listener.

llama.cpp's server always opens an HTTP listener. It is bound to a Unix socket in a private
(0700) temporary folder, and the socket file and folder are removed once the model is loaded;
requests also need the API key in ``params``. Used by the worker's engine
(``llamacpp_engine.load``) and by the failure explainer (``llamacpp_errors``), which loads a
file again to read llama.cpp's log.
"""

from __future__ import annotations

from typing import Any

from .paths import private_folder, unix_address


def start_server(params: Any) -> Any:
    """llama.cpp's server for ``params`` (an ``xllamacpp.CommonParams``); raises llama.cpp's
    ``RuntimeError`` where it cannot load."""
    import xllamacpp

    with private_folder("starchat-llamacpp-") as private, unix_address(private / "http.sock") as address:
        params.hostnames = [address]
        return xllamacpp.Server(params)
