"""Run ``fastconv`` commands in a subprocess where importing torch (or the rest of the ``face`` extra) fails.

``run_without_torch(*argv, env=None)`` -> ``subprocess.CompletedProcess`` (text output) of
``fastconv <argv>`` with a meta-path finder that raises ImportError for ``torch``, ``torchvision``
and the other packages a torch-free install (``pip install -e .``) lacks: scikit-learn,
matplotlib, onnx, onnxruntime. The process also fails if one of them ended up in ``sys.modules``
some other way.
"""
import os
import subprocess
import sys

NO_TORCH = """
import importlib.abc, sys
BLOCKED = ('torch', 'torchvision', 'sklearn', 'matplotlib', 'onnx', 'onnxruntime')
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{name} is blocked: this process must run without torch')
sys.meta_path.insert(0, Block())
from fastconv.cli import main
rc = main(sys.argv[1:])
leaked = [m for m in BLOCKED if m in sys.modules]
if leaked:
    print(f'torch-free run imported {leaked}', file=sys.stderr)
    rc = rc or 3
sys.exit(rc)
"""


def run_without_torch(*argv, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, argv)], capture_output=True, text=True,
                          env=full_env)
