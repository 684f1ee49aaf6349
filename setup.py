"""Build the C extension modules in ext/; everything else is declared in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "aspen._ring",
            sources=["ext/ring.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"],
            libraries=["rt"],
        ),
    ],
)
