"""alignkit's built-in algorithm plugins, one folder each. They use only the public
API (``alignkit.hookimpl``, ``Algorithm``, ``AlgorithmSpec``, ``alignkit.losses``,
``alignkit.modeling``) and register through the ``alignkit.plugins`` entry-point
group exactly like third-party plugins."""
