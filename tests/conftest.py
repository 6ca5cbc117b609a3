"""Suite-wide settings."""

from hypothesis import settings

# No per-example deadline: a loaded CI machine makes wall-clock limits flaky, and speed is
# measured in bench/, not asserted in tests.
settings.register_profile("rackwarden", deadline=None)
settings.load_profile("rackwarden")
