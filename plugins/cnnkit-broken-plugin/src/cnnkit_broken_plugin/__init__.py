"""A test fixture: cnnkit plugins that fail on purpose. Importing this package itself works."""
