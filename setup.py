"""Builds ``maskstore._speedups`` with the SHA-256 of its ``.pyx`` source compiled in, so an import
can tell a build made from an older source (``maskstore._accel``). Everything else is in pyproject.toml."""

import hashlib
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext


class build_ext_with_source_hash(build_ext):
    def build_extension(self, ext):
        pyx = Path(__file__).parent / "maskstore" / "_speedups.pyx"
        ext.cython_compile_time_env = {"PYX_SHA256": hashlib.sha256(pyx.read_bytes()).hexdigest()}
        super().build_extension(ext)


setup(cmdclass={"build_ext": build_ext_with_source_hash})
