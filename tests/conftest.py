import os
import sys

# Tests import `builders` (tests/builders/) as a package.
sys.path.insert(0, os.path.dirname(__file__))
