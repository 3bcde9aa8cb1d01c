"""The one compiled part of graphrec: the CPU sparse-dense product (graphrec/_native.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the
install still succeeds and graphrec multiplies with torch's MKL product instead (slower on CPU;
``graphrec.native.status()`` says which one runs and why).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "graphrec._native", ["graphrec/_native.c"],
    # -fno-trapping-math: without it the AVX2 copy of the layer loops stays scalar (GCC will not
    # turn a select over a product that might raise an FP exception into vector code; nothing here
    # reads FP exception flags)
    extra_compile_args=["-O3", "-fopenmp", "-fno-trapping-math", "-Wno-psabi"],
    # torch loads its libgomp first; this one resolves to it by soname, so there is one thread pool
    extra_link_args=["-fopenmp"],
    optional=True,
)])
