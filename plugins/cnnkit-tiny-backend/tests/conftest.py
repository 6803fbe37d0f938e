"""Point cnnkit's conformance suite at the ``tiny`` backend unless told otherwise."""


def pytest_configure(config):
    if not config.getoption("--cnnkit-backend"):
        config.option.cnnkit_backend = ["tiny"]
