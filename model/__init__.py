"""The model layer, in four sub-packages whose imports run one way (tests/model/test_layers.py):

``backends`` -> ``serving`` -> ``runtime`` -> ``prompt``. A module imports only from its own
layer and the layers below it, never from ``lsp_server`` or ``training``.
"""
