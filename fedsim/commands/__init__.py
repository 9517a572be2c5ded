"""Sub-commands of the ``fedsim`` CLI; each module has ``register(subparsers)``."""
