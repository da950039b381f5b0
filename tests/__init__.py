"""occo's test suite (a package so that tests import shared helpers by name)."""
