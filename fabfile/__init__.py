"""`fab` entry point: one namespace per component plus `deploy` and `health` (fabfile/cli.py builds them).

`fab -H node1,node2,node3 deploy` runs the phased, parallel runner once over all the -H hosts
(cli.FabExecutor, set in fabric.yaml), so work is ordered across hosts exactly like `inv deploy`. Without
-H, the whole inventory is used. Hosts must be inventory names (validated before any connection).
"""

from __future__ import annotations

import os
import sys

# Fabric puts this package's own folder first on sys.path, so `import redis` (redis-py, used by health)
# would load fabfile/redis.py instead. Keep only the folder `fabfile` itself is imported from.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from . import cli  # noqa: E402

ns = cli.collection(host_local_health=True)
