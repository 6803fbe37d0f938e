"""Entry point ``broken_import``: needs a dependency that is not installed, so importing it fails."""

import cnnkit_broken_plugin_missing_dependency  # noqa: F401  (never installed, on purpose)
