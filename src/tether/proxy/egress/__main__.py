"""`python -m tether.proxy.egress`: see tether.proxy.egress.run."""

import sys

from tether.proxy.egress.run import main

sys.exit(main())
