"""Suite-wide settings."""

import os

from hypothesis import settings

# No per-example deadline: a loaded CI machine makes wall-clock limits flaky, and speed is
# measured in bench/, not asserted in tests. Examples are derived from each test, not drawn at
# random, so `make test` gives the same verdict on the same code; RW_HYPOTHESIS_RANDOM=1 draws
# new ones (what a long exploration run wants; a failure it finds is pinned with @example).
settings.register_profile("rackwarden", deadline=None,
                          derandomize=os.environ.get("RW_HYPOTHESIS_RANDOM") != "1")
settings.load_profile("rackwarden")
