"""graphrec.hostmem: after keep_freed_memory, a freed 8 MiB tensor's memory serves the next one
without page faults (glibc alone maps it afresh: ~2,000 faults per allocation)."""

import resource
import sys

import pytest
import torch

from graphrec.hostmem import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_a_freed_tensor_is_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("no glibc mallopt here (e.g. musl)")
    assert keep_freed_memory()  # once per process, then a no-op
    n = 2**21  # 8 MiB of float32, over glibc's default mmap threshold
    torch.empty(n).fill_(1.0)  # first use: faults its pages in, then freed into the heap
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(n).fill_(1.0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert max(faults) < 200, faults  # 2,048 pages if the memory were mapped afresh
