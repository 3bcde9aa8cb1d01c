"""graphrec.malloc: freed tensors stay in the process where it is on, go back to the kernel where
it is off (each case in a fresh interpreter, since the setting lasts for the process)."""

import subprocess
import sys

import pytest

PROBE = """
import os, sys
import torch
from graphrec.malloc import keep_freed_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
took = keep_freed_memory()
base = rss()
x = torch.ones(64 << 20)  # 256 MiB, every page touched
held = rss() - base
del x
print(took, held, rss() - base)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
@pytest.mark.parametrize("setting", ["1", "0"])
def test_freed_tensors_stay_in_the_process_only_when_asked(setting):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={"GRAPHREC_KEEP_FREED_MEMORY": setting, "PATH": ""}).stdout.split()
    took, held, after_free = out[0] == "True", int(out[1]), int(out[2])
    assert held >= 250  # the tensor was resident
    if setting == "1":
        assert took and after_free >= 250  # kept for the next step's tensors
    else:
        assert not took and after_free < 20  # glibc's default: a big block goes back at once
