import os
import subprocess
import sys

import pytest

from genrec import runtime

CHECK = "from genrec.runtime import keep_freed_memory; print(keep_freed_memory())"


def run_child(env: dict) -> str:
    res = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=True)
    return res.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_keep_freed_memory_applies_on_glibc_unless_the_user_chose():
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    base.pop(runtime.OPT_OUT, None)
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else ""
    assert run_child(base) == str(bool(libc and libc.startswith("glibc")))
    assert run_child({**base, runtime.OPT_OUT: "0"}) == "False"
    assert run_child({**base, "MALLOC_ARENA_MAX": "2"}) == "False"
