"""Under `fab`, the fabfile folder is first on sys.path; redis-py must still be the `redis` imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fabfile_folder_on_sys_path_does_not_shadow_redis_py():
    code = ("import sys; sys.path.insert(0, 'fabfile'); import fabfile, redis; "
            "print(redis.__file__); print(hasattr(redis, 'Redis'))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    path, has_client = res.stdout.split()
    assert "fabfile" not in path and has_client == "True", res.stdout
